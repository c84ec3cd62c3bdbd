"""``touchstream dlq replay``: re-send dead letters through the same validation, idempotently.

After a producer or contract fix, dead letters that now validate are produced again to
``touchpoints.raw`` with their original key and bytes. Idempotent twice over: progress is a
committed consumer-group offset (one group per ``--reason``, so replaying one reason never
skips another's letters), and a letter re-sent twice is dropped by the pipeline's event_id
dedup. Letters that still fail stay where they are and are counted.

Only the letters that exist when the replay starts are replayed: if the workers do not run the
fix yet, each re-sent event is dead-lettered again, and chasing those new letters would re-send
them in a loop that never goes idle. They stay for the next replay.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.structs import TopicPartition

from streams.app import topics
from streams.core.contract import Rejection, validate
from streams.core.deadletter import original_of
from streams.kafka_admin import client_kwargs
from streams.progress import Progress
from streams.settings import Settings


async def replay(
    s: Settings, reason: str | None = None, timeout_s: float = 10.0, progress: Progress | None = None
) -> dict[str, Any]:
    """``progress``: letters read, out of those between the group's committed offsets and the
    end offsets at the start (what this replay will read)."""
    group = f"{s.app_id}-dlq-replay-{reason or 'all'}"
    topic = s.topic(topics.DLQ)
    consumer = AIOKafkaConsumer(
        topic, bootstrap_servers=s.bootstrap, group_id=group, enable_auto_commit=False,
        auto_offset_reset="earliest", **client_kwargs(s),
    )
    producer = AIOKafkaProducer(bootstrap_servers=s.bootstrap, acks="all", enable_idempotence=True, **client_kwargs(s))
    await consumer.start()
    await producer.start()
    counts = {"read": 0, "resent": 0, "still_invalid": 0, "other_reason": 0, "unreadable": 0, "truncated": 0}
    try:
        await consumer.topics()  # metadata, so the topic's partitions are known
        parts = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or ())]
        ends: dict[TopicPartition, int] = await consumer.end_offsets(parts) if parts else {}
        if progress is not None and ends:
            progress.set_total(await _pending(consumer, ends))
        idle_since = time.monotonic()
        while time.monotonic() - idle_since < timeout_s:
            if ends and await _caught_up(consumer, ends):
                break
            batch = await consumer.getmany(timeout_ms=500, max_records=1000)
            if not batch:
                continue
            idle_since = time.monotonic()
            now = int(time.time() * 1000)
            for tp, msgs in batch.items():
                for msg in msgs:
                    if tp in ends and msg.offset >= ends[tp]:  # written after we started: left for next time
                        consumer.seek(tp, ends[tp])  # so the commit stops before it
                        consumer.pause(tp)
                        break
                    counts["read"] += 1
                    try:
                        rec = orjson.loads(msg.value)
                        key, value = original_of(rec)
                    except Exception:  # a foreign message on the DLQ: count it, never crash
                        counts["unreadable"] += 1
                        continue
                    if reason is not None and rec.get("reason") != reason:
                        counts["other_reason"] += 1
                        continue
                    if rec.get("original_truncated"):  # only a prefix was kept (deadletter.MAX_ORIGINAL_BYTES)
                        counts["truncated"] += 1
                        continue
                    res = validate(value, now_ms=now, max_bytes=s.max_message_bytes, max_future_ms=s.max_future_ms)
                    if isinstance(res, Rejection):
                        counts["still_invalid"] += 1
                        continue
                    await producer.send(s.topic(topics.RAW), value=value, key=key)
                    counts["resent"] += 1
            await producer.flush()
            await consumer.commit()
            if progress is not None:
                progress.update(counts["read"])
    finally:
        await producer.stop()
        await consumer.stop()
    return counts


async def _pending(consumer: AIOKafkaConsumer, ends: dict[TopicPartition, int]) -> int | None:
    """Letters from the group's committed offsets (or the log start) to ``ends``; None if unknown."""
    try:
        starts = await consumer.beginning_offsets(list(ends))
        total = 0
        for tp, end in ends.items():
            committed = await consumer.committed(tp)
            total += max(0, end - max(starts.get(tp, 0), committed if committed is not None else 0))
    except Exception:  # only the progress display needs it: show counts without a total
        return None
    return total


async def _caught_up(consumer: AIOKafkaConsumer, ends: dict[TopicPartition, int]) -> bool:
    assigned = consumer.assignment()
    if not assigned or not set(ends) <= assigned:
        return False  # still joining, or another replay of this group holds partitions: idle timeout decides
    for tp, end in ends.items():
        if await consumer.position(tp) < end:
            return False
    return True


def run(s: Settings, reason: str | None = None, timeout_s: float = 10.0) -> dict[str, Any]:
    return asyncio.run(replay(s, reason, timeout_s))
