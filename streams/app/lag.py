"""Timers on the consumer: lag per assigned partition, and repair of two Faust stalls.

Lag → ``touchstream_consumer_lag_messages``.

Why in the worker and not only from an exporter: each worker knows its own assignment and
its committed offsets without a group-wide admin query, so the gauge is cheap (no I/O: the
consumer already tracks the high watermark per partition from its fetches) and
Prometheus' alert rule can sum it across workers. Partitions that move away are removed
from the gauge, so a rebalance does not leave stale series behind.
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Any

from streams import metrics
from streams.app.offsets import ReadOffsets, seek

if TYPE_CHECKING:
    from streams.app.runtime import Runtime

log = logging.getLogger(__name__)
INTERVAL_S = 5.0
#: A head-of-queue gap older than this is a stall, not a batch still in flight.
STALL_AFTER_S = 15.0


def lag_by_partition(consumer: Any, prefix: str) -> dict[tuple[str, int], int]:
    """end offset − committed offset for every assigned partition of our topics (not Faust's internals)."""
    out: dict[tuple[str, int], int] = {}
    committed = consumer._committed_offset  # Faust keeps it per TP (None until the first commit)
    for tp in consumer.assignment():
        if not tp.topic.startswith(prefix) or tp.topic.endswith("-changelog") or "__assignor" in tp.topic:
            continue
        high = consumer.highwater(tp)
        if high is None:
            continue
        done = committed.get(tp)
        out[(tp.topic, tp.partition)] = max(0, int(high) - int(done or 0))
    return out


def register(rt: Runtime) -> None:
    register_stall_repair(rt)
    register_fetch_repair(rt)
    shown: set[tuple[str, str]] = set()
    prefix = rt.settings.topic_prefix

    @rt.app.timer(INTERVAL_S, name="consumer_lag")
    async def report_lag() -> None:
        lags = lag_by_partition(rt.app.consumer, prefix)
        for stage in rt.stages:  # the stateless stages' own consumer groups
            lags.update(stage.lags())
        current = {(t, str(p)): lag for (t, p), lag in lags.items()}
        for labels in shown - current.keys():
            metrics.CONSUMER_LAG.remove(*labels)
        for labels, lag in current.items():
            metrics.CONSUMER_LAG.labels(*labels).set(lag)
        shown.clear()
        shown.update(current)


def stalled_partitions(consumer: Any) -> dict[Any, tuple[int, str]]:
    """Partitions whose commit cannot move on by itself, with what was seen there.

    Two shapes, one cause: faust-streaming (0.15) marks a message as read before its delivery to
    the stream completes, and a rebalance can abandon that delivery (``wait_first(callback,
    suspend_flow)``); the message is then never acked nor re-fetched (upstream issues
    faust-streaming#318, #606). Lag grows while the worker looks healthy.

    - a hole at the head: acked offsets start past the committed offset (the next one to
      read), and ``Consumer._new_offset`` refuses to commit past it;
    - nothing at all: no message of the partition is in flight and none is acked, yet the
      fetch loop has handled the committed offset or later (every message went that way, or
      the in-order filter released them after a hole and its seek back was lost the same way),
      or has handled nothing since the partition was positioned although the log goes on past
      the commit (seen once after a restart: raw sat at its commit with 30 messages behind it).
    """
    out: dict[Any, tuple[int, str]] = {}
    acked_by_tp = consumer._acked
    committed_by_tp = consumer._committed_offset
    read = consumer._read_offset
    in_flight = {m.tp for m in list(consumer._unacked_messages) if not m.acked}
    active = consumer._get_active_partitions()  # paused or buffered ones are the fetch repair's
    for tp in consumer.assignment():
        committed = committed_by_tp.get(tp)
        if committed is None:
            continue
        acked = acked_by_tp.get(tp)
        if acked:
            if min(acked) > committed:
                out[tp] = (committed, f"first acked {min(acked)}")
        elif isinstance(read, ReadOffsets) and tp not in in_flight and tp in active:
            handled = read.handled(tp)
            if handled is None:
                high = consumer.highwater(tp)
                if high is not None and high > committed:
                    out[tp] = (committed, f"nothing read since it was positioned, end {high}")
            elif handled >= committed:
                out[tp] = (committed, f"read up to {handled}, none in flight")
    return out


async def repair_stall(consumer: Any, tp: Any, committed: int) -> None:
    """Re-read from the committed offset. Safe by design: every stage tolerates redelivery
    (process state dedups event ids, outputs are at-least-once with natural keys, ClickHouse
    collapses re-inserted rows)."""
    consumer._acked.pop(tp, None)
    consumer._acked_index.pop(tp, None)
    consumer._gap.pop(tp, None)
    await seek(consumer, tp, committed)


def register_stall_repair(rt: Runtime) -> None:
    first_seen: dict[Any, tuple[int, float]] = {}

    @rt.app.timer(INTERVAL_S, name="commit_stall_repair")
    async def repair() -> None:
        app, consumer = rt.app, rt.app.consumer
        if app.rebalancing:
            first_seen.clear()  # deliveries are suspended on purpose now
            return
        now = time.monotonic()
        stalled = stalled_partitions(consumer)
        for tp in list(first_seen):
            if tp not in stalled:
                del first_seen[tp]
        for tp, (committed, seen_there) in stalled.items():
            seen = first_seen.get(tp)
            if seen is None or seen[0] != committed:
                first_seen[tp] = (committed, now)
                continue
            if now - seen[1] < STALL_AFTER_S:
                continue
            log.warning("commit stall on %s:%d (committed %d, %s): re-reading from %d",
                        tp.topic, tp.partition, committed, seen_there, committed)
            metrics.COMMIT_STALL_REPAIRS.labels(tp.topic).inc()
            del first_seen[tp]
            try:
                await repair_stall(consumer, tp, committed)
            except Exception as exc:  # revoked meanwhile: its next owner starts from the commit
                log.warning("re-reading %s:%d failed (%r)", tp.topic, tp.partition, exc)


def _ours(tp: Any, prefix: str) -> bool:
    return tp.topic.startswith(prefix) and not tp.topic.endswith("-changelog") and "__assignor" not in tp.topic


def unfetched_partitions(consumer: Any, prefix: str) -> dict[Any, str]:
    """Assigned partitions of our topics that Faust's fetcher leaves out, with the reason.

    Faust fetches only its "active" partitions: assigned minus paused (rebalance/recovery)
    minus buffered (stream queue under pressure). Both exits are by callback: recovery's
    ``resume_partitions`` and the queue's pressure-drop callback. A rebalance that lands between
    pause and resume, or a queue cleared by flow control with a drop callback pending, can leave
    a partition out for good: no error, lag only grows. This finds such partitions; the caller
    decides whether they are really stuck (they stay out while the app is otherwise idle).
    """
    active = consumer._get_active_partitions()
    out: dict[Any, str] = {}
    for tp in consumer.assignment():
        if not _ours(tp, prefix) or tp in active:
            continue
        if tp in consumer._paused_partitions:
            out[tp] = "paused"
        elif tp in consumer._buffered_partitions:
            out[tp] = "buffered"
        else:
            out[tp] = "inactive"
    return out


def _buffer_pressure(app: Any, topic: str) -> bool:
    """True while a stream queue of ``topic`` is above its pressure-drop size (legitimate backpressure)."""
    for chan in app.topics._topic_name_index.get(topic, ()):
        queue = getattr(chan, "queue", None)
        if queue is not None and queue.qsize() > queue.pressure_drop_size:
            return True
    return False


def register_fetch_repair(rt: Runtime) -> None:
    first_seen: dict[Any, tuple[str, int | None, float]] = {}
    prefix = rt.settings.topic_prefix

    @rt.app.timer(INTERVAL_S, name="fetch_stall_repair")
    async def repair() -> None:
        app, consumer = rt.app, rt.app.consumer
        if app.rebalancing or app.in_recovery or not consumer.flow_active:
            first_seen.clear()  # pauses are expected now
            return
        out = unfetched_partitions(consumer, prefix)
        for tp in list(first_seen):
            if tp not in out:
                del first_seen[tp]
        if not out:
            return
        ends = await consumer.highwaters(*out)
        now = time.monotonic()
        for tp, reason in out.items():
            committed = consumer._committed_offset.get(tp)
            end = ends.get(tp)
            if end is None or end <= (committed or 0):
                first_seen.pop(tp, None)
                continue  # nothing to read: being left out costs nothing
            seen = first_seen.get(tp)
            if seen is None or seen[0] != reason or seen[1] != committed:
                first_seen[tp] = (reason, committed, now)
                continue
            if now - seen[2] < STALL_AFTER_S or (reason == "buffered" and _buffer_pressure(app, tp.topic)):
                continue
            log.warning("fetch stall on %s:%d (%s, committed %s, end %d): fetching it again from committed",
                        tp.topic, tp.partition, reason, committed, end)
            metrics.FETCH_STALL_REPAIRS.labels(tp.topic, reason).inc()
            consumer._buffered_partitions.discard(tp)
            consumer.resume_partitions([tp])
            if committed is not None:  # records dropped while it was out would leave a gap: re-read
                await repair_stall(consumer, tp, committed)
            del first_seen[tp]
