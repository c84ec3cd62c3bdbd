"""Shared fixtures: a real Kafka broker for the session, and worker processes per test.

The broker is the project's own KRaft launcher (Maven-resolved jars cached under
``.touchstream/kafka``), on ports 29092+ so it never collides with ``make run``. Set
``KAFKA_BOOTSTRAP_SERVERS`` to run the integration tests against an existing cluster instead.
Each test gets its own topic prefix and consumer group, so tests never see each other's data.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
JARS = ROOT / ".touchstream" / "kafka"


@pytest.fixture(scope="session")
def kafka_bootstrap() -> Iterator[str]:
    external = os.environ.get("KAFKA_BOOTSTRAP_SERVERS")
    if external:
        yield external
        return
    from streams.localkafka import LocalKafka

    base = Path(tempfile.mkdtemp(prefix="ts-kafka-"))
    k = LocalKafka(base, nodes=1, base_port=int(os.environ.get("TOUCHSTREAM_TEST_KAFKA_PORT", "29092")),
                   libs_root=JARS)
    k.start(timeout=120)
    try:
        yield k.bootstrap
    finally:
        k.stop()
        shutil.rmtree(base, ignore_errors=True)


class WorkerProc:
    """A ``touchstream worker`` subprocess with its own data dir; killable like production."""

    def __init__(self, env: dict[str, str], log: Path, args: tuple[str, ...] = ("worker",)) -> None:
        self.env = env
        self.log = log
        self.args = args
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> WorkerProc:
        fh = open(self.log, "ab")  # noqa: SIM115 - owned by the child
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "streams", *self.args],
            env=self.env, stdout=fh, stderr=subprocess.STDOUT, cwd=ROOT, start_new_session=True,
        )
        fh.close()
        return self

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self, timeout: float = 60.0) -> int | None:
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        return self.proc.returncode

    def kill9(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)

    def tail(self, n: int = 4000) -> str:
        return self.log.read_text(errors="replace")[-n:] if self.log.exists() else ""


def terminate(proc: subprocess.Popen[bytes], timeout: float = 60.0) -> int:
    """SIGTERM, as a supervisor stops a worker; its whole process group is killed if it does not
    exit within ``timeout``. Returns the exit code."""
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(10)
    return proc.returncode


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def pipeline_env(kafka_bootstrap: str, tmp_path: Path) -> dict[str, str]:
    run_id = uuid.uuid4().hex[:8]
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TOUCHSTREAM_", "CLICKHOUSE_"))}
    env.update(
        KAFKA_BOOTSTRAP_SERVERS=kafka_bootstrap,
        TOUCHSTREAM_DATA_DIR=str(tmp_path / "data"),
        TOUCHSTREAM_TOPIC_PREFIX=f"t{run_id}.",
        TOUCHSTREAM_APP_ID=f"ts-{run_id}",
        TOUCHSTREAM_PARTITIONS="4",
        TOUCHSTREAM_SINK_FLUSH_S="0.3",
        TOUCHSTREAM_WEB_PORT=str(free_port()),
        TOUCHSTREAM_LOG_LEVEL="warn",
        PYTHONPATH=str(ROOT),
    )
    return env


@pytest.fixture
def workers(tmp_path: Path) -> Iterator[list[WorkerProc]]:
    procs: list[WorkerProc] = []
    yield procs
    for w in procs:
        w.kill9() if w.alive() else None


def start_worker(env: dict[str, str], log: Path, workers: list[WorkerProc], timeout: float = 90.0) -> WorkerProc:
    """Start a worker, register it for cleanup, and wait until it created the test's topics."""
    from tests.kafka_util import topic_counts

    w = WorkerProc(env, log).start()
    workers.append(w)
    prefix, bootstrap = env["TOUCHSTREAM_TOPIC_PREFIX"], env["KAFKA_BOOTSTRAP_SERVERS"]
    wait_until(lambda: prefix + "touchpoints.raw" in topic_counts(bootstrap, prefix=prefix)["topics"], timeout,
               what="worker to create topics")
    return w


def worker_ready(env: dict[str, str]) -> bool:
    """The worker's ``/ready`` answers 200: started, state recovered, ClickHouse reachable."""
    import urllib.request

    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{env['TOUCHSTREAM_WEB_PORT']}/ready", timeout=5) as r:
            return bool(r.status == 200)
    except OSError:
        return False


def wait_until(pred, timeout: float, interval: float = 0.25, what: str = "condition",  # type: ignore[no-untyped-def]
               explain=None):
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = pred()
        if last:
            return last
        time.sleep(interval)
    detail = f"; {explain()}" if explain is not None else ""
    raise AssertionError(f"timed out after {timeout}s waiting for {what} (last: {last!r}){detail}")


@pytest.fixture(autouse=True)
def _show_worker_logs_on_failure(request: pytest.FixtureRequest, workers: list[WorkerProc]) -> Iterator[None]:
    yield
    rep = getattr(request.node, "rep_call", None)
    if rep is not None and rep.failed:
        for i, w in enumerate(workers):
            print(f"\n----- worker {i} log tail -----\n{w.tail()}")


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]):  # type: ignore[no-untyped-def]
    rep = yield
    setattr(item, "rep_" + rep.when, rep)
    return rep


@pytest.fixture(scope="session")
def chdb_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One embedded engine per process: every in-process ClickHouse test shares this path
    and isolates itself with its own database."""
    return tmp_path_factory.mktemp("chdb") / "engine"


@pytest.fixture
def ch(chdb_path: Path) -> Iterator[object]:
    from streams.clickhouse.client import ClickHouse
    from streams.clickhouse.migrate import migrate

    client = ClickHouse(f"chdb://{chdb_path}", database=f"t_{uuid.uuid4().hex[:10]}")
    migrate(client)
    yield client
    client.command(f"DROP DATABASE IF EXISTS {client.db}")


def ch_query(env: dict[str, str], sql: str) -> list[list[object]]:
    """Query a worker's embedded ClickHouse from a subprocess (the engine is one per process)."""
    code = (
        "import sys, orjson\n"
        "from streams.settings import Settings\n"
        "from streams.clickhouse.client import ClickHouse\n"
        "s = Settings.from_env()\n"
        "ch = ClickHouse(s.clickhouse_url, s.clickhouse_database)\n"
        "rows = ch.query(sys.argv[1].replace('{db}', ch.db))\n"
        "print(orjson.dumps([list(r) for r in rows], default=str).decode())\n"
    )
    out = subprocess.run([sys.executable, "-c", code, sql], env=env, cwd=ROOT, capture_output=True, text=True,
                         timeout=120)
    if out.returncode != 0:
        raise AssertionError(out.stderr[-3000:])
    import orjson

    return orjson.loads(out.stdout)
