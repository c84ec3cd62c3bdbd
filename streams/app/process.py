"""Agent: ``touchpoints.valid`` → the core pipeline → output topics; plus the clock tick.

Order per batch (this order is the delivery guarantee):
1. feed events to the pipeline (pure, synchronous);
2. send its outputs, one record batch per partition, and **wait for the acks** (acks=all);
3. send the changed state keys to the changelog (once per key per batch) and wait again;
4. ack the batch, so Faust may commit its offsets.
A crash after 2 re-delivers the batch, and the replay re-emits the same records (at-least-once
on outputs; ClickHouse collapses them). A crash after 3 finds the events in the dedup state,
so the replay emits nothing twice and state is never applied twice.

The clock (a Faust task) ticks every 0.25 s to advance watermarks by the wall clock, and wakes
in between at the next SLA/page deadline; it shares a lock with the batch loop so both see
consistent state.
"""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING, Any

import orjson

from streams import metrics
from streams.app import topics
from streams.app.gc_policy import GcPolicy
from streams.app.guard import complete
from streams.app.inorder import InOrder
from streams.app.produce import BatchSender
from streams.core.contract import from_valid_dict, read_timestamp

if TYPE_CHECKING:
    from streams.app.runtime import Runtime

TICK_S = 0.25  # full tick period: watermarks, idle tenants, feed-stall checks, gauges
MIN_SLEEP_S = 0.005  # floor between clock wake-ups, so a storm of deadlines cannot starve ingest


def register(rt: Runtime, table: Any) -> None:
    from streams.app.runtime import now_ms

    app = rt.app
    pipeline = rt.pipeline
    sender = BatchSender(rt.out)
    in_order = InOrder(app, "process")
    gc_policy = GcPolicy()

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
                metrics.PROCESS_LATENCY.observe(max(0.0, (now - read_timestamp(rec["occurred_at"])) / 1000))
        await sender.send()
        metrics.STATE_WRITES.inc(rt.bridge.flush(sender))
        rt.bridge.persisted(await sender.send())
        pipeline.end_batch()

    def reload() -> None:
        active = {tp.partition for tp in app.assignor.assigned_actives() if tp.topic == rt.settings.topic(topics.VALID)}
        rt.bridge.reload(active)
        pipeline.rebuild()
        gc_policy.freeze()  # the reloaded state is long-lived: keep full collections from walking it
        rt.ready = True

    @table.on_recover
    async def on_recovered() -> None:
        async with rt.lock:
            reload()

    @app.on_partitions_revoked.connect
    async def on_revoked(app_: Any, revoked: Any, **kwargs: Any) -> None:
        """Faust has waited for the batch in flight (its events acked); the clock tick is not an
        event, so wait for a tick in flight here. Otherwise its state writes (closed windows and
        sessions) could land after the partition's next owner read the changelog, unknown to that
        owner (a funnel segment written so would be merged at a later recovery and count twice)."""
        async with rt.lock:
            rt.ready = False

    @app.agent(rt.topics[topics.VALID], name="process")
    async def process_agent(stream):  # type: ignore[no-untyped-def]
        async for events in stream.take_events(rt.settings.process_batch, within=0.005):
            await complete(process_batch(events), "process batch")

    async def process_batch(batch: list[Any]) -> None:
        events = await in_order.take(batch)
        async with rt.lock:
            with metrics.BATCH_SECONDS.labels("process").time():
                if not rt.ready:
                    reload()
                wall = now_ms()
                loads, process = orjson.loads, pipeline.process
                for ev in events:
                    process(from_valid_dict(loads(ev.value)), wall)
                metrics.EVENTS_IN.labels(topics.VALID).inc(len(events))
                await commit_outputs()

    @app.task
    async def clock() -> None:
        """Every ``TICK_S`` the full tick; in between, wake at the next SLA/page deadline.

        A fixed-period timer would add up to one period to every breach; sleeping until the
        next deadline fires it as soon as the lock is free. Deadlines that fall due while a
        tick runs are fired by the next wake-up, so under a storm ticks run back to back and
        each one takes what is due: the batch size follows the load."""
        last_full = 0.0
        while True:
            delay = TICK_S
            if rt.ready:
                mono = time.monotonic()
                full = mono - last_full >= TICK_S
                fired_at = now_ms()
                await complete(tick_once(fired_at, full), "clock tick")
                if full:
                    last_full = mono
                delay = TICK_S - (time.monotonic() - last_full)
                nxt = pipeline.next_due(fired_at)
                if nxt is not None:
                    delay = min(delay, (nxt - now_ms()) / 1000)
            await asyncio.sleep(max(MIN_SLEEP_S, delay))

    async def tick_once(at_ms: int, full: bool) -> None:
        async with rt.lock:
            if not rt.ready:  # revoked while this tick waited for the lock: the state is no longer ours
                return
            with metrics.CLOCK_TICK_SECONDS.labels("full" if full else "timers").time():
                if full:
                    pipeline.tick(max(at_ms, now_ms()), wall=True)
                else:
                    pipeline.fire_timers(max(at_ms, now_ms()))
                await commit_outputs()
                if not full:
                    return
                gc_policy.maybe_run()
                metrics.OPEN_SESSIONS.set(pipeline.sessions.open_sessions())
                metrics.OPEN_WAITS.set(pipeline.sla.open_waits())
                oldest = pipeline.sla.oldest_wait_started()
                metrics.OLDEST_WAIT.set(0 if oldest is None else max(0.0, (now_ms() - oldest) / 1000))
                metrics.OPEN_ANOMALIES.set(pipeline.detector.open_incidents())
