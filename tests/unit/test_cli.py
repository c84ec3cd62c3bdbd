"""The ``touchstream`` command as a person meets it: help, version, and one-line answers to
expected failures (issue 19), each with exit code 1 and no traceback.

Commands that open ClickHouse run as subprocesses: the embedded engine is one per process and
this test process may hold another one (tests/conftest.py ``chdb_path``). The broker cases need
no broker: an address where nothing listens is the failure under test.
"""

from __future__ import annotations

import argparse
import os
import re
import socket
import subprocess
import sys
import time
from pathlib import Path

import orjson
import pytest

from streams import cli

ROOT = Path(__file__).resolve().parents[2]


def _env(tmp_path: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TOUCHSTREAM_", "CLICKHOUSE_", "KAFKA_"))}
    env.update(TOUCHSTREAM_DATA_DIR=str(tmp_path / "data"), PYTHONPATH=str(ROOT), **extra)
    return env


def touchstream(tmp_path: Path, *argv: str, timeout: float = 120, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "streams", *argv], env=_env(tmp_path, **env), cwd=tmp_path,
                          capture_output=True, text=True, timeout=timeout)


def assert_one_line(res: subprocess.CompletedProcess[str], *needles: str) -> str:
    """Exit 1, stderr is exactly one line (no traceback, no library warning), naming ``needles``."""
    err = res.stderr.strip()
    assert res.returncode == 1, (res.returncode, res.stdout[-2000:], res.stderr[-3000:])
    assert len(err.splitlines()) == 1, err
    assert "Traceback" not in err and "Unclosed" not in err
    for n in needles:
        assert n in err, (n, err)
    return err


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# ----------------------------------------------------------------------------- help


def _subparsers() -> dict[str, argparse.ArgumentParser]:
    parser = cli.build_parser()
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return dict(action.choices)


def test_every_command_help_has_description_flag_help_example_and_environment() -> None:
    docs = cli._env_docs()
    subs = _subparsers()
    assert {"run", "worker", "kafka", "migrate", "simulate", "process", "backfill", "status", "query", "dlq",
            "evaluate", "bench"} <= set(subs)
    for name, p in subs.items():
        p.format_help()  # renders
        assert p.description and len(p.description) > 40, name
        assert re.search(r"examples:\n  (\S+=\S+ )*touchstream ", p.epilog or ""), name
        assert "environment:\n" in (p.epilog or ""), name
        for action in p._actions:
            if action.dest != "help":
                assert action.help, f"{name}: {action.option_strings or action.dest} has no help"
        for var in re.findall(r"^  ((?:TOUCHSTREAM|KAFKA|CLICKHOUSE)_[A-Z0-9_]+) ", p.epilog or "", re.M):
            assert var in docs, f"{name}: {var} is not documented in streams/settings.py"
        for tenant in re.findall(r"--tenant ([a-z0-9-]+)", p.epilog or ""):
            assert tenant in cli.TENANTS, f"{name}: example tenant {tenant} is not one the simulator produces"


def test_example_tenants_are_the_simulators() -> None:
    from streams.devtools import simulate

    cfg = simulate.SimConfig(rate=1, duration_s=1, seed=1, start_ms=0)
    assert tuple(t.tenant_id for t in simulate.tenant_specs(cfg)) == cli.TENANTS


def test_settings_table_is_parsed_for_every_variable() -> None:
    from streams import settings

    docs = cli._env_docs()
    named = set(re.findall(r"\b((?:TOUCHSTREAM|KAFKA|CLICKHOUSE)_[A-Z0-9_]+)\b", settings.__doc__ or ""))
    assert named and named <= set(docs), named - set(docs)
    assert "default: 6066" in docs["TOUCHSTREAM_WEB_PORT"] and "default: 127.0.0.1" in docs["TOUCHSTREAM_WEB_HOST"]
    # the worker's help lists every variable it reads
    worker_epilog = _subparsers()["worker"].epilog or ""
    assert all(v in worker_epilog for v in named)


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        cli.main(["--version"])
    assert exc.value.code == 0
    assert re.fullmatch(r"touchstream \S+\n", capsys.readouterr().out)


# ----------------------------------------------------------------------------- one-line failures


def test_missing_input_file(tmp_path: Path) -> None:
    assert_one_line(touchstream(tmp_path, "process", "nope.jsonl", "--out", "out"), "nope.jsonl", "not found",
                    "touchstream simulate")
    assert_one_line(touchstream(tmp_path, "evaluate", "--truth", "t.json", "--anomalies", "a.jsonl"), "t.json")
    assert_one_line(touchstream(tmp_path, "backfill", "nowhere"), "nowhere", "touchstream process")


def test_debug_shows_the_traceback(tmp_path: Path) -> None:
    res = touchstream(tmp_path, "--debug", "process", "nope.jsonl", "--out", "out")
    assert res.returncode == 1 and "Traceback" in res.stderr and "CliError" in res.stderr


@pytest.mark.parametrize("argv", [
    ("worker",), ("run", "--history", "0"), ("simulate", "--duration", "2", "--out", "kafka"), ("dlq", "replay"),
])
def test_unreachable_broker(tmp_path: Path, argv: tuple[str, ...]) -> None:
    port = free_port()  # nothing listens there
    res = touchstream(tmp_path, *argv, KAFKA_BOOTSTRAP_SERVERS=f"127.0.0.1:{port}",
                      TOUCHSTREAM_WEB_PORT=str(free_port()))
    assert_one_line(res, f"127.0.0.1:{port}", "KAFKA_BOOTSTRAP_SERVERS")


def test_malformed_sla_policy_names_file_and_variable_before_kafka_starts(tmp_path: Path) -> None:
    bad = tmp_path / "policies.json"
    for content in (b'{"policies": 5}', b"not json"):
        bad.write_bytes(content)
        t0 = time.monotonic()
        res = touchstream(tmp_path, "run", TOUCHSTREAM_SLA_POLICIES=str(bad), TOUCHSTREAM_KAFKA_PORT=str(free_port()))
        assert_one_line(res, "TOUCHSTREAM_SLA_POLICIES", str(bad))
        assert not (tmp_path / "data" / "kafka").exists(), "Kafka was started before the policy file was read"
        assert time.monotonic() - t0 < 60
    res = touchstream(tmp_path, "worker", TOUCHSTREAM_SLA_POLICIES=str(bad), KAFKA_BOOTSTRAP_SERVERS="127.0.0.1:1")
    assert_one_line(res, "TOUCHSTREAM_SLA_POLICIES")  # the file first: fixing the broker would not help


def test_web_port_in_use_before_kafka_starts(tmp_path: Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        res = touchstream(tmp_path, "run", TOUCHSTREAM_WEB_PORT=str(port), TOUCHSTREAM_KAFKA_PORT=str(free_port()))
    assert_one_line(res, "TOUCHSTREAM_WEB_PORT", str(port))
    assert not (tmp_path / "data" / "kafka").exists()


def test_bad_setting_names_the_variable(tmp_path: Path) -> None:
    assert_one_line(touchstream(tmp_path, "status", TOUCHSTREAM_PARTITIONS="many"), "TOUCHSTREAM_PARTITIONS")


def test_query_on_a_fresh_data_dir(tmp_path: Path) -> None:
    res = touchstream(tmp_path, "query", "funnel", "--tenant", "acme-shop")
    assert_one_line(res, "touchstream run", "touchstream migrate")
    assert_one_line(touchstream(tmp_path, "query", "sla", "--since", "soon"), "--since")


def _loaded_data_dir(tmp_path: Path) -> None:
    """A data dir with history in ClickHouse (simulate → process → backfill)."""
    start = str(int(time.time() * 1000) - 20 * 60_000)
    for argv in (("simulate", "--rate", "5", "--duration", "600", "--seed", "2", "--start-ms", start, "--out",
                  str(tmp_path / "feed.jsonl"), "-q"),
                 ("process", str(tmp_path / "feed.jsonl"), "--out", str(tmp_path / "out"), "--into-clickhouse", "-q")):
        res = touchstream(tmp_path, *argv)
        assert res.returncode == 0, res.stderr[-3000:]


def test_query_into_a_closed_pipe_ends_quietly(tmp_path: Path) -> None:
    _loaded_data_dir(tmp_path)
    ok = touchstream(tmp_path, "query", "funnel", "--since", "1h", "--json")
    assert ok.returncode == 0 and orjson.loads(ok.stdout), ok.stderr
    proc = subprocess.Popen([sys.executable, "-m", "streams", "query", "funnel", "--since", "1h"],
                            env=_env(tmp_path), cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert proc.stdout is not None and proc.stderr is not None
    proc.stdout.close()  # `| head` that has already read what it wanted
    err = proc.stderr.read().decode()
    assert proc.wait(120) == cli.EXIT_BROKEN_PIPE
    assert err == "", err


def test_status_and_query_say_busy_while_a_process_holds_the_engine(tmp_path: Path) -> None:
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time\nfrom streams.clickhouse.client import ClickHouse\n"
         "c = ClickHouse(sys.argv[1]); c.query('SELECT 1'); print('held', flush=True); time.sleep(120)",
         f"chdb://{tmp_path / 'data' / 'clickhouse'}"],
        env=_env(tmp_path), cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == b"held"
        res = touchstream(tmp_path, "status", "--json", TOUCHSTREAM_KAFKA_PORT=str(free_port()))
        assert res.returncode == 0, res.stderr
        ch = orjson.loads(res.stdout)["clickhouse"]
        assert ch["busy"] is True and ch["held_by_pid"] == holder.pid and "busy" in ch["error"]
        assert "Code:" not in res.stderr and "chdb" not in res.stderr.lower()
        assert_one_line(touchstream(tmp_path, "query", "sla"), "busy", f"process {holder.pid}", "/board")
    finally:
        holder.kill()
        holder.wait(30)


def test_status_after_the_local_broker_stopped(tmp_path: Path) -> None:
    from streams.localkafka import LocalKafka

    kafka_dir = tmp_path / "data" / "kafka"
    kafka_dir.mkdir(parents=True)
    port = free_port()
    # what `run --duration` leaves: the cluster recorded, no node running
    (kafka_dir / "cluster.json").write_text(orjson.dumps({"nodes": 1, "base_port": port, "version": "x"}).decode())
    assert LocalKafka.from_state(kafka_dir) is not None
    res = touchstream(tmp_path, "status", "--json", TOUCHSTREAM_KAFKA_PORT=str(port))
    assert res.returncode == 0, res.stderr
    kafka = orjson.loads(res.stdout)["kafka"]
    assert kafka["local_broker"]["state"] == "stopped" and kafka["reachable"] is False
    assert "touchstream kafka start" in kafka["error"]
    text = touchstream(tmp_path, "status", TOUCHSTREAM_KAFKA_PORT=str(port))
    assert "local broker is stopped" in text.stdout
