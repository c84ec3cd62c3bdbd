"""Stateless stages (validate, the ClickHouse sink, page delivery) on plain aiokafka consumer groups.

A batch is one ``getmany`` (or a few, up to the batch size or age), one handler call and one
commit: the shape of the bare consumer the benchmark compares against. No state, so no
changelog and no restore; the stateful stage is :mod:`streams.runtime.stateful`.

Guarantees:
- offsets are committed only after the handler returned ``True``: the batch's outputs are
  acknowledged by the brokers (validate) or its rows are in ClickHouse (sink). A crash before
  the commit re-reads the batch: at-least-once, which downstream absorbs (the process stage
  drops replayed source offsets and duplicate event ids; ClickHouse collapses rows by key);
- records of a partition are handled in offset order (one consumer per partition, one batch
  at a time), which the process stage's replay check relies on;
- a rebalance waits for the batch in flight (aiokafka waits for ``on_partitions_revoked``);
  records fetched but not yet handled are dropped uncommitted, and every partition starts
  again from its committed offset (aiokafka re-positions all of them on each assignment), so
  nothing is skipped and nothing is handled twice by the same owner;
- a handler that cannot finish (ClickHouse down) polls ``keep_trying`` and gives up when the
  worker stops or the group rebalances; its offsets stay uncommitted and are read again. One
  that keeps retrying for longer than ``max.poll.interval`` (5 min) makes aiokafka leave the
  group, so the partitions move on; when the batch finally lands its commit is refused
  (``touchstream_commit_failures_total``) and the new owner's re-read collapses in ClickHouse;
- an unexpected handler error ends the process (crash-only, :mod:`streams.runtime.guard`).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener
from aiokafka.errors import KafkaError
from aiokafka.structs import TopicPartition

from streams import metrics
from streams.runtime.consumer import group_consumer
from streams.runtime.guard import CANCEL_GRACE_S, complete, die

if TYPE_CHECKING:
    from aiokafka.structs import ConsumerRecord

    from streams.settings import Settings

log = logging.getLogger(__name__)

STOP_TIMEOUT_S = CANCEL_GRACE_S + 5  # a batch in flight gets the guard's grace, then the group is left

#: ``handle(records, keep_trying)`` → True once the batch is done (commit it), False if abandoned.
Handler = Callable[[list["ConsumerRecord[bytes, bytes]"], Callable[[], bool]], Awaitable[bool]]


class Stage:
    """One stateless stage: a consumer group over ``topics``, batches of ``max_records`` or ``within_s``."""

    def __init__(self, settings: Settings, name: str, topics: list[str], group: str, handle: Handler,
                 max_records: int, within_s: float) -> None:
        self.settings, self.name, self.topics, self.group = settings, name, topics, group
        self.handle, self.max_records, self.within_s = handle, max_records, within_s
        self.consumer: AIOKafkaConsumer | None = None
        self.committed: dict[TopicPartition, int] = {}  # next offset to read, per partition we own
        self._lock = asyncio.Lock()  # one batch at a time; the rebalance listener waits for it
        self._pending: list[ConsumerRecord[bytes, bytes]] = []
        self._since = 0.0
        self._generation = 0  # bumped on every revocation: records fetched before it are stale
        self._revoking = False
        self._stopping = False
        self._stopped = asyncio.Event()

    def keep_trying(self) -> bool:
        return not (self._stopping or self._revoking)

    def lags(self) -> dict[tuple[str, int], int]:
        """end offset − committed offset per owned partition (no I/O: the fetcher knows the ends)."""
        out: dict[tuple[str, int], int] = {}
        c = self.consumer
        if c is None:
            return out
        for tp in c.assignment():
            high = c.highwater(tp)
            if high is not None:
                out[(tp.topic, tp.partition)] = max(0, high - self.committed.get(tp, 0))
        return out

    @property
    def ready(self) -> bool:
        return self.consumer is not None

    async def run(self) -> None:
        """The stage's loop (a task of the worker); returns after :meth:`stop`.

        Crash-only: an error escaping the loop ends the process, because a worker whose stage
        silently stopped would look healthy while its lag grows."""
        try:
            c = self.consumer = group_consumer(self.settings, self.group, self.name)
            c.subscribe(self.topics, listener=_Listener(self))
            await c.start()
            log.info("stage %s consuming %s as group %s", self.name, ",".join(self.topics), self.group)
            try:
                await self._loop(c)
            finally:
                self._pending.clear()
                await c.stop()  # leaves the group: the partitions move on at once
        except asyncio.CancelledError:
            raise
        except BaseException as exc:
            die(f"stage {self.name}", exc)
        finally:
            self._stopped.set()

    async def _loop(self, c: AIOKafkaConsumer) -> None:
        while not self._stopping:
            wait = self.within_s
            if self._pending:
                wait = max(0.0, self._since + self.within_s - time.monotonic())
            generation = self._generation
            got = await c.getmany(timeout_ms=int(wait * 1000), max_records=self.max_records - len(self._pending))
            async with self._lock:
                if generation != self._generation or self._stopping:
                    continue  # fetched under an assignment that has been revoked since
                if got:
                    if not self._pending:
                        self._since = time.monotonic()
                    for records in got.values():
                        self._pending.extend(records)
                if self._pending and (len(self._pending) >= self.max_records
                                      or time.monotonic() - self._since >= self.within_s):
                    await self._flush()

    async def stop(self) -> None:
        """Let the batch in flight finish (or give up), then leave the group."""
        self._stopping = True
        if self.consumer is not None:
            try:
                await asyncio.wait_for(self._stopped.wait(), STOP_TIMEOUT_S)
            except TimeoutError:
                log.error("stage %s did not stop within %.0fs; leaving its group anyway", self.name, STOP_TIMEOUT_S)
                await self.consumer.stop()

    async def _flush(self) -> None:
        batch, self._pending = self._pending, []
        with metrics.BATCH_SECONDS.labels(self.name).time():
            done = await complete(self.handle(batch, self.keep_trying), f"{self.name} batch")
        c = self.consumer
        assert c is not None
        spans: dict[tuple[str, int], list[int]] = {}  # (topic, partition) → [first offset, next offset]
        for rec in batch:
            span = spans.get((rec.topic, rec.partition))
            if span is None:
                spans[(rec.topic, rec.partition)] = [rec.offset, rec.offset + 1]
            else:
                span[1] = rec.offset + 1
        firsts = {TopicPartition(*key): span[0] for key, span in spans.items()}
        ends = {TopicPartition(*key): span[1] for key, span in spans.items()}
        owned = c.assignment()
        if not done:
            for tp, first in firsts.items():
                if tp in owned:
                    c.seek(tp, first)  # read it again (after the stop or rebalance, from the commit)
            return
        offsets = {tp: end for tp, end in ends.items() if tp in owned}
        if not offsets:
            return
        try:
            await c.commit(offsets)
        except KafkaError as exc:  # the group moved on: the new owner re-reads from the last commit
            metrics.COMMIT_FAILURES.labels(self.name).inc()
            log.warning("stage %s: commit of %d partitions failed (%r); they will be read again",
                        self.name, len(offsets), exc)
            # ... and so does this member if it keeps them: a static member that rejoins after a
            # missed session gets its partitions back without a revocation, and its fetch position,
            # past this batch, would leave the batch uncommitted until newer records arrive
            for tp in offsets:
                if tp in c.assignment():
                    c.seek(tp, firsts[tp])
            return
        self.committed.update(offsets)


class _Listener(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self, stage: Stage) -> None:
        self.stage = stage

    async def on_partitions_revoked(self, revoked: Any) -> None:
        stage = self.stage
        stage._revoking = True  # a handler retrying an outage gives up: the group is waiting
        try:
            async with stage._lock:  # the batch in flight finishes (and commits) first
                stage._generation += 1
                stage._pending.clear()  # fetched, never handled: the next owner reads them from the commit
                for tp in revoked:
                    stage.committed.pop(tp, None)
        finally:
            stage._revoking = False

    async def on_partitions_assigned(self, assigned: Any) -> None:
        c = self.stage.consumer
        if c is None or not assigned:
            return
        try:
            committed = {tp: await c.committed(tp) for tp in assigned}
        except KafkaError as exc:
            log.warning("stage %s: reading committed offsets failed (%r)", self.stage.name, exc)
            return
        self.stage.committed.update({tp: off for tp, off in committed.items() if off is not None})
        log.info("stage %s assigned %s (committed %s)", self.stage.name,
                 ",".join(f"{tp.topic}:{tp.partition}" for tp in sorted(assigned)), _committed_text(committed))


def _committed_text(committed: dict[TopicPartition, int | None]) -> str:
    return ",".join(f"{tp.partition}@{off}" for tp, off in sorted(committed.items()))
