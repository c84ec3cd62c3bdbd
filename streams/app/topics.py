"""Every topic name in one place, with its key and the schema of its values."""

from __future__ import annotations

RAW = "touchpoints.raw"  # contract v1, any key (schemas/touchpoint.v1.json)
DLQ = "touchpoints.dlq"  # dead letters, key = original key (schemas/dlq.v1.json)
VALID = "touchpoints.valid"  # normalised events, key = tenant_id (internal)
ENRICHED = "touchpoints.enriched"  # key = person_id (schemas/touchpoint_enriched.v1.json)
MERGES = "identity.merges"  # key = tenant_id (schemas/identity_merge.v1.json)
SESSIONS = "sessions.closed"  # key = person_id (schemas/session.v1.json)
SLA_EVENTS = "sla.events"  # key = wait_id (schemas/sla_event.v1.json)
RESPONSE_TIMES = "sla.response_times"  # key = wait_id (schemas/response_time.v1.json)
PAGES = "sla.pages"  # key = dedup_key: pages to deliver (streams/core/paging.py Page)
FUNNEL = "funnel.live"  # key = tenant_id (schemas/funnel_window.v1.json)
ANOMALIES = "funnel.anomalies"  # key = anomaly_id (schemas/anomaly.v1.json)

#: Outputs of the process stage → the field of :class:`streams.core.pipeline.Outputs` and the key field.
PROCESS_OUTPUTS: tuple[tuple[str, str, str], ...] = (
    (ENRICHED, "enriched", "person_id"),
    (MERGES, "merges", "tenant_id"),
    (SESSIONS, "sessions", "person_id"),
    (SLA_EVENTS, "sla", "wait_id"),
    (RESPONSE_TIMES, "response_times", "wait_id"),
    (PAGES, "pages", "dedup_key"),
    (FUNNEL, "funnel", "tenant_id"),
    (ANOMALIES, "anomalies", "anomaly_id"),
)

ALL: tuple[str, ...] = (RAW, DLQ, VALID, *(t for t, _, _ in PROCESS_OUTPUTS))

#: Topics the ClickHouse sink reads (one table each; see streams.clickhouse.rows.SPECS).
SINK_TOPICS: tuple[str, ...] = (ENRICHED, SESSIONS, MERGES, SLA_EVENTS, RESPONSE_TIMES, FUNNEL, ANOMALIES)


def consumer_group(app_id: str, topic: str, role: str = "all") -> str:
    """The consumer group that reads ``topic`` (a logical name, without prefix) for ``app_id``.

    The stateless stages are plain consumer groups (``<app id>-validate`` for the raw topic,
    ``<app id>-clickhouse-<topic>`` for each sink topic, so one table's trouble holds back only
    its own topic); the stateful stage is the Faust app
    (``<app id>``: the valid topic); pages are delivered by the Faust app of the worker with
    the sink role (``<app id>-sink``, or ``<app id>`` when one worker has every role). Lag
    queries and tests look the group up here."""
    if topic == RAW:
        return f"{app_id}-validate"
    if topic in SINK_TOPICS:
        return f"{app_id}-clickhouse-{topic}"
    if topic == PAGES and role == "sink":
        return f"{app_id}-sink"
    return app_id
