"""Agent: ``touchpoints.valid`` → the core pipeline → output topics; plus the clock tick.

Order per batch (this order is the delivery guarantee):
1. feed events to the pipeline (pure, synchronous);
2. send its outputs, one record batch per partition, and **wait for the acks** (acks=all);
3. send the changed state keys to the changelog (once per key per batch) and wait again;
4. ack the batch, so Faust may commit its offsets.
A crash after 2 re-delivers the batch, and the replay re-emits the same records (at-least-once
on outputs; ClickHouse collapses them). A crash after 3 finds the events in the dedup state,
so the replay emits nothing twice and state is never applied twice.

The tick (every 0.25 s, a Faust timer) advances SLA deadlines and watermarks by the wall
clock; it shares a lock with the batch loop so both see consistent state.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import orjson

from streams import metrics
from streams.app import topics
from streams.app.guard import complete
from streams.app.produce import BatchSender
from streams.core.contract import from_valid_dict, parse_timestamp

if TYPE_CHECKING:
    from streams.app.runtime import Runtime

TICK_S = 0.25


def register(rt: Runtime, table: Any) -> None:
    from streams.app.runtime import now_ms

    app = rt.app
    pipeline = rt.pipeline
    sender = BatchSender(rt.out)

    async def commit_outputs() -> None:
        out = pipeline.drain()
        rt.emit(out, sender)
        if out.duplicates:
            metrics.DUPLICATES.inc(out.duplicates)
        if out.late_sessions:
            metrics.LATE.labels("sessions").inc(out.late_sessions)
        if out.late_funnel:
            metrics.LATE.labels("funnel").inc(out.late_funnel)
        for rec in out.sla:
            metrics.SLA_EVENTS.labels(rec["event"], rec["channel"], rec.get("team") or "").inc()
        for rec in out.response_times:
            metrics.RESPONSE_TIME.labels(rec["channel"], rec.get("team") or "").observe(rec["response_s"])
        if out.enriched:
            now = now_ms()
            for rec in out.enriched[:: max(1, len(out.enriched) // 50)]:  # sampled: cheap and representative
                metrics.PROCESS_LATENCY.observe(max(0.0, (now - parse_timestamp(rec["occurred_at"])) / 1000))
        await sender.send()
        metrics.STATE_WRITES.inc(rt.bridge.flush(sender))
        rt.bridge.persisted(await sender.send())
        pipeline.end_batch()

    def reload() -> None:
        active = {tp.partition for tp in app.assignor.assigned_actives() if tp.topic == rt.settings.topic(topics.VALID)}
        rt.bridge.reload(active)
        pipeline.rebuild()
        rt.ready = True

    @table.on_recover
    async def on_recovered() -> None:
        async with rt.lock:
            reload()

    @app.on_partitions_revoked.connect
    async def on_revoked(app_: Any, revoked: Any, **kwargs: Any) -> None:
        rt.ready = False

    @app.agent(rt.topics[topics.VALID], name="process")
    async def process_agent(stream):  # type: ignore[no-untyped-def]
        async for events in stream.take_events(rt.settings.process_batch, within=0.02):
            await complete(process_batch(events), "process batch")

    async def process_batch(events: list[Any]) -> None:
        async with rt.lock:
            if not rt.ready:
                reload()
            wall = now_ms()
            loads, process = orjson.loads, pipeline.process
            for ev in events:
                process(from_valid_dict(loads(ev.value)), wall)
            metrics.EVENTS_IN.labels(topics.VALID).inc(len(events))
            await commit_outputs()

    @app.timer(TICK_S, name="tick")
    async def tick() -> None:
        if rt.ready:
            await complete(tick_once(), "clock tick")

    async def tick_once() -> None:
        async with rt.lock:
            pipeline.tick(now_ms(), wall=True)
            await commit_outputs()
            metrics.OPEN_SESSIONS.set(pipeline.sessions.open_sessions())
            metrics.OPEN_WAITS.set(pipeline.sla.open_waits())
            oldest = pipeline.sla.oldest_wait_started()
            metrics.OLDEST_WAIT.set(0 if oldest is None else max(0.0, (now_ms() - oldest) / 1000))
            metrics.OPEN_ANOMALIES.set(pipeline.detector.open_incidents())
