"""Small synchronous helpers for tests: produce, count and read topics on the real broker."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.structs import TopicPartition

from streams.app.topics import consumer_group
from streams.kafka_admin import describe


def produce(bootstrap: str, topic: str, messages: Iterable[tuple[bytes | None, bytes]]) -> int:
    async def go() -> int:
        p = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", enable_idempotence=True, linger_ms=5)
        await p.start()
        n = 0
        try:
            for key, value in messages:
                await p.send(topic, value=value, key=key)
                n += 1
            await p.flush()
        finally:
            await p.stop()
        return n

    return asyncio.run(go())


def topic_counts(bootstrap: str, group: str | None = None, prefix: str = "") -> dict:
    """Scoped to a prefix: the shared test broker holds every test's topics."""
    return asyncio.run(describe(bootstrap, [group] if group else [], timeout=20.0, prefix=prefix))


def message_count(bootstrap: str, topic: str) -> int:
    info = topic_counts(bootstrap, prefix=topic)["topics"].get(topic)
    return 0 if info is None else int(info["messages"])


def group_lag(bootstrap: str, group: str, topic: str) -> int | None:
    info = topic_counts(bootstrap, group, prefix=topic)
    if topic not in info["topics"]:
        return None
    lag = info["lag"].get(group, {})
    if topic not in lag:
        return None
    return lag[topic]


def read_all(bootstrap: str, topic: str, timeout: float = 10.0) -> list[tuple[bytes | None, bytes, int]]:
    """Every message currently in the topic: (key, value, partition)."""

    async def go() -> list[tuple[bytes | None, bytes, int]]:
        c = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, auto_offset_reset="earliest")
        await c.start()
        try:
            parts = c.partitions_for_topic(topic) or set()
            if not parts:
                await c._client.force_metadata_update()
                parts = c.partitions_for_topic(topic) or set()
            tps = [TopicPartition(topic, p) for p in sorted(parts)]
            c.assign(tps)
            ends = await c.end_offsets(tps)
            await c.seek_to_beginning(*tps)
            out: list[tuple[bytes | None, bytes, int]] = []
            loop = asyncio.get_running_loop()
            deadline = loop.time() + timeout
            async def behind() -> bool:
                for tp in tps:
                    if await c.position(tp) < ends[tp]:
                        return True
                return False

            while await behind():
                if loop.time() > deadline:
                    raise TimeoutError(f"reading {topic} timed out")
                batch = await c.getmany(timeout_ms=500)
                for tp, msgs in batch.items():
                    out.extend((m.key, m.value, tp.partition) for m in msgs if m.offset < ends[tp])
            return out
        finally:
            await c.stop()

    return asyncio.run(go())


def stage_lag(bootstrap: str, app_id: str, prefix: str, topic: str, role: str = "all") -> int | None:
    """Lag of ``prefix + topic`` in the consumer group that reads it (see ``topics.consumer_group``)."""
    return group_lag(bootstrap, consumer_group(app_id, topic, role), prefix + topic)



def committed_offsets(bootstrap: str, groups: Iterable[str]) -> dict[tuple[str, int], int]:
    """The committed offset per (topic, partition) of ``groups``."""

    async def go() -> dict[tuple[str, int], int]:
        admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
        await admin.start()
        out: dict[tuple[str, int], int] = {}
        try:
            for group in groups:
                offs = await admin.list_consumer_group_offsets(group)
                out.update({(tp.topic, tp.partition): om.offset for tp, om in offs.items()})
        finally:
            await admin.close()
        return out

    return asyncio.run(go())


def partition_report(bootstrap: str, group: str, topic: str) -> str:
    """``partition committed/end`` for each partition of ``topic`` in ``group``: which partition
    a stalled wait is stuck on, for a failure message."""
    committed = committed_offsets(bootstrap, [group])
    ends = topic_counts(bootstrap, prefix=topic)["topics"].get(topic, {}).get("end_offsets", {})
    return f"{topic}: " + ", ".join(f"[{p}] {committed.get((topic, int(p)), '-')}/{end}"
                                    for p, end in sorted(ends.items()))
