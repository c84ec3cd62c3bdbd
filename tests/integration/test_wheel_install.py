"""The wheel, installed in a fresh venv (not editable), migrates, answers a query and runs a worker.

Issue 19: the image installed the package without ``schemas/`` and ``touchstream migrate`` failed
("no migrations in .../site-packages/schemas/clickhouse"). Here the wheel is built from a copy of
the sources, installed with its declared dependencies into a new venv, and every command runs
from a directory without a source tree and without PYTHONPATH, so only what the wheel carries
can be used.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import orjson
import pytest

from tests.conftest import ROOT, terminate, wait_until, worker_ready
from tests.integration.drain import wait_drained

pytestmark = pytest.mark.integration


def _run(cmd: list[str], env: dict[str, str], cwd: Path, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    res = subprocess.run(cmd, env=env, cwd=cwd, capture_output=True, text=True, timeout=timeout)
    assert res.returncode == 0, f"{cmd} exited {res.returncode}:\n{res.stdout[-3000:]}\n{res.stderr[-3000:]}"
    return res


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """bin/ of a fresh venv holding the wheel built from this checkout."""
    base = tmp_path_factory.mktemp("wheel")
    src = base / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(ROOT / name, src / name)
    shutil.copytree(ROOT / "schemas", src / "schemas")
    shutil.copytree(ROOT / "streams", src / "streams", symlinks=True,
                    ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    _run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--wheel-dir", str(base / "dist"), str(src)],
         env, base, timeout=600)
    wheels = list((base / "dist").glob("touchstream-*.whl"))
    assert len(wheels) == 1, wheels
    _run([sys.executable, "-m", "venv", str(base / "venv")], env, base)
    _run([str(base / "venv" / "bin" / "python"), "-m", "pip", "install", "-q", str(wheels[0])], env, base, timeout=900)
    return base / "venv" / "bin"


def test_installed_wheel_migrates_queries_and_runs_a_worker(installed: Path, pipeline_env: dict[str, str],
                                                            tmp_path: Path) -> None:
    env = {k: v for k, v in pipeline_env.items() if k != "PYTHONPATH"}
    env["PATH"] = f"{installed}{os.pathsep}{env.get('PATH', '')}"
    cwd = tmp_path / "elsewhere"  # no source tree here
    cwd.mkdir()
    ts = str(installed / "touchstream")

    where = _run([str(installed / "python"), "-c", "import streams, sys; print(streams.__file__)"], env, cwd)
    assert where.stdout.strip().startswith(str(installed.parent)), where.stdout  # the wheel's copy, not ROOT
    assert not list(installed.parent.glob("lib/python*/site-packages/__editable__*"))

    migrated = _run([ts, "migrate", "--quiet"], env, cwd)
    assert "applied (0001" in migrated.stdout, migrated.stdout

    log = tmp_path / "worker.log"
    with open(log, "wb") as fh:
        worker = subprocess.Popen([ts, "worker"], env=env, cwd=cwd, stdout=fh, stderr=subprocess.STDOUT,
                                  start_new_session=True)
    try:
        wait_until(lambda: worker_ready(env), 120, what="installed worker ready",
                   explain=lambda: log.read_text(errors="replace")[-3000:])
        _run([ts, "simulate", "--rate", "100", "--duration", "3", "--seed", "5", "--out", "kafka", "--quiet"], env, cwd)
        wait_drained(env, timeout=180, explain=lambda: log.read_text(errors="replace")[-3000:])
    finally:
        terminate(worker)
    assert worker.returncode == 0, log.read_text(errors="replace")[-3000:]

    t0 = time.monotonic()
    res = _run([ts, "query", "funnel", "--tenant", "acme-shop", "--since", "1h", "--json"], env, cwd)
    rows = orjson.loads(res.stdout)
    by_stage = {r["stage"]: r["persons"] for r in rows}
    assert by_stage.get("impression", 0) > 0 and by_stage.get("click", 0) > 0, rows
    assert time.monotonic() - t0 < 60
