"""Stream tasks: one owned input partition, its state and its input position.

As in Kafka Streams (``StreamTask``) and quix-streams (store partitions), the unit of ownership
is a partition, not the worker: each task has its own processor (its own core state), its own
changelog partition and its own position, so a rebalance moves tasks whole and a task never
sees another partition's state. The runtime only creates, parks and drops tasks; what a task
*does* with its records is the product's :class:`Processor`.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from streams.core.state import MemoryStore
from streams.runtime.changelog import ChangelogWriter

if TYPE_CHECKING:
    from streams.runtime.producer import BatchSender


class Processor(Protocol):
    """The product logic of one task (``streams.app.process`` wraps the core pipeline).

    Everything here is synchronous and does no I/O: the runtime awaits the sends afterwards."""

    stores: Mapping[str, MemoryStore]

    def process(self, records: list[Any], wall_ms: int) -> None:
        """Apply a batch of input records (aiokafka ``ConsumerRecord``s of this task's partition)."""

    def tick(self, wall_ms: int, full: bool, input_complete_ms: int) -> None:
        """Advance clocks. ``full``: watermarks and everything periodic; otherwise only deadlines
        due by now. ``input_complete_ms``: the input is known to be complete up to this append
        time (no backlog older than it), so a deadline before it may fire."""

    def next_due(self, after_ms: int) -> int | None:
        """The earliest wall-clock deadline after ``after_ms`` (None: nothing scheduled)."""

    def emit(self, sender: BatchSender) -> int:
        """Queue everything emitted since the last call on ``sender``; returns how many records."""

    def rebuild(self) -> None:
        """Re-derive in-memory indexes after the stores were restored."""

    def end_batch(self) -> None:
        """The batch's state is persisted: later changes start new segments."""


@dataclass(eq=False)
class StreamTask:
    partition: int
    processor: Processor
    changelog: ChangelogWriter
    #: next input offset to process (None: the changelog had none; start from the group commit)
    position: int | None = None
    #: the offset after our last acknowledged changelog write: a parked task is reused only if
    #: the changelog partition still ends there (nobody else wrote it meanwhile)
    changelog_end: int = 0
    #: append time (ms) of the last input record processed: how far the task's input is complete
    last_append_ms: int = 0
    #: the group's committed offset (what lag is measured against)
    committed: int | None = None
    #: wall time of the last tick: deadlines at or before it that did not fire are held back on purpose
    ticked_ms: int = 0
    stats: dict[str, int] = field(default_factory=dict)


class TaskSet:
    """The tasks of one stage: active ones, and parked ones kept for a quick re-assignment.

    aiokafka rebalances eagerly: every rebalance revokes every partition and assigns the new
    set, though most partitions come straight back. Dropping their state each time would mean a
    full changelog restore per rebalance; parking keeps it, and a parked task is taken back only
    if its changelog partition ends where its last write did (no other owner wrote it in between)."""

    def __init__(self) -> None:
        self.active: dict[int, StreamTask] = {}
        self.parked: dict[int, StreamTask] = {}

    def __iter__(self) -> Iterator[StreamTask]:
        return iter(list(self.active.values()))

    def __len__(self) -> int:
        return len(self.active)

    def get(self, partition: int) -> StreamTask | None:
        return self.active.get(partition)

    def park(self, partitions: list[int]) -> None:
        for p in partitions:
            task = self.active.pop(p, None)
            if task is not None:
                self.parked[p] = task

    def activate(self, task: StreamTask) -> None:
        self.parked.pop(task.partition, None)
        self.active[task.partition] = task

    def reusable(self, partition: int, changelog_end: int) -> StreamTask | None:
        """The parked task of ``partition`` if its state is still the changelog's; else None (and it is dropped)."""
        task = self.parked.pop(partition, None)
        if task is not None and task.changelog_end == changelog_end:
            return task
        return None

    def drop_parked(self, keep: set[int]) -> list[int]:
        """Forget parked tasks whose partitions were not assigned back (their memory goes)."""
        gone = [p for p in self.parked if p not in keep]
        for p in gone:
            del self.parked[p]
        return gone
