"""Replays a JSON-lines file through the same core as the live worker, in event time.

The proof that live and offline agree: validation, the pipeline and its outputs are the
same objects; only the clock differs (the replay's clock is the latest ``occurred_at`` seen,
so SLA deadlines and watermarks advance as the events say). Output files are written with
sorted keys, so the same input gives the same bytes.

Pseudonymisation (``PipelineConfig.pseudonyms``) applies here exactly as live: it sits in
``Pipeline.drain``. ``dlq.jsonl`` keeps the original lines, like the live dead-letter topic;
letters of events the core refused (``too_late``, ``future_timestamp``) carry the event as
validated, as they do live.

A backfill is history: the same future bound applies as live (``PipelineConfig.max_future_ms``,
TOUCHSTREAM_MAX_FUTURE_S), against the wall clock at processing time, in the validation and
again in the core. Without it one event dated 9999 moved its tenant's watermark (and the replay
clock, hence every tenant's SLA deadlines) to year 9999. Output bytes therefore depend on the
clock only for events dated within the bound of "now", i.e. not for history.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import orjson

from streams.core.contract import Rejection, validate
from streams.core.deadletter import dlq_record
from streams.core.pipeline import Outputs, Pipeline, PipelineConfig
from streams.progress import Progress

OUTPUT_FILES: tuple[tuple[str, str], ...] = (
    ("enriched", "enriched.jsonl"),
    ("merges", "merges.jsonl"),
    ("sessions", "sessions.jsonl"),
    ("sla", "sla.jsonl"),
    ("response_times", "response_times.jsonl"),
    ("pages", "pages.jsonl"),
    ("funnel", "funnel.jsonl"),
    ("anomalies", "anomalies.jsonl"),
    ("profiles", "profiles.jsonl"),
    ("attribution", "attribution.jsonl"),
)
TICK_MS = 1000  # advance clocks whenever event time crosses a second: deterministic and cheap
PROGRESS_EVERY = 1024  # lines between progress updates (a clock read each: negligible)


@dataclass
class Summary:
    lines: int = 0
    valid: int = 0
    dead_lettered: int = 0
    duplicates: int = 0
    written: dict[str, int] | None = None


def _dumps(obj: Any) -> bytes:
    return orjson.dumps(obj, option=orjson.OPT_SORT_KEYS | orjson.OPT_APPEND_NEWLINE)


class _Writers:
    def __init__(self, out_dir: Path) -> None:
        out_dir.mkdir(parents=True, exist_ok=True)
        self.files: dict[str, IO[bytes]] = {
            attr: open(out_dir / name, "wb")  # noqa: SIM115 - closed in close()
            for attr, name in OUTPUT_FILES
        }
        self.dlq = open(out_dir / "dlq.jsonl", "wb")  # noqa: SIM115
        self.counts: dict[str, int] = {attr: 0 for attr, _ in OUTPUT_FILES}

    def write(self, out: Outputs) -> None:
        for letter in out.dead_letters:
            self.dlq.write(_dumps(letter))
        for attr, _ in OUTPUT_FILES:
            records = getattr(out, attr)
            if records:
                fh = self.files[attr]
                for rec in records:
                    fh.write(_dumps(rec))
                self.counts[attr] += len(records)

    def close(self) -> None:
        for fh in (*self.files.values(), self.dlq):
            fh.close()


def run(
    lines: Iterable[bytes],
    out_dir: Path,
    config: PipelineConfig | None = None,
    source: str = "file",
    progress: Progress | None = None,
    total_bytes: int | None = None,
    wall_clock: Callable[[], int] | None = None,
) -> Summary:
    """``progress``: told the line count (and the fraction of ``total_bytes`` read) every
    ``PROGRESS_EVERY`` lines and at the end; it only reports, it never changes the outputs.
    ``wall_clock``: epoch ms now (default: the system clock), read per line for the future bound."""
    from streams.runtime.gc_policy import tune_collector

    tune_collector()  # the core allocates heavily and keeps much: default thresholds halve its speed
    config = config or PipelineConfig()
    now = wall_clock or _now_ms
    pipeline = Pipeline(config)
    writers = _Writers(out_dir)
    summary = Summary()
    clock: int | None = None
    next_tick: int | None = None
    pos = 0
    try:
        for lineno, line in enumerate(lines):
            if progress is not None:
                pos += len(line)
                if lineno % PROGRESS_EVERY == 0:
                    progress.update(lineno, fraction=pos / total_bytes if total_bytes else None)
            raw = line.rstrip(b"\r\n")
            if not raw.strip():
                continue
            summary.lines += 1
            wall = now()
            res = validate(raw, now_ms=wall, max_future_ms=config.max_future_ms, source=(source, 0, lineno))
            if isinstance(res, Rejection):
                summary.dead_lettered += 1
                at = clock or 0
                writers.dlq.write(_dumps(dlq_record(res.reason, res.detail, raw, (source, 0, lineno), at)))
                continue
            summary.valid += 1
            if clock is None or res.occurred_at > clock:
                clock = res.occurred_at
            if next_tick is None:
                next_tick = clock - clock % TICK_MS + TICK_MS
            if clock >= next_tick:
                pipeline.tick(clock, wall=False)
                next_tick = clock - clock % TICK_MS + TICK_MS
            pipeline.process(res, received_ms=wall)
            out = pipeline.drain()
            summary.duplicates += out.duplicates
            summary.dead_lettered += len(out.dead_letters)
            summary.valid -= len(out.dead_letters)
            writers.write(out)
        if clock is not None:
            pipeline.tick(clock, wall=False)
            pipeline.close_all(clock)
            writers.write(pipeline.drain())
    finally:
        writers.close()
    if progress is not None:
        progress.update(summary.lines, fraction=1.0)
    summary.written = dict(writers.counts)
    return summary


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


def process_file(
    path: Path,
    out_dir: Path,
    config: PipelineConfig | None = None,
    progress: Progress | None = None,
    wall_clock: Callable[[], int] | None = None,
) -> Summary:
    with open(path, "rb") as fh:
        return run(fh, out_dir, config, source=path.name, progress=progress,
                   total_bytes=os.fstat(fh.fileno()).st_size, wall_clock=wall_clock)
