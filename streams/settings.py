"""All configuration, from environment variables with documented defaults.

One frozen object built once at start-up (``Settings.from_env()``) and passed down; nothing
else in the package reads the environment, so a reader can see every knob here and tests
can build variants without monkeypatching ``os.environ``.

The embedded ClickHouse engine is single-process: several workers on it run
``TOUCHSTREAM_ROLE=process`` plus one ``sink``; with a ClickHouse server every worker can be ``all``.

| variable | default | meaning |
|---|---|---|
| TOUCHSTREAM_DATA_DIR | .touchstream | all local state: Kafka data + jars, embedded ClickHouse |
| KAFKA_BOOTSTRAP_SERVERS | (unset → local broker) | external brokers, e.g. ``kafka1:9092,kafka2:9092`` |
| TOUCHSTREAM_KAFKA_PORT | 19092 | port of the project-started local broker (node 1; +10 per further node) |
| KAFKA_SECURITY_PROTOCOL | PLAINTEXT | PLAINTEXT, SSL, SASL_PLAINTEXT or SASL_SSL |
| KAFKA_SASL_MECHANISM / KAFKA_SASL_USERNAME / KAFKA_SASL_PASSWORD | – | SASL/SCRAM pass-through |
| KAFKA_SSL_CAFILE | – | CA bundle for TLS |
| CLICKHOUSE_URL | chdb:///<data dir>/clickhouse | ``chdb:///path`` (embedded) or ``http(s)://user:pass@host:8123/db`` |
| CLICKHOUSE_DATABASE | touchstream | database used when the URL names none |
| TOUCHSTREAM_TOPIC_PREFIX | (empty) | prefix of every topic name, to run several environments on one cluster |
| TOUCHSTREAM_ROLE | all | ``all`` (every stage), ``process`` (validate+process) or ``sink`` (ClickHouse, pages) |
| TOUCHSTREAM_APP_ID | touchstream | consumer group prefix (``topics.consumer_group``) and name of the state changelog |
| TOUCHSTREAM_INSTANCE_ID | host + data dir | static membership: a restart keeps its partitions; ``none``: dynamic |
| TOUCHSTREAM_PARTITIONS | 4 | partitions of the pipeline topics (created by the worker) |
| TOUCHSTREAM_REPLICATION | 1 | replication factor of the pipeline topics (3 on a cluster) |
| TOUCHSTREAM_GROUP_SESSION_TIMEOUT_S | 10 | a crashed worker's partitions move after this (the broker's minimum is 6) |
| TOUCHSTREAM_MAX_MESSAGE_BYTES | 262144 | larger raw messages are dead-lettered as ``oversized`` |
| TOUCHSTREAM_MAX_FUTURE_S | 900 | events further in the future than this (vs wall clock) are dead-lettered |
| TOUCHSTREAM_DEDUP_WINDOW_S | 900 | duplicate ``event_id`` within this event-time window are dropped |
| TOUCHSTREAM_SESSION_GAP_S | 1800 | session inactivity timeout |
| TOUCHSTREAM_ALLOWED_LATENESS_S | 300 | late events within this land in their session / window |
| TOUCHSTREAM_IDLE_ADVANCE_S | 60 | idle tenant: its watermark follows the wall clock after this |
| TOUCHSTREAM_FUNNEL_WINDOW_S | 60 | funnel tumbling window |
| TOUCHSTREAM_RULES_DIR | – | lifecycle/tag rules: ``<dir>/<tenant_id>.rules``; ``default.rules`` for the rest |
| TOUCHSTREAM_ATTRIBUTION_LOOKBACK_DAYS | 90 | touches older than this before a deal get no credit |
| TOUCHSTREAM_NOTIFIERS_FILE | – | notifiers + paging routes/grouping/stall config (deploy/notifiers.example.json) |
| TOUCHSTREAM_NOTIFIERS | – | JSON ``{"name": "pagerduty+https://...?routing_key=..."}``; adds to / overrides the file |
| TOUCHSTREAM_SLA_POLICIES | – | path to an SLA policy JSON file (built-in defaults when unset) |
| TOUCHSTREAM_PROCESS_BATCH | 2000 | process stage: at most this many events per batch (one state flush per batch) |
| TOUCHSTREAM_PRODUCE_BATCH_BYTES | 524288 | output producer: bytes per record batch (under the broker's 1 MB cap) |
| TOUCHSTREAM_SINK_BATCH_ROWS | 20000 | ClickHouse sink: flush a table's batch at this many rows |
| TOUCHSTREAM_SINK_FLUSH_S | 1.0 | ... or when its oldest row is this old |
| TOUCHSTREAM_WEB_HOST / TOUCHSTREAM_WEB_PORT | 127.0.0.1 / 6066 | worker web server (metrics, health, board) |
| TOUCHSTREAM_WEB_TOKEN | – | if set: endpoints other than /health, /metrics need ``Authorization: Bearer <it>`` |
| TOUCHSTREAM_LOG_FORMAT | json | worker logs: ``json`` lines or ``human`` (``touchstream run``: always human) |
| TOUCHSTREAM_LOG_LEVEL | info | worker log level (the CLI's own commands: warning unless set) |
| TOUCHSTREAM_PSEUDONYMISE | (empty: off) | tenants whose identifiers leave pseudonymised: ``acme,globex`` or ``*`` |
| TOUCHSTREAM_PSEUDONYM_SALT | – | secret key of the pseudonyms (>= 16 chars); required with the above; never logged |
| TOUCHSTREAM_PSEUDONYM_TYPES | email,phone,whatsapp | identifier types to pseudonymise (also ``user_id``, ...) |
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from streams.core.pseudonym import DEFAULT_TYPES, Pseudonymiser, parse_tenants, parse_types


def _int(env: Mapping[str, str], name: str, default: int) -> int:
    raw = env.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        return int(raw)
    except ValueError as exc:
        raise ValueError(f"{name} must be an integer, got {raw!r}") from exc


def _float(env: Mapping[str, str], name: str, default: float) -> float:
    raw = env.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        return float(raw)
    except ValueError as exc:
        raise ValueError(f"{name} must be a number, got {raw!r}") from exc


def _instance_id(raw: str | None, data_dir: Path) -> str | None:
    """The worker's static group membership id: given, or this host plus its data dir (a worker
    restarted in place keeps it, so it takes its partitions back without a rebalance; two
    workers need two data dirs anyway, for the embedded ClickHouse). ``none`` turns it off."""
    if raw is not None and raw.strip():
        return None if raw.strip().lower() == "none" else raw.strip()
    import hashlib
    import socket

    return f"{socket.gethostname()}-{hashlib.blake2b(str(data_dir).encode(), digest_size=4).hexdigest()}"


@dataclass(frozen=True)
class Settings:
    data_dir: Path
    kafka_bootstrap: str | None
    kafka_port: int
    kafka_security_protocol: str
    kafka_sasl_mechanism: str | None
    kafka_sasl_username: str | None
    kafka_sasl_password: str | None = field(repr=False)
    kafka_ssl_cafile: str | None
    clickhouse_url: str
    clickhouse_database: str
    app_id: str
    role: str
    topic_prefix: str
    partitions: int
    replication: int
    instance_id: str | None
    group_session_timeout_s: float
    max_message_bytes: int
    max_future_ms: int
    dedup_window_ms: int
    session_gap_ms: int
    allowed_lateness_ms: int
    idle_advance_ms: int
    funnel_window_ms: int
    sla_policies_path: str | None
    rules_dir: str | None
    attribution_lookback_ms: int
    process_batch: int
    produce_batch_bytes: int
    sink_batch_rows: int
    sink_flush_s: float
    web_host: str
    web_port: int
    web_token: str | None = field(repr=False)
    log_format: str
    log_level: str
    pseudonymise: tuple[str, ...]  # tenant ids, ("*",) = all, () = off
    pseudonym_salt: str | None = field(repr=False)
    pseudonym_types: tuple[str, ...]

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: Any) -> Settings:
        env = os.environ if environ is None else environ
        data_dir = Path(env.get("TOUCHSTREAM_DATA_DIR") or ".touchstream").resolve()
        s = cls(
            data_dir=data_dir,
            kafka_bootstrap=env.get("KAFKA_BOOTSTRAP_SERVERS") or None,
            kafka_port=_int(env, "TOUCHSTREAM_KAFKA_PORT", 19092),
            kafka_security_protocol=env.get("KAFKA_SECURITY_PROTOCOL") or "PLAINTEXT",
            kafka_sasl_mechanism=env.get("KAFKA_SASL_MECHANISM") or None,
            kafka_sasl_username=env.get("KAFKA_SASL_USERNAME") or None,
            kafka_sasl_password=env.get("KAFKA_SASL_PASSWORD") or None,
            kafka_ssl_cafile=env.get("KAFKA_SSL_CAFILE") or None,
            clickhouse_url=env.get("CLICKHOUSE_URL") or f"chdb://{data_dir / 'clickhouse'}",
            clickhouse_database=env.get("CLICKHOUSE_DATABASE") or "touchstream",
            app_id=env.get("TOUCHSTREAM_APP_ID") or "touchstream",
            role=env.get("TOUCHSTREAM_ROLE") or "all",
            topic_prefix=env.get("TOUCHSTREAM_TOPIC_PREFIX") or "",
            partitions=_int(env, "TOUCHSTREAM_PARTITIONS", 4),
            replication=_int(env, "TOUCHSTREAM_REPLICATION", 1),
            instance_id=_instance_id(env.get("TOUCHSTREAM_INSTANCE_ID"), data_dir),
            group_session_timeout_s=_float(env, "TOUCHSTREAM_GROUP_SESSION_TIMEOUT_S", 10.0),
            max_message_bytes=_int(env, "TOUCHSTREAM_MAX_MESSAGE_BYTES", 262_144),
            max_future_ms=_int(env, "TOUCHSTREAM_MAX_FUTURE_S", 900) * 1000,
            dedup_window_ms=_int(env, "TOUCHSTREAM_DEDUP_WINDOW_S", 900) * 1000,
            session_gap_ms=_int(env, "TOUCHSTREAM_SESSION_GAP_S", 1800) * 1000,
            allowed_lateness_ms=_int(env, "TOUCHSTREAM_ALLOWED_LATENESS_S", 300) * 1000,
            idle_advance_ms=_int(env, "TOUCHSTREAM_IDLE_ADVANCE_S", 60) * 1000,
            funnel_window_ms=_int(env, "TOUCHSTREAM_FUNNEL_WINDOW_S", 60) * 1000,
            sla_policies_path=env.get("TOUCHSTREAM_SLA_POLICIES") or None,
            rules_dir=env.get("TOUCHSTREAM_RULES_DIR") or None,
            attribution_lookback_ms=_int(env, "TOUCHSTREAM_ATTRIBUTION_LOOKBACK_DAYS", 90) * 86_400_000,
            process_batch=_int(env, "TOUCHSTREAM_PROCESS_BATCH", 2000),
            produce_batch_bytes=_int(env, "TOUCHSTREAM_PRODUCE_BATCH_BYTES", 524_288),
            sink_batch_rows=_int(env, "TOUCHSTREAM_SINK_BATCH_ROWS", 20_000),
            sink_flush_s=_float(env, "TOUCHSTREAM_SINK_FLUSH_S", 1.0),
            web_host=env.get("TOUCHSTREAM_WEB_HOST") or "127.0.0.1",
            web_port=_int(env, "TOUCHSTREAM_WEB_PORT", 6066),
            web_token=env.get("TOUCHSTREAM_WEB_TOKEN") or None,
            log_format=env.get("TOUCHSTREAM_LOG_FORMAT") or "json",
            log_level=env.get("TOUCHSTREAM_LOG_LEVEL") or "info",
            pseudonymise=parse_tenants(env.get("TOUCHSTREAM_PSEUDONYMISE")),
            pseudonym_salt=env.get("TOUCHSTREAM_PSEUDONYM_SALT") or None,
            pseudonym_types=parse_types(env.get("TOUCHSTREAM_PSEUDONYM_TYPES") or ",".join(DEFAULT_TYPES)),
        )
        s = replace(s, **overrides) if overrides else s
        if s.role not in ("all", "process", "sink"):
            raise ValueError(f"TOUCHSTREAM_ROLE must be all, process or sink, got {s.role!r}")
        s.pseudonymiser()  # refuses a missing or short salt at start-up, not at the first event
        return s

    def pseudonymiser(self) -> Pseudonymiser | None:
        """The pseudonymiser of ``TOUCHSTREAM_PSEUDONYMISE`` (None when it names no tenant)."""
        return Pseudonymiser.configured(self.pseudonymise, self.pseudonym_salt, self.pseudonym_types)

    @property
    def bootstrap(self) -> str:
        """Bootstrap servers actually used: external ones, or the project-started local broker."""
        return self.kafka_bootstrap or f"127.0.0.1:{self.kafka_port}"

    def topic(self, logical: str) -> str:
        """Physical topic name of a logical one (see ``streams.app.topics``)."""
        return self.topic_prefix + logical

    @property
    def kafka_dir(self) -> Path:
        return self.data_dir / "kafka"

