"""Backfill of ``touchstream process`` outputs, and the simulated history of ``touchstream run``, on
the real embedded engine (the ``ch`` fixture: a fresh database per test, migrated).

- every record of every output file becomes the row the live sink would write (same TableSpec);
- loading the same directory twice changes no count, FINAL or raw (identity keys + tokens);
- a malformed line is counted with its reason, the rest loads;
- the history ends on a funnel-window boundary before now, fills only the gap on a second run,
  and carries sessions, replies, funnel windows and at least one anomaly.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import orjson
import pytest

from streams.clickhouse import backfill
from streams.clickhouse.rows import SPECS
from streams.core.pipeline import PipelineConfig
from streams.devtools import simulate
from streams.offline import run

MINUTE = 60_000


def _counts(ch: Any, final: bool) -> dict[str, int]:
    return {spec.table: ch.count(spec.table, final=final) for spec in SPECS}


@pytest.fixture(scope="module")
def outputs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("process-out")
    now = int(time.time() * 1000)
    cfg = simulate.SimConfig(rate=20, duration_s=1200, seed=9, start_ms=now - now % MINUTE - 3_600_000)
    run((simulate.dumps(e) for e in simulate.generate(cfg)), out, PipelineConfig(), source="feed")
    return out


def test_files_map_to_the_sink_tables() -> None:
    assert set(backfill.FILES) == {spec.table for spec in SPECS}
    assert backfill.FILES["touchpoints"] == "enriched.jsonl" and backfill.FILES["funnel_minute"] == "funnel.jsonl"


def test_backfill_loads_every_record_once_and_twice_changes_nothing(ch: Any, outputs: Path) -> None:
    expected = {}
    for spec in SPECS:
        records = [orjson.loads(x) for x in (outputs / backfill.FILES[spec.table]).read_bytes().splitlines()]
        expected[spec.table] = len({spec.identity(r) for r in records})
    assert expected["touchpoints"] > 1000 and expected["sessions"] > 0 and expected["funnel_minute"] > 0

    first = backfill.load(ch, outputs, batch_rows=5000)  # several batches per big table
    assert first.rejected == 0
    assert _counts(ch, final=True) == expected
    raw = _counts(ch, final=False)
    again = backfill.load(ch, outputs, batch_rows=5000)
    assert again.rejected == 0 and {t: x.rows for t, x in again.tables.items()} == {
        t: x.rows for t, x in first.tables.items()}
    assert _counts(ch, final=False) == raw, "a repeated batch must be dropped by its deduplication token"
    assert _counts(ch, final=True) == expected


def test_a_row_is_what_the_live_sink_writes(ch: Any, outputs: Path) -> None:
    backfill.load(ch, outputs)
    rec = orjson.loads((outputs / "enriched.jsonl").read_bytes().splitlines()[0])
    spec = next(s for s in SPECS if s.table == "touchpoints")
    rows = ch.query(f"SELECT {', '.join(spec.columns)} FROM {ch.db}.touchpoints FINAL "
                    "WHERE tenant_id = {t:String} AND event_id = {e:String}",
                    {"t": rec["tenant_id"], "e": rec["event_id"]})
    assert len(rows) == 1
    want = spec.to_row(rec)
    assert rows[0][1] == want[1] and rows[0][-1] == want[-1]  # event_id, record_key


def test_a_malformed_line_is_counted_and_the_rest_loads(ch: Any, outputs: Path, tmp_path: Path) -> None:
    bad = tmp_path / "out"
    bad.mkdir()
    lines = (outputs / "sessions.jsonl").read_bytes().splitlines()
    (bad / "sessions.jsonl").write_bytes(b"\n".join([lines[0], b'{"tenant_id": "x"}', b"{trunc", *lines[1:]]) + b"\n")
    res = backfill.load(ch, bad)
    t = res.tables["sessions"]
    assert (t.rows, t.rejected, set(res.tables)) == (len(lines), 2, {"sessions"})
    assert t.first_rejection is not None and t.first_rejection.startswith("sessions.jsonl:2:")
    assert ch.count("sessions") == len(lines)


def test_not_an_output_directory(ch: Any, tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="touchstream process"):
        backfill.load(ch, tmp_path)
    with pytest.raises(FileNotFoundError, match="touchstream process"):
        backfill.load(ch, tmp_path / "missing")


def test_history_window_ends_before_now_on_a_window_boundary_and_fills_only_the_gap(ch: Any) -> None:
    now = 1_800_000_123_456
    start, end = backfill.history_window(ch, now, 2 * 3_600_000) or (0, 0)
    assert end == now - now % MINUTE and end - start == 2 * 3_600_000
    ch.insert("touchpoints", [("acme-shop", "e1", backfill_dt(end - 10 * MINUTE - 5000), "web", "page_view", "",
                               "p", "s", 0, "", "", "", "", "", "", "", None, "", "{}", "{}", "t", 0, 0, 1)],
              next(s for s in SPECS if s.table == "touchpoints").columns)
    start2, end2 = backfill.history_window(ch, now, 2 * 3_600_000) or (0, 0)
    assert (start2, end2) == (end - 10 * MINUTE, end)  # after the newest event's window
    assert backfill.history_window(ch, end - 10 * MINUTE + 30_000, 2 * 3_600_000) is None


def backfill_dt(ms: int) -> Any:
    from streams.clickhouse.rows import dt

    return dt(ms)


def test_history_has_sessions_replies_funnel_and_an_anomaly(ch: Any) -> None:
    now = int(time.time() * 1000)
    window = backfill.history_window(ch, now, 2 * 3_600_000)
    assert window is not None
    t0 = time.monotonic()
    h = backfill.load_history(ch, PipelineConfig(), window, rate=2.5, seed=2)
    took = time.monotonic() - t0
    counts = _counts(ch, final=True)
    assert counts["touchpoints"] == h.events > 10_000
    assert counts["sessions"] > 0 and counts["response_times"] > 0 and counts["funnel_minute"] > 0
    assert counts["anomalies"] >= 1 and h.anomalies >= 1
    newest = ch.query(f"SELECT toUnixTimestamp64Milli(max(occurred_at)) FROM {ch.db}.touchpoints")[0][0]
    assert window[0] <= newest < window[1] <= now
    assert took < 120  # a few seconds on an idle machine; generous for a loaded CI
