"""Builds the Faust app and everything the agents share (pipeline, state bridge, ClickHouse).

One function wires it all so the CLI, the tests and the benchmark start the exact same
worker. Agents live in their own modules and only route.
"""

from __future__ import annotations

import asyncio
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import faust
import orjson

from streams.app import replaystore, topics
from streams.app.delivery import patch_delivery
from streams.app.offsets import patch_consumer
from streams.app.produce import BatchSender, KafkaOut
from streams.app.stage import Stage
from streams.app.statestore import CHANGELOG_CONFIG, StateBridge
from streams.clickhouse.client import ClickHouse
from streams.core.pipeline import Outputs, Pipeline, PipelineConfig
from streams.core.sla import PolicySet
from streams.settings import Settings


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def pipeline_config(settings: Settings) -> PipelineConfig:
    policies = None
    if settings.sla_policies_path:
        policies = PolicySet.from_dict(orjson.loads(Path(settings.sla_policies_path).read_bytes()))
    from streams.notify import paging_config

    return PipelineConfig(
        paging=paging_config(os.environ),
        dedup_window_ms=settings.dedup_window_ms,
        session_gap_ms=settings.session_gap_ms,
        allowed_lateness_ms=settings.allowed_lateness_ms,
        idle_advance_ms=settings.idle_advance_ms,
        funnel_window_ms=settings.funnel_window_ms,
        policies=policies,
        pseudonyms=settings.pseudonymiser(),
    )


@dataclass
class Runtime:
    settings: Settings
    app: faust.App
    pipeline: Pipeline
    bridge: StateBridge
    clickhouse: ClickHouse
    topics: dict[str, Any]
    out: KafkaOut
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    ready: bool = False
    stats: dict[str, int] = field(default_factory=dict)
    stages: list[Stage] = field(default_factory=list)  # the stateless stages on plain consumer groups

    def emit(self, out: Outputs, sender: BatchSender) -> None:
        """Queue a pipeline's outputs on their topics (sent and awaited by the caller before state)."""
        from streams import metrics

        for topic_name, attr, key_field in topics.PROCESS_OUTPUTS:
            records = getattr(out, attr)
            if not records:
                continue
            topic = self.settings.topic(topic_name)
            dumps = orjson.dumps
            for rec in records:
                key = rec.get(key_field)
                sender.add(topic, None if key is None else str(key).encode(), dumps(rec))
            metrics.EVENTS_OUT.labels(topic_name).inc(len(records))
            self.stats[topic_name] = self.stats.get(topic_name, 0) + len(records)


def faust_broker_kwargs(settings: Settings) -> dict[str, Any]:
    kw: dict[str, Any] = {}
    if settings.kafka_security_protocol != "PLAINTEXT":
        from streams.kafka_admin import client_kwargs

        ckw = client_kwargs(settings)
        if settings.kafka_sasl_mechanism:
            kw["broker_credentials"] = faust.SASLCredentials(
                username=settings.kafka_sasl_username or "",
                password=settings.kafka_sasl_password or "",
                mechanism=settings.kafka_sasl_mechanism,
                ssl_context=ckw.get("ssl_context"),
            )
        elif "ssl_context" in ckw:
            kw["broker_credentials"] = faust.SSLCredentials(ckw["ssl_context"])
    return kw


def build(settings: Settings, *, web: bool = True) -> Runtime:
    """The app for ``settings.role``: all stages, processing only, or the ClickHouse sink only."""
    settings.state_dir.mkdir(parents=True, exist_ok=True)
    patch_consumer()  # before the app creates its consumer
    patch_delivery()
    replaystore.register()
    app = faust.App(
        settings.app_id if settings.role != "sink" else f"{settings.app_id}-sink",
        broker=",".join(f"kafka://{b}" for b in settings.bootstrap.split(",")),
        store=replaystore.table_store_url(settings.store),
        table_standby_replicas=settings.standby_replicas,
        datadir=str(settings.state_dir),
        topic_partitions=settings.partitions,
        topic_replication_factor=settings.replication,
        topic_allow_declare=True,
        web_enabled=web,
        web_bind=settings.web_host,
        web_port=settings.web_port,
        web_host=settings.web_host,
        producer_acks=-1,
        producer_linger_ms=5,
        producer_max_batch_size=262_144,
        stream_buffer_maxsize=8192,
        broker_commit_interval=1.0,
        # A kill -9'd worker keeps its partitions until its group session expires: keep that short.
        broker_session_timeout=settings.group_session_timeout_s,
        broker_heartbeat_interval=max(1.0, settings.group_session_timeout_s / 5),
        consumer_auto_offset_reset="earliest",
        table_cleanup_interval=3600.0,
        **faust_broker_kwargs(settings),
    )
    faust_topics = {
        name: app.topic(
            settings.topic(name), key_type=bytes, value_type=bytes, key_serializer="raw", value_serializer="raw",
            partitions=settings.partitions, replicas=settings.replication,
        )
        for name in topics.ALL
    }
    processing = settings.role in ("all", "process")
    table = (
        app.Table(
            # bytes in, bytes out: Faust picks the "raw" codec for bytes types, so the changelog
            # carries exactly what StateBridge wrote (orjson values, "ns\x1fkey" keys)
            "state", default=None, partitions=settings.partitions, key_type=bytes, value_type=bytes,
            extra_topic_configs=CHANGELOG_CONFIG,
        )
        if processing
        else None
    )
    if table is not None and isinstance(table.data, replaystore.ReplayStore):
        table.data.settings = settings  # its bulk changelog reader connects like every other client
    pipeline = Pipeline(pipeline_config(settings))
    bridge = StateBridge(table, pipeline.stores, settings.partitions)
    ch = ClickHouse(settings.clickhouse_url, settings.clickhouse_database)
    rt = Runtime(settings, app, pipeline, bridge, ch, faust_topics, KafkaOut(settings))

    from streams.app import lag, looplag, pages, process, validate
    from streams.app import sink as sink_mod
    from streams.app import web as web_mod

    if processing:
        rt.stages.append(validate.stage(rt))
        process.register(rt, table)
    if settings.role in ("all", "sink"):
        rt.stages.extend(sink_mod.stages(rt))
        pages.register(rt)
    for stage in rt.stages:
        app.task(stage.run)

    @app.on_before_shutdown.connect
    async def _stop(app_: Any, **kwargs: Any) -> None:
        """Stages first (their batches in flight still produce), then the producer."""
        await asyncio.gather(*(stage.stop() for stage in rt.stages))
        await rt.out.stop()

    lag.register(rt)
    looplag.register(rt)
    if web:
        web_mod.register(rt)
    return rt
