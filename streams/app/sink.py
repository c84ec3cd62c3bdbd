"""Stages: output topics → ClickHouse, one plain consumer group per table.

Batches are cut by size (``TOUCHSTREAM_SINK_BATCH_ROWS``) and age (``TOUCHSTREAM_SINK_FLUSH_S``)
by :class:`streams.runtime.stage.Stage`; each batch becomes one INSERT, run on the ClickHouse
thread, and the batch's offsets are committed only after the insert succeeded, so Kafka
offsets never pass rows that are not in ClickHouse. A failed insert is
retried with jittered exponential backoff for as long as it takes; meanwhile the stage fetches
nothing more (aiokafka's prefetch buffer is bounded), so memory stays bounded and nothing is
lost. Re-delivered rows collapse in the ReplacingMergeTree tables (natural keys), and an
identical re-sent batch is dropped outright by its deduplication token.

Stop and rebalance during an outage: the group (or the supervisor) is waiting for this batch,
so once the stage is stopping or its partitions are being revoked, a failing batch is
*abandoned*: nothing is committed, and it is read again from the committed offset (after the
restart, or by the partition's new owner); otherwise that wait would hang SIGTERM until SIGKILL.

A record that cannot be mapped to a row (someone else wrote the topic, or a contract drifted)
goes to the dead-letter topic with reason ``sink_unmappable`` before the batch is committed:
never silently dropped, never a reason to stop the table.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import random
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import orjson

from streams import metrics
from streams.app import topics
from streams.app.deadletters import SINK_UNMAPPABLE, queue_dead_letter
from streams.clickhouse.rows import SPECS, TableSpec
from streams.runtime.backlog import now_ms
from streams.runtime.producer import BatchSender
from streams.runtime.stage import Handler, Stage

if TYPE_CHECKING:
    from streams.app.worker import Worker

log = logging.getLogger(__name__)


def batch_token(table: str, records: list[Any]) -> str:
    """Same records (same offsets) → same token, so ClickHouse drops an identical re-insert.

    The token names every offset as contiguous runs, not just each partition's first and last:
    a batch with a hole (a compacted or transactional topic, or a consumer that skipped a
    record) and its complete re-read have the same span, and a span-only token would make
    ClickHouse drop the complete batch as a duplicate of the incomplete one, losing the record
    in the hole.
    """
    offsets: dict[tuple[str, int], list[int]] = {}
    for m in records:
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


async def insert_with_retry(rt: Worker, spec: TableSpec, rows: list[tuple[Any, ...]], token: str,
                            keep_trying: Callable[[], bool]) -> bool:
    """True once the rows are in ClickHouse; False if the stage stops or rebalances while inserts still fail."""
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
            if not keep_trying():
                log.warning("insert into %s failed (%s) while the worker stops or rebalances; %d rows stay "
                            "uncommitted and will be read again", spec.table, exc, len(rows))
                return False
            metrics.SINK_RETRIES.labels(spec.table).inc()
            log.warning("insert into %s failed (%s); retrying in %.1fs", spec.table, exc, delay)
            await _backoff(keep_trying, delay * (0.5 + random.random()))
            delay = min(delay * 2, 30.0)


async def _backoff(keep_trying: Callable[[], bool], seconds: float) -> None:
    """Sleep, but wake early when the stage stops or rebalances: the group is waiting for this batch."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + seconds
    while keep_trying() and (left := deadline - loop.time()) > 0:
        await asyncio.sleep(min(left, 0.25))


def stages(rt: Worker) -> list[Stage]:
    """One stage per table, each its own consumer group: a table that cannot be written (an
    outage of one table, a broken schema) holds back only its own topic's commits."""
    s = rt.settings
    return [
        Stage(s, f"sink_{spec.table}", [s.topic(spec.topic)], topics.consumer_group(s.app_id, spec.topic),
              _inserter(rt, spec), s.sink_batch_rows, s.sink_flush_s)
        for spec in SPECS
    ]


def _inserter(rt: Worker, spec: TableSpec) -> Handler:
    sender = BatchSender(rt.out)

    async def sink_batch(records: list[Any], keep_trying: Callable[[], bool]) -> bool:
        rows = []
        for rec in records:
            try:
                rows.append(spec.to_row(orjson.loads(rec.value)))
            except Exception as exc:  # our own topic, but never let one bad record stop the sink
                queue_dead_letter(sender, rt.settings, SINK_UNMAPPABLE, f"{spec.table}: {exc!r}", rec, now_ms())
                log.error("unmappable record on %s at offset %s: %r", rec.topic, rec.offset, exc)
        if sender.pending:
            await sender.send()  # acknowledged before the batch can be committed
        return not rows or await insert_with_retry(rt, spec, rows, batch_token(spec.table, records), keep_trying)

    return sink_batch
