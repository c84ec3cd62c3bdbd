"""The process stage: ``touchpoints.valid`` → the core pipeline → output topics, one task per partition.

Each owned partition of ``touchpoints.valid`` (keyed by tenant) is a stream task of
:class:`streams.runtime.stateful.StatefulStage` with its own :class:`PipelineProcessor`, i.e.
its own :class:`~streams.core.pipeline.Pipeline` and state: a tenant lives on exactly one
partition, so the identity graph has one writer and a task never needs another's state. This
module only decodes, calls the pipeline and routes what it emits; the order of effects is the
runtime's (:mod:`streams.runtime.checkpoint`).

Clocks: the runtime ticks each task with the wall clock and with how far its input is complete
(:meth:`StatefulStage.input_complete`), so an SLA deadline fires only when no backlog older than
it may still hold the reply.
"""

from __future__ import annotations

import base64
from collections.abc import Callable
from typing import Any

import orjson

from streams import metrics
from streams.app import topics
from streams.app.deadletters import INVALID_INTERNAL, queue_dead_letter
from streams.core.contract import from_valid_dict, read_timestamp
from streams.core.pipeline import Outputs, Pipeline, PipelineConfig
from streams.runtime.backlog import UpstreamBacklog, now_ms
from streams.runtime.producer import BatchSender, KafkaOut
from streams.runtime.stateful import StatefulStage
from streams.settings import Settings


class PipelineProcessor:
    """One task's pipeline and the routing of its outputs."""

    def __init__(self, config: PipelineConfig, settings: Settings, stats: dict[str, int]) -> None:
        self.pipeline = Pipeline(config)
        self.stores = self.pipeline.stores
        self.stats = stats
        self.settings = settings
        self._routes = [(settings.topic(name), name, attr, key) for name, attr, key in topics.PROCESS_OUTPUTS]
        self._dead: list[tuple[Any, str, int]] = []  # (record, detail, wall ms)

    # -- Processor protocol ---------------------------------------------------------------
    def process(self, records: list[Any], wall_ms: int) -> None:
        loads, process = orjson.loads, self.pipeline.process
        for rec in records:
            try:
                tp = from_valid_dict(loads(rec.value))
            except (ValueError, TypeError, KeyError, AttributeError) as exc:
                self._dead.append((rec, f"not a record of the validate stage: {exc!r}", wall_ms))
                continue
            process(tp, wall_ms)

    def tick(self, wall_ms: int, full: bool, input_complete_ms: int) -> None:
        if full:
            self.pipeline.tick(wall_ms, wall=True, input_complete_ms=input_complete_ms)
        else:
            self.pipeline.fire_timers(wall_ms, input_complete_ms=input_complete_ms)

    def next_due(self, after_ms: int) -> int | None:
        return self.pipeline.next_due(after_ms)

    def rebuild(self) -> None:
        self.pipeline.rebuild()

    def end_batch(self) -> None:
        self.pipeline.end_batch()

    def emit(self, sender: BatchSender) -> int:
        out = self.pipeline.drain()
        n = 0
        dumps, stats = orjson.dumps, self.stats
        for topic, name, attr, key_field in self._routes:
            records = getattr(out, attr)
            if not records:
                continue
            for rec in records:
                key = rec.get(key_field)
                sender.add(topic, None if key is None else str(key).encode(), dumps(rec))
            metrics.EVENTS_OUT.labels(name).inc(len(records))
            stats[name] = stats.get(name, 0) + len(records)
            n += len(records)
        for rec, detail, at in self._dead:
            queue_dead_letter(sender, self.settings, INVALID_INTERNAL, detail, rec, at)
        dlq = self.settings.topic(topics.DLQ)
        for letter in out.dead_letters:  # events the core refused (too_late, future_timestamp)
            key = letter.get("key_b64")
            sender.add(dlq, None if key is None else base64.b64decode(key), dumps(letter))
            metrics.DLQ.labels(letter["reason"]).inc()
        dead = len(self._dead) + len(out.dead_letters)
        n += dead
        stats["dlq"] = stats.get("dlq", 0) + dead
        self._dead.clear()
        _observe(out)
        return n


def _observe(out: Outputs) -> None:
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


def update_gauges(stage: StatefulStage) -> None:
    """Open sessions, waits and anomalies over this worker's tasks (a full-tick hook, under the lock)."""
    pipelines = [p.pipeline for p in stage.processors() if isinstance(p, PipelineProcessor)]
    metrics.OPEN_SESSIONS.set(sum(p.sessions.open_sessions() for p in pipelines))
    metrics.OPEN_WAITS.set(sum(p.sla.open_waits() for p in pipelines))
    oldest = [t for p in pipelines if (t := p.sla.oldest_wait_started()) is not None]
    metrics.OLDEST_WAIT.set(0 if not oldest else max(0.0, (now_ms() - min(oldest)) / 1000))
    metrics.OPEN_ANOMALIES.set(sum(p.detector.open_incidents() for p in pipelines))


def stage(settings: Settings, config: PipelineConfig, out: KafkaOut, stats: dict[str, int]) -> StatefulStage:
    """The process stage for this worker, watching the validate stage's backlog for its clocks."""
    upstream = UpstreamBacklog(settings, topics.consumer_group(settings.app_id, topics.RAW), settings.topic(topics.RAW))
    new: Callable[[int], PipelineProcessor] = lambda _partition: PipelineProcessor(config, settings, stats)  # noqa: E731
    st = StatefulStage(settings, "process", settings.topic(topics.VALID),
                       topics.consumer_group(settings.app_id, topics.VALID), new, out, settings.process_batch,
                       upstream=upstream)
    st.on_full_tick.append(update_gauges)
    return st
