"""Topic record (dict) → ClickHouse row, one mapping per table, all in one place.

Why explicit column lists: the sink inserts positional rows (fastest path in
clickhouse-connect); naming the columns here keeps DDL, topic contract and insert in sync
and a mismatch fails loudly at the first insert instead of shifting columns.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson

from streams.app import topics


def dt(ms: int | None) -> datetime:
    return datetime.fromtimestamp((ms or 0) / 1000, UTC)


def dt_iso(value: str) -> datetime:
    return datetime.fromisoformat(value)


def _s(v: Any) -> str:
    return "" if v is None else str(v)


def touchpoint_row(r: dict[str, Any]) -> tuple[Any, ...]:
    conv = r.get("conversation") or {}
    camp = r.get("campaign") or {}
    page = r.get("page") or {}
    value = r.get("value") or {}
    src = r.get("source") or {}
    amount = value.get("amount")
    return (
        r["tenant_id"], r["event_id"], dt_iso(r["occurred_at"]), r["channel"], r["type"], _s(r.get("stage")),
        _s(r.get("person_id")), _s(r.get("session_id")), int(r.get("session_seq") or 0),
        _s(conv.get("id")), _s(conv.get("agent_id")), _s(conv.get("team")),
        _s(camp.get("source")), _s(camp.get("medium")), _s(camp.get("name")), _s(page.get("url")),
        float(amount) if isinstance(amount, int | float) else None, _s(value.get("currency")),
        orjson.dumps(r.get("identities") or {}).decode(), orjson.dumps(r.get("properties") or {}).decode(),
        _s(src.get("topic")), int(src.get("partition", 0) or 0), int(src.get("offset", 0) or 0),
    )


def session_row(r: dict[str, Any]) -> tuple[Any, ...]:
    ft, lt = r.get("first_touch") or {}, r.get("last_touch") or {}
    return (
        r["tenant_id"], r["session_id"], r["person_id"], dt(r["started_at"]), dt(r["ended_at"]),
        int(r["touchpoints"]), list(r.get("channels") or []),
        _s(ft.get("channel")), _s(ft.get("campaign")), _s(ft.get("page")),
        _s(lt.get("channel")), _s(lt.get("campaign")), _s(lt.get("page")),
        _s(r.get("max_stage")), 1 if r.get("converted") else 0,
        list(r.get("merged_session_ids") or []), int(r.get("late_events") or 0),
    )


def merge_row(r: dict[str, Any]) -> tuple[Any, ...]:
    return (
        r["tenant_id"], r["status"], r["from_person_id"], r["into_person_id"], _s(r.get("reason")),
        _s(r.get("identifier_type")), _s(r.get("event_id")), dt(r["at"]),
    )


def sla_event_row(r: dict[str, Any]) -> tuple[Any, ...]:
    rs = r.get("response_s")
    return (
        r["tenant_id"], r["wait_id"], r["event"], r["conversation_id"], r["channel"], _s(r.get("team")),
        _s(r.get("agent_id")), _s(r.get("priority")), _s(r.get("policy")), r["kind"],
        dt(r["started_at"]), dt(r["due_at"]), dt(r["fired_at"]), None if rs is None else float(rs),
    )


def response_time_row(r: dict[str, Any]) -> tuple[Any, ...]:
    return (
        r["tenant_id"], r["wait_id"], r["conversation_id"], r["channel"], _s(r.get("team")),
        _s(r.get("agent_id")), _s(r.get("priority")), _s(r.get("policy")), r["kind"],
        dt(r["started_at"]), dt(r["replied_at"]), float(r["response_s"]), float(r.get("response_wall_s") or 0),
        float(r.get("target_s") or 0), 1 if r.get("breached") else 0,
    )


def funnel_row(r: dict[str, Any]) -> tuple[Any, ...]:
    return (
        r["tenant_id"], dt(r["window_start"]), dt(r["window_end"]), _s(r.get("channel")), _s(r.get("campaign")),
        r["stage"], int(r["events"]), int(r["persons"]),
        None if r.get("converted") is None else int(r["converted"]),
    )


def anomaly_row(r: dict[str, Any]) -> tuple[Any, ...]:
    dim = r.get("dimension") or {}
    return (
        r["anomaly_id"], r["tenant_id"], _s(dim.get("channel")), _s(dim.get("campaign")), _s(r.get("stage_from")),
        _s(r.get("stage_to")), r["kind"], r["status"], dt(r["window_start"]), dt(r["detected_at"]),
        float(r.get("observed") or 0), float(r.get("expected") or 0), float(r.get("score") or 0),
        float(r.get("est_lost_conversions") or 0),
    )


@dataclass(frozen=True)
class TableSpec:
    topic: str
    table: str
    columns: tuple[str, ...]
    to_row: Callable[[dict[str, Any]], tuple[Any, ...]]


SPECS: tuple[TableSpec, ...] = (
    TableSpec(topics.ENRICHED, "touchpoints", (
        "tenant_id", "event_id", "occurred_at", "channel", "type", "stage", "person_id", "session_id", "session_seq",
        "conversation_id", "agent_id", "team", "campaign_source", "campaign_medium", "campaign_name", "page_url",
        "value_amount", "value_currency", "identities", "properties", "src_topic", "src_partition", "src_offset",
    ), touchpoint_row),
    TableSpec(topics.SESSIONS, "sessions", (
        "tenant_id", "session_id", "person_id", "started_at", "ended_at", "touchpoints", "channels",
        "first_channel", "first_campaign", "first_page", "last_channel", "last_campaign", "last_page",
        "max_stage", "converted", "merged_session_ids", "late_events",
    ), session_row),
    TableSpec(topics.MERGES, "identity_merges", (
        "tenant_id", "status", "from_person_id", "into_person_id", "reason", "identifier_type", "event_id", "at",
    ), merge_row),
    TableSpec(topics.SLA_EVENTS, "sla_events", (
        "tenant_id", "wait_id", "event", "conversation_id", "channel", "team", "agent_id", "priority", "policy",
        "kind", "started_at", "due_at", "fired_at", "response_s",
    ), sla_event_row),
    TableSpec(topics.RESPONSE_TIMES, "response_times", (
        "tenant_id", "wait_id", "conversation_id", "channel", "team", "agent_id", "priority", "policy", "kind",
        "started_at", "replied_at", "response_s", "response_wall_s", "target_s", "breached",
    ), response_time_row),
    TableSpec(topics.FUNNEL, "funnel_minute", (
        "tenant_id", "window_start", "window_end", "channel", "campaign", "stage", "events", "persons",
        "converted",
    ), funnel_row),
    TableSpec(topics.ANOMALIES, "anomalies", (
        "anomaly_id", "tenant_id", "channel", "campaign", "stage_from", "stage_to", "kind", "status",
        "window_start", "detected_at", "observed", "expected", "score", "est_lost_conversions",
    ), anomaly_row),
)
