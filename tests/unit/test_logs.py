"""Log lines during a broker outage stay few and still say what happened."""

from __future__ import annotations

import logging

from streams.logs import RateLimit


def record(name: str, msg: str, *args: object, level: int = logging.ERROR) -> logging.LogRecord:
    return logging.LogRecord(name, level, __file__, 1, msg, args, None)


def test_repeated_library_errors_pass_once_per_period_and_say_how_many_were_held() -> None:
    now = [0.0]
    f = RateLimit(period_s=30, clock=lambda: now[0])
    passed = []
    for i in range(8200):  # ~24 s of an outage at the rate measured before this filter
        now[0] = i * 24 / 8200
        r = record("aiokafka.conn", "Unable connect to node with id %s: %s", i % 3 + 1, "refused")
        if f.filter(r):
            passed.append(r.getMessage())
    assert passed == ["Unable connect to node with id 1: refused"]
    now[0] = 31.0
    r = record("aiokafka.conn", "Unable connect to node with id %s: %s", 2, "refused")
    assert f.filter(r)
    assert r.getMessage().endswith("(8199 similar lines in the last 30s held back)")


def test_different_shapes_and_our_own_errors_are_not_held_back() -> None:
    f = RateLimit(period_s=30, clock=lambda: 0.0)
    assert f.filter(record("aiokafka.conn", "Unable connect to node %s", 1))
    assert f.filter(record("aiokafka.consumer", "Heartbeat failed for group %s", "g"))
    assert f.filter(record("aiokafka.conn", "Unable connect to node %s", 1, level=logging.WARNING))
    for _ in range(3):
        assert f.filter(record("streams.runtime.stage", "insert into %s failed", "touchpoints"))
