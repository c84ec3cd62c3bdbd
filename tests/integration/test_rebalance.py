"""Add a second processing worker mid-run, then remove it (graceful SIGTERM) mid-run: the state
moves with its partitions both ways and ClickHouse still equals the offline ground truth.

Processing runs in two ``process`` workers with their own state directories and one ``sink``
worker owns the embedded ClickHouse (one engine per path). Each partition's state reaches the
new owner only through the changelog, so any state that failed to move would show up as a
wrong session or funnel count.
"""

from __future__ import annotations

import time
from pathlib import Path

import orjson
import pytest

from tests.conftest import WorkerProc, free_port, start_worker, wait_until
from tests.integration.exactness import assert_clickhouse_exact, ground_truth, make_events
from tests.kafka_util import produce, read_all, stage_lag

pytestmark = [pytest.mark.integration, pytest.mark.faults]


def assigned(port: str) -> list[int]:
    import urllib.request

    try:
        body = urllib.request.urlopen(f"http://127.0.0.1:{port}/ready", timeout=3).read()
    except OSError as exc:  # 503 while recovering raises HTTPError (an OSError) with the body
        body = getattr(exc, "read", lambda: b"{}")()
    return list(orjson.loads(body or b"{}").get("assigned_partitions", []))


def tasks_activated(port: str) -> dict[str, float]:
    import urllib.request

    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    out = {"reused": 0.0, "restored": 0.0}
    for line in text.splitlines():
        if line.startswith("touchstream_tasks_activated_total{"):
            how = line.split('how="', 1)[1].split('"', 1)[0]
            out[how] = float(line.rsplit(" ", 1)[1])
    return out


def test_add_and_remove_a_worker_mid_run(pipeline_env: dict[str, str], tmp_path: Path,
                                         workers: list[WorkerProc]) -> None:
    env = dict(pipeline_env, TOUCHSTREAM_IDLE_ADVANCE_S="100000")
    prefix, bootstrap = env["TOUCHSTREAM_TOPIC_PREFIX"], env["KAFKA_BOOTSTRAP_SERVERS"]
    group = env["TOUCHSTREAM_APP_ID"]
    events = make_events(4000, seed=23)
    truth = ground_truth(events, tmp_path)
    msgs = [(e["tenant_id"].encode(), orjson.dumps(e)) for e in events]
    third = len(msgs) // 3

    p1_env = dict(env, TOUCHSTREAM_ROLE="process")
    p1 = start_worker(p1_env, tmp_path / "p1.log", workers)
    sink = WorkerProc(dict(env, TOUCHSTREAM_ROLE="sink", TOUCHSTREAM_WEB_PORT=str(free_port())),
                      tmp_path / "sink.log").start()
    workers.append(sink)
    produce(bootstrap, prefix + "touchpoints.raw", msgs[:third])
    time.sleep(1.0)

    # add a worker while the first slice is being processed: partitions (and state) move to it
    p2_env = dict(env, TOUCHSTREAM_ROLE="process", TOUCHSTREAM_WEB_PORT=str(free_port()),
                  TOUCHSTREAM_DATA_DIR=str(tmp_path / "p2"))
    p2 = WorkerProc(p2_env, tmp_path / "p2.log").start()
    workers.append(p2)
    produce(bootstrap, prefix + "touchpoints.raw", msgs[third:2 * third])
    wait_until(lambda: assigned(p2_env["TOUCHSTREAM_WEB_PORT"]) and assigned(p1_env["TOUCHSTREAM_WEB_PORT"]), 90,
               what="both workers to own partitions")
    # the partitions the first worker kept came straight back from their parked tasks (an eager
    # rebalance revokes everything): only the ones it had not held were read from the changelog
    wait_until(lambda: tasks_activated(p1_env["TOUCHSTREAM_WEB_PORT"])["reused"] >= 1, 60,
               what="the first worker to reuse a parked task", explain=p1.tail)

    # remove it again mid-run: its partitions (and their state) go back to the first worker
    produce(bootstrap, prefix + "touchpoints.raw", msgs[2 * third:])
    assert p2.stop() == 0, p2.tail()
    wait_until(lambda: assigned(p1_env["TOUCHSTREAM_WEB_PORT"]) == [0, 1, 2, 3], 90,
               what="the first worker to own every partition again")

    def lag_report() -> str:
        return str({t: stage_lag(bootstrap, group, prefix, t) for t in ("touchpoints.raw", "touchpoints.valid")})

    for topic in ("touchpoints.raw", "touchpoints.valid"):
        wait_until(lambda t=topic: stage_lag(bootstrap, group, prefix, t) == 0, 300, what=f"processing of {topic}",
                   explain=lag_report)
    for topic in ("touchpoints.enriched", "sessions.closed", "funnel.live"):
        wait_until(lambda t=topic: stage_lag(bootstrap, group, prefix, t) == 0, 120,
                   what=f"sink of {topic}")
    enriched = {orjson.loads(v)["event_id"] for _, v, _ in read_all(bootstrap, prefix + "touchpoints.enriched")}
    assert enriched == {e["event_id"] for e in events}, f"{len(enriched)} distinct enriched of {len(events)}"
    for w in (p1, sink):
        assert w.stop() == 0, w.tail()
    assert_clickhouse_exact(env, truth)
