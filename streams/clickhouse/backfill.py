"""Load the outputs of ``touchstream process`` into ClickHouse, and simulated history for ``run``.

**Same rows as live.** Each output file is the offline twin of a sink topic
(:data:`streams.app.topics.PROCESS_OUTPUTS` ↔ :data:`streams.offline.OUTPUT_FILES`), and each line
becomes a row through the live sink's :class:`~streams.clickhouse.rows.TableSpec`, so a table
cannot tell a backfilled row from a live one: same columns, same identity, same ``record_key``.

**Idempotent.** Loading the same directory twice changes no count:
- every table is a ReplacingMergeTree keyed by the record's identity (rows.py), so a record loaded
  again collapses with its first copy (``count() ... FINAL`` never changes);
- each batch carries an insert deduplication token made from the table and the bytes of its
  lines, so ClickHouse drops a repeated batch outright and even the raw row count stays the
  same. (The tables remember their last 1000 tokens, ``non_replicated_deduplication_window``:
  with :data:`BATCH_ROWS` per batch that is 50 M rows per table; past that the FINAL count still
  holds.)

``pages.jsonl`` and ``dlq.jsonl`` have no table: pages are delivered live, dead letters stay in
their file (``touchstream dlq`` works on the topic).

A line that cannot become a row (a truncated file, another tool's JSON) is counted per table with
the first reason, never silently skipped; the rest of the file loads.

**Simulated history** (:func:`load_history`): ``touchstream run`` starts with the last hours of a
simulated feed loaded through the offline core, so the board, ``query`` and Grafana have
sessions, funnels, SLA attainment and anomalies to show at once. docs/operations.md says how it
joins the live run that follows.
"""

from __future__ import annotations

import hashlib
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from streams.app import topics
from streams.clickhouse.client import ClickHouse
from streams.clickhouse.rows import SPECS, TableSpec
from streams.offline import OUTPUT_FILES
from streams.progress import Progress

BATCH_ROWS = 50_000

_ATTR_OF_TOPIC = {topic: attr for topic, attr, _ in topics.PROCESS_OUTPUTS}
_FILE_OF_ATTR = dict(OUTPUT_FILES)
#: table → output file of ``touchstream process`` that holds its records
FILES: dict[str, str] = {spec.table: _FILE_OF_ATTR[_ATTR_OF_TOPIC[spec.topic]] for spec in SPECS}


@dataclass
class TableLoad:
    file: str
    lines: int = 0
    rows: int = 0
    rejected: int = 0
    first_rejection: str | None = None


@dataclass
class Loaded:
    tables: dict[str, TableLoad] = field(default_factory=dict)
    seconds: float = 0.0

    @property
    def rejected(self) -> int:
        return sum(t.rejected for t in self.tables.values())

    def as_dict(self) -> dict[str, Any]:
        return {
            "tables": {name: {"file": t.file, "rows": t.rows, "rejected": t.rejected,
                              **({"first_rejection": t.first_rejection} if t.first_rejection else {})}
                       for name, t in self.tables.items()},
            "seconds": round(self.seconds, 3),
        }


def batch_token(table: str, lines: list[bytes]) -> str:
    """The same lines of the same table give the same token (and nothing else does, in practice)."""
    h = hashlib.blake2b(digest_size=16)
    h.update(b"backfill|" + table.encode() + b"|")
    for line in lines:
        h.update(line)
        h.update(b"\n")
    return h.hexdigest()


def _batches(spec: TableSpec, path: Path, load: TableLoad, progress: Progress | None,
             batch_rows: int) -> Iterator[tuple[list[tuple[Any, ...]], list[bytes]]]:
    rows: list[tuple[Any, ...]] = []
    raw: list[bytes] = []
    with open(path, "rb") as fh:
        for lineno, line in enumerate(fh, 1):
            line = line.rstrip(b"\r\n")
            if not line.strip():
                continue
            load.lines += 1
            try:
                rows.append(spec.to_row(orjson.loads(line)))
            except Exception as exc:  # any malformed line: counted with its reason, the file goes on
                load.rejected += 1
                if load.first_rejection is None:
                    load.first_rejection = f"{path.name}:{lineno}: {type(exc).__name__}: {exc}"[:300]
                continue
            raw.append(line)
            if len(rows) >= batch_rows:
                yield rows, raw
                rows, raw = [], []
            if progress is not None and load.lines % 4096 == 0:
                progress.advance(4096)
    if rows:
        yield rows, raw
    if progress is not None:
        progress.advance(load.lines % 4096)


def _count_lines(path: Path) -> int:
    with open(path, "rb") as fh:
        return sum(1 for _ in fh)


def load(ch: ClickHouse, out_dir: Path, progress: Progress | None = None, batch_rows: int = BATCH_ROWS) -> Loaded:
    """Insert every output file of ``out_dir`` into its table (see the module doc)."""
    out_dir = Path(out_dir)
    if not out_dir.is_dir():
        raise FileNotFoundError(2, "no such directory (give the --out directory of `touchstream process`)",
                                str(out_dir))
    present = {table: out_dir / name for table, name in FILES.items() if (out_dir / name).is_file()}
    if not present:
        raise FileNotFoundError(2, f"no output of `touchstream process` here (expected {', '.join(FILES.values())})",
                                str(out_dir))
    if progress is not None:
        progress.set_total(sum(_count_lines(p) for p in present.values()))
    t0 = time.monotonic()
    result = Loaded()
    for spec in SPECS:
        path = present.get(spec.table)
        if path is None:
            continue
        tl = result.tables[spec.table] = TableLoad(path.name)
        for rows, raw in _batches(spec, path, tl, progress, batch_rows):
            ch.insert(spec.table, rows, spec.columns, batch_token(spec.table, raw))
            tl.rows += len(rows)
    result.seconds = time.monotonic() - t0
    return result


# ----------------------------------------------------------------------------- simulated history

MINUTE_MS = 60_000


@dataclass
class History:
    start_ms: int
    end_ms: int
    events: int
    loaded: Loaded
    anomalies: int
    seconds: float


def history_window(ch: ClickHouse, now_ms: int, span_ms: int, window_ms: int = MINUTE_MS) -> tuple[int, int] | None:
    """(start, end) of the history to load, or None when there is nothing to fill.

    The end is ``now`` rounded down to a funnel window, so the history's last window and the live
    run's first one never share a key (a funnel row of one would replace the other's). The start is
    ``span`` earlier, or just after the newest touchpoint already in ClickHouse, so a second
    ``run`` on the same data dir fills only the gap since the last one instead of laying a second
    history over the first."""
    end = now_ms - now_ms % window_ms
    start = end - span_ms
    rows = ch.query(f"SELECT count(), toUnixTimestamp64Milli(max(occurred_at)) FROM {ch.db}.touchpoints "
                    f"WHERE occurred_at <= fromUnixTimestamp64Milli({int(end)}, 'UTC')")
    if rows and int(rows[0][0]) > 0:
        newest = int(rows[0][1])
        start = max(start, newest - newest % window_ms + window_ms)
    return (start, end) if end - start >= window_ms else None


def history_incidents(cfg: Any) -> tuple[Any, ...]:
    """Incidents the detector can see in a thin, short feed: placed after its warm-up (40 % of the
    span), on the largest series (the first tenant's biggest campaign), plus a silent support team
    for SLA breaches. A span under 45 minutes (a gap filler) gets none."""
    from streams.devtools.simulate import Incident, tenant_specs

    span = cfg.duration_s * 1000
    if span < 45 * MINUTE_MS:
        return ()
    specs = tenant_specs(cfg)
    first = specs[0]
    big = max(first.campaigns, key=lambda c: c.share)
    second = specs[1 % len(specs)]
    team = "support" if any(t == "support" for t, _, _ in second.teams) else second.teams[0][0]

    def at(frac: float, length: float) -> tuple[int, int]:
        s = cfg.start_ms + int(span * frac)
        s -= s % MINUTE_MS
        return s, s + max(MINUTE_MS, int(span * length) // MINUTE_MS * MINUTE_MS)

    return (
        Incident("tracking_broken", first.tenant_id, *at(0.40, 0.125), campaign=big.name, channel=big.channel,
                 stage_to="impression", factor=0.0),
        Incident("landing_page_outage", first.tenant_id, *at(0.60, 0.2), campaign=big.name, channel=big.channel,
                 stage_from="click", stage_to="visit", factor=0.0),
        Incident("team_silent", second.tenant_id, *at(0.85, 0.1), team=team, factor=0.0),
    )


def load_history(ch: ClickHouse, config: Any, window: tuple[int, int], rate: float, seed: int,
                 progress: Progress | None = None) -> History:
    """Simulate ``window`` at ``rate`` events/s, run it through the offline core (``config``: the
    same PipelineConfig as the worker's) and load the outputs. ``seed`` should differ from the live
    feed's, so the two do not replay the same visitors (docs/operations.md)."""
    from streams.devtools import simulate
    from streams.offline import run as run_offline

    t0 = time.monotonic()
    start, end = window
    cfg = simulate.SimConfig(rate=rate, duration_s=(end - start) / 1000, seed=seed, start_ms=start)
    cfg = simulate.SimConfig(rate=rate, duration_s=cfg.duration_s, seed=seed, start_ms=start,
                             incidents=history_incidents(cfg))
    with tempfile.TemporaryDirectory(prefix="touchstream-history-") as tmp:
        summary = run_offline((simulate.dumps(ev) for ev in simulate.generate(cfg)), Path(tmp), config,
                              source="history", progress=progress)
        loaded = load(ch, Path(tmp))
    written = summary.written or {}
    return History(start, end, summary.valid, loaded, written.get("anomalies", 0), time.monotonic() - t0)
