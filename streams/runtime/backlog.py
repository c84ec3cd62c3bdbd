"""How far an upstream stage's input is complete: no backlog older than this append time.

Why: wall-clock deadlines (SLA breaches) must not fire for a wait whose answer is still in a
backlog. The stateful stage knows its own backlog (its partitions' positions against their
high watermarks), but the records it has not seen may also still sit *upstream*, in the raw
topic the validate stage has not read yet — after an outage both stages restart behind, and
the valid topic looks caught up while the raw topic holds an hour. So the stage also watches
the upstream group: every ``interval_s`` it reads the group's committed offsets and the topic's
end offsets, and for every partition that lags, the append time of the first record not yet
consumed. The input is complete up to just before the oldest of those (the wall clock when
nothing lags). The raw topic is created with ``message.timestamp.type=LogAppendTime``, so
those times are the broker's, not a producer's clock.

An unreachable broker or an error leaves the last answer in place, so a deadline never fires on
a guess. The answer is refreshed every ``interval_s`` (0.25 s, two small requests): a deadline
waits at most that long for it, which keeps a breach page within a second of its due time.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

from aiokafka import AIOKafkaConsumer
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.structs import TopicPartition

from streams.kafka_admin import client_kwargs
from streams.settings import Settings

log = logging.getLogger(__name__)


def now_ms() -> int:
    return time.time_ns() // 1_000_000


class UpstreamBacklog:
    def __init__(self, settings: Settings, group: str, topic: str, interval_s: float = 0.25,
                 clock: Callable[[], int] = now_ms) -> None:
        self.settings, self.group, self.topic, self.interval_s = settings, group, topic, interval_s
        self.clock = clock
        self.complete_ms: int = 0  # nothing is known to be complete until the first answer
        self.lagging: dict[int, int] = {}  # partition → records behind (last answer)
        self._stopping = False
        self._admin: AIOKafkaAdminClient | None = None
        self._consumer: AIOKafkaConsumer | None = None

    async def run(self) -> None:
        try:
            while not self._stopping:
                try:
                    await asyncio.wait_for(self.refresh(), timeout=max(5.0, self.interval_s * 5))
                except asyncio.CancelledError:
                    raise
                except Exception as exc:  # keep the last answer: stale is safe, a guess is not
                    log.debug("upstream backlog of %s unknown (%r)", self.group, exc)
                    await self._reset()
                await asyncio.sleep(self.interval_s)
        finally:
            await self._reset()

    async def stop(self) -> None:
        self._stopping = True

    async def _clients(self) -> tuple[AIOKafkaAdminClient, AIOKafkaConsumer]:
        s = self.settings
        if self._admin is None:
            admin = AIOKafkaAdminClient(bootstrap_servers=s.bootstrap, request_timeout_ms=5000, **client_kwargs(s))
            await admin.start()
            self._admin = admin
        if self._consumer is None:
            consumer = AIOKafkaConsumer(bootstrap_servers=s.bootstrap, group_id=None, enable_auto_commit=False,
                                        client_id=f"{s.app_id}-backlog", max_partition_fetch_bytes=64 << 10,
                                        request_timeout_ms=5000, **client_kwargs(s))
            await consumer.start()
            self._consumer = consumer
        return self._admin, self._consumer

    async def _reset(self) -> None:
        admin, consumer, self._admin, self._consumer = self._admin, self._consumer, None, None
        for client in (admin, consumer):
            if client is None:
                continue
            try:
                await asyncio.wait_for(client.close() if client is admin else client.stop(), 5)  # type: ignore[union-attr]
            except Exception as exc:  # closing a broken client must not end the watcher
                log.debug("closing a backlog client failed (%r)", exc)

    async def refresh(self) -> int:
        asked = self.clock()
        admin, consumer = await self._clients()
        committed = {tp.partition: meta.offset for tp, meta in
                     (await admin.list_consumer_group_offsets(self.group)).items() if tp.topic == self.topic}
        parts = consumer.partitions_for_topic(self.topic)
        if not parts:
            await consumer.topics()  # refreshes metadata
            parts = consumer.partitions_for_topic(self.topic) or set()
        tps = [TopicPartition(self.topic, p) for p in sorted(parts)]
        ends = await consumer.end_offsets(tps)
        lagging = {tp.partition: end - max(0, committed.get(tp.partition, 0)) for tp, end in ends.items()
                   if end > max(0, committed.get(tp.partition, 0))}
        complete = asked
        if lagging:
            firsts = [TopicPartition(self.topic, p) for p in lagging]
            consumer.assign(firsts)
            for tp in firsts:
                consumer.seek(tp, max(0, committed.get(tp.partition, 0)))
            oldest: int | None = None
            pending = set(firsts)
            deadline = time.monotonic() + 5.0
            while pending and time.monotonic() < deadline:
                got = await consumer.getmany(*pending, timeout_ms=500, max_records=len(pending) * 8)
                for tp, records in got.items():
                    if records and tp in pending:
                        pending.discard(tp)
                        ts = records[0].timestamp
                        oldest = ts if oldest is None else min(oldest, ts)
            if pending:
                raise TimeoutError(f"no record at the committed offset of {sorted(tp.partition for tp in pending)}")
            if oldest is not None:
                complete = min(asked, oldest - 1)
        self.lagging = lagging
        self.complete_ms = complete
        return complete
