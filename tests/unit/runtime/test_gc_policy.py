"""The worker's garbage-collection policy (streams/app/gc_policy.py), on an injected clock."""

from __future__ import annotations

from typing import Any

from streams.runtime import gc_policy
from streams.runtime.gc_policy import FREEZE_EVERY_S, FULL_EVERY_S, GcPolicy


def test_freezes_regularly_and_collects_fully_once_per_interval(monkeypatch: Any) -> None:
    calls: list[str] = []
    monkeypatch.setattr(gc_policy.gc, "freeze", lambda: calls.append("freeze"))
    monkeypatch.setattr(gc_policy.gc, "unfreeze", lambda: calls.append("unfreeze"))
    monkeypatch.setattr(gc_policy.gc, "collect", lambda: calls.append("collect") or 0)
    now = [0.0]
    policy = GcPolicy(clock=lambda: now[0])
    policy.maybe_run()
    assert calls == []
    now[0] = FREEZE_EVERY_S
    policy.maybe_run()
    policy.maybe_run()  # not again within the interval
    assert calls == ["freeze"]
    now[0] = FULL_EVERY_S
    policy.maybe_run()
    assert calls == ["freeze", "unfreeze", "collect", "freeze"]
    now[0] = FULL_EVERY_S + FREEZE_EVERY_S - 1
    policy.maybe_run()
    assert calls[-1] == "freeze" and len(calls) == 4
