"""The only broker goes away for half a minute and comes back.

What an operator relies on during an outage: ``/ready`` says 503 within seconds (a probe, not a
guess from the stages, which retry quietly), the log says what is wrong a few times instead of
thousands of lines, nothing crashes, and once the broker is back the worker is ready again and
processes what was sent meanwhile. (Before: ``/ready`` stayed 200 through a 24 s outage and the
log grew by ~8,200 lines.)
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest

from streams.localkafka import LocalKafka
from tests.conftest import JARS, WorkerProc, start_worker, wait_until
from tests.integration.drain import wait_drained
from tests.kafka_util import message_count, produce

pytestmark = [pytest.mark.integration, pytest.mark.faults]

OUTAGE_S = 24


@pytest.fixture
def broker() -> Iterator[LocalKafka]:
    base = Path(tempfile.mkdtemp(prefix="ts-kafka-outage-"))
    k = LocalKafka(base, nodes=1, base_port=int(os.environ.get("TOUCHSTREAM_TEST_KAFKA_OUTAGE_PORT", "29492")),
                   libs_root=JARS)
    k.start(timeout=120)
    try:
        yield k
    finally:
        k.stop()
        shutil.rmtree(base, ignore_errors=True)


def ready(port: str) -> tuple[int, dict]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/ready", timeout=5) as r:
            return r.status, orjson.loads(r.read())
    except urllib.error.HTTPError as exc:
        return exc.code, orjson.loads(exc.read() or b"{}")
    except OSError:
        return 0, {}


def events(prefix: str, n: int) -> list[tuple[bytes, bytes]]:
    now = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime()) + ".000Z"
    return [(f"t{i % 3}".encode(), orjson.dumps({
        "event_id": f"{prefix}-{i}", "tenant_id": f"t{i % 3}", "occurred_at": now, "channel": "web",
        "type": "page_view", "identities": {"anonymous_id": f"a{i % 50}"}})) for i in range(n)]


def test_ready_follows_the_broker_and_the_log_stays_short(broker: LocalKafka, pipeline_env: dict[str, str],
                                                          tmp_path: Path, workers: list[WorkerProc]) -> None:
    env = dict(pipeline_env, KAFKA_BOOTSTRAP_SERVERS=broker.bootstrap, TOUCHSTREAM_LOG_LEVEL="info")
    prefix, port = env["TOUCHSTREAM_TOPIC_PREFIX"], env["TOUCHSTREAM_WEB_PORT"]
    log = tmp_path / "worker.log"
    w = start_worker(env, log, workers)
    produce(broker.bootstrap, prefix + "touchpoints.raw", events("before", 300))
    wait_until(lambda: ready(port)[0] == 200, 90, what="worker ready", explain=w.tail)
    wait_drained(env, {"touchpoints.enriched": 300})

    lines_before = len(log.read_text(errors="replace").splitlines())
    broker.stop_node(1)
    t0 = time.monotonic()
    _, body = wait_until(lambda: (r := ready(port))[0] == 503 and r, 15, what="/ready 503 after the broker left")
    assert body["kafka"] is False, body
    print(f"\n/ready answered 503 {time.monotonic() - t0:.1f}s after the broker stopped")
    time.sleep(max(0.0, OUTAGE_S - (time.monotonic() - t0)))
    outage_lines = log.read_text(errors="replace").splitlines()[lines_before:]
    print(f"{len(outage_lines)} log lines in the {OUTAGE_S}s outage")
    assert w.alive(), w.tail()
    assert len(outage_lines) < 120, f"{len(outage_lines)} log lines in a {OUTAGE_S}s outage:\n" + "\n".join(
        outage_lines[:40])

    broker.start_node(1)
    broker.wait_ready(120)
    wait_until(lambda: ready(port)[0] == 200, 120, what="ready again after the broker came back", explain=w.tail)
    produce(broker.bootstrap, prefix + "touchpoints.raw", events("after", 300))
    wait_until(lambda: message_count(broker.bootstrap, prefix + "touchpoints.enriched") >= 600, 120,
               what="the events sent after the outage enriched", explain=w.tail)
    assert w.alive() and w.stop() == 0, w.tail()
