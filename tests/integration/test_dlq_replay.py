"""``touchstream dlq replay`` on the real broker: a config fix makes dead letters valid again.

Story: the workers run with a tight ``TOUCHSTREAM_MAX_FUTURE_S`` (60 s), so events whose device
clocks run 10 minutes ahead are dead-lettered as ``future_timestamp``. The limit is raised to
3600 s and the letters are replayed. Checked, with the replay CLI run as a subprocess:

* ``--reason`` filters: replaying another reason re-sends nothing;
* replayed too early (workers still on the old limit) the replay re-sends what it found and
  stops; it does not chase the letters the old workers write again;
* after the workers run the new limit, every replayed event reaches ``touchpoints.enriched`` and
  ClickHouse exactly once, under its original key and bytes;
* replaying again re-sends nothing (committed progress per reason), and a replay of all reasons
  (another progress group) re-sends the letters a second time, which the pipeline drops as
  duplicates: still exactly once downstream.
"""

from __future__ import annotations

import subprocess
import sys
import time
import urllib.request
from collections import Counter
from pathlib import Path
from typing import Any

import orjson
import pytest

from streams.core.contract import format_timestamp
from tests.conftest import ROOT, WorkerProc, ch_query, start_worker, wait_until
from tests.kafka_util import message_count, produce, read_all, stage_lag

pytestmark = pytest.mark.integration

N_OK, N_FUTURE, N_CHANNEL, N_OLD = 40, 30, 15, 10
N_LETTERS = N_FUTURE + N_CHANNEL + N_OLD


def _event(i: int, kind: str, ts: int) -> dict[str, Any]:
    return {
        "event_id": f"{kind}-{i}", "tenant_id": f"r{i % 2}", "occurred_at": format_timestamp(ts),
        "channel": "fax" if kind == "channel" else "web", "type": "page_view",
        "identities": {"anonymous_id": f"anon-{i % 7}"}, "campaign": {"name": "replay"},
    }


def replay(env: dict[str, str], *args: str, timeout: float = 90) -> dict[str, int]:
    out = subprocess.run([sys.executable, "-m", "streams", "dlq", "replay", "--timeout", "3", *args], env=env,
                         cwd=ROOT, capture_output=True, text=True, timeout=timeout)
    assert out.returncode == 0, out.stderr[-3000:]
    return orjson.loads(out.stdout.strip().splitlines()[-1])


def metric(env: dict[str, str], name: str) -> float:
    text = urllib.request.urlopen(f"http://127.0.0.1:{env['TOUCHSTREAM_WEB_PORT']}/metrics", timeout=10).read()
    for line in text.decode().splitlines():
        if line.startswith(name + " "):
            return float(line.split()[-1])
    return 0.0


@pytest.mark.timeout(420)
def test_replay_after_config_fix_is_exactly_once(pipeline_env: dict[str, str], tmp_path: Path,
                                                 workers: list[WorkerProc]) -> None:
    t0 = time.monotonic()
    strict = {**pipeline_env, "TOUCHSTREAM_MAX_FUTURE_S": "60"}
    fixed = {**pipeline_env, "TOUCHSTREAM_MAX_FUTURE_S": "3600"}
    prefix, bootstrap, group = strict["TOUCHSTREAM_TOPIC_PREFIX"], strict["KAFKA_BOOTSTRAP_SERVERS"], \
        strict["TOUCHSTREAM_APP_ID"]
    raw, dlq, enriched = (prefix + t for t in ("touchpoints.raw", "touchpoints.dlq", "touchpoints.enriched"))

    def lags() -> dict[str, int | None]:
        return {t: stage_lag(bootstrap, group, prefix, t)
                for t in ("touchpoints.raw", "touchpoints.valid", "touchpoints.enriched")}

    def drained() -> bool:
        return all(lag == 0 for lag in lags().values())

    def state() -> str:
        counts = {t: message_count(bootstrap, t) for t in (raw, dlq, enriched)}
        return f"lags={lags()} messages={counts}\n{w.tail()}"

    w = start_worker(strict, tmp_path / "worker-strict.log", workers)
    now = int(time.time() * 1000)
    ok = [_event(i, "ok", now - 60_000 + i * 100) for i in range(N_OK)]
    future = [_event(i, "future", now + 600_000 + i * 100) for i in range(N_FUTURE)]  # 10 min ahead
    channel = [_event(i, "channel", now - 30_000 + i) for i in range(N_CHANNEL)]  # never fixed by config
    old = [_event(i, "old", 1000 * i) for i in range(N_OLD)]  # 1970: bad_timestamp, never fixed
    originals = [(e["event_id"].encode(), orjson.dumps(e)) for e in ok + future + channel + old]
    produce(bootstrap, raw, originals)
    wait_until(lambda: message_count(bootstrap, dlq) >= N_LETTERS and message_count(bootstrap, enriched) >= N_OK,
               90, what="letters and valid events", explain=w.tail)
    wait_until(drained, 60, what="strict worker drained", explain=state)
    letters = Counter(orjson.loads(v)["reason"] for _, v, _ in read_all(bootstrap, dlq))
    assert letters == {"future_timestamp": N_FUTURE, "unknown_channel": N_CHANNEL, "bad_timestamp": N_OLD}

    # --reason filters: nothing of another reason is re-sent, and still-invalid letters stay put
    r = replay(fixed, "--reason", "bad_timestamp")
    assert r["read"] == N_LETTERS and r["resent"] == 0 and r["still_invalid"] == N_OLD, r
    assert r["other_reason"] == N_FUTURE + N_CHANNEL, r
    assert message_count(bootstrap, raw) == len(originals)

    # Too early: the workers still run the old limit and dead-letter the re-sent events again. The
    # replay must stop after the letters it found instead of re-sending the new ones in a loop.
    r = replay(fixed, "--reason", "future_timestamp", timeout=60)
    assert r["resent"] == N_FUTURE and r["other_reason"] == N_CHANNEL + N_OLD, r
    wait_until(lambda: message_count(bootstrap, dlq) >= N_LETTERS + N_FUTURE, 60, what="letters written again")
    wait_until(drained, 60, what="strict worker drained", explain=state)
    assert message_count(bootstrap, enriched) == N_OK
    assert w.stop() == 0, w.tail()

    # The fix rolls out: same worker (state, group), larger limit
    w = start_worker(fixed, tmp_path / "worker-fixed.log", workers)
    r = replay(fixed, "--reason", "future_timestamp")
    assert r["read"] == N_FUTURE and r["resent"] == N_FUTURE and r["still_invalid"] == 0, r  # only the new letters
    wait_until(lambda: message_count(bootstrap, enriched) >= N_OK + N_FUTURE, 90, what="replayed events enriched",
               explain=state)
    wait_until(drained, 60, what="worker drained", explain=state)

    # again: progress is committed, nothing is re-sent
    r = replay(fixed, "--reason", "future_timestamp")
    assert r["read"] == 0 and r["resent"] == 0, r
    raw_before = message_count(bootstrap, raw)
    assert raw_before == len(originals) + 2 * N_FUTURE

    # all reasons: a separate progress group, so the future letters (both rounds) are re-sent once
    # more; the pipeline's event_id dedup drops them
    r = replay(fixed)
    assert r["read"] == N_LETTERS + N_FUTURE and r["resent"] == 2 * N_FUTURE, r
    assert r["still_invalid"] == N_CHANNEL + N_OLD and r["other_reason"] == 0, r
    assert message_count(bootstrap, raw) == raw_before + 2 * N_FUTURE
    wait_until(drained, 60, what="worker drained after the second replay", explain=state)
    # Every record the fixed worker consumed from touchpoints.valid is either one of the N_FUTURE
    # events it accepted or counted as a duplicate; the second replay alone makes 2 * N_FUTURE of
    # them (more only if the worker re-read records after a rebalance: at-least-once input).
    duplicates = metric(fixed, "touchstream_duplicates_total")
    consumed = metric(fixed, 'touchstream_events_in_total{topic="touchpoints.valid"}')
    assert duplicates == consumed - N_FUTURE and duplicates >= 2 * N_FUTURE, (duplicates, consumed)
    assert message_count(bootstrap, dlq) == N_LETTERS + N_FUTURE  # the fixed worker dead-letters nothing
    assert w.alive(), w.tail()
    assert w.stop() == 0, w.tail()

    # downstream: every ok and replayed event exactly once, with the original timestamp
    out = [orjson.loads(v) for _, v, _ in read_all(bootstrap, enriched)]
    assert Counter(e["event_id"] for e in out) == Counter(e["event_id"] for e in ok + future)
    by_id = {e["event_id"]: e for e in out}
    assert all(by_id[e["event_id"]]["occurred_at"] == e["occurred_at"] for e in future)
    ids = {e["event_id"] for e in ok + future}
    assert ch_query(fixed, "SELECT count() FROM {db}.touchpoints FINAL") == [[len(ids)]]
    assert ch_query(fixed, "SELECT count() FROM {db}.touchpoints") == [[len(ids)]]
    assert {r[0] for r in ch_query(fixed, "SELECT event_id FROM {db}.touchpoints")} == ids

    # replays are byte-for-byte, under the original key: original + 4 re-sends of each future event
    sent = Counter((k, v) for k, v, _ in read_all(bootstrap, raw))
    assert all(sent[(k, v)] == 5 for k, v in originals[N_OK:N_OK + N_FUTURE])
    assert all(sent[(k, v)] == 1 for k, v in originals[:N_OK] + originals[N_OK + N_FUTURE:])
    print(f"\nreplay test: {time.monotonic() - t0:.1f}s")
