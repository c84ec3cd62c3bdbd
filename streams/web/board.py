"""Live board on the worker's web server: one HTML page plus the JSON endpoints it polls.

Why on the worker: the "open" things a support lead watches (waits whose clock is running,
anomaly incidents not yet resolved) exist exactly in the processing worker's memory; no other
component has them before they fire or resolve. Aggregates over time (funnel of the last hour,
breaches per team) come from ClickHouse when this worker's role has it (``all``, ``sink``),
because memory only holds the funnel windows that are still open. A ``process`` worker has no
ClickHouse, so it answers those from memory and says so in ``source``.

Scope: a worker sees the tenants of the partitions it owns. With several ``process`` workers,
each board shows its own tenants' open waits and anomalies (ClickHouse-sourced parts cover all).

Pure shaping lives in plain functions (``snapshot_*`` copy what is needed from the core stores
while the caller holds ``rt.lock``; ``*_payload`` turn copies into JSON dicts) so the unit tests
drive them with a real ``Pipeline`` and no web server. The HTTP handlers only pick the source,
hold the lock for the copy and serialise.

Auth: when ``TOUCHSTREAM_WEB_TOKEN`` is set, ``/board`` and ``/api/*`` need
``Authorization: Bearer <token>``. ``/board`` also accepts ``?token=<token>`` because a browser
cannot send a header when navigating; the page then sends the header on every API call. The API
does not accept the query form, so the token appears in at most one logged URL.

All times are epoch milliseconds UTC (as in the internal topics); durations are seconds.
Every payload carries ``generated_at`` (ms), ``role`` (the worker's role), ``source``
(``"memory"``, ``"clickhouse"`` or ``"unavailable"``) and ``state_recovered`` (False while
the worker is (re)loading state after a rebalance: memory answers may be incomplete).
A ClickHouse failure falls back to memory and adds ``"error": "<message>"``.

Endpoints (``tenant`` is optional everywhere; ``since`` is ``90s``/``15m``/``1h``/``7d``, max 7d;
a bad parameter answers 400 ``{"error": ...}``; without a valid token 401 ``{"error": "unauthorized"}``):

``GET /board`` — the page (self-contained HTML, no external resources; ``?token=`` as above).

``GET /api/funnel?tenant=&since=1h`` — funnel per tenant, every stage present (zeros included)::

    {..., "since_s": 3600, "window": {"from": ms, "to": ms},
     "tenants": [{"tenant_id": "acme",
                  "stages": [{"stage": "impression", "events": 120, "persons": 80,
                              "conversion_from_previous": null,          # persons / previous stage's
                              "anomalies": [{"anomaly_id": "…", "kind": "conversion_drop",
                                             "on": "conversion",          # or "volume"
                                             "dimension": {"channel": "web", "campaign": null}}]},
                             ... "click", "visit", "interaction", "lead", "opportunity", "deal"]}]}

  ``source`` clickhouse: exact events and distinct persons over ``since`` (touchpoints ``FINAL``,
  seconds behind). Source memory: the windows still open in this worker (the last few minutes;
  ``window`` says which), persons distinct across them. A conversion anomaly ``k→k+1`` is listed
  on stage ``k+1`` (it concerns the conversion into it), a volume anomaly on its own stage.

``GET /api/sla/open?tenant=&limit=200`` — open waits, oldest first (memory only)::

    {..., "count": 2, "overdue": 1, "truncated": false,
     "waits": [{"wait_id": "acme:c1:1", "tenant_id": "acme", "conversation_id": "c1",
                "channel": "live_chat", "team": "support", "agent_id": null, "priority": "high",
                "kind": "first_reply", "policy": "default", "started_at": ms, "waiting_s": 95.2,
                "target_s": 60.0, "due_at": ms, "due_in_s": -35.2, "overdue": true,
                "warned": true, "breached": true}]}

  ``due_in_s`` is negative once overdue. A ``sink`` worker has no open waits
  (``source`` ``unavailable``).

``GET /api/sla/breaches?tenant=&since=1h`` — breaches by team::

    {..., "since_s": 3600,
     "teams": [{"tenant_id": "acme", "team": "support", "breaches": 3, "open_overdue": 1}]}

  ``breaches``: breaches fired over ``since`` (ClickHouse ``sla_events FINAL``), null when this
  worker has no ClickHouse; ``open_overdue``: waits open and past due right now (memory).
  ``team`` is null for conversations without one. Sorted by breaches, then open_overdue.

``GET /api/anomalies/open?tenant=`` — visible incidents not yet resolved, newest first::

    {..., "count": 1,
     "anomalies": [{"anomaly_id": "…", "tenant_id": "acme",
                    "dimension": {"channel": null, "campaign": null},
                    "stage_from": "impression", "stage_to": "click", "kind": "conversion_drop",
                    "window_start": ms, "observed": 0.1, "expected": 0.5, "score": -9.3}]}

  Memory (the detector's store) on workers that process; ClickHouse (last 24 h) on a ``sink``
  worker. ``observed``/``expected`` are the incident's mean rates (conversion) or persons per
  window (volume), as in ``funnel.anomalies``.
"""

from __future__ import annotations

import hmac
import math
import time
from collections.abc import Iterable, Mapping
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from streams.clickhouse import queries
from streams.core.funnel import dim_key, parse_dim_key
from streams.core.stages import STAGE_INDEX, STAGES
from streams.core.state import Store

if TYPE_CHECKING:
    from aiohttp import web

    from streams.app.worker import Worker

PAGE_PATH = Path(__file__).resolve().parent / "static" / "board.html"
#: ``since`` above this is refused: a board query shares the single ClickHouse thread with the sink.
MAX_SINCE_S = 7 * 86_400
DEFAULT_SINCE_S = 3600
DEFAULT_WAIT_LIMIT = 200
MAX_WAIT_LIMIT = 5000
#: ClickHouse answers are reused this long: several open boards polling every 3 s cost one query.
CACHE_TTL_S = 2.0
#: How far back a ``sink`` worker looks for anomalies that are still open.
SINK_ANOMALY_LOOKBACK_S = 86_400

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


def parse_since_param(raw: str | None) -> int:
    """``since`` in seconds; default one hour, at most :data:`MAX_SINCE_S`."""
    if raw is None or raw == "":
        return DEFAULT_SINCE_S
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
    incident) never paged and must not light up the board either.
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
                    "window_start": int(inc["start"]),
                    "observed": round(obs / n, 6) if n > 0 else 0.0,
                    "expected": round(exp / n, 6) if n > 0 else 0.0,
                    "score": round((obs - exp) / math.sqrt(var), 3) if var > 0 else 0.0,
                })
    return out


def snapshot_funnel(
    store: Store, window_ms: int, tenant: str | None = None, from_ms: int | None = None
) -> tuple[dict[str, dict[str, tuple[int, set[str]]]], int | None, int | None]:
    """Per tenant and stage, events and distinct persons over the funnel windows still open.

    Reads the total dimension of each segment ``{tenant}|w|{start}|{seq}`` of a window (layout:
    ``streams.core.funnel``) that ends after ``from_ms``; events add up and persons are unioned
    across segments and windows, so they stay distinct.
    Returns (counts, first window start, last window end); the bounds are None without windows.
    """
    counts: dict[str, dict[str, tuple[int, set[str]]]] = {}
    first: int | None = None
    end: int | None = None
    for key, win in store.items():
        t, tag, rest = [*key.split("|", 2), "", ""][:3]
        if tag != "w" or not isinstance(win, dict) or (tenant is not None and t != tenant):
            continue
        start = int(rest.split("|", 1)[0])
        if from_ms is not None and start + window_ms <= from_ms:
            continue
        first = start if first is None else min(first, start)
        end = start + window_ms if end is None else max(end, start + window_ms)
        per_tenant = counts.setdefault(t, {})
        for stage, (events, persons) in ((win.get("d") or {}).get(_TOTAL_DIM) or {}).items():
            n, seen = per_tenant.get(stage, (0, set()))
            seen.update(persons)
            per_tenant[stage] = (n + int(events), seen)
    return counts, first, end


# --- shaping: pure, JSON-ready ------------------------------------------------------------------------


def open_waits_payload(
    states: Iterable[Mapping[str, Any]], now_ms: int, limit: int = DEFAULT_WAIT_LIMIT
) -> dict[str, Any]:
    """Open waits oldest first, with how long they waited and how far they are from their due time."""
    rows: list[dict[str, Any]] = []
    for st in states:
        w = st["wait"]
        due_in = (int(w["due_at"]) - now_ms) / 1000
        rows.append({
            "wait_id": f"{st['tenant_id']}:{st['conversation_id']}:{w['n']}",
            "tenant_id": st["tenant_id"], "conversation_id": st["conversation_id"],
            "channel": w["channel"], "team": st.get("team"), "agent_id": st.get("agent_id"),
            "priority": w.get("priority"), "kind": w["kind"], "policy": w.get("policy"),
            "started_at": int(w["started_at"]),
            "waiting_s": round(max(0, now_ms - int(w["started_at"])) / 1000, 1),
            "target_s": float(w["target_s"]), "due_at": int(w["due_at"]), "due_in_s": round(due_in, 1),
            "overdue": due_in < 0, "warned": bool(w.get("warned")), "breached": bool(w.get("breached")),
        })
    rows.sort(key=lambda r: (r["started_at"], r["tenant_id"], r["conversation_id"]))
    return {"count": len(rows), "overdue": sum(1 for r in rows if r["overdue"]),
            "truncated": len(rows) > limit, "waits": rows[:limit]}


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


def funnel_counts_from_rows(rows: Iterable[Mapping[str, Any]]) -> dict[str, dict[str, tuple[int, int]]]:
    """``queries.funnel`` rows → {tenant: {stage: (events, persons)}}."""
    out: dict[str, dict[str, tuple[int, int]]] = {}
    for r in rows:
        out.setdefault(r["tenant_id"], {})[r["stage"]] = (int(r["events"]), int(r["persons"]))
    return out


def funnel_counts_from_snapshot(
    snap: Mapping[str, Mapping[str, tuple[int, set[str]]]],
) -> dict[str, dict[str, tuple[int, int]]]:
    return {t: {s: (n, len(p)) for s, (n, p) in stages.items()} for t, stages in snap.items()}


def funnel_payload(
    counts: Mapping[str, Mapping[str, tuple[int, int]]], anomalies: Iterable[Mapping[str, Any]]
) -> dict[str, Any]:
    """Every stage of every tenant with events, persons, conversion from the previous stage and
    the open anomalies that concern it (a conversion k→k+1 on stage k+1, a volume on its stage)."""
    by_stage: dict[tuple[str, str], list[dict[str, Any]]] = {}
    tenants = set(counts)
    for a in anomalies:
        conv = a["kind"].startswith("conversion")
        stage = a["stage_to"] if conv else a["stage_from"]
        by_stage.setdefault((a["tenant_id"], stage), []).append({
            "anomaly_id": a["anomaly_id"], "kind": a["kind"], "on": "conversion" if conv else "volume",
            "dimension": dict(a["dimension"]),
        })
        tenants.add(a["tenant_id"])
    out = []
    for tenant in sorted(tenants):
        stages = counts.get(tenant, {})
        prev: int | None = None
        rows = []
        for stage in STAGES:
            events, persons = stages.get(stage, (0, 0))
            rows.append({
                "stage": stage, "events": events, "persons": persons,
                "conversion_from_previous": round(persons / prev, 4) if prev else None,
                "anomalies": by_stage.get((tenant, stage), []),
            })
            prev = persons
        out.append({"tenant_id": tenant, "stages": rows})
    return {"tenants": out}


def anomalies_from_clickhouse(rows: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """``queries.anomalies`` rows (flat, ISO times) → the memory shape (dimension, epoch ms)."""
    out = []
    for r in rows:
        ws = r["window_start"]
        ws_ms = int(datetime.fromisoformat(ws).timestamp() * 1000) if isinstance(ws, str) else int(ws)
        out.append({
            "anomaly_id": r["anomaly_id"], "tenant_id": r["tenant_id"],
            "dimension": {"channel": r.get("channel") or None, "campaign": r.get("campaign") or None},
            "stage_from": r["stage_from"], "stage_to": r["stage_to"], "kind": r["kind"], "window_start": ws_ms,
            "observed": float(r["observed"]), "expected": float(r["expected"]), "score": float(r["score"]),
        })
    return out


def anomalies_payload(anomalies: Iterable[Mapping[str, Any]]) -> dict[str, Any]:
    rows = sorted(anomalies, key=lambda a: (-a["window_start"], a["tenant_id"], a["anomaly_id"]))
    return {"count": len(rows), "anomalies": [dict(a) for a in rows]}


# --- the endpoints ------------------------------------------------------------------------------------


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


class Board:
    """Picks each answer's source for this worker's role and keeps ClickHouse answers briefly."""

    def __init__(self, rt: Worker) -> None:
        self.rt = rt
        self._cache: dict[tuple[Any, ...], tuple[float, Any]] = {}

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

    def _head(self, source: str) -> dict[str, Any]:
        return {"generated_at": _now_ms(), "role": self.rt.settings.role, "source": source,
                "state_recovered": self.rt.process is None or self.rt.process.ready}

    async def _clickhouse(self, key: tuple[Any, ...], fn: Any, *args: Any) -> Any:
        hit = self._cache.get(key)
        now = time.monotonic()
        if hit is not None and now - hit[0] < CACHE_TTL_S:
            return hit[1]
        ch = self.rt.clickhouse
        result = await ch.run(fn, ch, *args)
        if len(self._cache) > 256:
            self._cache.clear()
        self._cache[key] = (now, result)
        return result

    async def _waits(self, tenant: str | None) -> list[dict[str, Any]]:
        async with self.rt.lock:
            return [w for store in self._stores("sla") for w in snapshot_open_waits(store, tenant)]

    async def _memory_anomalies(self, tenant: str | None) -> list[dict[str, Any]]:
        async with self.rt.lock:
            return [a for store in self._stores("anomaly") for a in snapshot_open_anomalies(store, tenant)]

    async def anomalies(self, tenant: str | None) -> tuple[str, list[dict[str, Any]], str | None]:
        """(source, open anomalies, error): memory where the detector runs, else ClickHouse."""
        if self.processing:
            return "memory", await self._memory_anomalies(tenant), None
        try:
            rows = await self._clickhouse(("anomalies", tenant), queries.anomalies, tenant, SINK_ANOMALY_LOOKBACK_S)
            return "clickhouse", anomalies_from_clickhouse(rows), None
        except Exception as exc:  # the board shows the error; it must not take the worker down
            return "unavailable", [], _error(exc)

    async def funnel(self, tenant: str | None, since_s: int) -> dict[str, Any]:
        now = _now_ms()
        _, anomalies, anomaly_error = await self.anomalies(tenant)
        error: str | None = None
        if self.has_clickhouse:
            try:
                rows = await self._clickhouse(("funnel", tenant, since_s), queries.funnel, tenant, since_s)
                body = {**self._head("clickhouse"), "since_s": since_s,
                        "window": {"from": now - since_s * 1000, "to": now},
                        **funnel_payload(funnel_counts_from_rows(rows), anomalies)}
                return _with_error(body, anomaly_error)
            except Exception as exc:  # fall back to what memory has
                error = _error(exc)
        snap: dict[str, dict[str, tuple[int, set[str]]]] = {}
        first: int | None = None
        end: int | None = None
        async with self.rt.lock:
            for store in self._stores("funnel"):  # a tenant lives in one task: the snapshots are disjoint
                part, f, e = snapshot_funnel(store, self.rt.settings.funnel_window_ms, tenant, now - since_s * 1000)
                snap.update(part)
                first = f if first is None or (f is not None and f < first) else first
                end = e if end is None or (e is not None and e > end) else end
        body = {**self._head("memory" if self.processing else "unavailable"), "since_s": since_s,
                "window": {"from": first, "to": end},
                **funnel_payload(funnel_counts_from_snapshot(snap), anomalies)}
        return _with_error(body, error or anomaly_error)

    async def sla_open(self, tenant: str | None, limit: int) -> dict[str, Any]:
        if not self.processing:
            return {**self._head("unavailable"), **open_waits_payload([], _now_ms(), limit)}
        states = await self._waits(tenant)
        return {**self._head("memory"), **open_waits_payload(states, _now_ms(), limit)}

    async def sla_breaches(self, tenant: str | None, since_s: int) -> dict[str, Any]:
        waits = open_waits_payload(await self._waits(tenant), _now_ms(), MAX_WAIT_LIMIT)["waits"]
        rows: list[dict[str, Any]] | None = None
        error: str | None = None
        if self.has_clickhouse:
            try:
                rows = await self._clickhouse(
                    ("breaches", tenant, since_s), queries.sla_breaches_by_team, tenant, since_s
                )
            except Exception as exc:  # the open-overdue half still answers
                error = _error(exc)
        source = "clickhouse" if rows is not None else "memory"
        body = {**self._head(source), "since_s": since_s, **breaches_payload(rows, waits)}
        return _with_error(body, error)

    async def open_anomalies(self, tenant: str | None) -> dict[str, Any]:
        source, anomalies, error = await self.anomalies(tenant)
        return _with_error({**self._head(source), **anomalies_payload(anomalies)}, error)


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

    def api(handler: Any) -> Any:
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

    async def funnel(q: Mapping[str, str]) -> dict[str, Any]:
        return await board.funnel(tenant_param(q.get("tenant")), parse_since_param(q.get("since")))

    async def sla_open(q: Mapping[str, str]) -> dict[str, Any]:
        return await board.sla_open(tenant_param(q.get("tenant")), parse_limit_param(q.get("limit")))

    async def sla_breaches(q: Mapping[str, str]) -> dict[str, Any]:
        return await board.sla_breaches(tenant_param(q.get("tenant")), parse_since_param(q.get("since")))

    async def anomalies_open(q: Mapping[str, str]) -> dict[str, Any]:
        return await board.open_anomalies(tenant_param(q.get("tenant")))

    return [
        ("/board", board_page),
        ("/api/funnel", api(funnel)),
        ("/api/sla/open", api(sla_open)),
        ("/api/sla/breaches", api(sla_breaches)),
        ("/api/anomalies/open", api(anomalies_open)),
    ]
