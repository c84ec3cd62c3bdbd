"""Gap-free, in-order delivery per partition for the Faust agent (process), whose results depend on order.

faust-streaming can hand a stream a partition's messages with a hole: messages fetched before a
rebalance are dropped from the queues (flow control clears them) while later ones still arrive,
or a stall leaves the head behind. Its commit is guarded (``streams/app/offsets.py``), so nothing is
committed past a hole, but the messages *after* it have been processed already when the hole is
re-read. Process applies events in order (sessions, identity, SLA clocks), so that is not
harmless there. (Validate and the sink used to be Faust agents too and were filtered the same
way; they are plain aiokafka consumers now, ``streams/app/stage.py``, in order by construction,
which the core's source-offset re-delivery check relies on.)

So process takes each partition's messages strictly in offset order, from the
committed offset on: a message past the next expected offset is released unprocessed (never
acked, so never committed) and the partition is seeked back to the expected offset; a message
below it was processed (and acked) already in this assignment, so it is acked again and not
processed. Acking it again matters after the commit-stall repair (``streams/app/lag.py``),
which forgets the acked offsets and re-reads from the commit: were the re-read messages
released unacked, the commit would stall at the same place for ever. Expectations are reset
when partitions are revoked (the next owner, maybe us again, starts from the committed offset).
Messages that arrive before Faust knows the commit of a new assignment (its recovery seeks to
the commit and learns it after the fetch has already started) are released while the rebalance
lasts: guessing "the log start" there re-read whole partitions (seen in the rebalance test:
``valid:3 delivered offset 889 while 0 is next``, then offsets 0.. processed again).

One seek per hole: until the expected offset arrives, the messages fetched before the seek keep
coming and are dropped without seeking again (each seek resets the fetch position, so seeking on
every such message would re-fetch the same range over and over). The re-fetch often arrives in
the same batch right behind them, so the expected offset closes a hole wherever it stands in a
batch (dropping the whole rest of the partition's batch after a hole lost the re-fetch: the
partition then sat unread until the idle-stall repair). A seek that has not produced the
expected offset within ``RESEEK_AFTER_S`` is issued again.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from streams import metrics
from streams.app.offsets import seek

log = logging.getLogger(__name__)
RESEEK_AFTER_S = 10.0


def abandon(events: list[Any]) -> None:
    """Release events for Faust without letting their offsets be committed.

    ``take_events`` acks its batch when the loop body ends, however it ends. Setting
    ``message.acked`` first (without ``consumer.ack``) makes that ack a no-op and drops the
    messages from the set ``wait_empty`` waits for, while their offsets never enter the
    consumer's acked list: the commit stops in front of them and they are read again.
    """
    for ev in events:
        ev.message.acked = True


class InOrder:
    """Next expected offset per partition; filters a batch down to the gap-free, in-order part."""

    def __init__(self, app: Any, name: str) -> None:
        self.app = app
        self.name = name
        self._next: dict[Any, int] = {}
        self._seeking: dict[Any, tuple[int, float]] = {}  # partition → (offset sought, monotonic time)

        @app.on_partitions_revoked.connect
        async def _forget(app_: Any, revoked: Any, **kwargs: Any) -> None:
            for tp in revoked:
                self._next.pop(tp, None)
                self._seeking.pop(tp, None)

    async def take(self, events: list[Any]) -> list[Any]:
        """The events to process, in order; seeks back partitions that showed a hole."""
        consumer = self.app.consumer
        kept: list[Any] = []
        dropped: list[Any] = []
        holes: dict[Any, tuple[int, int]] = {}
        start: dict[Any, int] = {}
        redelivered = 0
        nxt_by_tp = self._next
        for ev in events:
            m = ev.message
            tp = m.tp
            nxt = nxt_by_tp.get(tp)
            if nxt is None:  # nothing taken yet in this assignment: start at the commit
                nxt = start.get(tp)
                if nxt is None:
                    nxt = consumer._committed_offset.get(tp)
                    if nxt is None:
                        if self.app.rebalancing:  # Faust has not positioned this assignment yet
                            dropped.append(ev)
                            continue
                        # never committed: from the log start (re-deliveries are dropped downstream)
                        nxt = (await consumer.earliest_offsets(tp)).get(tp, m.offset)
                    start[tp] = nxt  # for this batch only: Faust may learn the commit by the next one
            if m.offset == nxt:
                kept.append(ev)
                nxt_by_tp[tp] = nxt + 1
                if holes:  # the re-fetch behind messages fetched before our seek closes the hole
                    holes.pop(tp, None)
                if tp in self._seeking:
                    del self._seeking[tp]
            elif m.offset < nxt:
                redelivered += 1  # processed and acked in this assignment: acked again, not processed
            else:
                if tp not in holes:
                    holes[tp] = (nxt, m.offset)
                dropped.append(ev)
        if dropped:
            abandon(dropped)
        if dropped or redelivered:
            metrics.REDELIVERED.labels(self.name).inc(len(dropped) + redelivered)
        now = time.monotonic()
        for tp, (nxt, got) in holes.items():
            sought = self._seeking.get(tp)
            if sought is not None and sought[0] == nxt and now - sought[1] < RESEEK_AFTER_S:
                continue  # fetched before our seek took effect: the expected offset is on its way
            self._seeking[tp] = (nxt, now)
            log.warning("%s: %s:%d delivered offset %d while %d is next; re-reading from %d",
                        self.name, tp.topic, tp.partition, got, nxt, nxt)
            try:
                await seek(consumer, tp, nxt)
            except Exception as exc:  # revoked meanwhile: its next owner starts from the committed offset
                log.warning("%s: seek of %s:%d failed (%r)", self.name, tp.topic, tp.partition, exc)
                self._next.pop(tp, None)
                self._seeking.pop(tp, None)
        return kept
