"""Progress reporter (injected clock and stream) and its use by the long-running commands."""

from __future__ import annotations

import io
from itertools import pairwise
from pathlib import Path
from typing import Any

import pytest

from streams.progress import ERASE_EOL, Progress, fmt_duration


class Clock:
    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


def make(tty: bool, **kw: Any) -> tuple[Progress, io.StringIO, Clock]:
    clock, stream = Clock(), io.StringIO()
    return Progress("replay", stream=stream, clock=clock, tty=tty, **kw), stream, clock


def test_fmt_duration() -> None:
    assert [fmt_duration(x) for x in (0, 7.4, 59.6, 754, 3723)] == ["0:00", "0:07", "1:00", "12:34", "1:02:03"]


def test_not_a_tty_one_line_every_interval_then_the_final_line() -> None:
    p, out, clock = make(False, total=1000, unit="letters")
    for _ in range(9):
        clock.t += 1
        p.advance(10)
    assert out.getvalue() == ""  # nothing before the first 10 s
    clock.t += 1
    p.advance(10)  # 100 of 1000 after 10 s
    assert out.getvalue() == "replay: 100/1,000 letters  10/s  elapsed 0:10  10.0%  ETA 1:30\n"
    clock.t += 5
    p.advance(100)
    assert out.getvalue().count("\n") == 1  # next line only 10 s after the last one
    clock.t += 5
    p.advance(100)
    assert out.getvalue().splitlines()[-1] == "replay: 300/1,000 letters  15/s  elapsed 0:20  30.0%  ETA 0:47"
    p.close()
    p.close()  # idempotent
    lines = out.getvalue().splitlines()
    assert len(lines) == 3 and lines[-1] == "replay: 300/1,000 letters  15/s  elapsed 0:20  done"
    assert "\r" not in out.getvalue()


def test_tty_rewrites_one_line_rate_limited() -> None:
    p, out, clock = make(True, unit="lines")
    p.advance(5)
    assert out.getvalue() == ""
    clock.t += 0.125
    p.advance(5)
    assert out.getvalue() == ""  # under the 0.2 s redraw period
    clock.t += 0.125
    p.advance(5)
    first = out.getvalue()
    assert first.startswith("\r") and first.endswith(ERASE_EOL) and "\n" not in first
    assert "replay: 15 lines  60/s  elapsed 0:00" in first and "%" not in first  # size unknown: no % or ETA
    clock.t += 2
    p.update(1000, fraction=0.25)
    assert "25.0%  ETA 0:07" in out.getvalue()  # 2.25 s for a quarter: 6.75 s to go
    p.close()
    assert out.getvalue().endswith(ERASE_EOL + "\n") and out.getvalue().count("\n") == 1


def test_quiet_writes_nothing_and_failures_are_marked() -> None:
    p, out, clock = make(True, enabled=False)
    clock.t += 60
    p.advance(10)
    p.close()
    assert out.getvalue() == ""
    p, out, clock = make(False)
    with pytest.raises(RuntimeError), p:
        clock.t += 1
        p.advance()
        raise RuntimeError("boom")
    assert out.getvalue().endswith("(failed)\n")


def test_a_broken_stream_never_fails_the_work() -> None:
    class Broken(io.StringIO):
        def write(self, s: str) -> int:
            raise OSError("EPIPE")

    p = Progress("x", stream=Broken(), clock=Clock(), tty=False, log_every_s=0)
    p.advance()
    p.close()
    assert not p.enabled


def test_stream_without_isatty_counts_as_not_a_tty() -> None:
    class Plain:
        def write(self, s: str) -> None: ...

        def flush(self) -> None: ...

    assert Progress("x", stream=Plain()).tty is False  # type: ignore[arg-type]


def test_cli_quiet_flag_before_or_after_the_command() -> None:
    from streams.cli import build_parser

    parser = build_parser()
    assert parser.parse_args(["--quiet", "process", "f", "--out", "o"]).quiet is True
    assert parser.parse_args(["process", "f", "--out", "o", "-q"]).quiet is True
    assert parser.parse_args(["process", "f", "--out", "o"]).quiet is False
    assert parser.parse_args(["dlq", "replay", "--quiet"]).quiet is True
    assert parser.parse_args(["migrate", "-q"]).quiet is True
    assert parser.parse_args(["status"]).quiet is False


def test_simulate_to_file_reports_progress_and_writes_the_same_bytes(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from streams.cli import build_parser
    from streams.devtools import simulate

    start = "1767225600000"
    argv = ["simulate", "--rate", "30", "--duration", "600", "--seed", "4", "--start-ms", start]
    args = build_parser().parse_args([*argv, "--out", str(tmp_path / "a.jsonl")])
    assert args.fn(args) == 0
    err = capsys.readouterr().err
    assert "simulate: " in err and "messages" in err and "done" in err
    cfg = simulate.SimConfig(rate=30, duration_s=600, seed=4, start_ms=int(start))
    n = simulate.write_jsonl(cfg, tmp_path / "b.jsonl")
    assert (tmp_path / "a.jsonl").read_bytes() == (tmp_path / "b.jsonl").read_bytes()
    assert f"wrote {n} messages" in err
    args = build_parser().parse_args([*argv, "--out", str(tmp_path / "c.jsonl"), "--quiet", "--noise", "0.1"])
    assert args.fn(args) == 0
    err = capsys.readouterr().err
    assert "simulate: " not in err and "wrote" in err
    noisy = list(simulate.add_noise(simulate.generate(cfg), 0.1, 4))
    assert (tmp_path / "c.jsonl").read_bytes() == b"".join(x + b"\n" for x in noisy)


def test_offline_run_reports_lines_and_the_fraction_of_the_file(tmp_path: Path) -> None:
    from streams.devtools import simulate
    from streams.offline import process_file

    cfg = simulate.SimConfig(rate=20, duration_s=300, seed=2, start_ms=1_767_225_600_000, incidents=())
    n = simulate.write_jsonl(cfg, tmp_path / "in.jsonl")
    fractions: list[float | None] = []

    class Spy(Progress):
        def update(self, count: int, *, fraction: float | None = None) -> None:
            fractions.append(fraction)
            super().update(count, fraction=fraction)

    spy = Spy("process", stream=io.StringIO(), clock=Clock(), tty=False)
    summary = process_file(tmp_path / "in.jsonl", tmp_path / "out", progress=spy)
    assert spy.count == summary.lines == n and fractions[-1] == 1.0
    assert all(a is not None and b is not None and a <= b for a, b in pairwise(fractions))
    assert len(fractions) >= n // 1024


def test_migrate_counts_pending_statements(chdb_path: Path) -> None:
    import uuid

    from streams.clickhouse.client import ClickHouse
    from streams.clickhouse.migrate import load, migrate, statements

    ch = ClickHouse(f"chdb://{chdb_path}", database=f"t_{uuid.uuid4().hex[:10]}")
    try:
        p = Progress("migrate", stream=io.StringIO(), clock=Clock(), tty=False, unit="statements")
        migrate(ch, progress=p)
        assert p.total == p.count == sum(len(statements(m.sql)) for m in load()) > 0
        again = Progress("migrate", stream=io.StringIO(), clock=Clock(), tty=False)
        migrate(ch, progress=again)
        assert again.total == again.count == 0
    finally:
        ch.command(f"DROP DATABASE IF EXISTS {ch.db}")
