"""The hot path's producer: records grouped per partition into aiokafka batches, one future each.

Why batches: ~4 records are produced per input event (valid, enriched, ~2 changelog keys), and
``AIOKafkaProducer.send`` per record costs a future and an accumulator lookup each. Here a batch
of records costs one ``BatchBuilder`` per partition (Cython) and one future, per the aiokafka
"batch producer" API (``create_batch`` / ``send_batch``).

One producer per worker: ``acks=all`` and idempotence on, so a broker failover never loses or
duplicates a record inside a batch. Callers await :meth:`BatchSender.send` before they persist
state or commit input offsets (:mod:`streams.runtime.checkpoint`): that is what keeps offsets
behind durable outputs. A failed send is retried whole on a fresh producer: records that did
land are written again, which every consumer of these topics tolerates (ClickHouse collapses
them; state writes are idempotent).

Partitioning matches Kafka's default partitioner (murmur2 of the key, positive, modulo the
partition count), so a record sent here lands where a Java or aiokafka client would put it;
key-less records go round-robin.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import random
from functools import lru_cache
from typing import Any

from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError, MessageSizeTooLargeError, RecordTooLargeError
from aiokafka.partitioner import murmur2

from streams import metrics
from streams.kafka_admin import client_kwargs
from streams.settings import Settings

log = logging.getLogger(__name__)

#: Largest record we produce. The state changelog is created with this ``max.message.bytes``: one
#: state value (e.g. a tenant's distinct persons of one funnel window) can pass Kafka's 1 MB
#: default on a big tenant. Output topics stay far below it.
MAX_RECORD_BYTES = 16 * 1024 * 1024


class RecordTooLarge(RuntimeError):
    """A record exceeds the size limit: fatal (the batch guard ends the worker), never retried."""
Record = tuple[bytes | None, bytes | None, int | None]  # key, value, timestamp (ms; None = now)


@lru_cache(maxsize=262_144)
def key_partition(key: bytes, partitions: int) -> int:
    """Kafka's default partitioner for a non-null key (cached: person and tenant keys repeat)."""
    return (murmur2(key) & 0x7FFFFFFF) % partitions


class KafkaOut:
    """Owns the worker's output producer; started lazily, stopped with the app."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._producer: AIOKafkaProducer | None = None
        self._starting = asyncio.Lock()
        self._partitions: dict[str, int] = {}

    async def producer(self) -> AIOKafkaProducer:
        if self._producer is None:
            async with self._starting:
                if self._producer is None:
                    p = AIOKafkaProducer(
                        bootstrap_servers=self.settings.bootstrap,
                        client_id=f"{self.settings.app_id}-out",
                        acks="all",
                        enable_idempotence=True,
                        linger_ms=0,  # batches are built by us, already whole
                        max_batch_size=self.settings.produce_batch_bytes,
                        max_request_size=MAX_RECORD_BYTES + 64 * 1024,
                        request_timeout_ms=30_000,
                        **client_kwargs(self.settings),
                    )
                    await p.start()
                    self._producer = p
        return self._producer

    async def partitions(self, topic: str) -> int:
        n = self._partitions.get(topic)
        if n is None:
            p = await self.producer()
            n = self._partitions[topic] = len(await p.partitions_for(topic))
        return n

    async def reset(self) -> None:
        """Drop a producer that failed (its idempotence state may be fatal); the next use starts a new one."""
        if self._producer is not None:
            p, self._producer = self._producer, None
            with contextlib.suppress(Exception):
                await asyncio.wait_for(p.stop(), 10)

    async def stop(self) -> None:
        if self._producer is not None:
            p, self._producer = self._producer, None
            await p.stop()  # flushes what is queued


class BatchSender:
    """Collects records, then sends them as one batch per partition and waits for all acks.

    Not shared between stages: each owns one, fills it, and awaits :meth:`send`.
    """

    def __init__(self, out: KafkaOut) -> None:
        self.out = out
        self._keyed: dict[str, list[Record]] = {}
        self._placed: dict[tuple[str, int], list[Record]] = {}
        self._rr = itertools.count()
        self.pending = 0

    def add(self, topic: str, key: bytes | None, value: bytes | None, partition: int | None = None,
            timestamp_ms: int | None = None) -> None:
        """Queue a record; with ``partition=None`` it goes where the default partitioner would put it.

        ``timestamp_ms`` sets the record's CreateTime (the validate stage passes the raw record's,
        so a backlog keeps its age downstream); None lets the producer stamp the wall clock."""
        if partition is not None:
            self._placed.setdefault((topic, partition), []).append((key, value, timestamp_ms))
        elif key is None:
            self._placed.setdefault((topic, -1), []).append((key, value, timestamp_ms))
        else:
            self._keyed.setdefault(topic, []).append((key, value, timestamp_ms))
        self.pending += 1

    async def send(self) -> dict[tuple[str, int], int]:
        """Send everything queued; returns the last offset written per (topic, partition)."""
        if not self.pending:
            return {}
        placed, keyed = self._placed, self._keyed
        self._placed, self._keyed, self.pending = {}, {}, 0
        for topic, records in keyed.items():
            n = await self.out.partitions(topic)
            for rec in records:
                placed.setdefault((topic, key_partition(rec[0], n)), []).append(rec)  # type: ignore[arg-type]
        for (topic, partition) in [tp for tp in placed if tp[1] == -1]:
            n = await self.out.partitions(topic)
            for rec in placed.pop((topic, partition)):
                placed.setdefault((topic, next(self._rr) % n), []).append(rec)
        delay = 0.2
        while True:
            try:
                return await self._ship(placed)
            except (MessageSizeTooLargeError, RecordTooLargeError) as exc:  # the same records will never fit
                raise RecordTooLarge(
                    f"a record of this batch exceeds the broker's or topic's size limit ({exc!r}); retrying cannot "
                    f"help. State values must stay under MAX_RECORD_BYTES ({MAX_RECORD_BYTES}): see docs/design.md"
                ) from exc
            except KafkaError as exc:  # a broker is down or a leader moved: same records again, on a fresh producer
                metrics.PRODUCE_RETRIES.inc()
                log.warning("producing %d batches failed (%r); retrying in %.1fs", len(placed), exc, delay)
                await self.out.reset()
                await asyncio.sleep(delay * (0.5 + random.random()))
                delay = min(delay * 2, 10.0)

    async def _ship(self, placed: dict[tuple[str, int], list[Record]]) -> dict[tuple[str, int], int]:
        producer = await self.out.producer()

        async def ship(batch: Any, topic: str, partition: int) -> Any:
            return await producer.send_batch(batch, topic, partition=partition)

        futures: list[tuple[tuple[str, int], int, Any]] = []
        for (topic, partition), records in placed.items():
            batch = producer.create_batch()
            count = 0
            for key, value, ts in records:
                if batch.append(key=key, value=value, timestamp=ts) is None:  # full: ship it, start another
                    futures.append(((topic, partition), count, await ship(batch, topic, partition)))
                    batch = producer.create_batch()
                    count = 0
                    batch.append(key=key, value=value, timestamp=ts)  # an empty batch takes any one record
                count += 1
            futures.append(((topic, partition), count, await ship(batch, topic, partition)))
        results = await asyncio.gather(*(f for _, _, f in futures))
        last: dict[tuple[str, int], int] = {}
        for (tp, count, _), meta in zip(futures, results, strict=True):
            last[tp] = max(last.get(tp, -1), meta.offset + count - 1)
        return last
