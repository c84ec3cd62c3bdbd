"""The sink benchmark, tiny: every table gets its rows for real, and the figures are usable.

Why check counts and not just the timings: a benchmark whose inserts were silently dropped
(dedup token reuse, rows collapsing on a shared key) would report fantastic and meaningless
rows/s. ``count() FINAL`` equal to the rows inserted proves both that they landed and that the
copies of the pool got distinct keys.
"""

from __future__ import annotations

from typing import Any

from streams.clickhouse.rows import SPECS
from streams.devtools.bench_sink import measure, sink_rows_per_s

ROWS = 2_000


def test_every_table_gets_exactly_its_rows_and_a_positive_rate(ch: Any) -> None:
    results = measure(ch, ROWS, batch_rows=700)
    assert [r.table for r in results] == [s.table for s in SPECS]
    for r in results:
        assert r.rows == ROWS and r.batches == 3 and r.rows_per_s > 0, r
        assert ch.count(r.table, final=False) == ROWS, r.table
        assert ch.count(r.table, final=True) == ROWS, r.table  # distinct keys: nothing collapses


def test_public_function_returns_rows_per_second_per_table(ch: Any) -> None:
    """Through the URL + database entry point, twice: a re-run is not dropped as a duplicate insert."""
    def newer_than(table: str, since: Any) -> int:
        sql = f"SELECT count() FROM {ch.db}.{table} FINAL WHERE ingested_at >= {{t:DateTime64(3)}}"
        return int(ch.query(sql, {"t": since})[0][0])

    for _ in range(2):
        since = ch.query("SELECT now64(3)")[0][0]
        assert all(newer_than(s.table, since) == 0 for s in SPECS)  # the filter really tells runs apart
        rates = sink_rows_per_s(ch.url, ch.db, 1_000, 1_000)
        assert set(rates) == {s.table for s in SPECS}
        assert all(v > 0 for v in rates.values()), rates
        # the same keys again: FINAL keeps the newest version, which must come from this run
        assert {s.table: newer_than(s.table, since) for s in SPECS} == {s.table: 1_000 for s in SPECS}
