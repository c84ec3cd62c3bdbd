"""Faust's consumer offsets made safe for the holes and seeks this pipeline meets.

Three patches to faust-streaming 0.15's ``Consumer`` (applied once, by ``patch_consumer``) and
the one way this code base seeks (``seek``). They exist because every exactness guarantee
downstream (commit only what was processed, in-order processing per partition) rests on the
consumer's offset bookkeeping, and Faust's bookkeeping assumes no seek races its fetch loop.
"""

from __future__ import annotations

import logging
from typing import Any

from streams import metrics

log = logging.getLogger(__name__)


class ReadOffsets(dict):  # type: ignore[type-arg]
    """Faust's "last offset read" per partition, which knows about seeks still in flight.

    Why: Faust's fetch loop drops every fetched message below the partition's read offset and
    raises the read offset to each message it hands on. A seek back to N sets the read offset
    to N, but the loop may still hold messages fetched before the seek (up to a whole poll);
    handing those on raises the read offset past N again, and the re-fetched N.. is then
    dropped as "already read". The in-order filter then sees the same hole, seeks again, and
    the partition livelocks (seen in CI: ``valid:0 delivered 790 while 449 is next`` on
    repeat until the test timed out). While a rewind to N is pending, this map answers N
    (everything from N on passes; the in-order filter drops what is not N) and ignores
    updates until N itself has passed through the loop.
    """

    def __init__(self) -> None:
        super().__init__()
        self._rewind: dict[Any, int] = {}
        self._positioned: set[Any] = set()  # seeked, and nothing through the fetch loop since

    def rewind(self, tp: Any, offset: int) -> None:
        """A seek to ``offset`` is under way: hold the read offset there until it is read."""
        self._rewind[tp] = offset
        self._positioned.add(tp)
        dict.__setitem__(self, tp, offset if offset else None)

    def rewinding(self, tp: Any) -> int | None:
        return self._rewind.get(tp)

    def handled(self, tp: Any) -> int | None:
        """How far Faust's fetch loop has got since the partition was last positioned (None:
        nothing through yet); the idle-stall check compares it with the commit. While a rewind
        is pending that is its target: whatever went through was fetched before the seek."""
        return None if tp in self._positioned else dict.get(self, tp)

    def __getitem__(self, tp: Any) -> int | None:
        pending = self._rewind.get(tp)
        return pending if pending is not None else dict.get(self, tp)

    def get(self, tp: Any, default: Any = None) -> Any:
        return self[tp] if tp in self else default  # noqa: SIM401 (self.get would recurse); a rewind always has its entry

    def __setitem__(self, tp: Any, offset: int | None) -> None:
        if self._positioned:
            self._positioned.discard(tp)
        pending = self._rewind.get(tp)
        if pending is not None:
            if offset != pending:
                return  # a message fetched before the seek: not read in the new order
            del self._rewind[tp]
        dict.__setitem__(self, tp, offset)

    def __delitem__(self, tp: Any) -> None:
        self._rewind.pop(tp, None)
        self._positioned.discard(tp)
        dict.__delitem__(self, tp)

    def pop(self, tp: Any, *default: Any) -> Any:
        self._rewind.pop(tp, None)
        self._positioned.discard(tp)
        return dict.pop(self, tp, *default)

    def update(self, *args: Any, **kwargs: Any) -> None:
        """Faust's ``perform_seek`` (seek to committed): a rewind at or past its offset still holds."""
        for tp, offset in dict(*args, **kwargs).items():
            self._positioned.add(tp)
            pending = self._rewind.get(tp)
            if pending is not None and (offset is None or offset > pending):
                del self._rewind[tp]  # the position moved past our target: Faust's seek wins
            dict.__setitem__(self, tp, offset)

    def clear(self) -> None:
        self._rewind.clear()
        self._positioned.clear()
        dict.clear(self)


async def seek(consumer: Any, tp: Any, offset: int) -> None:
    """Seek ``tp`` back to ``offset``: on the consumer's own thread, with the read offset held.

    Why the thread: faust-streaming 0.15 (with aiokafka 0.14) runs aiokafka in a separate
    thread, but its ``Consumer.seek`` calls aiokafka's ``seek`` from the event-loop thread. That
    deletes the partition's entry in the fetcher's record map while the consumer thread may be
    iterating it in ``fetched_records`` — ``KeyError`` in ``del self._records[tp]``, which
    crashes Faust's Fetcher service and with it the worker (seen in CI during a rebalance,
    when the in-order filter seeks back several partitions at once). Going through the
    thread's method queue serialises the seek with the fetch. Why the rewind first: see
    ``ReadOffsets``; messages fetched before the seek must not move the read offset on.
    """
    read = consumer._read_offset
    if isinstance(read, ReadOffsets):
        read.rewind(tp, offset)
    else:
        read[tp] = offset if offset else None  # as Faust's own seek does
    thread = consumer._thread
    try:
        await thread.call_thread(_seek_now, thread._ensure_consumer(), tp, offset)
    except BaseException:
        if isinstance(read, ReadOffsets) and read.rewinding(tp) == offset:
            read.pop(tp, None)  # not ours any more (revoked) or not moved: nothing to hold
        raise


def _seek_now(aiokafka_consumer: Any, tp: Any, offset: int) -> None:
    aiokafka_consumer.seek(tp, offset)


def patch_consumer() -> None:
    """Stop Faust from committing past offsets it never delivered, and from losing our seeks.

    When a message arrives more than one offset after the last one read, faust-streaming records
    the skipped range as a "gap" and later counts it as acked (meant for compacted topics and
    transaction markers). Our topics have neither: idempotent, non-transactional producers write
    contiguous offsets, so a skipped offset is a message dropped on the fetch path (flow stopped
    and queues cleared mid-rebalance), and committing past it loses it. Worse, the recorded range
    includes the arriving offset itself, so once that message is acked the offset is in the acked
    list twice, ``consecutive_numbers`` breaks runs there, and the commit crawls one offset per
    interval (the restart-with-a-sink-backlog stall). With gaps left open, the hole stays at the
    head of the acked offsets and the commit-stall repair below re-reads it: redelivery, which
    every stage tolerates, instead of loss.

    Second: ``Consumer._new_offset`` lets the acked offsets start one past the committed offset
    (its head check is ``min(acked) - committed > 1``, written as if "committed" were the last
    processed offset; it is the next one to read, see ``perform_seek`` and its own return value).
    One message dropped right at the head was committed past: a lost touchpoint after a kill -9.
    The patched check holds the commit unless the acked offsets start exactly at it.

    Third: every consumer keeps its read offsets in a ``ReadOffsets`` map (see there).
    """
    from faust.transport.consumer import Consumer

    if getattr(Consumer, "_touchstream_guarded", False):
        return
    new_offset = Consumer._new_offset
    init = Consumer.__init__

    def __init__(self: Any, *args: Any, **kwargs: Any) -> None:
        init(self, *args, **kwargs)
        self._read_offset = ReadOffsets()

    def _new_offset(self: Any, tp: Any) -> int | None:
        acked, committed = self._acked[tp], self._committed_offset[tp]
        if acked and committed is not None and min(acked) > committed:
            return None  # a hole at the head: wait (the stall repair re-reads it)
        return new_offset(self, tp)  # type: ignore[no-any-return]

    async def _add_gap(self: Any, tp: Any, offset_from: int, offset_to: int) -> None:
        if isinstance(self._read_offset, ReadOffsets) and self._read_offset.rewinding(tp) is not None:
            return  # messages fetched before a seek back: no gap, the in-order filter drops them
        metrics.FETCH_GAPS.labels(tp.topic).inc()
        log.info("offsets %d..%d of %s:%d skipped on the fetch path: not committed past, re-read on stall",
                 offset_from, offset_to - 1, tp.topic, tp.partition)

    Consumer.__init__ = __init__  # type: ignore[method-assign]
    Consumer._add_gap = _add_gap  # type: ignore[method-assign]
    Consumer._new_offset = _new_offset  # type: ignore[method-assign]
    Consumer._touchstream_guarded = True  # type: ignore[attr-defined]
