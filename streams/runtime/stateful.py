"""The stateful stage: a consumer group whose partitions are stream tasks with restored state.

Shape (Kafka Streams' StreamThread, quix-streams' application loop, on plain aiokafka):

- **assignment** (:class:`_Rebalance`): newly assigned partitions are paused and queued for
  restore; parked tasks that did not come back are dropped;
- **restore** (in the consume loop, partitions still paused): each queued partition either gets
  its parked task back (its changelog partition ends where its last write did) or a new task
  whose stores and input position are read from the changelog in bulk
  (:func:`streams.runtime.changelog.read_partitions`); then the input partition is seeked to the
  restored position and resumed. A rebalance during a restore parks what was restored;
- **processing**: ``getmany`` returns what has been fetched (up to the batch size); each task
  applies its records, then :class:`~streams.runtime.checkpoint.Checkpoint` orders the effects;
- **timers** (:meth:`StatefulStage._clock`): a full tick every ``TICK_S`` (watermarks, idle
  tenants, periodic work) and, in between, a wake-up at the earliest deadline of any task;
- **revocation**: waits for the batch or tick in flight (one lock for batches, ticks, restores'
  activation and readers such as the board), then parks the revoked tasks. Nothing a revoked
  task could write afterwards exists: only active tasks are processed or ticked, under the lock.

**The core runs off the event loop** (:meth:`StatefulStage._in_core`): processing a batch, a
tick and rebuilding restored state are plain Python that can take seconds (a tenant silent for
hours makes the anomaly detector catch up on every window it missed; a restore of a million
persons decodes millions of values). On the loop thread that stalls every consumer's heartbeat,
and after ``TOUCHSTREAM_GROUP_SESSION_TIMEOUT_S`` every group of the worker rebalances at once.
One worker thread per stage runs those calls, under the stage lock (so nothing else touches the
state meanwhile); CPython hands the interpreter back to the loop thread every few milliseconds,
so heartbeats, the sinks and the web server go on while the core works.

Crash-only: an unexpected error in a batch, a tick or the loop ends the process
(:mod:`streams.runtime.guard`); the restarted worker restores state and position and goes on.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener
from aiokafka.errors import KafkaError
from aiokafka.structs import TopicPartition

from streams import metrics
from streams.runtime.backlog import UpstreamBacklog, now_ms
from streams.runtime.changelog import ChangelogWriter, apply_changelog, changelog_topic, read_partitions
from streams.runtime.checkpoint import Checkpoint
from streams.runtime.consumer import group_consumer
from streams.runtime.gc_policy import GcPolicy
from streams.runtime.guard import CANCEL_GRACE_S, complete, die
from streams.runtime.producer import BatchSender, KafkaOut
from streams.runtime.task import Processor, StreamTask, TaskSet
from streams.settings import Settings

log = logging.getLogger(__name__)
T = TypeVar("T")

TICK_S = 0.25  # full tick period: watermarks, idle tenants, feed-stall checks, gauges
MIN_SLEEP_S = 0.005  # floor between clock wake-ups, so a storm of deadlines cannot starve ingest
POLL_MS = 100  # longest wait of one getmany: how soon a stop or a queued restore is noticed
STOP_TIMEOUT_S = CANCEL_GRACE_S + 5


class StatefulStage:
    def __init__(self, settings: Settings, name: str, input_topic: str, group: str,
                 new_processor: Callable[[int], Processor], out: KafkaOut, max_records: int,
                 upstream: UpstreamBacklog | None = None) -> None:
        self.settings, self.name, self.input_topic, self.group = settings, name, input_topic, group
        self.new_processor = new_processor
        self.max_records = max_records
        self.upstream = upstream
        self.lock = asyncio.Lock()  # batches, ticks, task activation, revocation, readers
        self.tasks = TaskSet()
        self.changelog = changelog_topic(settings.app_id)
        self.sender = BatchSender(out)
        self.checkpoint = Checkpoint(self.sender, input_topic, self.changelog, self._commit, name)
        self.consumer: AIOKafkaConsumer | None = None
        self.assigned: set[int] = set()
        self.gc = GcPolicy()
        #: product hooks run at the end of every full tick, under the lock (gauges)
        self.on_full_tick: list[Callable[[StatefulStage], None]] = []
        self._joined = False
        self._to_restore: set[int] = set()
        self._generation = 0  # bumped on every revocation: fetches and restores begun before it are stale
        self._stopping = False
        self._stopped = asyncio.Event()
        self._core = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"{name}-core")

    async def _in_core(self, fn: Callable[..., T], *args: Any) -> T:
        """``fn(*args)`` on the stage's core thread (see the module docstring); call under the lock."""
        return await asyncio.get_running_loop().run_in_executor(self._core, fn, *args)

    # -- what the worker and the web server ask ----------------------------------------------
    @property
    def ready(self) -> bool:
        """Joined the group, and every assigned partition has its task restored."""
        return self._joined and not self._to_restore and set(self.tasks.active) == self.assigned

    def processors(self) -> list[Processor]:
        """The active tasks' processors (call with :attr:`lock` held for a consistent view)."""
        return [t.processor for t in self.tasks]

    def lags(self) -> dict[tuple[str, int], int]:
        """end offset − committed offset per owned partition (no I/O: the fetcher knows the ends)."""
        c, out = self.consumer, {}
        if c is None:
            return out
        for tp in c.assignment():
            high = c.highwater(tp)
            if high is None:
                continue
            task = self.tasks.get(tp.partition)
            done = (task.committed if task is not None else None) or 0
            out[(tp.topic, tp.partition)] = max(0, high - done)
        return out

    # -- lifecycle ----------------------------------------------------------------------------
    async def run(self) -> None:
        try:
            c = self.consumer = group_consumer(self.settings, self.group, self.name)
            c.subscribe([self.input_topic], listener=_Rebalance(self))
            await c.start()
            log.info("stage %s consuming %s as group %s", self.name, self.input_topic, self.group)
            clock = asyncio.create_task(self._clock(), name=f"{self.name}-clock")
            try:
                await self._loop(c)
            finally:
                clock.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await clock
                await c.stop()
        except asyncio.CancelledError:
            raise
        except BaseException as exc:
            die(f"stage {self.name}", exc)
        finally:
            self._core.shutdown(wait=False)
            self._stopped.set()

    async def stop(self) -> None:
        """Let the batch or tick in flight finish, then leave the group."""
        self._stopping = True
        if self.consumer is None:
            return
        try:
            await asyncio.wait_for(self._stopped.wait(), STOP_TIMEOUT_S)
        except TimeoutError:
            log.error("stage %s did not stop within %.0fs; leaving its group anyway", self.name, STOP_TIMEOUT_S)
            await self.consumer.stop()

    async def _commit(self, offsets: dict[TopicPartition, int]) -> None:
        assert self.consumer is not None
        await self.consumer.commit(offsets)

    # -- the consume loop ---------------------------------------------------------------------
    async def _loop(self, c: AIOKafkaConsumer) -> None:
        while not self._stopping:
            if self._to_restore:
                try:
                    await self._restore(c)
                except KafkaError as exc:  # the broker went away mid-restore: the partitions stay queued
                    log.warning("stage %s: restoring partitions %s failed (%r); retrying", self.name,
                                sorted(self._to_restore), exc)
                    await asyncio.sleep(1.0)
                continue
            generation = self._generation
            got = await c.getmany(timeout_ms=POLL_MS, max_records=self.max_records)
            if not got:
                continue
            async with self.lock:
                if generation != self._generation or self._stopping:
                    continue  # fetched under an assignment that has been revoked since
                await complete(self._process(got), f"{self.name} batch")

    async def _process(self, got: dict[TopicPartition, list[Any]]) -> None:
        wall = now_ms()
        work: list[tuple[StreamTask, list[Any]]] = []
        for tp, records in got.items():
            task = self.tasks.get(tp.partition)
            if task is None or not records:
                continue  # not restored yet: it is paused and will be read from its position
            if task.position is not None and records[0].offset < task.position:
                records = [r for r in records if r.offset >= task.position]
                if not records:
                    continue
            work.append((task, records))
        if not work:
            return
        with metrics.BATCH_SECONDS.labels(self.name).time():
            await self._in_core(_apply, work, wall)
            await self.checkpoint.run([task for task, _ in work])
        metrics.EVENTS_IN.labels(self.input_topic.removeprefix(self.settings.topic_prefix)).inc(
            sum(len(records) for _, records in work))

    # -- restore --------------------------------------------------------------------------------
    async def _restore(self, c: AIOKafkaConsumer) -> None:
        parts = sorted(self._to_restore)
        generation = self._generation
        t0 = time.monotonic()
        ends = {tp.partition: off for tp, off in
                (await c.end_offsets([TopicPartition(self.changelog, p) for p in parts])).items()}
        ready: list[StreamTask] = []
        to_read: dict[int, int] = {}
        for p in parts:
            task = self.tasks.reusable(p, ends[p])
            if task is not None:
                ready.append(task)
            else:
                to_read[p] = ends[p]
        if to_read:
            latest = await read_partitions(self.settings, self.changelog, to_read)
            for p, end in to_read.items():  # state of tasks nobody runs yet: no lock needed
                ready.append(await self._in_core(self._new_task, p, latest.pop(p), end))
        committed = {t.partition: await c.committed(TopicPartition(self.input_topic, t.partition)) for t in ready}
        async with self.lock:
            if generation != self._generation:
                for task in ready:  # revoked meanwhile; the new assignment takes them back if unchanged
                    self.tasks.parked[task.partition] = task
                return
            for task in ready:
                tp = TopicPartition(self.input_topic, task.partition)
                task.committed = committed[task.partition]
                if task.position is None:
                    task.position = task.committed  # no position in the changelog yet: the group's, else earliest
                if task.position is not None:
                    c.seek(tp, task.position)
                self.tasks.activate(task)
            self._to_restore.difference_update(parts)
            c.resume(*(TopicPartition(self.input_topic, t.partition) for t in ready))
            metrics.TASKS_ACTIVATED.labels("reused").inc(len(ready) - len(to_read))
            metrics.TASKS_ACTIVATED.labels("restored").inc(len(to_read))
            self.gc.freeze()  # restored state is long-lived: keep full collections from walking it
        log.info("stage %s: partitions %s ready in %.2fs (%d reused, %d restored from %s)", self.name,
                 ",".join(f"{t.partition}@{t.position}" for t in ready), time.monotonic() - t0,
                 len(ready) - len(to_read), len(to_read), self.changelog)

    def _new_task(self, partition: int, latest: dict[bytes, bytes | None], changelog_end: int) -> StreamTask:
        processor = self.new_processor(partition)
        restored = apply_changelog(latest, partition, processor.stores)
        processor.rebuild()
        writer = ChangelogWriter(self.changelog, partition, processor.stores, seq=restored.last_seq)
        return StreamTask(partition, processor, writer, position=restored.position, changelog_end=changelog_end)

    # -- timers -----------------------------------------------------------------------------------
    async def _clock(self) -> None:
        """Every ``TICK_S`` the full tick; in between, wake at the next deadline of any task.

        A fixed-period timer would add up to one period to every breach; sleeping until the next
        deadline fires it as soon as the lock is free. Deadlines that fall due while a tick runs
        are fired by the next wake-up, so under a storm ticks run back to back and each one takes
        what is due: the batch size follows the load."""
        try:
            last_full = 0.0
            while not self._stopping:
                delay = TICK_S
                if self.tasks.active:
                    mono = time.monotonic()
                    full = mono - last_full >= TICK_S
                    async with self.lock:
                        await complete(self._tick(now_ms(), full), f"{self.name} clock tick")
                    if full:
                        last_full = mono
                    delay = TICK_S - (time.monotonic() - last_full)
                    nxt = [d for t in self.tasks if (d := t.processor.next_due(t.ticked_ms)) is not None]
                    if nxt:
                        delay = min(delay, (min(nxt) - now_ms()) / 1000)
                await asyncio.sleep(max(MIN_SLEEP_S, delay))
        except asyncio.CancelledError:
            raise
        except BaseException as exc:
            die(f"stage {self.name} clock", exc)

    async def _tick(self, at: int, full: bool) -> None:
        tasks = list(self.tasks)  # active ones only: a revoked task is parked and never ticked
        if not tasks:
            return
        with metrics.CLOCK_TICK_SECONDS.labels("full" if full else "timers").time():
            now = max(at, now_ms())
            work: list[tuple[StreamTask, int]] = []
            for task in tasks:
                due = task.processor.next_due(task.ticked_ms)
                if full or (due is not None and due <= now):
                    work.append((task, self.input_complete(task, now)))
            ticked = [task for task, _ in work]
            if work:
                await self._in_core(_tick_tasks, work, now, full)
                await self.checkpoint.run(ticked)
            if full:
                self.gc.maybe_run()
                for hook in self.on_full_tick:
                    hook(self)

    def input_complete(self, task: StreamTask, now: int) -> int:
        """Append time up to which this task's input is known to be complete: the last record it
        processed while its partition has a backlog; else the upstream stage's answer, capped by now."""
        c = self.consumer
        if c is not None:
            high = c.highwater(TopicPartition(self.input_topic, task.partition))
            if high is not None and (task.position or 0) < high:
                return task.last_append_ms
        upstream = now if self.upstream is None else self.upstream.complete_ms
        return min(now, upstream)


def _apply(work: list[tuple[StreamTask, list[Any]]], wall: int) -> None:
    """One batch, on the core thread: each task's records, then its new input position."""
    for task, records in work:
        task.processor.process(records, wall)
        last = records[-1]
        task.position = last.offset + 1
        task.last_append_ms = last.timestamp


def _tick_tasks(work: list[tuple[StreamTask, int]], now: int, full: bool) -> None:
    """One clock tick of the given tasks, on the core thread."""
    for task, input_complete in work:
        task.processor.tick(now, full, input_complete)
        task.ticked_ms = now


class _Rebalance(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self, stage: StatefulStage) -> None:
        self.stage = stage

    async def on_partitions_revoked(self, revoked: Any) -> None:
        stage = self.stage
        async with stage.lock:  # the batch or tick in flight finishes (its writes acknowledged) first
            stage._generation += 1
            stage.tasks.park([tp.partition for tp in revoked if tp.topic == stage.input_topic])
            stage._to_restore.clear()

    async def on_partitions_assigned(self, assigned: Any) -> None:
        stage = self.stage
        parts = {tp.partition for tp in assigned if tp.topic == stage.input_topic}
        stage.assigned = parts
        stage._joined = True
        if assigned and stage.consumer is not None:
            stage.consumer.pause(*assigned)  # until restored
        stage._to_restore = set(parts)
        dropped = stage.tasks.drop_parked(parts)
        log.info("stage %s assigned %s (dropped parked %s)", stage.name,
                 ",".join(str(p) for p in sorted(parts)) or "-", ",".join(str(p) for p in dropped) or "-")
