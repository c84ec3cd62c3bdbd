"""Broker failure on a 3-node KRaft cluster (RF 3, min.insync.replicas 2, acks=all).

Mid-run, the broker leading most partitions of the busiest topic is stopped; processing
must continue on the new leaders and every event must end up in ClickHouse exactly once.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest
from aiokafka.admin import AIOKafkaAdminClient

from streams.localkafka import LocalKafka
from tests.conftest import JARS, WorkerProc, ch_query, start_worker, wait_until, worker_ready
from tests.kafka_util import produce, stage_lag

pytestmark = [pytest.mark.integration, pytest.mark.faults]


@pytest.fixture(scope="module")
def cluster() -> Iterator[LocalKafka]:
    base = Path(tempfile.mkdtemp(prefix="ts-kafka3-"))
    # below Linux's ephemeral range (32768-60999): a port there can be taken by any client
    # socket's local end first (a CI run lost node 3 to "Address already in use" on 39112)
    port = int(os.environ.get("TOUCHSTREAM_TEST_KAFKA3_PORT", "29392"))
    k = LocalKafka(base, nodes=3, base_port=port, libs_root=JARS)
    k.start(timeout=180)
    try:
        yield k
    finally:
        k.stop()
        shutil.rmtree(base, ignore_errors=True)


def leaders(bootstrap: str, topic: str) -> Counter[int]:
    async def go() -> Counter[int]:
        admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
        await admin.start()
        try:
            (meta,) = await admin.describe_topics([topic])
            return Counter(p["leader"] for p in meta["partitions"])
        finally:
            await admin.close()

    return asyncio.run(go())


def test_leader_loss_mid_run_loses_nothing(cluster: LocalKafka, pipeline_env: dict[str, str], tmp_path: Path,
                                          workers: list[WorkerProc]) -> None:
    env = dict(pipeline_env, KAFKA_BOOTSTRAP_SERVERS=cluster.bootstrap, TOUCHSTREAM_REPLICATION="3")
    prefix, bootstrap = env["TOUCHSTREAM_TOPIC_PREFIX"], cluster.bootstrap
    group = env["TOUCHSTREAM_APP_ID"]
    w = start_worker(env, tmp_path / "worker.log", workers)
    # the failure is to hit a running worker: one still starting creates Faust's own topics
    # (its assignor's leader topic, RF 3), which cannot be created with a broker down
    wait_until(lambda: worker_ready(env), 180, what="worker ready", explain=w.tail)

    n = 3000
    events = [{
        "event_id": f"b-{i}", "tenant_id": f"tenant-{i % 5}", "occurred_at": "2026-01-01T10:00:00Z",
        "channel": "web", "type": "page_view", "identities": {"anonymous_id": f"anon-{i % 300}"},
    } for i in range(n)]

    def feed() -> None:
        for k in range(10):
            part = events[k * 300:(k + 1) * 300]
            produce(bootstrap, prefix + "touchpoints.raw", [(e["tenant_id"].encode(), orjson.dumps(e)) for e in part])
            time.sleep(0.5)

    t = threading.Thread(target=feed)
    t.start()
    time.sleep(2.0)
    victim = leaders(bootstrap, prefix + "touchpoints.valid").most_common(1)[0][0]
    cluster.stop_node(victim)
    t.join(120)
    assert not t.is_alive()
    survivors = ",".join(node.bootstrap for node in cluster.nodes if node.node_id != victim)
    wait_until(lambda: stage_lag(survivors, group, prefix, "touchpoints.valid") == 0, 300, what="processing")
    wait_until(lambda: stage_lag(survivors, group, prefix, "touchpoints.enriched") == 0, 300, what="sink")
    cluster.start_node(victim)
    assert w.alive(), w.tail()
    assert w.stop() == 0, w.tail()
    assert ch_query(env, "SELECT count(), uniqExact(event_id) FROM {db}.touchpoints FINAL") == [[n, n]]
