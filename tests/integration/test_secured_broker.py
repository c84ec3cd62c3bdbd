"""The pipeline end to end through a secured broker (SASL_SSL, SCRAM-SHA-512), as production runs it.

The launcher (streams/localkafka.py, ``secure=True``) makes a CA and a broker certificate and
creates the SCRAM users with Kafka's storage tool. Every client then has to carry the same
settings (streams/kafka_admin.py ``client_kwargs``) or nothing moves: the worker's stage consumers
(validate, process, one per sink table, pages), its producer, changelog restore, broker probe and
lag admin; the CLI's topic admin and producer (``simulate``), ``status`` (admin + consumer) and
``dlq replay`` (consumer + producer). A plaintext client cannot even connect to this listener.
A wrong password, a missing CA or a plaintext client each end in one clear line.

Ports: ``TOUCHSTREAM_TEST_KAFKA_SECURE_PORT``, default the test broker's port + 150 (29242 for the
default 29092), away from the 3-node cluster's ports.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest

from streams.app import topics
from streams.app.topics import all_groups
from tests.conftest import JARS, ROOT, free_port, terminate, wait_until, worker_ready

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def secured() -> Iterator[dict[str, str]]:
    from streams.localkafka import LocalKafka

    port = int(os.environ.get("TOUCHSTREAM_TEST_KAFKA_SECURE_PORT")
               or int(os.environ.get("TOUCHSTREAM_TEST_KAFKA_PORT", "29092")) + 150)
    base = Path(tempfile.mkdtemp(prefix="ts-kafka-secure-"))
    k = LocalKafka(base, nodes=1, base_port=port, libs_root=JARS, secure=True)
    k.start(timeout=180)
    try:
        yield k.client_env()
    finally:
        k.stop()
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture
def env(secured: dict[str, str], tmp_path: Path) -> dict[str, str]:
    run_id = uuid.uuid4().hex[:8]
    out = {k: v for k, v in os.environ.items() if not k.startswith(("TOUCHSTREAM_", "CLICKHOUSE_", "KAFKA_"))}
    out.update(secured)
    out.update(TOUCHSTREAM_DATA_DIR=str(tmp_path / "data"), TOUCHSTREAM_TOPIC_PREFIX=f"s{run_id}.",
               TOUCHSTREAM_APP_ID=f"ts-sec-{run_id}", TOUCHSTREAM_SINK_FLUSH_S="0.3",
               TOUCHSTREAM_WEB_PORT=str(free_port()), TOUCHSTREAM_LOG_LEVEL="warn", PYTHONPATH=str(ROOT))
    return out


def touchstream(env: dict[str, str], *argv: str, timeout: float = 180) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "streams", *argv], env=env, cwd=ROOT, capture_output=True,
                          text=True, timeout=timeout)


def status(env: dict[str, str]) -> dict:
    res = touchstream(env, "status", "--json")
    assert res.returncode == 0, res.stderr
    return orjson.loads(res.stdout)


def test_pipeline_end_to_end_through_sasl_ssl(env: dict[str, str], tmp_path: Path) -> None:
    assert env["KAFKA_SECURITY_PROTOCOL"] == "SASL_SSL" and env["KAFKA_SASL_MECHANISM"] == "SCRAM-SHA-512"
    log = tmp_path / "worker.log"
    with open(log, "wb") as fh:
        worker = subprocess.Popen([sys.executable, "-m", "streams", "worker"], env=env, cwd=ROOT, stdout=fh,
                                  stderr=subprocess.STDOUT, start_new_session=True)
    tail = lambda: log.read_text(errors="replace")[-3000:]  # noqa: E731
    prefix = env["TOUCHSTREAM_TOPIC_PREFIX"]
    try:
        wait_until(lambda: worker_ready(env), 120, what="worker ready on the secured broker", explain=tail)
        sent = touchstream(env, "simulate", "--rate", "100", "--duration", "4", "--seed", "3", "--out", "kafka", "-q")
        assert sent.returncode == 0, sent.stderr
        n = int(sent.stderr.split("sent ")[1].split()[0])
        assert n > 100

        def drained() -> bool:
            k = status(env)["kafka"]
            enriched = k["topics"].get(prefix + topics.ENRICHED, {}).get("messages", 0)
            lags = [sum(lag.values()) for gid, lag in k["lag"].items() if gid in all_groups(env["TOUCHSTREAM_APP_ID"])]
            return bool(enriched >= n and lags and not any(lags))

        wait_until(drained, 180, interval=1.0, what="every stage caught up on the secured broker", explain=tail)
        time.sleep(1.5)
        # the dead-letter tool: a consumer group and a producer of the CLI, secured alike
        replay = touchstream(env, "dlq", "replay", "--timeout", "3", "-q")
        assert replay.returncode == 0, replay.stderr
        assert orjson.loads(replay.stdout)["read"] == 0
    finally:
        terminate(worker)
    assert worker.returncode == 0, tail()
    assert "Traceback" not in log.read_text(errors="replace"), tail()
    ch = status(env)["clickhouse"]
    assert ch["reachable"] and ch["tables"]["touchpoints"] == n, ch
    k = status(env)["kafka"]
    assert k["reachable"] and k["topics"][prefix + topics.RAW]["messages"] == n


def test_wrong_password_missing_ca_and_plaintext_end_in_one_line(env: dict[str, str]) -> None:
    cases = [
        ({"KAFKA_SASL_PASSWORD": "not-the-password"}, "refused the credentials of KAFKA_SASL_USERNAME=touchstream"),
        ({"KAFKA_SSL_CAFILE": ""}, "KAFKA_SSL_CAFILE"),
        ({"KAFKA_SECURITY_PROTOCOL": "PLAINTEXT"}, "KAFKA_SECURITY_PROTOCOL=PLAINTEXT"),
    ]
    for change, needle in cases:
        bad = {**env, **change}
        for argv in (("worker",), ("simulate", "--duration", "1", "--out", "kafka"), ("dlq", "replay")):
            res = touchstream(bad, *argv, timeout=120)
            err = res.stderr.strip()
            assert res.returncode == 1, (argv, change, res.stderr[-2000:])
            assert len(err.splitlines()) == 1 and needle in err, (argv, change, err)
            assert "Traceback" not in err and "Unclosed" not in err
        report = status(bad)["kafka"]
        assert report["reachable"] is False and needle in report["error"], report
