"""The questions users ask, answered from ClickHouse (``touchstream query ...``).

Every query reads ``FINAL`` so answers are exact even before background merges collapse a
re-delivered batch. ``since`` accepts ``90s``, ``15m``, ``1h``, ``7d``.
"""

from __future__ import annotations

import re
import time
from decimal import Decimal
from typing import Any

from streams.clickhouse.client import ClickHouse
from streams.core.attribution import MODELS
from streams.core.conversion import StageFlow
from streams.core.funnel import FunnelConfig
from streams.core.money import exponent
from streams.core.roi import chain_product, conversion_chain
from streams.core.roi import roi as roi_ratios
from streams.core.stages import STAGES
from streams.core.tagrules import LIFECYCLE

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
DEFAULT_WINDOW_MS = FunnelConfig().window_ms
DEFAULT_LOOKAHEAD = FunnelConfig().conversion_lookahead_windows


def parse_since(text: str) -> int:
    m = re.fullmatch(r"\s*(\d+)\s*([smhd])\s*", text)
    if not m:
        raise ValueError(f"--since must look like 30m, 1h or 7d, got {text!r}")
    return int(m.group(1)) * _UNITS[m.group(2)]


def _tenant_clause(tenant: str | None) -> str:
    return " AND tenant_id = {tenant:String}" if tenant else ""


#: Grafana's and the board's SQL spell the stage list the same way (index 0 = first stage).
STAGE_ARRAY = "[" + ", ".join(f"'{s}'" for s in STAGES) + "]"
_FUNNEL_DIMS = {"campaign": "campaign_name", "channel": "channel", None: "''"}
#: The tenant filter of every Grafana business panel. The tenant variable's custom "All" value is
#: ``'__all__'``, which Grafana substitutes unformatted: "All" then matches every tenant, also
#: before the variable's list has loaded, instead of the ``tenant_id IN ()`` that showed nothing.
GRAFANA_TENANT_FILTER = "(tenant_id IN (${tenant:singlequote}) OR '__all__' IN (${tenant:singlequote}))"


_COHORT_FUNNEL_SQL = """\
SELECT @TENANT_COL@dim, @STAGES@[stage_i + 1] AS stage, sum(ev) AS events, count() AS persons,
       if(stage_i < @LAST@, toNullable(countIf(conv)), NULL) AS converted,
       round(converted / nullIf(persons, 0), 4) AS conversion,
       if(stage_i > 0, toNullable(countIf(prev)), NULL) AS from_previous,
       persons - from_previous AS skipped_previous
FROM
(
    SELECT tenant_id, arrayJoin(arrayDistinct(arrayMap(m -> (m.1, m.3), arrayFilter(m -> m.4, marks)))) AS k,
           k.1 AS stage_i, k.2 AS dim,
           arraySum(m -> if(m.1 = stage_i AND m.3 = dim AND m.4, m.5, 0), marks) AS ev,
           arrayExists(m -> m.1 = stage_i AND m.3 = dim AND m.4 AND arrayExists(
               o -> o.1 = stage_i + 1 AND o.2 - m.2 BETWEEN 0 AND @LOOKAHEAD@, marks), marks) AS conv,
           arrayExists(m -> m.1 = stage_i AND m.3 = dim AND m.4 AND arrayExists(
               o -> o.1 = stage_i - 1 AND m.2 - o.2 BETWEEN 0 AND @LOOKAHEAD@, marks), marks) AS prev
    FROM
    (
        SELECT tenant_id, person_id, groupArray((stage_i, win, dim, in_cohort, n)) AS marks
        FROM
        (
            SELECT tenant_id, person_id, indexOf(@STAGES@, stage) - 1 AS stage_i,
                   intDiv(toUnixTimestamp64Milli(occurred_at), @WINDOW_MS@) AS win, @DIM@ AS dim,
                   occurred_at >= @FROM@ AND occurred_at <= @TO@ AND (@COHORT@) AS in_cohort,
                   count() AS n
            FROM @DB@.touchpoints FINAL
            WHERE occurred_at >= @FROM@ - toIntervalSecond(@PAD_S@)
              AND occurred_at <= @TO@ + toIntervalSecond(@PAD_S@)
              AND stage IN @STAGES@ AND @TENANT@
            GROUP BY tenant_id, person_id, stage_i, win, dim, in_cohort
        )
        GROUP BY tenant_id, person_id
        HAVING max(in_cohort) = 1
    )
)
GROUP BY @TENANT_COL@dim, stage_i
ORDER BY @TENANT_COL@dim, stage_i"""


def cohort_funnel_sql(
    db: str,
    *,
    period_from: str,
    period_to: str,
    tenant_filter: str,
    dim: str = "''",
    cohort_filter: str = "1",
    window_ms: int = DEFAULT_WINDOW_MS,
    lookahead: int = DEFAULT_LOOKAHEAD,
    per_tenant: bool = True,
) -> str:
    """SQL of :func:`streams.core.conversion.cohort_flow` over ``touchpoints``: per (tenant,) dim and
    stage: events, persons, converted, conversion, from_previous, skipped_previous.

    The arguments are SQL fragments, so ``query funnel`` and the board (query parameters) and
    Grafana (its macros and variables) run this same text; tests/unit/clickhouse/test_queries_funnel.py
    checks it against the core on random data and that the dashboard's panels are built here.

    How: one row per person with their marks ``(stage, window, dim, in_cohort, events)`` over the
    period widened by the attribution window on both sides (a conversion after ``period_to``, a
    previous stage before ``period_from``); each (dim, stage) the person entered in the cohort
    becomes a row (``arrayJoin``) that checks the attribution-window rule on the marks.
    """
    fragments = {
        "@TENANT_COL@": "tenant_id, " if per_tenant else "",
        "@STAGES@": STAGE_ARRAY, "@LAST@": str(len(STAGES) - 1), "@LOOKAHEAD@": str(lookahead),
        "@WINDOW_MS@": str(window_ms), "@PAD_S@": str(-(-(lookahead + 1) * window_ms // 1000)),
        "@DB@": db, "@DIM@": dim, "@FROM@": period_from, "@TO@": period_to, "@COHORT@": cohort_filter,
        "@TENANT@": tenant_filter,
    }
    return re.sub(r"@[A-Z_]+@", lambda m: fragments[m.group(0)], _COHORT_FUNNEL_SQL)


def funnel(
    ch: ClickHouse,
    tenant: str | None,
    since_s: int,
    by: str | None = None,
    *,
    channel: str | None = None,
    campaign: str | None = None,
    window_ms: int = DEFAULT_WINDOW_MS,
    lookahead: int = DEFAULT_LOOKAHEAD,
    now_ms: int | None = None,
) -> list[dict[str, Any]]:
    """The period's cohort funnel (``streams.core.conversion``), exact (``touchpoints FINAL``).

    One row per tenant (× ``by`` value) × stage, every stage present (zeros included), in funnel
    order; the columns ``touchstream query funnel`` prints::

        {"tenant_id": "acme", ["campaign"|"channel": "spring",] "stage": "click",
         "events": 130, "persons": 120,        # events and distinct persons at this stage in the period
         "converted": 96, "conversion": 0.8,   # of them, reached the next stage in the attribution window
         "from_previous": 90,                  # came from the previous stage in the attribution window
         "skipped_previous": 30}               # did not (a direct visit); both None for the first stage

    ``converted``/``conversion`` are None for the last stage and ``conversion`` for an empty
    stage. ``channel``/``campaign`` restrict the cohort (not where the next stage is looked up:
    an ``ads`` click that lands on ``web`` converted). ``window_ms``/``lookahead`` must be the
    worker's (``TOUCHSTREAM_FUNNEL_WINDOW_S``) for the numbers to match the funnel rows.
    """
    if by not in _FUNNEL_DIMS:
        raise ValueError(f"by must be campaign or channel, got {by!r}")
    now = int(time.time() * 1000) if now_ms is None else now_ms
    cohort = []
    if channel is not None:
        cohort.append("channel = {channel:String}")
    if campaign is not None:
        cohort.append("campaign_name = {campaign:String}")
    sql = cohort_funnel_sql(
        ch.db,
        period_from="fromUnixTimestamp64Milli({from_ms:Int64}, 'UTC')",
        period_to="fromUnixTimestamp64Milli({to_ms:Int64}, 'UTC')",
        tenant_filter="tenant_id = {tenant:String}" if tenant else "1",
        dim=_FUNNEL_DIMS[by], cohort_filter=" AND ".join(cohort) or "1",
        window_ms=window_ms, lookahead=lookahead,
    )
    params = {"from_ms": now - since_s * 1000, "to_ms": now, "tenant": tenant or "", "channel": channel or "",
              "campaign": campaign or ""}
    grouped: dict[tuple[str, str], dict[str, StageFlow]] = {}
    events: dict[tuple[str, str, str], int] = {}
    for tenant_id, d, stage, n_events, persons, converted, _, from_prev, _ in ch.query(sql, params):
        grouped.setdefault((tenant_id, d), {})[stage] = StageFlow(
            stage, int(persons), None if converted is None else int(converted),
            None if from_prev is None else int(from_prev))
        events[(tenant_id, d, stage)] = int(n_events)
    out = []
    for (tenant_id, d), stages in sorted(grouped.items()):
        for i, stage in enumerate(STAGES):
            flow = stages.get(stage) or StageFlow(stage, 0, None if i == len(STAGES) - 1 else 0, None if i == 0 else 0)
            row = flow.as_dict()
            del row["next_stage"]
            del row["stage"]
            out.append({"tenant_id": tenant_id, **({by: d} if by else {}), "stage": stage,
                        "events": events.get((tenant_id, d, stage), 0), **row})
    return out


def funnel_series(
    ch: ClickHouse,
    tenant: str | None,
    since_s: int,
    *,
    channel: str | None = None,
    campaign: str | None = None,
    bucket_s: int = 60,
    now_ms: int | None = None,
) -> list[dict[str, Any]]:
    """Per time bucket and stage, one dimension's funnel rows as the detector saw them
    (``funnel_minute FINAL``; tenants add up, a person belongs to one tenant).

    ``{"t": bucket start ms, "stage": "click", "persons": Σ persons of the windows,
    "cohort": Σ persons of the windows that measured ``converted``, "converted": Σ converted or None}``;
    ``converted / cohort`` is the pooled conversion (:func:`streams.core.conversion.pool`).
    ``channel``/``campaign`` None is the total over that dimension (the row's ``''``). Buckets
    without rows are absent (the funnel writes no row for a stage without events).
    """
    now = int(time.time() * 1000) if now_ms is None else now_ms
    rows = ch.query(
        "SELECT toUnixTimestamp(toStartOfInterval(window_start, toIntervalSecond({bucket:UInt32}))) * 1000 AS t, "
        "stage, sum(persons), sumIf(persons, converted IS NOT NULL), sum(converted) "
        f"FROM {ch.db}.funnel_minute FINAL "
        "WHERE window_start >= fromUnixTimestamp64Milli({from_ms:Int64}, 'UTC') "
        "AND window_start <= fromUnixTimestamp64Milli({to_ms:Int64}, 'UTC') "
        "AND channel = {channel:String} AND campaign = {campaign:String}"
        f"{_tenant_clause(tenant)} GROUP BY t, stage ORDER BY t, stage",
        {"bucket": bucket_s, "from_ms": now - since_s * 1000, "to_ms": now, "channel": channel or "",
         "campaign": campaign or "", "tenant": tenant or ""},
    )
    return [
        {"t": int(t), "stage": stage, "persons": int(p), "cohort": int(c), "converted": None if x is None else int(x)}
        for t, stage, p, c, x in rows
    ]


def funnel_dimensions(
    ch: ClickHouse, tenant: str | None, since_s: int, limit: int = 200, now_ms: int | None = None
) -> list[dict[str, Any]]:
    """The channels, campaigns and channel × campaign cells with funnel rows over the period, the
    busiest first (person-minutes at their most-used stage, so a campaign with many impressions
    is not hidden behind one with a few leads): what the board's dimension pickers offer."""
    rows = ch.query(
        "SELECT channel, campaign, max(pm) AS volume FROM ("
        "SELECT channel, campaign, stage, sum(persons) AS pm "
        f"FROM {ch.db}.funnel_minute FINAL "
        "WHERE window_start >= fromUnixTimestamp64Milli({from_ms:Int64}, 'UTC') AND (channel != '' OR campaign != '')"
        f"{_tenant_clause(tenant)} GROUP BY channel, campaign, stage) "
        "GROUP BY channel, campaign ORDER BY volume DESC, channel, campaign LIMIT {limit:UInt32}",
        {"from_ms": (int(time.time() * 1000) if now_ms is None else now_ms) - since_s * 1000,
         "tenant": tenant or "", "limit": limit},
    )
    return [{"channel": c or None, "campaign": k or None, "person_minutes": int(v)} for c, k, v in rows]


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


_INCIDENT_KEYS = ("anomaly_id", "tenant_id", "channel", "campaign", "stage_from", "stage_to", "kind", "status",
                  "window_start", "last_detected_at", "observed", "expected", "score", "est_lost_conversions")


def _incidents(ch: ClickHouse, tenant: str | None, since_s: int, open_only: bool, epoch_ms: bool) -> list[tuple]:
    """Latest record of each incident detected over the period (``detected_at``), newest first."""
    def t(col: str) -> str:
        return f"toUnixTimestamp64Milli({col})" if epoch_ms else col

    return ch.query(
        "SELECT anomaly_id, argMax(tenant_id, detected_at), argMax(channel, detected_at), "
        "argMax(campaign, detected_at), argMax(stage_from, detected_at), argMax(stage_to, detected_at), "
        f"argMax(kind, detected_at), argMax(status, detected_at) AS last_status, {t('min(window_start)')}, "
        f"{t('max(detected_at)')}, argMax(observed, detected_at), argMax(expected, detected_at), "
        "argMax(score, detected_at), argMax(est_lost_conversions, detected_at) "
        f"FROM {ch.db}.anomalies FINAL WHERE detected_at >= now64(3) - toIntervalSecond({{since:UInt32}})"
        f"{_tenant_clause(tenant)} GROUP BY anomaly_id "
        + ("HAVING last_status != 'resolved' " if open_only else "")
        + "ORDER BY max(detected_at) DESC, anomaly_id",
        {"since": since_s, "tenant": tenant or ""},
    )


def anomalies(ch: ClickHouse, tenant: str | None, since_s: int, open_only: bool = True) -> list[dict[str, Any]]:
    """Latest state of each anomaly incident; by default only those not resolved."""
    return [
        {k: (v.isoformat() if hasattr(v, "isoformat") else v) for k, v in zip(_INCIDENT_KEYS, row, strict=True)}
        for row in _incidents(ch, tenant, since_s, open_only, epoch_ms=False)
    ]


def anomaly_incidents(
    ch: ClickHouse, tenant: str | None, since_s: int, open_only: bool = False
) -> list[dict[str, Any]]:
    """:func:`anomalies` in the board's shape: ``dimension`` (None for the total), times in epoch
    ms (``window_start`` is where the incident started; ``last_detected_at`` is when it resolved
    if ``status`` is ``resolved``)."""
    out = []
    for row in _incidents(ch, tenant, since_s, open_only, epoch_ms=True):
        r = dict(zip(_INCIDENT_KEYS, row, strict=True))
        r["dimension"] = {"channel": r.pop("channel") or None, "campaign": r.pop("campaign") or None}
        for k in ("window_start", "last_detected_at"):
            r[k] = int(r[k])
        for k in ("observed", "expected", "score", "est_lost_conversions"):
            r[k] = float(r[k])
        out.append(r)
    return out


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


# --- profiles, attribution, ROI (issue 21; views of schemas/clickhouse/0007_profiles_attribution.sql) ---------
#
# Money stays integer until it is printed: revenue in minor units with the currency's exponent
# (``money.exponent``: 2 for EUR, 0 for JPY, 3 for KWD), costs in micro-units. Rows carry the
# integers (``*_minor``, ``*_micros``) for machines and the decimal text for people; ratios are
# computed from the integers (:func:`streams.core.roi.roi`: the units cancel).

#: what ``query roi`` and the board show when no model is asked for: every touch gets a share
DEFAULT_MODEL = "linear"


def money_text(minor: int, exponent: int) -> str:
    """Integer minor units → decimal text with exactly ``exponent`` places (12345, 2 → "123.45")."""
    return str(Decimal(int(minor)).scaleb(-exponent).quantize(Decimal(1).scaleb(-exponent)))


def micros_text(micros: int, exponent: int) -> str:
    """Micro-units → decimal text: the currency's places, more only where the micros need them
    (an impression at a 6.50 CPM costs 0.0065, which rounding to cents would hide)."""
    exact = Decimal(int(micros)).scaleb(-6).normalize()
    places = max(exponent, -exact.as_tuple().exponent)  # type: ignore[operator]
    return str(exact.quantize(Decimal(1).scaleb(-places)))


def _ratio(x: float | None) -> float | None:
    return None if x is None else round(x, 4)


def _since_ms(since_s: int | None, now_ms: int | None) -> int:
    """Start of the period in epoch ms; 0 (everything) without ``since``."""
    if since_s is None:
        return 0
    return (int(time.time() * 1000) if now_ms is None else now_ms) - since_s * 1000


def lifecycle_counts(
    ch: ClickHouse, tenant: str | None, since_s: int | None = None, now_ms: int | None = None
) -> list[dict[str, Any]]:
    """Persons per lifecycle stage (``profiles_latest``: active profiles, merged ones left out),
    every stage present in lifecycle order, per tenant; with ``since``, persons seen in the period.

    ``{"tenant_id": "acme", "stage": "lead", "persons": 120, "share": 0.012}`` (share of the
    tenant's persons)."""
    rows = ch.query(
        f"SELECT tenant_id, lifecycle_stage, count() FROM {ch.db}.profiles_latest "
        "WHERE last_seen >= fromUnixTimestamp64Milli({from_ms:Int64}, 'UTC')"
        f"{_tenant_clause(tenant)} GROUP BY tenant_id, lifecycle_stage",
        {"from_ms": _since_ms(since_s, now_ms), "tenant": tenant or ""},
    )
    counts: dict[str, dict[str, int]] = {}
    for t, stage, n in rows:
        counts.setdefault(t, {})[stage] = int(n)
    out = []
    for t, by_stage in sorted(counts.items()):
        total = sum(by_stage.values())
        for stage in LIFECYCLE:
            n = by_stage.get(stage, 0)
            out.append({"tenant_id": t, "stage": stage, "persons": n, "share": round(n / total, 4) if total else None})
    return out


def rfm_is_stale(ch: ClickHouse) -> bool:
    """True when ``person_rfm`` has never refreshed, or profiles arrived after its last refresh
    began (refresh times are whole seconds: profiles of the refresh's own second count as newer)."""
    rows = ch.query(
        "SELECT last_success_time IS NULL OR last_success_time <= "
        f"(SELECT toDateTime(max(ingested_at)) FROM {ch.db}.person_profiles) "
        "FROM system.view_refreshes WHERE database = {db:String} AND view = 'person_rfm'",
        {"db": ch.db},
    )
    return bool(rows and rows[0][0])  # no row: not a refreshable view on this server, nothing to do


def refresh_rfm(ch: ClickHouse) -> None:
    """Recompute the RFM scores now (they refresh every 10 minutes on a server; a short-lived
    embedded engine would otherwise show none)."""
    ch.command(f"SYSTEM REFRESH VIEW {ch.db}.person_rfm")
    ch.command(f"SYSTEM WAIT VIEW {ch.db}.person_rfm")


PROFILE_SORTS: dict[str, str] = {
    "recent": "last_seen DESC",
    "revenue": "revenue_total_minor DESC, last_seen DESC",
    "events": "events DESC, last_seen DESC",
}

_PROFILE_COLUMNS = (
    "tenant_id, person_id, lifecycle_stage, toUnixTimestamp64Milli(first_seen), toUnixTimestamp64Milli(last_seen), "
    "events, channels, campaigns, deals_won, revenue_minor, "
    # tags whose expiry lies in the past are no longer held (docs/profiles-and-attribution.md)
    "arrayFilter((t, e) -> e IS NULL OR e > now64(3), tags, tag_expires_at), r_score, f_score, m_score, rfm, "
    "max_funnel_stage, version"
)


def _profile_row(row: tuple[Any, ...]) -> dict[str, Any]:
    (t, pid, stage, first, last, events, channels, campaigns, deals, revenue, tags, r, f, m, rfm, funnel,
     version) = row
    return {
        "tenant_id": t, "person_id": pid, "lifecycle_stage": stage, "first_seen": int(first), "last_seen": int(last),
        "events": int(events), "channels": list(channels), "campaigns": list(campaigns), "deals_won": int(deals),
        "revenue": {cur: money_text(v, exponent(cur)) for cur, v in sorted(revenue.items())},
        "revenue_minor": {cur: int(v) for cur, v in sorted(revenue.items())},
        "tags": list(tags), "max_funnel_stage": funnel or None, "version": int(version),
        # 0 scores: the person arrived after the last RFM refresh (LEFT JOIN default)
        "rfm": rfm or None, "r_score": int(r) or None, "f_score": int(f) or None, "m_score": int(m) or None,
    }


def profiles(
    ch: ClickHouse,
    tenant: str | None,
    since_s: int | None = None,
    *,
    sort: str = "recent",
    limit: int = 20,
    stage: str | None = None,
    now_ms: int | None = None,
) -> list[dict[str, Any]]:
    """The first ``limit`` current profiles (``profiles_current``: latest active, with RFM) by
    ``sort`` (:data:`PROFILE_SORTS`), optionally of one lifecycle ``stage`` and seen in the period."""
    if sort not in PROFILE_SORTS:
        raise ValueError(f"sort must be one of {', '.join(PROFILE_SORTS)}, got {sort!r}")
    where = "last_seen >= fromUnixTimestamp64Milli({from_ms:Int64}, 'UTC')" + _tenant_clause(tenant)
    if stage is not None:
        where += " AND lifecycle_stage = {stage:String}"
    rows = ch.query(
        f"SELECT {_PROFILE_COLUMNS} FROM {ch.db}.profiles_current WHERE {where} "
        f"ORDER BY {PROFILE_SORTS[sort]}, tenant_id, person_id LIMIT {{limit:UInt32}}",
        {"from_ms": _since_ms(since_s, now_ms), "tenant": tenant or "", "stage": stage or "", "limit": limit},
    )
    return [_profile_row(r) for r in rows]


def profile(ch: ClickHouse, person_id: str, tenant: str | None = None) -> list[dict[str, Any]]:
    """The current profile of one person (one per tenant holding that id), with its tags, RFM and
    counts per funnel stage; a person merged into another is followed to the survivor."""
    rows = ch.query(
        f"SELECT merged_into FROM {ch.db}.person_profiles FINAL "
        "WHERE person_id = {person:String} AND status = 'merged'" + _tenant_clause(tenant),
        {"person": person_id, "tenant": tenant or ""},
    )
    wanted = [person_id, *(r[0] for r in rows if r[0])]
    found = ch.query(
        f"SELECT {_PROFILE_COLUMNS}, funnel_stages, identifier_types, lifecycle_stage_at "
        f"FROM {ch.db}.profiles_current WHERE person_id IN {{ids:Array(String)}}{_tenant_clause(tenant)} "
        "ORDER BY tenant_id, person_id",
        {"ids": wanted, "tenant": tenant or ""},
    )
    out = []
    for row in found:
        p = _profile_row(row[:-3])
        funnel_stages, id_types, stage_at = row[-3:]
        p["funnel_stages"] = {s: int(funnel_stages[s]) for s in STAGES if s in funnel_stages}
        p["identifier_types"] = list(id_types)
        p["lifecycle_stage_at"] = int(stage_at.timestamp() * 1000) if hasattr(stage_at, "timestamp") else stage_at
        if p["person_id"] != person_id:
            p["merged_from"] = person_id
        out.append(p)
    return out


_ATTR_DIMS = {"campaign": "campaign", "channel": "channel"}


def attribution(
    ch: ClickHouse, tenant: str | None, since_s: int | None = None, by: str = "campaign", now_ms: int | None = None
) -> list[dict[str, Any]]:
    """Attributed revenue of the deals won in the period, per (tenant, ``by`` value, currency),
    the five models side by side (``attribution_current``: each deal's latest revision).

    One row per campaign (``None``: no campaign, or no touch in the look-back) and a ``total``
    row per tenant and currency, where every model shows the same amount: the deals' revenue::

        {"tenant_id": "acme", "campaign": "spring", "currency": "EUR", "exponent": 2, "deals": 4,
         "first_touch": "300.00", ..., "first_touch_minor": 30000, ...}

    ``deals``: deals with a credit here in any model."""
    if by not in _ATTR_DIMS:
        raise ValueError(f"by must be campaign or channel, got {by!r}")
    col = _ATTR_DIMS[by]
    params = {"from_ms": _since_ms(since_s, now_ms), "tenant": tenant or ""}
    period = "deal_at >= fromUnixTimestamp64Milli({from_ms:Int64}, 'UTC')" + _tenant_clause(tenant)
    rows = ch.query(
        f"SELECT tenant_id, {col}, currency, model, sum(credit_minor), any(currency_exponent), 0 "
        f"FROM {ch.db}.attribution_current WHERE {period} GROUP BY tenant_id, {col}, currency, model "
        "UNION ALL "
        f"SELECT tenant_id, {col}, currency, '', 0, 0, uniqExact(deal_id) "
        f"FROM {ch.db}.attribution_current WHERE {period} GROUP BY tenant_id, {col}, currency",
        params,
    )
    cells: dict[tuple[str, str, str], dict[str, Any]] = {}
    for t, dim, cur, model, minor, _, deals in rows:
        cell = cells.setdefault((t, dim, cur), {"deals": 0, "minor": dict.fromkeys(MODELS, 0)})
        if model:
            cell["minor"][model] = int(minor)
        else:
            cell["deals"] = int(deals)
    totals: dict[tuple[str, str], dict[str, Any]] = {}
    if cells:
        for t, cur, deals in ch.query(
            f"SELECT tenant_id, currency, uniqExact(deal_id) FROM {ch.db}.attribution_current "
            f"WHERE {period} GROUP BY tenant_id, currency", params
        ):
            totals[(t, cur)] = {"deals": int(deals), "minor": dict.fromkeys(MODELS, 0)}
    for (t, _, cur), cell in cells.items():
        for m in MODELS:
            totals[(t, cur)]["minor"][m] += cell["minor"][m]

    def row(t: str, dim: str | None, cur: str, cell: dict[str, Any]) -> dict[str, Any]:
        exp = exponent(cur)
        return {"tenant_id": t, by: dim, "currency": cur, "exponent": exp, "deals": cell["deals"],
                **{m: money_text(cell["minor"][m], exp) for m in MODELS},
                **{f"{m}_minor": cell["minor"][m] for m in MODELS}}

    out = []
    for (t, cur), total in sorted(totals.items()):
        mine = sorted(((dim, cell) for (tt, dim, cc), cell in cells.items() if (tt, cc) == (t, cur)),
                      key=lambda dc: (-dc[1]["minor"][DEFAULT_MODEL], dc[0]))
        out += [row(t, dim or None, cur, cell) for dim, cell in mine]
        out.append(row(t, "(total)", cur, total))
    return out


def _day_clause(since_s: int | None, now_ms: int | None) -> tuple[str, dict[str, Any]]:
    """ROI periods are whole UTC days (costs are daily): from the day ``since`` falls in."""
    return "day >= toDate(fromUnixTimestamp64Milli({from_ms:Int64}, 'UTC'))", {"from_ms": _since_ms(since_s, now_ms)}


def roi(
    ch: ClickHouse,
    tenant: str | None,
    since_s: int | None = None,
    *,
    by: str = "campaign",
    model: str = DEFAULT_MODEL,
    now_ms: int | None = None,
) -> list[dict[str, Any]]:
    """Attributed revenue (one ``model``), cost and ROI per (tenant, campaign or channel, currency),
    over the whole UTC days of the period (``attributed_revenue_daily`` by the deal's day,
    ``campaign_costs_daily``: the cost feed where it covers a day, else ad-event costs), the best
    revenue first; the definitions of ``roi_by_campaign`` / ``roi_by_channel`` and :func:`roi.roi`::

        {"tenant_id": "acme", "campaign": "spring", "currency": "EUR", "model": "linear", "deals": 4,
         "revenue": "300.00", "cost": "50.5065", "roas": 5.94, "roi": 4.94,
         "revenue_minor": 30000, "cost_micros": 50506500, "exponent": 2}

    ``roas``/``roi`` are None without cost; ``campaign`` None is revenue no campaign earned (and
    ``channel`` None revenue with no touch). Per campaign, :func:`conversion_chains` gives the
    stage chain that produced it."""
    if by not in _ATTR_DIMS:
        raise ValueError(f"by must be campaign or channel, got {by!r}")
    if model not in MODELS:
        raise ValueError(f"model must be one of {', '.join(MODELS)}, got {model!r}")
    col = _ATTR_DIMS[by]
    days, params = _day_clause(since_s, now_ms)
    params.update(tenant=tenant or "", model=model)
    rows = ch.query(
        f"SELECT tenant_id, {col}, currency, sum(revenue_minor), sum(deals), 0 FROM {ch.db}.attributed_revenue_daily "
        f"WHERE model = {{model:String}} AND {days}{_tenant_clause(tenant)} GROUP BY tenant_id, {col}, currency "
        "UNION ALL "
        f"SELECT tenant_id, {col}, currency, 0, 0, sum(cost_micros) FROM {ch.db}.campaign_costs_daily "
        f"WHERE {days}{_tenant_clause(tenant)} GROUP BY tenant_id, {col}, currency",
        params,
    )
    sums: dict[tuple[str, str, str], list[int]] = {}
    for t, dim, cur, revenue, deals, cost in rows:
        s = sums.setdefault((t, dim, cur), [0, 0, 0])
        s[0] += int(revenue)
        s[1] += int(deals)
        s[2] += int(cost)
    out = []
    for (t, dim, cur), (revenue, deals, cost) in sums.items():
        exp = exponent(cur)
        # the ratios from integers in one unit (micros): exact inputs, one float division
        ratios = roi_ratios(revenue * 10 ** (6 - exp), cost)
        out.append({"tenant_id": t, by: dim or None, "currency": cur, "model": model, "deals": deals,
                    "revenue": money_text(revenue, exp), "cost": micros_text(cost, exp),
                    "roas": _ratio(ratios["roas"]), "roi": _ratio(ratios["roi"]),
                    "revenue_minor": revenue, "cost_micros": cost, "exponent": exp})
    out.sort(key=lambda r: (r["tenant_id"], r["currency"], -r["revenue_minor"], -r["cost_micros"], r[by] or ""))
    return out


def conversion_chains(ch: ClickHouse, tenant: str | None) -> list[dict[str, Any]]:
    """Per (tenant, campaign): of the persons the campaign touched (campaigns on their current
    profile), how many reached each funnel stage or a later one, the rate from stage to stage
    and their product (deals / entrants): ``campaign_conversion_chain``, :func:`roi.conversion_chain`.
    Profiles, so all time (a profile has no period)."""
    rows = ch.query(
        f"SELECT tenant_id, campaign, {', '.join(STAGES)} FROM {ch.db}.campaign_conversion_chain"
        f" WHERE 1{_tenant_clause(tenant)} ORDER BY tenant_id, campaign",
        {"tenant": tenant or ""},
    )
    out = []
    for t, campaign, *counts in rows:
        chain = conversion_chain(dict(zip(STAGES, (int(n) for n in counts), strict=True)))
        product = chain_product(chain)
        out.append({"tenant_id": t, "campaign": campaign,
                    "chain": [{**c, "rate": _ratio(c["rate"])} for c in chain],
                    "product": None if product is None else round(product, 6)})
    return out


def campaign_roi(
    ch: ClickHouse, tenant: str | None, since_s: int | None = None, *, model: str = DEFAULT_MODEL,
    now_ms: int | None = None,
) -> list[dict[str, Any]]:
    """:func:`roi` per campaign, each row with the stage conversion chain that produced it
    (``chain``: :func:`conversion_chains`' stages, ``chain_product``: deals / entrants; None for
    revenue without a campaign). What ``query roi`` and the board's ROI panel show."""
    rows = roi(ch, tenant, since_s, by="campaign", model=model, now_ms=now_ms)
    chains = {(c["tenant_id"], c["campaign"]): c for c in conversion_chains(ch, tenant)}
    for r in rows:
        chain = chains.get((r["tenant_id"], r["campaign"]))
        r["chain"] = None if chain is None else chain["chain"]
        r["chain_product"] = None if chain is None else chain["product"]
    return rows
