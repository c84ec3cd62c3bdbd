"""Stage: ``touchpoints.raw`` → ``touchpoints.valid`` (keyed by tenant) or ``touchpoints.dlq``.

Stateless, so it runs as a plain consumer group (:mod:`streams.app.stage`) and scales with the
raw topic's partitions. A batch's offsets are committed only after its valid and dead-lettered
records are acknowledged by the brokers, so nothing committed is unsent.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import orjson

from streams import metrics
from streams.app import topics
from streams.app.produce import BatchSender
from streams.app.stage import Stage
from streams.core.contract import Rejection, to_valid_dict, validate
from streams.core.deadletter import dlq_record

if TYPE_CHECKING:
    from streams.app.runtime import Runtime

BATCH = 4000
WITHIN_S = 0.005


def stage(rt: Runtime) -> Stage:
    from streams.app.runtime import now_ms

    s = rt.settings
    valid_topic = s.topic(topics.VALID)
    dlq_topic = s.topic(topics.DLQ)
    sender = BatchSender(rt.out)

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
            sender.add(valid_topic, res.tenant_id.encode(), orjson.dumps(to_valid_dict(res)))
            n_valid += 1
        for msg in records[:: max(1, len(records) // 50)]:  # sampled: cheap and representative
            if msg.timestamp:
                metrics.APPEND_LATENCY.observe(max(0.0, (now - msg.timestamp) / 1000))
        await sender.send()
        metrics.EVENTS_IN.labels(topics.RAW).inc(len(records))
        metrics.EVENTS_OUT.labels(topics.VALID).inc(n_valid)
        rt.stats["raw_in"] = rt.stats.get("raw_in", 0) + len(records)
        rt.stats["dlq"] = rt.stats.get("dlq", 0) + n_dlq
        return True

    return Stage(s, "validate", [s.topic(topics.RAW)], topics.consumer_group(s.app_id, topics.RAW),
                 validate_batch, BATCH, WITHIN_S)
