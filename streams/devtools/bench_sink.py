"""ClickHouse sink throughput per table: how many rows/s the insert path itself takes.

Why a separate figure: ``touchstream bench`` measures the whole live pipeline, where the sink
is one of several stages; when that number is low, this one says whether ClickHouse inserts
are the limit. It times exactly what a sink agent's ClickHouse thread does per batch -
``ClickHouse.insert(table, rows, columns, dedup_token)``, positional rows from the table's
``TableSpec.to_row`` - and nothing else (row generation is done before the clock starts).

Realistic rows: a simulated feed (``streams.devtools.simulate``) is replayed through the offline core
(``streams.offline``), so every record is what the live pipeline would put on the table's
topic (enriched touchpoints with identities and properties, closed sessions, SLA events,
funnel windows, anomalies ...). That pool is smaller than the requested row count for the rare
records (merges, anomalies), so it is repeated; copy k > 0 gets ``~k`` appended to every plain
``String`` column of the table's sorting key (event_id, session_id, wait_id, anomaly_id, the
funnel's campaign, ...), read from ``system.columns``. Every row therefore has a distinct key:
nothing collapses in the ReplacingMergeTree, and ``count() FINAL`` equals the rows inserted.

It writes into ``database`` (created and migrated if needed): point it at a scratch database.
``main()`` defaults to a throwaway embedded engine in a temporary directory.
"""

from __future__ import annotations

import argparse
import functools
import hashlib
import shutil
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from streams.app import topics
from streams.clickhouse.client import ClickHouse, redact
from streams.clickhouse.migrate import migrate
from streams.clickhouse.rows import SPECS, TableSpec
from streams.offline import OUTPUT_FILES

#: topic of a TableSpec → the offline replay's output file holding the same records
OFFLINE_FILE: dict[str, str] = {
    topic: dict(OUTPUT_FILES)[attr] for topic, attr, _ in topics.PROCESS_OUTPUTS if topic in topics.SINK_TOPICS
}

#: the simulated feed behind the pool: ~36k events, 3 tenants, default incidents (so anomalies exist)
POOL_RATE = 20.0
POOL_DURATION_S = 1800.0
POOL_SEED = 7


@dataclass(frozen=True)
class TableResult:
    table: str
    rows: int
    batches: int
    seconds: float  # wall time spent inside ClickHouse.insert only

    @property
    def rows_per_s(self) -> float:
        return self.rows / self.seconds if self.seconds > 0 else 0.0


@functools.lru_cache(maxsize=1)
def record_pool() -> dict[str, tuple[dict[str, Any], ...]]:
    """Topic → records, from a simulated feed run through the offline core (cached: ~2 s).

    The feed starts two hours before now (whole hour), so the rows are recent: the
    touchpoints TTL (``TOUCHSTREAM_RAW_TTL_DAYS``) never removes them under the benchmark.
    """
    from streams.devtools.simulate import SimConfig, dumps, generate
    from streams.offline import run

    hour = 3_600_000
    start_ms = (time.time_ns() // 1_000_000) // hour * hour - 2 * hour
    cfg = SimConfig(rate=POOL_RATE, duration_s=POOL_DURATION_S, seed=POOL_SEED, start_ms=start_ms)
    with tempfile.TemporaryDirectory(prefix="ts-bench-sink-") as tmp:
        out = Path(tmp)
        run((dumps(ev) for ev in generate(cfg)), out, source="bench_sink")
        pool = {
            topic: tuple(orjson.loads(line) for line in (out / name).read_bytes().splitlines() if line.strip())
            for topic, name in OFFLINE_FILE.items()
        }
    empty = [t for t, recs in pool.items() if not recs]
    if empty:  # every table must be measured; an empty pool means the simulator changed under us
        raise RuntimeError(f"the simulated feed produced no records for {empty}")
    return pool


def sorting_key_columns(ch: ClickHouse, table: str, only_string: bool = False) -> list[str]:
    """The table's sorting-key columns; ``only_string``: the plain String ones, which a copy
    suffix can make unique."""
    rows = ch.query(
        "SELECT name FROM system.columns WHERE database = {db:String} AND table = {t:String} "
        "AND is_in_sorting_key" + (" AND type = 'String'" if only_string else "") + " ORDER BY position",
        {"db": ch.db, "t": table},
    )
    return [r[0] for r in rows]


def table_rows(ch: ClickHouse, spec: TableSpec, n: int) -> list[tuple[Any, ...]]:
    """n rows for ``spec.table`` with pairwise distinct sorting keys, built with ``spec.to_row``."""
    base: dict[tuple[Any, ...], tuple[Any, ...]] = {}
    key_idx = [spec.columns.index(c) for c in sorting_key_columns(ch, spec.table) if c in spec.columns]
    for rec in record_pool()[spec.topic]:
        row = spec.to_row(rec)
        base.setdefault(tuple(row[i] for i in key_idx), row)  # the pool itself may repeat a key (re-emits)
    pool = list(base.values())
    if not pool:
        raise RuntimeError(f"no rows for {spec.table}")
    suffix_cols = sorting_key_columns(ch, spec.table, only_string=True)
    suffix_idx = [spec.columns.index(c) for c in suffix_cols if c in spec.columns]
    if not suffix_idx and n > len(pool):
        raise RuntimeError(f"{spec.table}: no String sorting-key column to make {n} distinct rows from {len(pool)}")
    out: list[tuple[Any, ...]] = []
    for i in range(n):
        k, row = divmod(i, len(pool))
        row = pool[row]
        if k:
            cells = list(row)
            for j in suffix_idx:
                cells[j] = f"{cells[j]}~{k}"
            row = tuple(cells)
        out.append(row)
    return out


def measure(ch: ClickHouse, rows_per_table: int, batch_rows: int) -> list[TableResult]:
    """Insert ``rows_per_table`` rows into every sink table in ``batch_rows`` batches, timing the inserts."""
    if rows_per_table <= 0 or batch_rows <= 0:
        raise ValueError("rows_per_table and batch_rows must be positive")
    migrate(ch)
    run_id = uuid.uuid4().hex  # tokens unique per run: a re-run must not be dropped as a duplicate insert
    results = []
    for spec in SPECS:
        rows = table_rows(ch, spec, rows_per_table)
        spent, batches = 0.0, 0
        for start in range(0, len(rows), batch_rows):
            batch = rows[start:start + batch_rows]
            token = hashlib.blake2b(f"{run_id};{spec.table};{start}".encode(), digest_size=16).hexdigest()
            t0 = time.perf_counter()
            ch.insert(spec.table, batch, spec.columns, token)
            spent += time.perf_counter() - t0
            batches += 1
        results.append(TableResult(spec.table, len(rows), batches, spent))
    return results


def sink_rows_per_s(clickhouse_url: str, database: str, rows_per_table: int, batch_rows: int) -> dict[str, float]:
    """Table → rows/s through the sink's insert path, for every TableSpec."""
    ch = ClickHouse(clickhouse_url, database)
    try:
        return {r.table: r.rows_per_s for r in measure(ch, rows_per_table, batch_rows)}
    finally:
        ch.close()


def format_results(results: list[TableResult]) -> str:
    lines = [f"{'table':<16} {'rows':>9} {'batches':>8} {'seconds':>8} {'rows/s':>10}"]
    for r in results:
        lines.append(f"{r.table:<16} {r.rows:>9,} {r.batches:>8} {r.seconds:>8.2f} {r.rows_per_s:>10,.0f}")
    total_rows, total_s = sum(r.rows for r in results), sum(r.seconds for r in results)
    lines.append(f"{'all tables':<16} {total_rows:>9,} {sum(r.batches for r in results):>8} {total_s:>8.2f} "
                 f"{(total_rows / total_s if total_s else 0):>10,.0f}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Print rows/s per table; by default on a throwaway embedded engine (removed afterwards)."""
    p = argparse.ArgumentParser(prog="python -m streams.devtools.bench_sink", description=__doc__.splitlines()[0])
    p.add_argument("--url", help="ClickHouse URL (chdb:///path or http://user:pass@host:8123/db); "
                                 "default: a temporary embedded engine")
    p.add_argument("--database", default="touchstream_bench", help="scratch database the rows go to")
    p.add_argument("--rows", type=int, default=200_000, help="rows per table")
    p.add_argument("--batch", type=int, default=20_000, help="rows per INSERT (TOUCHSTREAM_SINK_BATCH_ROWS)")
    args = p.parse_args(argv)
    tmp = None if args.url else tempfile.mkdtemp(prefix="ts-bench-sink-ch-")
    url = args.url or f"chdb://{tmp}"
    try:
        t0 = time.perf_counter()
        record_pool()
        print(f"row pool from the offline core in {time.perf_counter() - t0:.1f}s; inserting {args.rows:,} rows "
              f"per table in batches of {args.batch:,} into {redact(url)} database {args.database}", flush=True)
        ch = ClickHouse(url, args.database)
        try:
            results = measure(ch, args.rows, args.batch)
        finally:
            ch.close()
        print(format_results(results))
    finally:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
