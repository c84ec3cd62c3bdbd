"""The questions users ask, answered from ClickHouse (``touchstream query ...``).

Every query reads ``FINAL`` so answers are exact even before background merges collapse a
re-delivered batch. ``since`` accepts ``90s``, ``15m``, ``1h``, ``7d``.
"""

from __future__ import annotations

import re
from typing import Any

from streams.clickhouse.client import ClickHouse
from streams.core.stages import STAGES

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_since(text: str) -> int:
    m = re.fullmatch(r"\s*(\d+)\s*([smhd])\s*", text)
    if not m:
        raise ValueError(f"--since must look like 30m, 1h or 7d, got {text!r}")
    return int(m.group(1)) * _UNITS[m.group(2)]


def _tenant_clause(tenant: str | None) -> str:
    return " AND tenant_id = {tenant:String}" if tenant else ""


def funnel(ch: ClickHouse, tenant: str | None, since_s: int, by: str | None = None) -> list[dict[str, Any]]:
    """Distinct persons per stage and stage-to-stage conversion over the period (exact)."""
    dim = {"campaign": "campaign_name", "channel": "channel", None: "''"}[by]
    rows = ch.query(
        f"SELECT tenant_id, {dim} AS dim, stage, uniqExact(person_id) AS persons, count() AS events "
        f"FROM {ch.db}.touchpoints FINAL "
        "WHERE occurred_at >= now64(3) - toIntervalSecond({since:UInt32}) AND stage != ''"
        f"{_tenant_clause(tenant)} GROUP BY tenant_id, dim, stage",
        {"since": since_s, "tenant": tenant or ""},
    )
    grouped: dict[tuple[str, str], dict[str, tuple[int, int]]] = {}
    for tenant_id, d, stage, persons, events in rows:
        grouped.setdefault((tenant_id, d), {})[stage] = (int(persons), int(events))
    out = []
    for (tenant_id, d), stages in sorted(grouped.items()):
        prev: int | None = None
        for stage in STAGES:
            persons, events = stages.get(stage, (0, 0))
            out.append({
                "tenant_id": tenant_id, **({by: d} if by else {}), "stage": stage, "persons": persons,
                "events": events, "conversion_from_previous": (round(persons / prev, 4) if prev else None),
            })
            prev = persons
    return out


def sla(ch: ClickHouse, tenant: str | None, since_s: int) -> list[dict[str, Any]]:
    """SLA attainment, response-time percentiles and breaches by team and channel."""
    rows = ch.query(
        "SELECT tenant_id, team, channel, count() AS replies, countIf(breached = 1) AS breached, "
        "quantileExact(0.5)(response_s) AS p50, quantileExact(0.9)(response_s) AS p90 "
        f"FROM {ch.db}.response_times FINAL "
        "WHERE replied_at >= now64(3) - toIntervalSecond({since:UInt32})"
        f"{_tenant_clause(tenant)} GROUP BY tenant_id, team, channel ORDER BY tenant_id, team, channel",
        {"since": since_s, "tenant": tenant or ""},
    )
    breaches = {
        (t, team, chan): int(n)
        for t, team, chan, n in ch.query(
            "SELECT tenant_id, team, channel, count() FROM "
            f"{ch.db}.sla_events FINAL WHERE event = 'breach' AND "
            "fired_at >= now64(3) - toIntervalSecond({since:UInt32})"
            f"{_tenant_clause(tenant)} GROUP BY tenant_id, team, channel",
            {"since": since_s, "tenant": tenant or ""},
        )
    }
    out = []
    for t, team, chan, replies, breached, p50, p90 in rows:
        out.append({
            "tenant_id": t, "team": team, "channel": chan, "replies": int(replies),
            "attainment": round(1 - breached / replies, 4) if replies else None,
            "p50_response_s": float(p50), "p90_response_s": float(p90),
            "breaches_fired": breaches.pop((t, team, chan), 0),
        })
    for (t, team, chan), n in sorted(breaches.items()):  # breached waits with no reply yet
        out.append({"tenant_id": t, "team": team, "channel": chan, "replies": 0, "attainment": None,
                    "p50_response_s": None, "p90_response_s": None, "breaches_fired": n})
    return out


def sessions(ch: ClickHouse, tenant: str | None, since_s: int) -> list[dict[str, Any]]:
    rows = ch.query(
        "SELECT tenant_id, first_channel, count() AS sessions, avg(touchpoints) AS avg_touchpoints, "
        "avg(dateDiff('second', started_at, ended_at)) AS avg_duration_s, avg(converted) AS conversion_rate "
        f"FROM {ch.db}.sessions FINAL WHERE started_at >= now64(3) - toIntervalSecond({{since:UInt32}})"
        f"{_tenant_clause(tenant)} GROUP BY tenant_id, first_channel ORDER BY tenant_id, sessions DESC",
        {"since": since_s, "tenant": tenant or ""},
    )
    return [
        {"tenant_id": t, "first_channel": c, "sessions": int(n), "avg_touchpoints": round(float(a), 2),
         "avg_duration_s": round(float(d), 1), "conversion_rate": round(float(r), 4)}
        for t, c, n, a, d, r in rows
    ]


def anomalies(ch: ClickHouse, tenant: str | None, since_s: int, open_only: bool = True) -> list[dict[str, Any]]:
    """Latest state of each anomaly incident; by default only those not resolved."""
    rows = ch.query(
        "SELECT anomaly_id, argMax(tenant_id, detected_at), argMax(channel, detected_at), "
        "argMax(campaign, detected_at), argMax(stage_from, detected_at), argMax(stage_to, detected_at), "
        "argMax(kind, detected_at), argMax(status, detected_at) AS last_status, min(window_start), "
        "max(detected_at), argMax(observed, detected_at), argMax(expected, detected_at), "
        "argMax(score, detected_at), argMax(est_lost_conversions, detected_at) "
        f"FROM {ch.db}.anomalies FINAL WHERE detected_at >= now64(3) - toIntervalSecond({{since:UInt32}})"
        f"{_tenant_clause(tenant)} GROUP BY anomaly_id "
        + ("HAVING last_status != 'resolved' " if open_only else "")
        + "ORDER BY max(detected_at) DESC",
        {"since": since_s, "tenant": tenant or ""},
    )
    keys = ("anomaly_id", "tenant_id", "channel", "campaign", "stage_from", "stage_to", "kind", "status",
            "window_start", "last_detected_at", "observed", "expected", "score", "est_lost_conversions")
    return [
        {k: (v.isoformat() if hasattr(v, "isoformat") else v) for k, v in zip(keys, row, strict=True)}
        for row in rows
    ]


def sla_breaches_by_team(ch: ClickHouse, tenant: str | None, since_s: int) -> list[dict[str, Any]]:
    """Breaches fired per tenant and team over the period (the live board's "breaches by team").

    Counts ``breach`` rows of ``sla_events`` (one per wait, ``FINAL`` collapses re-deliveries), so
    a breach counts once whether or not the wait was answered since; ``team`` is None when the
    conversation carried none. Times are epoch milliseconds, like the topics.
    """
    rows = ch.query(
        "SELECT tenant_id, team, count() AS breaches, uniqExact(conversation_id) AS conversations, "
        "toUnixTimestamp64Milli(max(fired_at)) AS last_breach_at "
        f"FROM {ch.db}.sla_events FINAL WHERE event = 'breach' AND "
        "fired_at >= now64(3) - toIntervalSecond({since:UInt32})"
        f"{_tenant_clause(tenant)} GROUP BY tenant_id, team ORDER BY breaches DESC, tenant_id, team",
        {"since": since_s, "tenant": tenant or ""},
    )
    return [
        {"tenant_id": t, "team": team or None, "breaches": int(n), "conversations": int(c),
         "last_breach_at": int(last)}
        for t, team, n, c, last in rows
    ]
