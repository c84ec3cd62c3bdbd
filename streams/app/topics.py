"""Every topic name in one place, with its key and the schema of its values."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from streams.settings import Settings

RAW = "touchpoints.raw"  # contract v1, any key (schemas/touchpoint.v1.json)
DLQ = "touchpoints.dlq"  # dead letters, key = original key (schemas/dlq.v1.json)
VALID = "touchpoints.valid"  # normalised events, key = tenant_id (internal)
ENRICHED = "touchpoints.enriched"  # key = person_id (schemas/touchpoint_enriched.v1.json)
MERGES = "identity.merges"  # key = tenant_id (schemas/identity_merge.v1.json)
SESSIONS = "sessions.closed"  # key = person_id (schemas/session.v1.json)
SLA_EVENTS = "sla.events"  # key = wait_id (schemas/sla_event.v1.json)
RESPONSE_TIMES = "sla.response_times"  # key = wait_id (schemas/response_time.v1.json)
PAGES = "sla.pages"  # key = dedup_key: pages to deliver (schemas/page.v1.json)
FUNNEL = "funnel.live"  # key = tenant_id (schemas/funnel_window.v1.json)
ANOMALIES = "funnel.anomalies"  # key = anomaly_id (schemas/anomaly.v1.json)
PROFILES = "persons.profile"  # compacted, key = person_id (schemas/person_profile.v1.json)
ATTRIBUTION = "attribution.credits"  # key = deal_id (schemas/attribution_credit.v1.json)

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
    (PROFILES, "profiles", "person_id"),
    (ATTRIBUTION, "attribution", "deal_id"),
)

#: The raw topic stamps each record with the broker's append time (not the producer's clock): the
#: process stage measures how old a backlog is from it (streams/runtime/backlog.py).
RAW_CONFIG: dict[str, str] = {"message.timestamp.type": "LogAppendTime"}

#: The profile topic holds the latest profile per person (a table, not a history): compacted, so a
#: downstream service that starts from the beginning reads each person once, not every revision.
#: Deleted records are not used (a merged-away person stays as a ``merged`` record pointing on).
PROFILES_CONFIG: dict[str, str] = {"cleanup.policy": "compact", "min.compaction.lag.ms": "3600000"}

ALL: tuple[str, ...] = (RAW, DLQ, VALID, *(t for t, _, _ in PROCESS_OUTPUTS))

#: Topics the ClickHouse sink reads (one table each; see streams.clickhouse.rows.SPECS).
SINK_TOPICS: tuple[str, ...] = (
    ENRICHED, SESSIONS, MERGES, SLA_EVENTS, RESPONSE_TIMES, FUNNEL, ANOMALIES, PROFILES, ATTRIBUTION,
)


def consumer_group(app_id: str, topic: str, role: str = "all") -> str:
    """The consumer group that reads ``topic`` (a logical name, without prefix) for ``app_id``.

    Every stage is its own group: ``<app id>-validate`` for the raw topic, ``<app id>`` for the
    process stage (the valid topic; the state changelog is ``<app id>-state-changelog``),
    ``<app id>-clickhouse-<topic>`` for each sink topic (one table's trouble holds back only its
    own topic) and ``<app id>-pages`` for page delivery. Lag queries and tests look the group up
    here. ``role`` is accepted for callers that pass it; the group does not depend on it."""
    if topic == RAW:
        return f"{app_id}-validate"
    if topic in SINK_TOPICS:
        return f"{app_id}-clickhouse-{topic}"
    if topic == PAGES:
        return f"{app_id}-pages"
    return app_id


def all_groups(app_id: str) -> list[str]:
    """Every consumer group a deployment of ``app_id`` runs (status and lag reports)."""
    return [consumer_group(app_id, t) for t in (RAW, VALID, *SINK_TOPICS, PAGES)]


async def ensure_all(settings: Settings) -> list[str]:
    """Create every topic of the pipeline that is missing (the state changelog included, compacted),
    each with its topic-level settings; returns the names created."""
    from streams.kafka_admin import ensure_topics
    from streams.runtime.changelog import CHANGELOG_CONFIG, changelog_topic

    changelog = changelog_topic(settings.app_id)
    return await ensure_topics(settings.bootstrap, [*(settings.topic(t) for t in ALL), changelog],
                               settings.partitions, settings.replication, settings,
                               configs={changelog: CHANGELOG_CONFIG, settings.topic(RAW): RAW_CONFIG,
                                        settings.topic(PROFILES): PROFILES_CONFIG})
