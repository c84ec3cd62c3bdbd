"""Stage: ``touchpoints.raw`` → ``touchpoints.valid`` (keyed by tenant) or ``touchpoints.dlq``.

Stateless, so it runs as a plain consumer group (:mod:`streams.runtime.stage`) and scales with
the raw topic's partitions. A batch's offsets are committed only after its valid and
dead-lettered records are acknowledged by the brokers, so nothing committed is unsent.

Each valid record keeps the raw record's timestamp (the broker's append time: the raw topic is
created with ``LogAppendTime``), so the process stage can tell how old a backlog is however
many hops it crossed (:meth:`streams.runtime.stateful.StatefulStage.input_complete`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import orjson

from streams import metrics
from streams.app import topics
from streams.core.contract import Rejection, to_valid_dict, validate
from streams.core.deadletter import dlq_record
from streams.runtime.backlog import now_ms
from streams.runtime.producer import BatchSender, KafkaOut
from streams.runtime.stage import Stage
from streams.settings import Settings

BATCH = 4000
WITHIN_S = 0.005


def stage(s: Settings, out: KafkaOut, stats: dict[str, int]) -> Stage:
    valid_topic = s.topic(topics.VALID)
    dlq_topic = s.topic(topics.DLQ)
    sender = BatchSender(out)

    async def validate_batch(records: list[Any], keep_trying: Callable[[], bool]) -> bool:
        now = now_ms()
        n_valid = n_dlq = 0
        max_bytes, max_future_ms = s.max_message_bytes, s.max_future_ms
        for msg in records:
            source = (msg.topic, msg.partition, msg.offset)
            value = msg.value if isinstance(msg.value, bytes) else b""
            res = validate(value, now_ms=now, max_bytes=max_bytes, max_future_ms=max_future_ms, source=source)
            if isinstance(res, Rejection):
                record = dlq_record(res.reason, res.detail, value, source, now, msg.key)
                sender.add(dlq_topic, msg.key, orjson.dumps(record))
                metrics.DLQ.labels(res.reason).inc()
                n_dlq += 1
                continue
            # the raw record's time, never ahead of ours (a producer's clock on a CreateTime topic
            # may be; the broker refuses records too far ahead, which would block this stage)
            sender.add(valid_topic, res.tenant_id.encode(), orjson.dumps(to_valid_dict(res)),
                       timestamp_ms=min(msg.timestamp, now) if msg.timestamp and msg.timestamp > 0 else None)
            n_valid += 1
        for msg in records[:: max(1, len(records) // 50)]:  # sampled: cheap and representative
            if msg.timestamp:
                metrics.APPEND_LATENCY.observe(max(0.0, (now - msg.timestamp) / 1000))
        await sender.send()
        metrics.EVENTS_IN.labels(topics.RAW).inc(len(records))
        metrics.EVENTS_OUT.labels(topics.VALID).inc(n_valid)
        stats["raw_in"] = stats.get("raw_in", 0) + len(records)
        stats["dlq"] = stats.get("dlq", 0) + n_dlq
        return True

    return Stage(s, "validate", [s.topic(topics.RAW)], topics.consumer_group(s.app_id, topics.RAW),
                 validate_batch, BATCH, WITHIN_S)
