"""Agent: ``touchpoints.raw`` → ``touchpoints.valid`` (keyed by tenant) or ``touchpoints.dlq``.

Stateless, so it scales with the raw topic's partitions. Offsets are acked only after the
batch's valid and dead-lettered records are acknowledged by the brokers, so nothing acked is unsent.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import orjson

from streams import metrics
from streams.app import topics
from streams.app.guard import complete
from streams.app.inorder import InOrder
from streams.app.produce import BatchSender
from streams.core.contract import Rejection, to_valid_dict, validate
from streams.core.deadletter import dlq_record

if TYPE_CHECKING:
    from streams.app.runtime import Runtime


def register(rt: Runtime) -> None:
    from streams.app.runtime import now_ms

    s = rt.settings
    valid_topic = s.topic(topics.VALID)
    dlq_topic = s.topic(topics.DLQ)
    sender = BatchSender(rt.out)
    in_order = InOrder(rt.app, "validate")  # the core's source-offset check needs raw published in order

    @rt.app.agent(rt.topics[topics.RAW], name="validate")
    async def validate_agent(stream):  # type: ignore[no-untyped-def]
        async for events in stream.take_events(4000, within=0.02):
            await complete(validate_batch(events), "validate batch")

    async def validate_batch(batch: list[Any]) -> None:
        events = await in_order.take(batch)
        now = now_ms()
        n_valid = 0
        for ev in events:
            msg = ev.message
            source = (msg.topic, msg.partition, msg.offset)
            value = ev.value if isinstance(ev.value, bytes) else bytes(ev.value or b"")
            res = validate(
                value, now_ms=now, max_bytes=s.max_message_bytes, max_future_ms=s.max_future_ms, source=source
            )
            if isinstance(res, Rejection):
                key = msg.key if isinstance(msg.key, bytes) else None
                record = dlq_record(res.reason, res.detail, value, source, now, key)
                sender.add(dlq_topic, key, orjson.dumps(record))
                metrics.DLQ.labels(res.reason).inc()
                rt.stats["dlq"] = rt.stats.get("dlq", 0) + 1
                continue
            sender.add(valid_topic, res.tenant_id.encode(), orjson.dumps(to_valid_dict(res)))
            n_valid += 1
            if msg.timestamp:
                metrics.APPEND_LATENCY.observe(max(0.0, now / 1000 - msg.timestamp))
        await sender.send()
        metrics.EVENTS_IN.labels(topics.RAW).inc(len(events))
        metrics.EVENTS_OUT.labels(topics.VALID).inc(n_valid)
        rt.stats["raw_in"] = rt.stats.get("raw_in", 0) + len(events)
