"""kill -9 the worker at random moments, restart it, and check every count against ground truth
(the offline replay of the same input, see ``tests/integration/exactness.py``)."""

from __future__ import annotations

import random
import time
from pathlib import Path

import orjson
import pytest

from tests.conftest import WorkerProc, start_worker, wait_until
from tests.integration.exactness import assert_clickhouse_exact, ground_truth, make_events
from tests.kafka_util import message_count, produce, read_all, stage_lag, topic_counts

pytestmark = [pytest.mark.integration, pytest.mark.faults]

def test_kill9_restarts_keep_clickhouse_exact(pipeline_env: dict[str, str], tmp_path: Path,
                                              workers: list[WorkerProc]) -> None:
    env = dict(pipeline_env, TOUCHSTREAM_IDLE_ADVANCE_S="100000")  # event time only: comparable to offline
    prefix, bootstrap = env["TOUCHSTREAM_TOPIC_PREFIX"], env["KAFKA_BOOTSTRAP_SERVERS"]
    group = env["TOUCHSTREAM_APP_ID"]
    events = make_events(4000, seed=11)
    truth = ground_truth(events, tmp_path)

    w = start_worker(env, tmp_path / "worker.log", workers)
    rng = random.Random(5)
    # produce in four slices with a kill -9 at a random moment while each slice is being processed
    chunk = len(events) // 4
    for k in range(4):
        part = events[k * chunk:] if k == 3 else events[k * chunk:(k + 1) * chunk]
        produce(bootstrap, prefix + "touchpoints.raw", [(e["tenant_id"].encode(), orjson.dumps(e)) for e in part])
        time.sleep(rng.uniform(0.2, 2.5))
        w.kill9()
        w = WorkerProc(env, tmp_path / f"worker{k}.log").start()
        workers.append(w)

    def lag_report() -> str:
        info = topic_counts(bootstrap, None, prefix=prefix)
        info["lag"] = {t: stage_lag(bootstrap, group, prefix, t) for t in ("touchpoints.raw", "touchpoints.valid")}
        return f"lag={info['lag']} ends={ {t: v['end_offsets'] for t, v in info['topics'].items() if 'valid' in t} }"

    for topic in ("touchpoints.raw", "touchpoints.valid"):
        wait_until(lambda t=topic: stage_lag(bootstrap, group, prefix, t) == 0, 300, what=f"processing of {topic}",
                   explain=lag_report)
    assert message_count(bootstrap, prefix + "touchpoints.valid") >= len(events), lag_report()
    for topic in ("touchpoints.enriched", "sessions.closed", "funnel.live"):
        wait_until(lambda t=topic: stage_lag(bootstrap, group, prefix, t) == 0, 300, what=f"sink of {topic}")
    # every event enriched (at least once): a loss here is the process stage's, not the sink's
    enriched_ids = {orjson.loads(v)["event_id"] for _, v, _ in read_all(bootstrap, prefix + "touchpoints.enriched")}
    missing = sorted({e["event_id"] for e in events} - enriched_ids)
    assert not missing, f"{len(missing)} events never enriched, e.g. {missing[:10]}; {lag_report()}"
    assert w.stop() == 0, w.tail()

    assert_clickhouse_exact(env, truth)
