"""The one place that orders a batch's effects: outputs → acks → state + position → acks → commit.

Every batch of the stateful stage and every clock tick that changed something ends here, so
the delivery guarantee is this function and nothing else:

1. the tasks' outputs are sent and **acknowledged** by the brokers (acks=all);
2. each task's changed state keys and its input position are written to its changelog
   partition (:mod:`streams.runtime.changelog`) and acknowledged;
3. the tasks' positions are committed to the consumer group (monitoring; the changelog holds
   the position that restore uses).

A crash before 2 leaves the changelog at the previous batch: the restarted task restores that
state and position and processes the batch again, re-emitting the same outputs
(at-least-once on output topics; the ClickHouse tables collapse re-deliveries by key). A crash
inside 2 is completed or ignored whole by the restore (the batch record). So state is applied
exactly once, and an output is never missing for a state change that was kept.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

from aiokafka.errors import KafkaError
from aiokafka.structs import TopicPartition

from streams import metrics
from streams.runtime.producer import BatchSender
from streams.runtime.task import StreamTask

log = logging.getLogger(__name__)

Commit = Callable[[dict[TopicPartition, int]], Awaitable[None]]


class Checkpoint:
    def __init__(self, sender: BatchSender, input_topic: str, changelog_topic: str, commit: Commit,
                 stage: str = "process") -> None:
        self.sender = sender
        self.input_topic = input_topic
        self.changelog_topic = changelog_topic
        self.commit = commit
        self.stage = stage

    async def run(self, tasks: list[StreamTask]) -> None:
        sender = self.sender
        for task in tasks:
            task.processor.emit(sender)
        await sender.send()
        writes = 0
        for task in tasks:
            writes += task.changelog.queue(sender, task.position)
        acked = await sender.send()
        metrics.STATE_WRITES.inc(writes)
        for task in tasks:
            end = acked.get((self.changelog_topic, task.partition))
            if end is not None:
                task.changelog_end = end + 1
            task.processor.end_batch()
        offsets = {TopicPartition(self.input_topic, t.partition): t.position for t in tasks
                   if t.position is not None and t.position != t.committed}
        if not offsets:
            return
        try:
            await self.commit(offsets)
        except KafkaError as exc:  # the group moved on; the changelog already holds the positions
            metrics.COMMIT_FAILURES.labels(self.stage).inc()
            log.info("%s: group commit of %d partitions refused (%r); positions are in the changelog",
                     self.stage, len(offsets), exc)
            return
        for t in tasks:
            if t.position is not None:
                t.committed = t.position
