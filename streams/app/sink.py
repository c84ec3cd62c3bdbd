"""Agents: output topics → ClickHouse, one generic agent per table spec.

Batches are cut by size (``TOUCHSTREAM_SINK_BATCH_ROWS``) and time (``TOUCHSTREAM_SINK_FLUSH_S``)
with ``take_events``; the insert runs on the ClickHouse thread, and the batch is acked only
after it succeeded, so Kafka offsets never pass rows that are not in ClickHouse. A failed
insert is retried with jittered exponential backoff for as long as it takes; meanwhile this
agent consumes nothing more, Faust's bounded stream buffer fills, and fetching pauses: memory
stays bounded and nothing is lost. Re-delivered rows collapse in the ReplacingMergeTree tables
(natural keys), and an identical re-sent batch is dropped outright by its deduplication token.

Stop and rebalance during an outage: Faust then waits for every in-flight event to be acked
(``wait_empty``, before it cancels any agent) and would wait forever for a batch that cannot be
inserted: SIGTERM hung until SIGKILL, and a rebalance stalled the whole group. So once Faust's
flow control is suspended, a failing batch is *abandoned*: released for Faust but never acked,
so its offsets are not committed and it is read again from the committed offset (after the
restart, or by the partition's new owner).
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
from streams.app.inorder import abandon
from streams.clickhouse.rows import SPECS, TableSpec

if TYPE_CHECKING:
    from streams.app.runtime import Runtime

log = logging.getLogger(__name__)


def batch_token(table: str, events: list[Any]) -> str:
    """Same records (same offsets) → same token, so ClickHouse drops an identical re-insert.

    The token names every offset as contiguous runs, not just each partition's first and last:
    a batch with a hole (a message Faust dropped on a rebalance) and its complete re-read have
    the same span, and a span-only token made ClickHouse drop the complete batch as a duplicate
    of the incomplete one, losing the record in the hole.
    """
    offsets: dict[tuple[str, int], list[int]] = {}
    for ev in events:
        m = ev.message
        offsets.setdefault((m.topic, m.partition), []).append(m.offset)
    parts = []
    for (topic, partition), offs in sorted(offsets.items()):
        offs.sort()
        runs, start, prev = [], offs[0], offs[0]
        for o in offs[1:]:
            if o != prev + 1:
                runs.append(f"{start}-{prev}")
                start = o
            prev = o
        runs.append(f"{start}-{prev}")
        parts.append(f"{topic}:{partition}:{','.join(runs)}")
    text = table + ";" + ";".join(parts)
    return hashlib.blake2b(text.encode(), digest_size=16).hexdigest()


async def insert_with_retry(rt: Runtime, spec: TableSpec, rows: list[tuple[Any, ...]], token: str) -> bool:
    """True once the rows are in ClickHouse; False if Faust stops or rebalances while inserts still fail."""
    delay = 0.2
    while True:
        try:
            await rt.clickhouse.run(rt.clickhouse.insert, spec.table, rows, spec.columns, token)
            metrics.SINK_ROWS.labels(spec.table).inc(len(rows))
            metrics.SINK_BATCH.labels(spec.table).observe(len(rows))
            rt.stats[f"ch_{spec.table}"] = rt.stats.get(f"ch_{spec.table}", 0) + len(rows)
            return True
        except Exception as exc:  # any ClickHouse/network failure: keep the batch, back off, retry
            metrics.SINK_ERRORS.labels(spec.table).inc()
            rt.clickhouse.reset()
            if not rt.app.flow_control.is_active():
                log.warning("insert into %s failed (%s) while the worker stops or rebalances; %d rows stay "
                            "uncommitted and will be read again", spec.table, exc, len(rows))
                return False
            metrics.SINK_RETRIES.labels(spec.table).inc()
            log.warning("insert into %s failed (%s); retrying in %.1fs", spec.table, exc, delay)
            await _backoff(rt, delay * (0.5 + random.random()))
            delay = min(delay * 2, 30.0)


async def _backoff(rt: Runtime, seconds: float) -> None:
    """Sleep, but wake early when Faust suspends flow (stop/rebalance): it is waiting for this batch."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + seconds
    while rt.app.flow_control.is_active() and (left := deadline - loop.time()) > 0:
        await asyncio.sleep(min(left, 0.25))


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
        if rows and not await insert_with_retry(rt, spec, rows, batch_token(spec.table, events)):
            abandon(events)
