"""Live board on the worker's web server: one HTML page plus the JSON endpoints it polls.

Two audiences, one page (docs/board.md says what each panel shows and how to read it):
the *support* view (open waits by urgency, counts per team and channel, breaches by team) and
the *growth* view (the period's cohort funnel, per-minute charts of stage volumes and conversion
per channel and campaign with the detector's incidents marked, open anomalies with their
estimated lost conversions, persons per lifecycle stage, ROI per campaign). Conversion is
:mod:`streams.core.conversion`'s, everywhere.

Why on the worker: the "open" things (waits whose clock is running, incidents not yet resolved)
exist exactly in the processing worker's memory; no other component has them before they fire or
resolve. Aggregates over time (the period's funnel, per-minute series, breaches per team, incident
history) come from ClickHouse when this worker's role has it (``all``, ``sink``). A ``process``
worker has no ClickHouse, so it answers those from memory (the funnel windows still open) and
says so in ``source``.

Scope: a worker sees the tenants of the partitions it owns. With several ``process`` workers,
each board shows its own tenants' open waits and anomalies (ClickHouse-sourced parts cover all).

Pure shaping lives in plain functions (``snapshot_*`` copy what is needed from the core stores
while the caller holds the worker's lock; ``*_payload`` turn copies into JSON dicts) so the unit
tests drive them with a real ``Pipeline`` and no web server. The HTTP handlers only pick the
source, hold the lock for the copy and serialise.

Auth: when ``TOUCHSTREAM_WEB_TOKEN`` is set, ``/board`` and ``/api/*`` need
``Authorization: Bearer <token>``. ``/board`` also accepts ``?token=<token>`` because a browser
cannot send a header when navigating; the page then sends the header on every API call. The API
does not accept the query form, so the token appears in at most one logged URL.

All times are epoch milliseconds UTC (as in the internal topics); durations are seconds.
Every payload carries ``generated_at`` (ms), ``role`` (the worker's role), ``source``
(``"memory"``, ``"clickhouse"`` or ``"unavailable"``) and ``state_recovered`` (False while
the worker is (re)loading state after a rebalance: memory answers may be incomplete).
A ClickHouse failure falls back to memory and adds ``"error": "<message>"``.

Endpoints. Parameters are optional: ``tenant`` (default all tenants); ``since`` ``90s``/``15m``/
``1h``/``7d``, at most 7d; ``channel``/``campaign`` pick a funnel dimension (default the total,
a campaign across channels when only ``campaign`` is given). A bad parameter answers 400
``{"error": ...}``; without a valid token 401 ``{"error": "unauthorized"}``.

``GET /board`` — the page (self-contained HTML, no external resources; ``?token=`` as above).

``GET /api/funnel?tenant=&since=1h&channel=&campaign=`` — the period's cohort funnel per tenant,
every stage present (zeros included)::

    {..., "since_s": 3600, "window": {"from": ms, "to": ms},
     "dimension": {"channel": null, "campaign": null},
     "attribution": {"window_ms": 60000, "lookahead_windows": 1},
     "tenants": [{"tenant_id": "acme", "other_anomalies": 2,   # open in other dimensions of the tenant
                  "stages": [{"stage": "click", "events": 130, "persons": 120, "next_stage": "visit",
                              "converted": 96, "conversion": 0.8,          # ≤ 1: a share of "persons"
                              "from_previous": 90, "skipped_previous": 30,  # null for the first stage
                              "anomalies": [{"anomaly_id": "…", "kind": "conversion_drop",
                                             "on": "conversion"}]},       # or "volume"
                             ...]}]}

  Fields as in :func:`streams.clickhouse.queries.funnel`. A conversion anomaly ``k→k+1`` is
  listed on stage ``k`` (whose ``conversion`` it concerns), a volume anomaly on its own stage;
  only anomalies of the selected dimension are attached. ``source`` clickhouse: touchpoints
  ``FINAL`` over ``since`` (seconds behind, reused for :data:`FUNNEL_CACHE_TTL_S`). Source memory:
  the windows still open in this worker (the last few minutes; ``window`` says which).

``GET /api/funnel/series?tenant=&since=3h&channel=&campaign=`` — one dimension's funnel rows per
time bucket (tenants added up), the incidents to mark on them and the dimensions to pick from::

    {..., "since_s": 10800, "from": ms, "to": ms, "window_ms": 60000, "bucket_ms": 60000,
     "dimension": {"channel": "ads", "campaign": null},
     "buckets": [ms, ...],
     "stages": [{"stage": "click", "next_stage": "visit",
                 "persons": [12.0, ...],          # persons per window (minute), mean over the bucket
                 "conversion": [0.81, null, ...],  # pooled cohort conversion to next_stage; null: no cohort
                 "cohort": [12, ...], "converted": [10, ...]}],
     "incidents": [{"anomaly_id": "…", "tenant_id": "acme", "dimension": {...}, "stage_from": "click",
                    "stage_to": "visit", "kind": "conversion_drop", "status": "open",
                    "start": ms, "end": ms | null,     # null: still open
                    "observed": 0.4, "expected": 0.8, "est_lost_conversions": 3.1 | null}],
     "dimensions": [{"channel": "ads", "campaign": null, "person_minutes": 5400}, ...]}

  ``incidents``: those of this dimension detected over the period (ClickHouse, any status) and
  the ones open in memory. Only stages with rows appear. ``bucket_ms`` grows with ``since``
  (at most :data:`MAX_SERIES_POINTS` buckets). Source memory: the open windows only, no
  conversion (it is measured when a window closes).

``GET /api/sla/open?tenant=&team=&channel=&limit=200`` — open waits, most urgent first::

    {..., "count": 1000, "overdue": 40, "due_soon": 120, "due_soon_s": 300, "truncated": true,
     "shown": 200,                                   # waits matching team/channel, before limit
     "by_team": [{"tenant_id": "acme", "team": "support", "open": 300, "overdue": 12, "due_soon": 30}],
     "by_channel": [{"channel": "live_chat", "open": 500, "overdue": 30, "due_soon": 80}],
     "waits": [{"wait_id": "acme:c1:1", "tenant_id": "acme", "conversation_id": "c1",
                "channel": "live_chat", "team": "support", "agent_id": null, "priority": "high",
                "kind": "first_reply", "policy": "default", "started_at": ms, "waiting_s": 95.2,
                "target_s": 60.0, "due_at": ms, "due_in_s": -35.2, "overdue": true,
                "warned": true, "breached": true}]}

  Urgency (:func:`urgency_key`): overdue waits first, urgent priority first among them, then
  the longest overdue; then by time left, priority breaking ties within the same minute.
  ``count``/``overdue``/``due_soon``/``by_*`` cover every open wait of the tenant filter;
  ``team``/``channel`` only filter ``waits`` (``team=-`` selects waits without a team).
  ``due_in_s`` is negative once overdue. A ``sink`` worker has no open waits (``unavailable``).

``GET /api/sla/breaches?tenant=&since=1h`` — breaches by team::

    {..., "since_s": 3600,
     "teams": [{"tenant_id": "acme", "team": "support", "breaches": 3, "open_overdue": 1}]}

  ``breaches``: breaches fired over ``since`` (ClickHouse ``sla_events FINAL``), null when this
  worker has no ClickHouse; ``open_overdue``: waits open and past due right now (memory).
  ``team`` is null for conversations without one. Sorted by breaches, then open_overdue.

``GET /api/anomalies/open?tenant=`` — visible incidents not yet resolved, largest impact first::

    {..., "count": 1,
     "anomalies": [{"anomaly_id": "…", "tenant_id": "acme",
                    "dimension": {"channel": null, "campaign": null},
                    "stage_from": "impression", "stage_to": "click", "kind": "conversion_drop",
                    "status": "open", "window_start": ms, "last_detected_at": ms | null,
                    "observed": 0.1, "expected": 0.5, "score": -9.3,
                    "est_lost_conversions": 4.2 | null, "source": "memory"}]}

  The detector's memory on workers that process, joined with ClickHouse's records of the last
  24 h where the role has it: ClickHouse adds ``est_lost_conversions``/``last_detected_at`` (the
  detector's latest record) and the incidents memory does not hold (``source`` clickhouse: loaded
  history, another worker's tenants). ``observed``/``expected`` are the incident's mean rates
  (conversion) or persons per window (volume), as in ``funnel.anomalies``. Sorted by
  ``est_lost_conversions`` (unknown last), then newest.

``GET /api/profiles/lifecycle?tenant=`` — persons per lifecycle stage (docs/profiles-and-attribution.md),
all time, every stage present::

    {..., "tenants": [{"tenant_id": "acme", "persons": 1000,
                       "stages": [{"stage": "anonymous", "persons": 900, "share": 0.9}, ...]}],
     "total": {"persons": 1500, "stages": [...]}}

  ``profiles_latest`` (merged persons left out). ClickHouse only: a ``process`` worker answers
  ``unavailable`` with empty lists, and a failed query answers the same with ``error``.

``GET /api/roi?tenant=&model=linear`` — ROI per campaign, all time, best revenue first::

    {..., "model": "linear", "models": ["first_touch", ...],
     "campaigns": [{"tenant_id": "acme", "campaign": "spring", "currency": "EUR", "deals": 4,
                    "revenue": "300.00", "cost": "50.5065", "roas": 5.94, "roi": 4.94,
                    "revenue_minor": 30000, "cost_micros": 50506500, "exponent": 2,
                    "chain": [{"stage": "impression", "persons": 120, "rate": null}, ...],
                    "chain_product": 0.0333}]}

  Rows of :func:`streams.clickhouse.queries.campaign_roi` (``campaign`` null: revenue no campaign
  earned; ``roas``/``roi`` null without cost). Money is decimal text in the currency's minor
  unit (``*_minor``/``*_micros``: the exact integers). ClickHouse only, as above.
"""

from __future__ import annotations

import asyncio
import functools
import hmac
import math
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from streams.clickhouse import queries
from streams.core.attribution import MODELS
from streams.core.conversion import StageFlow, cohort_flow, pool
from streams.core.funnel import FunnelConfig, dim_key, parse_dim_key
from streams.core.model import CHANNELS
from streams.core.stages import STAGE_INDEX, STAGES
from streams.core.state import Store
from streams.core.tagrules import LIFECYCLE

if TYPE_CHECKING:
    from aiohttp import web

    from streams.app.worker import Worker

Dim = tuple[str | None, str | None]

PAGE_PATH = Path(__file__).resolve().parent / "static" / "board.html"
#: ``since`` above this is refused: a board query shares the single ClickHouse thread with the sink.
MAX_SINCE_S = 7 * 86_400
DEFAULT_SINCE_S = 3600
DEFAULT_SERIES_SINCE_S = 3 * 3600
DEFAULT_WAIT_LIMIT = 200
MAX_WAIT_LIMIT = 5000
#: A wait due within this many seconds counts as "due soon".
DUE_SOON_S = 300
#: ClickHouse answers are reused this long: several open boards polling every 3 s cost one query.
CACHE_TTL_S = 2.0
#: The cohort funnel reads every event of the period (about 1 s per 100k events on the embedded
#: engine), so it is reused longer; a period's funnel barely moves in 15 s.
FUNNEL_CACHE_TTL_S = 15.0
#: Lifecycle counts and ROI scan every profile and credit: reused for half a minute (they move slowly).
GROWTH_CACHE_TTL_S = 30.0
#: How far back open anomalies are looked up in ClickHouse.
ANOMALY_LOOKBACK_S = 86_400
#: A chart has at most this many buckets: the bucket grows with ``since`` (1 min up to 6 h).
MAX_SERIES_POINTS = 360
_BUCKET_STEPS_S = (60, 120, 300, 600, 900, 1800, 3600, 7200, 10_800, 21_600, 43_200, 86_400)
MAX_CAMPAIGN_CHARS = 256
#: Urgency order of SLA priorities (streams.core.model.PRIORITIES); a wait without one is "normal".
PRIORITY_RANK: Mapping[str, int] = {"urgent": 0, "high": 1, "normal": 2, "low": 3}
#: The attribution window's lookahead (the funnel's; not configurable, see streams.core.funnel).
LOOKAHEAD_WINDOWS = FunnelConfig().conversion_lookahead_windows

_TOTAL_DIM = dim_key(None, None)
# Served with the page: nothing but this origin may be contacted, which also guarantees "no CDN".
PAGE_HEADERS: Mapping[str, str] = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; connect-src 'self'; "
        "img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    ),
    "Referrer-Policy": "no-referrer",  # the URL may carry ?token=
    "Cache-Control": "no-store",
    "X-Content-Type-Options": "nosniff",
}


class BadRequest(ValueError):
    """A query parameter the endpoint cannot use (answered with 400 and the message)."""


# --- auth -------------------------------------------------------------------------------------------


def authorized(headers: Mapping[str, str], token: str | None, query_token: str | None = None) -> bool:
    """True when no token is configured, or the request carries it (header, or ``query_token``).

    Compared in constant time so response timing does not reveal how much of a guess matched.
    """
    if not token:
        return True
    expected = f"Bearer {token}".encode()
    got = (headers.get("Authorization") or "").encode()
    if hmac.compare_digest(got, expected):
        return True
    return query_token is not None and hmac.compare_digest(query_token.encode(), token.encode())


# --- parameters -------------------------------------------------------------------------------------


def parse_since_param(raw: str | None, default: int = DEFAULT_SINCE_S) -> int:
    """``since`` in seconds; ``default`` when absent, at most :data:`MAX_SINCE_S`."""
    if raw is None or raw == "":
        return default
    try:
        since = queries.parse_since(raw)
    except ValueError as exc:
        raise BadRequest(str(exc).replace("--since", "since")) from exc
    if not 0 < since <= MAX_SINCE_S:
        raise BadRequest(f"since must be between 1s and 7d, got {raw!r}")
    return since


def parse_limit_param(raw: str | None) -> int:
    if raw is None or raw == "":
        return DEFAULT_WAIT_LIMIT
    if not raw.isdigit() or not 1 <= int(raw) <= MAX_WAIT_LIMIT:
        raise BadRequest(f"limit must be an integer in 1..{MAX_WAIT_LIMIT}, got {raw!r}")
    return int(raw)


def tenant_param(raw: str | None) -> str | None:
    return raw or None


def model_param(raw: str | None) -> str:
    """The attribution model of the ROI panel (default: :data:`queries.DEFAULT_MODEL`)."""
    if raw is None or raw == "":
        return queries.DEFAULT_MODEL
    if raw not in MODELS:
        raise BadRequest(f"model must be one of {', '.join(MODELS)}, got {raw!r}")
    return raw


def dimension_param(channel: str | None, campaign: str | None) -> Dim:
    """The funnel dimension ``(channel, campaign)``; an empty value is "all" (None)."""
    if channel and channel not in CHANNELS:
        raise BadRequest(f"channel must be one of {sorted(CHANNELS)}, got {channel!r}")
    if campaign and len(campaign) > MAX_CAMPAIGN_CHARS:
        raise BadRequest(f"campaign is longer than {MAX_CAMPAIGN_CHARS} characters")
    return channel or None, campaign or None


def bucket_seconds(since_s: int, window_ms: int) -> int:
    """The chart bucket for a period: the smallest step ≥ one funnel window that keeps the chart
    within :data:`MAX_SERIES_POINTS` buckets (whole windows, so buckets pool complete cohorts)."""
    window_s = max(1, window_ms // 1000)
    for step in _BUCKET_STEPS_S:
        if step >= window_s and step % window_s == 0 and since_s / step <= MAX_SERIES_POINTS:
            return step
    return max(_BUCKET_STEPS_S[-1], window_s)


# --- snapshots: call with the worker's lock held; they copy, so shaping runs after releasing it ----


def snapshot_open_waits(store: Store, tenant: str | None = None) -> list[dict[str, Any]]:
    """Copies of the SLA conversation states that have an open wait (layout: ``streams.core.sla``)."""
    out: list[dict[str, Any]] = []
    for _, st in store.items():
        if not isinstance(st, dict) or not st.get("wait"):
            continue
        if tenant is not None and st.get("tenant_id") != tenant:
            continue
        out.append({**st, "wait": dict(st["wait"])})
    return out


def snapshot_open_anomalies(store: Store, tenant: str | None = None) -> list[dict[str, Any]]:
    """Visible, unresolved incidents from the detector's series state (``{tenant}|s|{dim}`` keys).

    Only incidents that were emitted (``vis``) count: suppressed ones (explained by another
    incident) never paged and must not light up the board either. The detector keeps no
    estimate of lost conversions in its state (only in the records it emits): ``None`` here,
    filled in from ClickHouse by :func:`merge_anomalies` where the role has it.
    """
    out: list[dict[str, Any]] = []
    for key, st in store.items():
        t, tag, dk = [*key.split("|", 2), "", ""][:3]
        if tag != "s" or not isinstance(st, dict) or (tenant is not None and t != tenant):
            continue
        channel, campaign = parse_dim_key(dk)
        for grp in ("v", "c"):
            for stage, series in (st.get(grp) or {}).items():
                inc = series.get("inc") if isinstance(series, dict) else None
                if not inc or not inc.get("vis") or not inc.get("id"):
                    continue
                conv = grp == "c"
                stage_to = STAGES[STAGE_INDEX[stage] + 1] if conv else stage
                obs, exp, var, n = inc["acc"]
                out.append({
                    "anomaly_id": inc["id"], "tenant_id": t,
                    "dimension": {"channel": channel, "campaign": campaign},
                    "stage_from": stage, "stage_to": stage_to,
                    "kind": ("conversion_" if conv else "volume_") + ("drop" if inc["dir"] == "d" else "surge"),
                    "status": "open", "window_start": int(inc["start"]), "last_detected_at": None,
                    "observed": round(obs / n, 6) if n > 0 else 0.0,
                    "expected": round(exp / n, 6) if n > 0 else 0.0,
                    "score": round((obs - exp) / math.sqrt(var), 3) if var > 0 else 0.0,
                    "est_lost_conversions": None, "source": "memory",
                })
    return out


#: Per person: stage index → window indexes (``streams.core.conversion.Marks``, mutable).
PersonMarks = dict[int, set[int]]


def snapshot_funnel(
    store: Store, window_ms: int, tenant: str | None = None, from_ms: int | None = None, dim: Dim = (None, None)
) -> tuple[dict[str, dict[str, Any]], int | None, int | None]:
    """Per tenant, what the funnel windows still open hold about one dimension.

    Reads the segments ``{tenant}|w|{start}|{seq}`` (layout: ``streams.core.funnel``). Per tenant:
    ``events`` (stage → events in the dimension, windows ending after ``from_ms``), ``cohort``
    (person → marks in the dimension in those windows), ``anywhere`` (person → marks in any
    dimension, every open window: where the next or previous stage is looked up) and
    ``volumes`` (window start → stage → persons in the dimension). Returns (per tenant, first
    window start, last window end) of the windows in the period; the bounds are None without any.
    """
    key = dim_key(*dim)
    out: dict[str, dict[str, Any]] = {}
    first: int | None = None
    end: int | None = None
    for skey, seg in store.items():
        t, tag, rest = [*skey.split("|", 2), "", ""][:3]
        if tag != "w" or not isinstance(seg, dict) or (tenant is not None and t != tenant):
            continue
        start = int(rest.split("|", 1)[0])
        win = start // window_ms
        cells = seg.get("d") or {}
        acc = out.setdefault(t, {"events": {}, "cohort": {}, "anywhere": {}, "volumes": {}})
        for stage, (_, persons) in (cells.get(_TOTAL_DIM) or {}).items():
            si = STAGE_INDEX[stage]
            for p in persons:
                acc["anywhere"].setdefault(p, {}).setdefault(si, set()).add(win)
        if from_ms is not None and start + window_ms <= from_ms:
            continue
        first = start if first is None else min(first, start)
        end = start + window_ms if end is None else max(end, start + window_ms)
        vols = acc["volumes"].setdefault(start, {})
        for stage, (events, persons) in (cells.get(key) or {}).items():
            si = STAGE_INDEX[stage]
            acc["events"][stage] = acc["events"].get(stage, 0) + int(events)
            vols[stage] = vols.get(stage, 0) + len(persons)  # segments list persons new to the window
            for p in persons:
                acc["cohort"].setdefault(p, {}).setdefault(si, set()).add(win)
    return out, first, end


# --- shaping: pure, JSON-ready ------------------------------------------------------------------------


def urgency_key(w: Mapping[str, Any]) -> tuple[Any, ...]:
    """Sort key of an open wait, most urgent first.

    Overdue waits come first; among them urgent priority first (an urgent customer already past
    due is the one to pick up), then the longest overdue. Then the others by time left; priority
    only breaks ties within the same minute left, because a normal wait due in 1 minute must not
    hide behind an urgent one due in 20.
    """
    rank = PRIORITY_RANK.get(w.get("priority") or "normal", PRIORITY_RANK["normal"])
    due_in = float(w["due_in_s"])
    # the row's own flag, computed before ``due_in_s`` was rounded: a wait 40 ms past due reads
    # due_in_s -0.0 but is overdue, and must sort with the overdue ones it is shown among
    if w.get("overdue", due_in < 0):
        return (0, rank, due_in, 0.0, w["tenant_id"], w["conversation_id"])
    return (1, math.floor(due_in / 60), rank, due_in, w["tenant_id"], w["conversation_id"])


def _wait_row(st: Mapping[str, Any], now_ms: int) -> dict[str, Any]:
    w = st["wait"]
    due_in = (int(w["due_at"]) - now_ms) / 1000
    return {
        "wait_id": f"{st['tenant_id']}:{st['conversation_id']}:{w['n']}",
        "tenant_id": st["tenant_id"], "conversation_id": st["conversation_id"],
        "channel": w["channel"], "team": st.get("team"), "agent_id": st.get("agent_id"),
        "priority": w.get("priority"), "kind": w["kind"], "policy": w.get("policy"),
        "started_at": int(w["started_at"]),
        "waiting_s": round(max(0, now_ms - int(w["started_at"])) / 1000, 1),
        "target_s": float(w["target_s"]), "due_at": int(w["due_at"]), "due_in_s": round(due_in, 1),
        "overdue": due_in < 0, "warned": bool(w.get("warned")), "breached": bool(w.get("breached")),
    }


def open_waits_payload(
    states: Iterable[Mapping[str, Any]], now_ms: int, limit: int = DEFAULT_WAIT_LIMIT,
    team: str | None = None, channel: str | None = None,
) -> dict[str, Any]:
    """Open waits most urgent first (:func:`urgency_key`) with counts per team and channel.

    The counts cover every wait given; ``team``/``channel`` filter only the list (``team`` ``"-"``
    is "no team"), so a lead can drill into one team without losing the overview.
    """
    rows = sorted((_wait_row(st, now_ms) for st in states), key=urgency_key)
    teams: dict[tuple[str, str | None], dict[str, Any]] = {}
    channels: dict[str, dict[str, Any]] = {}
    due_soon = 0
    for r in rows:
        soon = not r["overdue"] and r["due_in_s"] <= DUE_SOON_S
        due_soon += soon
        for entry in (
            teams.setdefault((r["tenant_id"], r["team"]), {"tenant_id": r["tenant_id"], "team": r["team"],
                                                           "open": 0, "overdue": 0, "due_soon": 0}),
            channels.setdefault(r["channel"], {"channel": r["channel"], "open": 0, "overdue": 0, "due_soon": 0}),
        ):
            entry["open"] += 1
            entry["overdue"] += r["overdue"]
            entry["due_soon"] += soon

    def busiest(e: Mapping[str, Any]) -> tuple[int, int, int]:
        return -e["overdue"], -e["due_soon"], -e["open"]

    shown = [r for r in rows
             if (team is None or r["team"] == (None if team == "-" else team))
             and (channel is None or r["channel"] == channel)]
    return {
        "count": len(rows), "overdue": sum(1 for r in rows if r["overdue"]), "due_soon": due_soon,
        "due_soon_s": DUE_SOON_S, "shown": len(shown), "truncated": len(shown) > limit,
        "by_team": sorted(teams.values(), key=lambda e: (*busiest(e), e["tenant_id"], e["team"] or "")),
        "by_channel": sorted(channels.values(), key=lambda e: (*busiest(e), e["channel"])),
        "waits": shown[:limit],
    }


def breaches_payload(
    clickhouse_rows: Iterable[Mapping[str, Any]] | None, waits: Iterable[Mapping[str, Any]]
) -> dict[str, Any]:
    """Breaches per tenant and team: fired over the period (ClickHouse rows from
    :func:`queries.sla_breaches_by_team`, None when unavailable) plus waits overdue right now."""
    teams: dict[tuple[str, str | None], dict[str, Any]] = {}

    def entry(tenant: str, team: str | None) -> dict[str, Any]:
        return teams.setdefault((tenant, team), {
            "tenant_id": tenant, "team": team, "breaches": None if clickhouse_rows is None else 0,
            "open_overdue": 0,
        })

    for row in clickhouse_rows or ():
        entry(row["tenant_id"], row.get("team") or None)["breaches"] = int(row["breaches"])
    for w in waits:
        if w["overdue"]:
            entry(w["tenant_id"], w.get("team") or None)["open_overdue"] += 1
    ordered = sorted(
        teams.values(),
        key=lambda e: (-(e["breaches"] or 0), -e["open_overdue"], e["tenant_id"], e["team"] or ""),
    )
    return {"teams": ordered}


#: tenant → stage → the stage's row (``events`` + :meth:`streams.core.conversion.StageFlow.as_dict`).
FunnelFlows = dict[str, dict[str, dict[str, Any]]]


def funnel_flows_from_rows(rows: Iterable[Mapping[str, Any]]) -> FunnelFlows:
    """``queries.funnel`` rows (no ``by``) → per tenant and stage."""
    out: FunnelFlows = {}
    for r in rows:
        row = {k: r[k] for k in ("stage", "events", "persons", "converted", "conversion", "from_previous",
                                 "skipped_previous")}
        idx = STAGE_INDEX[r["stage"]]
        row["next_stage"] = STAGES[idx + 1] if idx + 1 < len(STAGES) else None
        out.setdefault(r["tenant_id"], {})[r["stage"]] = row
    return out


def funnel_flows_from_snapshot(snap: Mapping[str, Mapping[str, Any]], lookahead: int) -> FunnelFlows:
    """:func:`snapshot_funnel` → per tenant and stage, by the core's cohort rule."""
    out: FunnelFlows = {}
    for tenant, acc in snap.items():
        anywhere = acc["anywhere"]
        flows = cohort_flow(((marks, anywhere.get(p, {})) for p, marks in acc["cohort"].items()), lookahead)
        out[tenant] = {f.stage: {**f.as_dict(), "events": acc["events"].get(f.stage, 0)} for f in flows}
    return out


def _empty_stage(stage: str) -> dict[str, Any]:
    i = STAGE_INDEX[stage]
    last = i == len(STAGES) - 1
    return {"stage": stage, "events": 0, "persons": 0, "next_stage": None if last else STAGES[i + 1],
            "converted": None if last else 0, "conversion": None, "from_previous": None if i == 0 else 0,
            "skipped_previous": None if i == 0 else 0}


def _same_dim(a: Mapping[str, Any], dim: Dim) -> bool:
    d = a.get("dimension") or {}
    return (d.get("channel"), d.get("campaign")) == dim


def funnel_payload(
    flows: FunnelFlows, anomalies: Iterable[Mapping[str, Any]], dim: Dim = (None, None),
    window_ms: int = FunnelConfig().window_ms,
) -> dict[str, Any]:
    """Every stage of every tenant, with the open anomalies of this dimension on the stage whose
    number they concern (conversion k→k+1 on stage k, volume on its stage) and a count of the
    tenant's anomalies elsewhere."""
    by_stage: dict[tuple[str, str], list[dict[str, Any]]] = {}
    others: dict[str, int] = {}
    tenants = set(flows)
    for a in anomalies:
        tenants.add(a["tenant_id"])
        if not _same_dim(a, dim):
            others[a["tenant_id"]] = others.get(a["tenant_id"], 0) + 1
            continue
        conv = a["kind"].startswith("conversion")
        by_stage.setdefault((a["tenant_id"], a["stage_from"]), []).append({
            "anomaly_id": a["anomaly_id"], "kind": a["kind"], "on": "conversion" if conv else "volume",
        })
    out = []
    for tenant in sorted(tenants):
        stages = flows.get(tenant, {})
        rows = [{**(stages.get(s) or _empty_stage(s)), "anomalies": by_stage.get((tenant, s), [])} for s in STAGES]
        out.append({"tenant_id": tenant, "other_anomalies": others.get(tenant, 0), "stages": rows})
    return {"dimension": {"channel": dim[0], "campaign": dim[1]},
            "attribution": {"window_ms": window_ms, "lookahead_windows": LOOKAHEAD_WINDOWS}, "tenants": out,
            "total": _total(out)}


def _total(tenants: list[dict[str, Any]]) -> dict[str, Any]:
    """All tenants' funnels as one: persons are tenant-scoped, so the cohorts are disjoint and
    their counts add; the conversion of the sum is the core's rate of the summed counts."""
    stages = []
    for i, stage in enumerate(STAGES):
        rows = [t["stages"][i] for t in tenants]
        flow = StageFlow(stage, sum(r["persons"] for r in rows),
                         None if i == len(STAGES) - 1 else sum(r["converted"] or 0 for r in rows),
                         None if i == 0 else sum(r["from_previous"] or 0 for r in rows))
        stages.append({**flow.as_dict(), "events": sum(r["events"] for r in rows),
                       "anomalies": [a for r in rows for a in r["anomalies"]]})
    return {"tenants": len(tenants), "other_anomalies": sum(t["other_anomalies"] for t in tenants), "stages": stages}


def series_payload(
    rows: Iterable[Mapping[str, Any]], from_ms: int, to_ms: int, bucket_ms: int, window_ms: int,
) -> dict[str, Any]:
    """``queries.funnel_series``-shaped rows → one array per stage over every bucket of the period.

    Volumes are persons per window (the bucket's mean, windows after ``to_ms`` not counted), so a
    chart reads the same at every zoom. Conversion is pooled (:func:`streams.core.conversion.pool`).
    """
    first = from_ms - from_ms % bucket_ms
    buckets = list(range(first, to_ms + 1, bucket_ms)) or [first]
    index = {t: i for i, t in enumerate(buckets)}
    cells: dict[str, dict[int, list[tuple[int, int, int | None]]]] = {}
    for r in rows:
        i = index.get(int(r["t"]))
        if i is not None:
            cells.setdefault(r["stage"], {}).setdefault(i, []).append(
                (int(r["persons"]), int(r.get("cohort", r["persons"])), r.get("converted")))
    stages = []
    for stage in STAGES:
        per = cells.get(stage)
        if not per:
            continue
        nxt = STAGE_INDEX[stage] + 1
        persons: list[float] = []
        cohort: list[int] = []
        converted: list[int | None] = []
        conversion: list[float | None] = []
        for i, t in enumerate(buckets):
            parts = per.get(i, [])
            windows = max(1, min(bucket_ms, to_ms - t) // window_ms) if t < to_ms else 1
            persons.append(round(sum(p for p, _, _ in parts) / windows, 3))
            c_n, c_x = pool((c, x) for _, c, x in parts)
            cohort.append(c_n)
            converted.append(c_x)
            conversion.append(None if c_x is None or c_n == 0 else round(min(c_x, c_n) / c_n, 4))
        stages.append({"stage": stage, "next_stage": STAGES[nxt] if nxt < len(STAGES) else None,
                       "persons": persons, "conversion": conversion, "cohort": cohort, "converted": converted})
    return {"from": from_ms, "to": to_ms, "window_ms": window_ms, "bucket_ms": bucket_ms, "buckets": buckets,
            "stages": stages}


def series_rows_from_snapshot(snap: Mapping[str, Mapping[str, Any]], bucket_ms: int) -> list[dict[str, Any]]:
    """The open windows' volumes as series rows (no conversion: measured when a window closes)."""
    rows: dict[tuple[int, str], int] = {}
    for acc in snap.values():
        for start, stages in acc["volumes"].items():
            t = start - start % bucket_ms
            for stage, n in stages.items():
                rows[(t, stage)] = rows.get((t, stage), 0) + n
    return [{"t": t, "stage": s, "persons": n, "cohort": 0, "converted": None}
            for (t, s), n in sorted(rows.items(), key=lambda kv: (kv[0][0], STAGE_INDEX[kv[0][1]]))]


def merge_anomalies(
    memory: Iterable[Mapping[str, Any]], clickhouse: Iterable[Mapping[str, Any]] | None, open_only: bool = True
) -> list[dict[str, Any]]:
    """The detector's live incidents, completed with ClickHouse's latest record of each.

    Memory decides what is open where it knows the incident; ClickHouse adds what memory does not
    keep (estimated lost conversions, last record time) and the incidents memory does not hold
    (loaded history, another worker's tenants), which are open as far as their records say.
    """
    by_id = {a["anomaly_id"]: dict(a) for a in clickhouse or ()}
    out: list[dict[str, Any]] = []
    for a in memory:
        rec = by_id.pop(a["anomaly_id"], None)
        merged = dict(a)
        if rec is not None:
            merged["est_lost_conversions"] = rec.get("est_lost_conversions")
            merged["last_detected_at"] = rec.get("last_detected_at")
        out.append(merged)
    for rec in by_id.values():
        if open_only and rec.get("status") == "resolved":
            continue
        out.append({**rec, "source": "clickhouse"})
    return out


def anomalies_payload(anomalies: Iterable[Mapping[str, Any]]) -> dict[str, Any]:
    def impact(a: Mapping[str, Any]) -> tuple[Any, ...]:
        lost = a.get("est_lost_conversions")
        return (lost is None, -(lost or 0.0), -a["window_start"], a["tenant_id"], a["anomaly_id"])

    rows = sorted(anomalies, key=impact)
    return {"count": len(rows), "anomalies": [dict(a) for a in rows]}


def incidents_for(anomalies: Iterable[Mapping[str, Any]], dim: Dim) -> list[dict[str, Any]]:
    """The incidents of one dimension as chart marks: ``start``, ``end`` (None while open)."""
    out = []
    for a in anomalies:
        if not _same_dim(a, dim):
            continue
        resolved = a.get("status") == "resolved"
        out.append({
            "anomaly_id": a["anomaly_id"], "tenant_id": a["tenant_id"], "dimension": dict(a["dimension"]),
            "stage_from": a["stage_from"], "stage_to": a["stage_to"], "kind": a["kind"],
            "status": a.get("status", "open"), "start": int(a["window_start"]),
            "end": int(a["last_detected_at"]) if resolved and a.get("last_detected_at") else None,
            "observed": a["observed"], "expected": a["expected"],
            "est_lost_conversions": a.get("est_lost_conversions"),
        })
    out.sort(key=lambda i: (i["start"], i["anomaly_id"]))
    return out


def lifecycle_payload(rows: Iterable[Mapping[str, Any]]) -> dict[str, Any]:
    """:func:`queries.lifecycle_counts` rows → per tenant and in total, every stage in order."""
    per: dict[str, dict[str, int]] = {}
    for r in rows:
        per.setdefault(r["tenant_id"], {})[r["stage"]] = int(r["persons"])

    def block(counts: Mapping[str, int]) -> dict[str, Any]:
        n = sum(counts.values())
        return {"persons": n, "stages": [{"stage": st, "persons": counts.get(st, 0),
                                          "share": round(counts.get(st, 0) / n, 4) if n else None}
                                         for st in LIFECYCLE]}

    total = {st: sum(c.get(st, 0) for c in per.values()) for st in LIFECYCLE}
    return {"tenants": [{"tenant_id": t, **block(c)} for t, c in sorted(per.items())], "total": block(total)}


# --- the endpoints ------------------------------------------------------------------------------------


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


class Board:
    """Picks each answer's source for this worker's role and keeps ClickHouse answers briefly."""

    def __init__(self, rt: Worker) -> None:
        self.rt = rt
        self._cache: dict[tuple[Any, ...], tuple[float, asyncio.Future[Any]]] = {}

    def _stores(self, namespace: str) -> list[Store]:
        """That namespace's store of every task this worker runs (call with the lock held)."""
        st = self.rt.process
        if st is None:
            return []
        return [p.stores[namespace] for p in st.processors()]

    @property
    def processing(self) -> bool:
        return self.rt.settings.role in ("all", "process")

    @property
    def has_clickhouse(self) -> bool:
        return self.rt.settings.role != "process"

    @property
    def window_ms(self) -> int:
        return self.rt.settings.funnel_window_ms

    def _head(self, source: str) -> dict[str, Any]:
        return {"generated_at": _now_ms(), "role": self.rt.settings.role, "source": source,
                "state_recovered": self.rt.process is None or self.rt.process.ready}

    async def _clickhouse(self, key: tuple[Any, ...], ttl: float, fn: Callable[..., Any], *args: Any,
                          **kwargs: Any) -> Any:
        """``fn(ch, *args)`` on the ClickHouse thread, shared by concurrent callers and reused for
        ``ttl`` seconds; a failure is not kept."""
        now = time.monotonic()
        hit = self._cache.get(key)
        if hit is not None and (not hit[1].done() or (now - hit[0] < ttl and hit[1].exception() is None)):
            return await asyncio.shield(hit[1])
        if len(self._cache) > 256:
            self._cache = {k: v for k, v in self._cache.items() if not v[1].done()}
        ch = self.rt.clickhouse
        fut: asyncio.Future[Any] = asyncio.ensure_future(ch.run(functools.partial(fn, ch, *args, **kwargs)))
        self._cache[key] = (now, fut)
        try:
            return await asyncio.shield(fut)
        except Exception:
            self._cache.pop(key, None)
            raise

    async def _waits(self, tenant: str | None) -> list[dict[str, Any]]:
        async with self.rt.lock:
            return [w for store in self._stores("sla") for w in snapshot_open_waits(store, tenant)]

    async def _memory_anomalies(self, tenant: str | None) -> list[dict[str, Any]]:
        async with self.rt.lock:
            return [a for store in self._stores("anomaly") for a in snapshot_open_anomalies(store, tenant)]

    async def _incident_history(self, tenant: str | None, since_s: int) -> list[dict[str, Any]]:
        return await self._clickhouse(("incidents", tenant, since_s), CACHE_TTL_S, queries.anomaly_incidents,
                                      tenant, since_s)

    async def anomalies(self, tenant: str | None) -> tuple[str, list[dict[str, Any]], str | None]:
        """(source, open anomalies, error): memory where the detector runs, joined with ClickHouse."""
        memory = await self._memory_anomalies(tenant) if self.processing else []
        history: list[dict[str, Any]] | None = None
        error: str | None = None
        if self.has_clickhouse:
            try:
                history = await self._incident_history(tenant, ANOMALY_LOOKBACK_S)
            except Exception as exc:  # the board shows the error; it must not take the worker down
                error = _error(exc)
        source = "clickhouse" if history is not None else "memory" if self.processing else "unavailable"
        return source, merge_anomalies(memory, history), error

    async def _funnel_snapshot(self, tenant: str | None, from_ms: int, dim: Dim) -> tuple[
            dict[str, dict[str, Any]], int | None, int | None]:
        snap: dict[str, dict[str, Any]] = {}
        first: int | None = None
        end: int | None = None
        async with self.rt.lock:
            for store in self._stores("funnel"):  # a tenant lives in one task: the snapshots are disjoint
                part, f, e = snapshot_funnel(store, self.window_ms, tenant, from_ms, dim)
                snap.update(part)
                first = f if first is None or (f is not None and f < first) else first
                end = e if end is None or (e is not None and e > end) else end
        return snap, first, end

    async def funnel(self, tenant: str | None, since_s: int, dim: Dim = (None, None)) -> dict[str, Any]:
        now = _now_ms()
        _, anomalies, anomaly_error = await self.anomalies(tenant)
        error: str | None = None
        if self.has_clickhouse:
            try:
                rows = await self._clickhouse(
                    ("funnel", tenant, since_s, dim), FUNNEL_CACHE_TTL_S, queries.funnel, tenant, since_s,
                    channel=dim[0], campaign=dim[1], window_ms=self.window_ms, lookahead=LOOKAHEAD_WINDOWS)
                body = {**self._head("clickhouse"), "since_s": since_s,
                        "window": {"from": now - since_s * 1000, "to": now},
                        **funnel_payload(funnel_flows_from_rows(rows), anomalies, dim, self.window_ms)}
                return _with_error(body, anomaly_error)
            except Exception as exc:  # fall back to what memory has
                error = _error(exc)
        snap, first, end = await self._funnel_snapshot(tenant, now - since_s * 1000, dim)
        body = {**self._head("memory" if self.processing else "unavailable"), "since_s": since_s,
                "window": {"from": first, "to": end},
                **funnel_payload(funnel_flows_from_snapshot(snap, LOOKAHEAD_WINDOWS), anomalies, dim,
                                 self.window_ms)}
        return _with_error(body, error or anomaly_error)


    async def series(self, tenant: str | None, since_s: int, dim: Dim) -> dict[str, Any]:
        now = _now_ms()
        from_ms = now - since_s * 1000
        bucket_ms = bucket_seconds(since_s, self.window_ms) * 1000
        memory = await self._memory_anomalies(tenant) if self.processing else []
        error: str | None = None
        if self.has_clickhouse:
            try:
                rows = await self._clickhouse(
                    ("series", tenant, since_s, dim), CACHE_TTL_S, queries.funnel_series, tenant, since_s,
                    channel=dim[0], campaign=dim[1], bucket_s=bucket_ms // 1000, now_ms=now)
                history = await self._incident_history(tenant, since_s)
                dims = await self._clickhouse(("dims", tenant, since_s), FUNNEL_CACHE_TTL_S,
                                              queries.funnel_dimensions, tenant, since_s)
                body = {**self._head("clickhouse"), "since_s": since_s,
                        "dimension": {"channel": dim[0], "campaign": dim[1]},
                        **series_payload(rows, from_ms, now, bucket_ms, self.window_ms),
                        "incidents": incidents_for(merge_anomalies(memory, history, open_only=False), dim),
                        "dimensions": dims}
                return body
            except Exception as exc:  # fall back to what memory has
                error = _error(exc)
        snap, _, _ = await self._funnel_snapshot(tenant, from_ms, dim)
        body = {**self._head("memory" if self.processing else "unavailable"), "since_s": since_s,
                "dimension": {"channel": dim[0], "campaign": dim[1]},
                **series_payload(series_rows_from_snapshot(snap, bucket_ms), from_ms, now, bucket_ms, self.window_ms),
                "incidents": incidents_for(memory, dim), "dimensions": []}
        return _with_error(body, error)

    async def sla_open(self, tenant: str | None, limit: int, team: str | None = None,
                       channel: str | None = None) -> dict[str, Any]:
        if not self.processing:
            return {**self._head("unavailable"), **open_waits_payload([], _now_ms(), limit)}
        states = await self._waits(tenant)
        return {**self._head("memory"), **open_waits_payload(states, _now_ms(), limit, team, channel)}

    async def sla_breaches(self, tenant: str | None, since_s: int) -> dict[str, Any]:
        waits = open_waits_payload(await self._waits(tenant), _now_ms(), MAX_WAIT_LIMIT)["waits"]
        rows: list[dict[str, Any]] | None = None
        error: str | None = None
        if self.has_clickhouse:
            try:
                rows = await self._clickhouse(
                    ("breaches", tenant, since_s), CACHE_TTL_S, queries.sla_breaches_by_team, tenant, since_s
                )
            except Exception as exc:  # the open-overdue half still answers
                error = _error(exc)
        source = "clickhouse" if rows is not None else "memory"
        body = {**self._head(source), "since_s": since_s, **breaches_payload(rows, waits)}
        return _with_error(body, error)

    async def open_anomalies(self, tenant: str | None) -> dict[str, Any]:
        source, anomalies, error = await self.anomalies(tenant)
        return _with_error({**self._head(source), **anomalies_payload(anomalies)}, error)

    async def _growth(self, key: tuple[Any, ...], fn: Callable[..., Any], *args: Any,
                      **kwargs: Any) -> tuple[str, Any, str | None]:
        """(source, answer or None, error) of a ClickHouse-only answer: profiles and credits live
        in no worker's memory in a form a board could read, so there is nothing to fall back to."""
        if not self.has_clickhouse:
            return "unavailable", None, None
        try:
            return "clickhouse", await self._clickhouse(key, GROWTH_CACHE_TTL_S, fn, *args, **kwargs), None
        except Exception as exc:  # shown on the panel; not kept, so the next poll asks again
            return "unavailable", None, _error(exc)

    async def lifecycle(self, tenant: str | None) -> dict[str, Any]:
        source, rows, error = await self._growth(("lifecycle", tenant), queries.lifecycle_counts, tenant)
        return _with_error({**self._head(source), **lifecycle_payload(rows or [])}, error)

    async def roi(self, tenant: str | None, model: str = queries.DEFAULT_MODEL) -> dict[str, Any]:
        source, rows, error = await self._growth(("roi", tenant, model), queries.campaign_roi, tenant,
                                                 model=model)
        return _with_error({**self._head(source), "model": model, "models": list(MODELS),
                            "campaigns": rows or []}, error)


def _error(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"[:300]


def _with_error(body: dict[str, Any], error: str | None) -> dict[str, Any]:
    if error:
        body["error"] = error
    return body


def load_page() -> str:
    return PAGE_PATH.read_text(encoding="utf-8")


def routes(rt: Worker) -> list[tuple[str, Any]]:
    """``/board`` and ``/api/*`` as (path, aiohttp handler) pairs for the worker's web server."""
    from aiohttp import web

    from streams.web.server import json_response

    board = Board(rt)
    page_cache: list[str] = []

    def denied(request: web.Request, allow_query: bool = False) -> web.Response | None:
        query_token = request.query.get("token") if allow_query else None
        if authorized(request.headers, rt.settings.web_token, query_token):
            return None
        return json_response({"error": "unauthorized"}, status=401, headers={"WWW-Authenticate": "Bearer"})

    async def board_page(request: web.Request) -> web.Response:
        refused = denied(request, allow_query=True)
        if refused is not None:
            return refused
        if not page_cache:
            page_cache.append(load_page())
        return web.Response(text=page_cache[0], content_type="text/html", headers=dict(PAGE_HEADERS))

    def api(handler: Callable[[Mapping[str, str]], Awaitable[dict[str, Any]]]) -> Any:
        async def view(request: web.Request) -> web.Response:
            refused = denied(request)
            if refused is not None:
                return refused
            try:
                body = await handler(request.query)
            except BadRequest as exc:
                return json_response({"error": str(exc)}, status=400)
            return json_response(body, headers={"Cache-Control": "no-store"})

        return view

    def dim(q: Mapping[str, str]) -> Dim:
        return dimension_param(q.get("channel"), q.get("campaign"))

    async def funnel(q: Mapping[str, str]) -> dict[str, Any]:
        return await board.funnel(tenant_param(q.get("tenant")), parse_since_param(q.get("since")), dim(q))

    async def series(q: Mapping[str, str]) -> dict[str, Any]:
        since = parse_since_param(q.get("since"), DEFAULT_SERIES_SINCE_S)
        return await board.series(tenant_param(q.get("tenant")), since, dim(q))

    async def sla_open(q: Mapping[str, str]) -> dict[str, Any]:
        channel = q.get("channel") or None
        if channel is not None and channel not in CHANNELS:
            raise BadRequest(f"channel must be one of {sorted(CHANNELS)}, got {channel!r}")
        return await board.sla_open(tenant_param(q.get("tenant")), parse_limit_param(q.get("limit")),
                                    q.get("team") or None, channel)

    async def sla_breaches(q: Mapping[str, str]) -> dict[str, Any]:
        return await board.sla_breaches(tenant_param(q.get("tenant")), parse_since_param(q.get("since")))

    async def anomalies_open(q: Mapping[str, str]) -> dict[str, Any]:
        return await board.open_anomalies(tenant_param(q.get("tenant")))

    async def lifecycle(q: Mapping[str, str]) -> dict[str, Any]:
        return await board.lifecycle(tenant_param(q.get("tenant")))

    async def roi(q: Mapping[str, str]) -> dict[str, Any]:
        return await board.roi(tenant_param(q.get("tenant")), model_param(q.get("model")))

    return [
        ("/board", board_page),
        ("/api/funnel", api(funnel)),
        ("/api/funnel/series", api(series)),
        ("/api/sla/open", api(sla_open)),
        ("/api/sla/breaches", api(sla_breaches)),
        ("/api/anomalies/open", api(anomalies_open)),
        ("/api/profiles/lifecycle", api(lifecycle)),
        ("/api/roi", api(roi)),
    ]
