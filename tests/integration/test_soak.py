"""Soak: a steady, moderate live load for ``TOUCHSTREAM_SOAK_MINUTES`` without memory growth.

On demand (``make soak``; skipped by ``make test``): a fixed population of people browses,
converts and chats (every customer message answered within seconds), so after warm-up the state
is in steady state: dedup ids and funnel windows expire, SLA waits end. State that is kept on
purpose for a while (the id window, the pager's tombstones: one day by default) is given short
retentions here, so steady state comes within minutes and any growth after it is a leak. The
worker's RSS is sampled every 30 s; after the warm-up (the first 40 %) it must not grow by more
than 10 % (or 64 MB, whichever is larger), and the input must keep up (lag drains).
"""

from __future__ import annotations

import os
import random
import statistics
import time
from pathlib import Path

import orjson
import pytest

from tests.conftest import WorkerProc, start_worker, wait_until
from tests.kafka_util import produce, stage_lag

MINUTES = float(os.environ.get("TOUCHSTREAM_SOAK_MINUTES", "0"))
RATE = int(os.environ.get("TOUCHSTREAM_SOAK_RATE", "300"))  # events per second
PEOPLE = 3000
SAMPLE_S = 30.0

pytestmark = [
    pytest.mark.integration,
    pytest.mark.soak,
    pytest.mark.skipif(MINUTES <= 0, reason="on demand: make soak (sets TOUCHSTREAM_SOAK_MINUTES)"),
    pytest.mark.timeout(int(MINUTES * 60 * 1.5) + 600),
]


def rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError(f"no VmRSS for {pid}")


def iso(ms: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ms / 1000)) + f".{ms % 1000:03d}Z"


Record = tuple[bytes, dict]


def second_of_traffic(rng: random.Random, now_ms: int, n: int, replies: dict[int, list[Record]],
                      tick: int, seq: list[int]) -> list[Record]:
    """One second of traffic: the agent replies due now, then new events from the population."""
    out = replies.pop(tick, [])
    for rec in out:
        rec[1]["occurred_at"] = iso(now_ms)
    for _ in range(n - len(out)):
        seq[0] += 1
        person = rng.randrange(PEOPLE)
        tenant = f"soak-{person % 3}"
        kind = rng.choices(["ad_impression", "ad_click", "page_view", "form_submit", "message_in"],
                           [50, 15, 28, 2, 5])[0]
        ev = {"event_id": f"s{seq[0]}", "tenant_id": tenant, "occurred_at": iso(now_ms), "type": kind,
              "channel": "ads" if kind.startswith("ad_") else ("live_chat" if kind == "message_in" else "web"),
              "identities": {"anonymous_id": f"v{person}"},
              "campaign": {"source": "google", "medium": "cpc", "name": rng.choice(["spring", "summer"])}}
        if kind == "message_in":
            conv = {"id": f"c{person}", "team": "support"}
            ev["conversation"] = conv
            seq[0] += 1
            reply = dict(ev, event_id=f"s{seq[0]}", type="message_out", conversation=dict(conv, agent_id="a1"))
            replies.setdefault(tick + rng.randint(2, 20), []).append((tenant.encode(), reply))
        out.append((tenant.encode(), ev))
    return out


def test_steady_load_without_memory_growth(pipeline_env: dict[str, str], tmp_path: Path,
                                           workers: list[WorkerProc]) -> None:
    notifiers = tmp_path / "notifiers.json"
    notifiers.write_text('{"notifiers": {}, "paging": {"retention_s": 120}}')
    env = dict(pipeline_env, TOUCHSTREAM_DEDUP_WINDOW_S="120", TOUCHSTREAM_ALLOWED_LATENESS_S="60",
               TOUCHSTREAM_NOTIFIERS_FILE=str(notifiers))
    prefix, bootstrap = env["TOUCHSTREAM_TOPIC_PREFIX"], env["KAFKA_BOOTSTRAP_SERVERS"]
    group = env["TOUCHSTREAM_APP_ID"]
    w = start_worker(env, tmp_path / "worker.log", workers)
    rng = random.Random(3)
    replies: dict[int, list[Record]] = {}
    seq = [0]
    samples: list[tuple[float, int, int]] = []  # (minute, rss MB, raw lag)
    t0 = time.monotonic()
    next_sample, tick = t0 + SAMPLE_S, 0
    while (elapsed := time.monotonic() - t0) < MINUTES * 60:
        traffic = second_of_traffic(rng, int(time.time() * 1000), RATE, replies, tick, seq)
        produce(bootstrap, prefix + "touchpoints.raw", [(k, orjson.dumps(v)) for k, v in traffic])
        tick += 1
        if time.monotonic() >= next_sample:
            assert w.alive(), w.tail()
            samples.append((elapsed / 60, rss_kb(w.proc.pid) // 1024,  # type: ignore[union-attr]
                            stage_lag(bootstrap, group, prefix, "touchpoints.raw")))
            next_sample += SAMPLE_S
        time.sleep(max(0.0, t0 + tick - time.monotonic()))
    wait_until(lambda: stage_lag(bootstrap, group, prefix, "touchpoints.raw") == 0, 120, what="input to drain")
    assert w.stop() == 0, w.tail()

    print("\nminute  rss_mb  raw_lag")
    for minute, rss, lag in samples:
        print(f"{minute:6.1f}  {rss:6d}  {lag:7d}")
    warm = [s for s in samples if s[0] >= MINUTES * 0.4]
    assert len(warm) >= 4, samples
    k = max(2, len(warm) // 5)
    start, end = statistics.median(s[1] for s in warm[:k]), statistics.median(s[1] for s in warm[-k:])
    print(f"RSS after warm-up {start} MB, at the end {end} MB ({seq[0]} events at {RATE}/s)")
    assert end - start <= max(64, 0.10 * start), f"RSS grew from {start} MB to {end} MB after warm-up"
