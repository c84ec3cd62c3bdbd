"""Agents: output topics → ClickHouse, one generic agent per table spec.

Batches are cut by size (``TOUCHSTREAM_SINK_BATCH_ROWS``) and time (``TOUCHSTREAM_SINK_FLUSH_S``)
with ``take_events``; the insert runs on the ClickHouse thread, and the batch is acked only
after it succeeded, so Kafka offsets never pass rows that are not in ClickHouse. A failed
insert is retried with jittered exponential backoff for as long as it takes; meanwhile this
agent consumes nothing more, Faust's bounded stream buffer fills, and fetching pauses: memory
stays bounded and nothing is lost. Re-delivered rows collapse in the ReplacingMergeTree tables
(natural keys), and an identical re-sent batch is dropped outright by its deduplication token.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import random
from typing import TYPE_CHECKING, Any

import orjson

from streams import metrics
from streams.app.guard import complete
from streams.clickhouse.rows import SPECS, TableSpec

if TYPE_CHECKING:
    from streams.app.runtime import Runtime

log = logging.getLogger(__name__)


def batch_token(table: str, events: list[Any]) -> str:
    """Same batch (same offsets) → same token, so ClickHouse drops an identical re-insert."""
    spans: dict[tuple[str, int], list[int]] = {}
    for ev in events:
        m = ev.message
        span = spans.setdefault((m.topic, m.partition), [m.offset, m.offset])
        span[0] = min(span[0], m.offset)
        span[1] = max(span[1], m.offset)
    text = table + ";" + ";".join(f"{t}:{p}:{a}-{b}" for (t, p), (a, b) in sorted(spans.items()))
    return hashlib.blake2b(text.encode(), digest_size=16).hexdigest()


async def insert_with_retry(rt: Runtime, spec: TableSpec, rows: list[tuple[Any, ...]], token: str) -> None:
    delay = 0.2
    while True:
        try:
            await rt.clickhouse.run(rt.clickhouse.insert, spec.table, rows, spec.columns, token)
            metrics.SINK_ROWS.labels(spec.table).inc(len(rows))
            metrics.SINK_BATCH.labels(spec.table).observe(len(rows))
            rt.stats[f"ch_{spec.table}"] = rt.stats.get(f"ch_{spec.table}", 0) + len(rows)
            return
        except Exception as exc:  # any ClickHouse/network failure: keep the batch, back off, retry
            metrics.SINK_ERRORS.labels(spec.table).inc()
            metrics.SINK_RETRIES.labels(spec.table).inc()
            log.warning("insert into %s failed (%s); retrying in %.1fs", spec.table, exc, delay)
            rt.clickhouse.reset()
            await asyncio.sleep(delay * (0.5 + random.random()))
            delay = min(delay * 2, 30.0)


def register(rt: Runtime) -> None:
    s = rt.settings
    for spec in SPECS:
        _register_one(rt, spec, s.sink_batch_rows, s.sink_flush_s)


def _register_one(rt: Runtime, spec: TableSpec, batch_rows: int, flush_s: float) -> None:
    @rt.app.agent(rt.topics[spec.topic], name=f"sink_{spec.table}")
    async def sink_agent(stream):  # type: ignore[no-untyped-def]
        async for events in stream.take_events(batch_rows, within=flush_s):
            await complete(sink_batch(events), f"sink batch for {spec.table}")

    async def sink_batch(events: list[Any]) -> None:
        rows = []
        for ev in events:
            try:
                rows.append(spec.to_row(orjson.loads(ev.value)))
            except Exception as exc:  # our own topic, but never let one bad record stop the sink
                metrics.DLQ.labels(f"sink_{spec.table}").inc()
                log.error("unmappable record on %s at offset %s: %r", spec.topic, ev.message.offset, exc)
        if rows:
            await insert_with_retry(rt, spec, rows, batch_token(spec.table, events))
