"""One-line failures that need a running broker (the rest are in tests/unit/test_cli.py).

A worker whose web port is taken has already connected to Kafka when it finds out: it must still
end in one line naming TOUCHSTREAM_WEB_PORT, exit 1, and leave no client unclosed.
"""

from __future__ import annotations

import socket
import subprocess
import sys

import pytest

from tests.conftest import ROOT

pytestmark = pytest.mark.integration


def test_worker_with_its_web_port_taken(pipeline_env: dict[str, str]) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        env = {**pipeline_env, "TOUCHSTREAM_WEB_PORT": str(port)}
        res = subprocess.run([sys.executable, "-m", "streams", "worker"], env=env, cwd=ROOT, capture_output=True,
                             text=True, timeout=180)
    err = res.stderr.strip()
    assert res.returncode == 1, (res.returncode, res.stderr[-3000:])
    assert len(err.splitlines()) == 1, err
    assert "TOUCHSTREAM_WEB_PORT" in err and str(port) in err
    assert "Traceback" not in err and "Unclosed" not in err
