"""Topic record (dict) → ClickHouse row, one mapping per table, all in one place.

Why explicit column lists: the sink inserts positional rows (fastest path in
clickhouse-connect); naming the columns here keeps DDL, topic contract and insert in sync
and a mismatch fails loudly at the first insert instead of shifting columns.

Why an identity per table: every table is a ReplacingMergeTree, which keeps one row per sorting
key. That is how a re-delivered record (at-least-once topics, a re-cut sink batch) collapses,
and it is also how distinct records were lost when the key named too little (anomalies kept 12
of 42 records). ``TableSpec.identity`` says what makes a record of the topic distinct; the
table's key collapses exactly the records with equal identity (docs/data-integrity.md). Where
the natural key columns do not cover the identity, the row carries ``record_key``, a 64-bit
hash of the identity appended to the sorting key (schemas/clickhouse/0006_record_keys.sql):
rows then collapse only when their old key *and* their identity are equal.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from hashlib import blake2b
from typing import Any

import orjson

from streams.app import topics
from streams.core.roi import CostRow
from streams.core.stages import STAGES


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


def profile_row(r: dict[str, Any]) -> tuple[Any, ...]:
    funnel = r.get("funnel_stages") or {}
    reached = [s for s in STAGES if funnel.get(s)]
    revenue = {k: int(v) for k, v in (r.get("revenue_minor") or {}).items()}
    tags = r.get("tags") or []
    first = r.get("first_seen")
    return (
        r["tenant_id"], r["person_id"], int(r["version"]), r["status"], _s(r.get("merged_into")),
        _s(r.get("lifecycle_stage")), dt(r.get("lifecycle_stage_at")), dt(first), dt(r.get("last_seen")),
        int(r.get("events") or 0), list(r.get("identifier_types") or []), list(r.get("channels") or []),
        {k: int(v) for k, v in funnel.items()}, reached[-1] if reached else "", list(r.get("campaigns") or []),
        1 if r.get("campaigns_truncated") else 0, int(r.get("deals_won") or 0), revenue, sum(revenue.values()),
        [t["tag"] for t in tags], [dt(t["since"]) for t in tags],
        [None if t.get("expires_at") is None else dt(t["expires_at"]) for t in tags], dt(r.get("updated_at")),
    )


def credit_row(r: dict[str, Any]) -> tuple[Any, ...]:
    touch_at = r.get("touch_at")
    return (
        r["tenant_id"], r["deal_id"], int(r["revision"]), r["credit_id"], r.get("supersedes"), r["kind"],
        r["reason"], r["model"], r["person_id"], r.get("touch_index"), int(r.get("touch_count") or 0),
        _s(r.get("touch_event_id")), None if touch_at is None else dt(touch_at), _s(r.get("channel")),
        _s(r.get("campaign")), int(r["credit_minor"]), int(r["deal_value_minor"]), r["currency"],
        int(r["currency_exponent"]), dt(r["deal_at"]), int(r["lookback_ms"]), dt(r["attributed_at"]),
    )


def record_key(identity: tuple[Any, ...]) -> int:
    """UInt64 hash of a record's identity. Two distinct records collide only if their natural
    key columns are equal too (the hash is appended to them), so 64 bits are plenty."""
    return int.from_bytes(blake2b(orjson.dumps(identity), digest_size=8).digest(), "big")


@dataclass(frozen=True)
class TableSpec:
    """``identity``: the record fields that make a record of the topic distinct (None and ""
    are one value, as in the table). Records with equal identity are one record: a re-delivery,
    or a version of it produced again (the newest row wins); different ones never collapse.
    The reasons per table are with :data:`SPECS` and in docs/data-integrity.md."""

    topic: str
    table: str
    columns: tuple[str, ...]
    row: Callable[[dict[str, Any]], tuple[Any, ...]]
    identity_fields: tuple[str, ...]
    #: the row ends with ``record_key(identity)`` (the table's sorting key ends with it)
    keyed: bool = False

    def identity(self, r: dict[str, Any]) -> tuple[Any, ...]:
        return tuple("" if r.get(f) is None else r[f] for f in self.identity_fields)

    def to_row(self, r: dict[str, Any]) -> tuple[Any, ...]:
        row = self.row(r)
        return (*row, record_key(self.identity(r))) if self.keyed else row


SPECS: tuple[TableSpec, ...] = (
    TableSpec(topics.ENRICHED, "touchpoints", (
        "tenant_id", "event_id", "occurred_at", "channel", "type", "stage", "person_id", "session_id", "session_seq",
        "conversation_id", "agent_id", "team", "campaign_source", "campaign_medium", "campaign_name", "page_url",
        "value_amount", "value_currency", "identities", "properties", "src_topic", "src_partition", "src_offset",
        "record_key",
    ), touchpoint_row,
        # occurred_at too: an event_id is unique within the dedup window only; the same id reused
        # later is another event (it was applied), even within the hour of the old key
        ("tenant_id", "event_id", "occurred_at"), keyed=True),
    TableSpec(topics.SESSIONS, "sessions", (
        "tenant_id", "session_id", "person_id", "started_at", "ended_at", "touchpoints", "channels",
        "first_channel", "first_campaign", "first_page", "last_channel", "last_campaign", "last_page",
        "max_stage", "converted", "merged_session_ids", "late_events",
    ), session_row, ("tenant_id", "session_id")),  # a hash of (person, first event, its time)
    TableSpec(topics.MERGES, "identity_merges", (
        "tenant_id", "status", "from_person_id", "into_person_id", "reason", "identifier_type", "event_id", "at",
        "record_key",
    ), merge_row,
        # one decision per pair of persons and event; ``at`` tells a reused event_id apart
        ("tenant_id", "event_id", "at", "status", "from_person_id", "into_person_id"), keyed=True),
    TableSpec(topics.SLA_EVENTS, "sla_events", (
        "tenant_id", "wait_id", "event", "conversation_id", "channel", "team", "agent_id", "priority", "policy",
        "kind", "started_at", "due_at", "fired_at", "response_s", "record_key",
    ), sla_event_row,
        # once per wait and milestone; started_at because wait ids restart for a conversation
        # forgotten (closed_retention_ms) and reopened; not fired_at/emitted_at, which may differ
        # between deliveries of one milestone
        ("tenant_id", "wait_id", "event", "started_at"), keyed=True),
    TableSpec(topics.RESPONSE_TIMES, "response_times", (
        "tenant_id", "wait_id", "conversation_id", "channel", "team", "agent_id", "priority", "policy", "kind",
        "started_at", "replied_at", "response_s", "response_wall_s", "target_s", "breached", "record_key",
    ), response_time_row, ("tenant_id", "wait_id", "started_at"), keyed=True),  # one reply ends a wait
    TableSpec(topics.FUNNEL, "funnel_minute", (
        "tenant_id", "window_start", "window_end", "channel", "campaign", "stage", "events", "persons",
        "converted",
    ), funnel_row, ("tenant_id", "window_start", "channel", "campaign", "stage")),  # a window closes once
    TableSpec(topics.ANOMALIES, "anomalies", (
        "anomaly_id", "tenant_id", "channel", "campaign", "stage_from", "stage_to", "kind", "status",
        "window_start", "detected_at", "observed", "expected", "score", "est_lost_conversions",
    ), anomaly_row,
        # detected_at: the end of the window whose evaluation raised the record; one record per
        # incident, status and window (streams/core/anomaly.py)
        ("tenant_id", "anomaly_id", "status", "detected_at")),
    TableSpec(topics.PROFILES, "person_profiles", (
        "tenant_id", "person_id", "version", "status", "merged_into", "lifecycle_stage", "lifecycle_stage_at",
        "first_seen", "last_seen", "events", "identifier_types", "channels", "funnel_stages", "max_funnel_stage",
        "campaigns", "campaigns_truncated", "deals_won", "revenue_minor", "revenue_total_minor", "tags", "tag_since",
        "tag_expires_at", "updated_at",
    ), profile_row,
        # the latest profile per person: every record is the whole profile with a growing version,
        # and the table (ReplacingMergeTree(version)) keeps the newest of one person's records
        ("tenant_id", "person_id")),
    TableSpec(topics.ATTRIBUTION, "attribution_credits", (
        "tenant_id", "deal_id", "revision", "credit_id", "supersedes", "kind", "reason", "model", "person_id",
        "touch_index", "touch_count", "touch_event_id", "touch_at", "channel", "campaign", "credit_minor",
        "deal_value_minor", "currency", "currency_exponent", "deal_at", "lookback_ms", "attributed_at",
    ), credit_row,
        # every revision of a deal stays (a revision retracts the last one with negated credits);
        # credit_id hashes tenant, deal, revision, kind, model and touch
        ("tenant_id", "deal_id", "revision", "credit_id")),
)


#: ``campaign_costs`` (a cost feed, not a topic: loaded by a command, streams/core/roi.py parse_cost_feed)
COST_COLUMNS: tuple[str, ...] = ("tenant_id", "day", "channel", "campaign", "currency", "cost_micros", "source")


def cost_rows(rows: Iterable[CostRow], source: str) -> list[tuple[Any, ...]]:
    """Cost feed rows (roi.CostRow) summed per table key, ready for ``ClickHouse.insert``: one
    insert per feed, so a re-load replaces each (tenant, day, channel, campaign, currency)."""
    sums: dict[tuple[Any, ...], int] = {}
    for r in rows:
        key = (r.tenant_id, r.day, r.channel, r.campaign, r.currency)
        sums[key] = sums.get(key, 0) + r.cost_micros
    return [(*key, micros, source) for key, micros in sorted(sums.items())]
