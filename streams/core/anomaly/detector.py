"""The detector facade: per tenant, one closed window of funnel rows in, anomaly records out.

**Series.** Per tenant × dimension (total, channel, campaign, channel × campaign): the *volume* of
each stage (distinct persons per window, a ``count`` series) and the *conversion* of each adjacent
stage pair k→k+1: of the ``n`` persons who reached k in the dimension and window, the ``x`` who went
on to reach k+1 (anywhere in the tenant, by the end of the next window; the row's ``converted``,
see ``funnel.py``). ``x ⊆ n``, so a conversion is a proportion, whatever organic traffic does to
the lower stage's volume. Each series is modelled by ``baseline.py`` and ``seasonality.py``,
scored by ``evidence.py`` and watched by ``incidents.py``; ``attribution.py`` decides which
dimension carries an alert, ``impact.py`` what it cost.

**Attribution, not alert storms.** After all series of a window are updated, open incidents are
mapped to their culprit dimension; a downstream volume incident defers to an upstream volume or
conversion incident in the same dimension, and a conversion incident whose upper-stage volume
moved the other way (a cohort distorted by an odd influx at its stage) defers to that volume
incident. A parent waits up to ``attribution_wait_windows`` for a child whose evidence is building,
and a shift that is explained by series still in warm-up (a campaign launch, a mix change) is not an
incident: that parent is re-anchored silently. Explained incidents are suppressed for good; if their
explanation resolves first they close silently. Records carry the tenant total's recent
observed/expected for the same series (``total_observed``/``total_expected``) and the incident's
peak graded score (``anomaly_score``). Nothing is learned while an incident is open, in its own
series and in every overlapping dimension's affected series (the total, channels and cells
containing a campaign's drop, and the downstream stage volumes), so a parent that moved too little
to alert does not learn the drop and then "surge" at the recovery.

**State** (JSON-able, via the Store): ``{tenant}|m`` (last window, hot dims, open count; every
window), ``{tenant}|d`` (dimension registry for GC; ≤ hourly), ``{tenant}|s|{dim}`` (all series of
one dimension: levels, CUSUMs, incidents, score calibration; when processed), ``{tenant}|p|{dim}``
(seasonal profiles; hourly). Dimensions with traffic worth watching ("hot") are processed every
window, an absent row counting as zero; the others only when they appear, catching up on the windows
they missed (as zeros, learned quietly). Dimensions unseen for ``gc_after_hours`` are forgotten.
"""

from __future__ import annotations

import hashlib
import json
import math
from typing import Any

from streams.core.anomaly import incidents
from streams.core.anomaly.attribution import (
    Attribution,
    Dim,
    building,
    hold_overlapping,
    kind_name,
    launch_explained,
    peers,
    series_order,
    sid_parts,
    stage_hidden,
)
from streams.core.anomaly.baseline import CONVERSION, COUNT, level, new_series, upgrade
from streams.core.anomaly.config import DetectorConfig
from streams.core.anomaly.impact import lost_conversions
from streams.core.anomaly.incidents import EXP, EXPOSURE, OBS, VAR, reanchor, reset_cusum
from streams.core.anomaly.seasonality import HOUR_MS
from streams.core.funnel import dim_key, dim_sort_key, parse_dim_key
from streams.core.stages import STAGES
from streams.core.state import Store


def anomaly_id(tenant_id: str, dim: Dim, stage_from: str, stage_to: str, kind: str, window_start: int) -> str:
    """Deterministic: a replay re-derives the same id, so consumers can dedupe on it."""
    raw = json.dumps([tenant_id, dim[0], dim[1], stage_from, stage_to, kind, window_start],
                     ensure_ascii=False)
    return hashlib.sha256(raw.encode()).hexdigest()[:24]


class AnomalyDetector:
    """Per-tenant funnel anomaly detection; all state in ``store`` (see the package docstring)."""

    __slots__ = ("_open", "_scores", "_store", "config")

    def __init__(self, store: Store, config: DetectorConfig | None = None) -> None:
        self._store = store
        self.config = config or DetectorConfig()
        self._open: dict[str, int] | None = None  # tenant -> visible open incidents (cache of m| keys)
        self._scores: dict[str, tuple[int, dict[tuple[str, str], float]]] = {}

    # --- public API ------------------------------------------------------------------------

    def rebuild(self) -> None:
        """Forget in-memory caches after the store was reloaded (all state lives in the store)."""
        self._open = None

    def open_incidents(self) -> int:
        """Visible (emitted, not yet resolved) incidents over all tenants."""
        if self._open is None:
            self._open = {}
            for key, value in self._store.items():
                tenant, _, tag = key.partition("|")
                if tag == "m" and isinstance(value, dict):
                    self._open[tenant] = int(value.get("open", 0))
        return sum(self._open.values())

    def window_scores(self, tenant_id: str) -> tuple[int | None, dict[tuple[Dim, str], float]]:
        """Graded scores (in [0, 1), see ``evidence.py``) of the tenant's last window, per
        (dimension, series id), with that window's start; series not processed then are absent.

        Derived, not persisted: after a restart it is empty until the next window."""
        ws, scores = self._scores.get(tenant_id, (None, {}))
        return ws, {(parse_dim_key(dk), sid): v for (dk, sid), v in scores.items()}

    def observe_windows(
        self, tenant_id: str, window_start: int, rows: list[dict[str, Any]], now_ms: int
    ) -> list[dict[str, Any]]:
        """Feed one closed window's funnel rows (all dims and stages) of one tenant; anomaly events out.

        Windows must come in order; a window at or before the last one seen is ignored (replay).
        Windows skipped since the last call had no events at all: they are processed as zeros.
        Each record's ``detected_at`` is the end of the window it was raised in, so ``now_ms`` (the
        caller's stream clock) does not enter the records: a catch-up gives the records a window-
        by-window run would.
        """
        del now_ms
        cfg = self.config
        meta_key = f"{tenant_id}|m"
        meta = self._store.get(meta_key)
        if meta is None:
            meta = {"last": None, "win": cfg.window_ms, "hot": [], "open": 0, "gc": None}
        if rows:
            meta["win"] = int(rows[0]["window_end"]) - int(rows[0]["window_start"])
        win = int(meta["win"])
        if meta["last"] is not None and window_start <= meta["last"]:
            return []
        obs: dict[str, dict[str, tuple[int, int | None]]] = {}
        for row in rows:
            dk = dim_key(row.get("channel"), row.get("campaign"))
            converted = row.get("converted")
            obs.setdefault(dk, {})[row["stage"]] = (
                int(row["persons"]), None if converted is None else int(converted)
            )

        ctx = _Ctx(self, tenant_id, win)
        events: list[dict[str, Any]] = []
        if meta["last"] is not None:
            first_gap = max(meta["last"] + win, window_start - cfg.max_catchup_windows * win)
            for ws in range(first_gap, window_start, win):
                events += ctx.window(ws, {}, set(meta["hot"]))
                meta["hot"] = sorted(ctx.hot)
        ctx.scores = {}
        events += ctx.window(window_start, obs, set(meta["hot"]) | set(obs))
        meta["hot"] = sorted(ctx.hot)
        meta["last"] = window_start
        ctx.save_registry(window_start)
        hour = window_start // HOUR_MS
        if meta.get("gc") != hour:
            meta["gc"] = hour
            ctx.gc(hour)
        self._scores[tenant_id] = (window_start, ctx.scores)
        meta["open"] = int(meta.get("open", 0)) + ctx.open_delta
        self._store.put(meta_key, meta)
        if self._open is not None:
            self._open[tenant_id] = meta["open"]
        return events


# --- one tenant-call's working set ---------------------------------------------------------


class _Ctx:
    """Loaded dimension states of one tenant during one ``observe_windows`` call."""

    __slots__ = (
        "det", "dims", "hot", "open_delta", "profs", "reg_dirty", "registry", "scores", "tenant", "win",
    )

    def __init__(self, det: AnomalyDetector, tenant: str, win: int) -> None:
        self.det = det
        self.tenant = tenant
        self.win = win
        self.dims: dict[str, dict[str, Any]] = {}
        self.profs: dict[str, dict[str, Any]] = {}
        self.hot: set[str] = set()
        self.open_delta = 0
        self.registry: dict[str, int] | None = None
        self.reg_dirty = False
        self.scores: dict[tuple[str, str], float] = {}  # (dimension key, series id) -> graded score

    # --- store access ---
    def _load(self, dk: str) -> dict[str, Any]:
        st = self.dims.get(dk)
        if st is None:
            store = self.det._store
            st = store.get(f"{self.tenant}|s|{dk}") or {"v": {}, "c": {}, "last": None}
            for grp in ("v", "c"):
                for s in st[grp].values():
                    upgrade(s)
            self.dims[dk] = st
            self.profs[dk] = store.get(f"{self.tenant}|p|{dk}") or {}
            reg = self._registry()
            if dk not in reg:
                reg[dk] = -1
                self.reg_dirty = True
        return st

    def _registry(self) -> dict[str, int]:
        if self.registry is None:
            self.registry = self.det._store.get(f"{self.tenant}|d") or {}
        return self.registry

    def save_registry(self, ws: int) -> None:
        reg = self._registry()
        hour = ws // HOUR_MS
        for dk in self.dims:
            if reg.get(dk) != hour:
                reg[dk] = hour
                self.reg_dirty = True
        if self.reg_dirty:
            self.det._store.put(f"{self.tenant}|d", reg)

    def gc(self, hour: int) -> None:
        """Forget dimensions without traffic for ``gc_after_hours`` (keeps a tenant's state bounded)."""
        reg = self._registry()
        horizon = hour - self.det.config.gc_after_hours
        store = self.det._store
        dropped = False
        for dk in sorted(reg):
            if reg[dk] >= horizon or dk in self.dims:
                continue
            st = store.get(f"{self.tenant}|s|{dk}")
            if st is not None and any(s["inc"] is not None for grp in ("v", "c") for s in st[grp].values()):
                continue
            store.delete(f"{self.tenant}|s|{dk}")
            store.delete(f"{self.tenant}|p|{dk}")
            del reg[dk]
            dropped = True
        if dropped:
            store.put(f"{self.tenant}|d", reg)

    # --- one window ---
    def window(
        self, ws: int, obs: dict[str, dict[str, tuple[int, int | None]]], dims: set[str]
    ) -> list[dict[str, Any]]:
        det, cfg, win = self.det, self.det.config, self.win
        transitions: list[tuple[str, str, str, dict[str, Any]]] = []  # (dk, sid, what, incident)
        for dk in sorted(dims):
            st = self._load(dk)
            prof_all = self.profs[dk]
            if st["last"] is not None and st["last"] < ws - win:
                first = max(st["last"] + win, ws - cfg.max_catchup_windows * win)
                for gws in range(first, ws, win):  # missed windows: zeros, learned quietly
                    transitions += self._step_dim(dk, st, prof_all, gws, {}, detect=False)
            transitions += self._step_dim(dk, st, prof_all, ws, obs.get(dk, {}), detect=True)
            st["last"] = ws
            dirty = [sub.pop("dirty", False) for sub in prof_all.values()]
            if self._is_hot(st):
                self.hot.add(dk)
            else:
                self.hot.discard(dk)
            det._store.put(f"{self.tenant}|s|{dk}", st)
            if any(dirty):
                det._store.put(f"{self.tenant}|p|{dk}", prof_all)
        return self._attribute(ws, transitions)

    def _step_dim(
        self, dk: str, st: dict[str, Any], prof_all: dict[str, Any], ws: int,
        counts: dict[str, tuple[int, int | None]], detect: bool,
    ) -> list[tuple[str, str, str, dict[str, Any]]]:
        """``counts``: stage → (persons, converted); see :func:`_converted` for the conversion."""
        det = self.det
        out: list[tuple[str, str, str, dict[str, Any]]] = []
        for i, stage in enumerate(STAGES):
            y, converted = counts.get(stage, (0, 0))
            if y > 0 and stage not in st["v"]:
                st["v"][stage] = new_series()
            if stage in st["v"]:
                sid = "v:" + stage
                prof = self._prof(prof_all, sid)
                what, inc, score = incidents.step(
                    det.config, st["v"][stage], COUNT, ws, float(y), 1.0, detect, prof, self.win)
                self.scores[(dk, sid)] = score
                if what is not None and inc is not None:
                    out.append((dk, sid, what, inc))
            if i + 1 < len(STAGES):
                if y > 0 and stage not in st["c"]:
                    st["c"][stage] = new_series()
                if stage in st["c"]:
                    sid = "c:" + stage
                    x = float(converted_count(y, converted, counts.get(STAGES[i + 1], (0, 0))[0]))
                    prof = self._prof(prof_all, sid)
                    what, inc, score = incidents.step(
                        det.config, st["c"][stage], CONVERSION, ws, x, float(y), detect, prof, self.win)
                    self.scores[(dk, sid)] = score
                    if what is not None and inc is not None:
                        out.append((dk, sid, what, inc))
        return out

    def _prof(self, prof_all: dict[str, Any], sid: str) -> dict[str, Any]:
        prof = prof_all.get(sid)
        if prof is None:
            prof = prof_all[sid] = {}
        return prof

    def _is_hot(self, st: dict[str, Any]) -> bool:
        """Hot dims are processed every window (an absent row is then a zero that matters)."""
        det = self.det
        for grp, conv in (("v", False), ("c", True)):
            for s in st[grp].values():
                if s["inc"] is not None or s["cd"] > 0 or s["cu"] > 0:
                    return True
                if not conv and level(s) >= det.config.min_volume_count / 2:
                    return True
        return False

    # --- attribution and events ---
    def _attribute(
        self, ws: int, transitions: list[tuple[str, str, str, dict[str, Any]]]
    ) -> list[dict[str, Any]]:
        """Decide which open incidents are emitted, and emit open/update/resolved events.

        An incident that is explained by another one (another dimension's culprit, an upstream
        stage, or an already visible related incident) is *suppressed* for good: it still stops
        learning, but never alerts. If the explanation goes away while it is still open (the
        explaining incident resolved first), it is closed silently and its CUSUM restarts, so a
        leftover of the same cause (a slower series recovering a window later) does not page.
        An incident explained by series still in warm-up (a campaign launch, a mix change) is
        closed silently too, and its level re-anchored: that is the new normal, not an incident.
        """
        cfg = self.det.config
        events: list[dict[str, Any]] = []
        for dk, sid, what, inc in transitions:
            if what == "resolved" and inc["vis"]:
                events.append(self._event(dk, sid, inc, "resolved", ws))
                self.open_delta -= 1
        # Every open incident of this tenant lives in a hot dim, so all are loaded here.
        open_: dict[tuple[str, str], dict[str, Any]] = {}
        for dk, st in self.dims.items():
            for grp in ("v", "c"):
                for stage, s in st[grp].items():
                    if s["inc"] is not None:
                        open_[(dk, f"{grp}:{stage}")] = s
        groups: dict[tuple[str, str], dict[Dim, tuple[str, dict[str, Any]]]] = {}
        for (dk, sid), s in open_.items():
            groups.setdefault((sid, s["inc"]["dir"]), {})[parse_dim_key(dk)] = (dk, s)
        order = sorted(
            open_.items(), key=lambda kv: (dim_sort_key(parse_dim_key(kv[0][0])), series_order(kv[0][1]))
        )
        for (dk, sid), s in order:
            inc = s["inc"]
            if inc["vis"]:
                if ws - inc["emitted"] >= cfg.update_every_windows * self.win:
                    events.append(self._event(dk, sid, inc, "update", ws))
                continue
            group = groups[(sid, inc["dir"])]
            dim = parse_dim_key(dk)
            if launch_explained(self.dims, dim, sid, inc["dir"], s, cfg.attribution_share, 2 * cfg.warmup_windows):
                reanchor(s, inc["acc"][OBS] / inc["acc"][EXP] if inc["acc"][EXP] > 0 else 1.0)
                self._close_silently(s, group, dim)
                continue
            attribution = Attribution(group, inc["dir"], cfg.attribution_share, peers(self.dims, sid))
            if (
                attribution.culprit(dim) != dim
                or attribution.covered_by_visible(dim)
                or stage_hidden(self.dims, dk, sid, inc["dir"])
            ):
                inc["sup"] = True
                continue
            if inc.get("sup"):
                self._close_silently(s, group, dim)
                continue
            waiting = inc["age"] < cfg.attribution_wait_windows
            if waiting and building(self.dims, dim, sid, inc["dir"], s, cfg.attribution_share):
                continue
            inc["vis"] = True
            conv, stage_from, stage_to = sid_parts(sid)
            kind = kind_name(conv, inc["dir"])
            inc["id"] = anomaly_id(self.tenant, dim, stage_from, stage_to, kind, inc["start"])
            events.append(self._event(dk, sid, inc, "open", ws))
            self.open_delta += 1
        touched = hold_overlapping(self.dims)
        for dk in sorted({e_dk for e_dk, _ in open_} | touched):
            self.det._store.put(f"{self.tenant}|s|{dk}", self.dims[dk])
        return events

    def _close_silently(self, s: dict[str, Any], group: dict[Dim, Any], dim: Dim) -> None:
        s["inc"] = None
        reset_cusum(s)
        s["pend"] = []
        group.pop(dim, None)

    def _event(self, dk: str, sid: str, inc: dict[str, Any], status: str, ws: int) -> dict[str, Any]:
        conv, stage_from, stage_to = sid_parts(sid)
        dim = parse_dim_key(dk)
        obs, exp, var, n = inc["acc"][OBS], inc["acc"][EXP], inc["acc"][VAR], inc["acc"][EXPOSURE]
        observed = obs / n if n > 0 else 0.0
        expected = exp / n if n > 0 else 0.0
        score = (obs - exp) / math.sqrt(var) if var > 0 else 0.0
        total_dk = dim_key(None, None)
        total = self.dims.get(total_dk) or self.det._store.get(f"{self.tenant}|s|{total_dk}")
        total = total or {"v": {}, "c": {}}
        ts = total[sid[0]].get(stage_from)
        if ts is not None and ts["rec"][2] > 0:
            t_obs, t_exp = ts["rec"][0] / ts["rec"][2], ts["rec"][1] / ts["rec"][2]
        else:
            t_obs, t_exp = observed, expected
        lost = lost_conversions(self.dims[dk], stage_to, obs, exp)
        inc["emitted"] = ws
        return {
            "anomaly_id": inc["id"],
            "tenant_id": self.tenant,
            "dimension": {"channel": dim[0], "campaign": dim[1]},
            "stage_from": stage_from,
            "stage_to": stage_to,
            "kind": kind_name(conv, inc["dir"]),
            "status": status,
            "window_start": inc["start"],
            # the end of the window whose evaluation raised it, not the call's clock: a catch-up over
            # silent windows evaluates many in one call, and (anomaly_id, status, detected_at) must
            # name one record (ClickHouse keeps one row per key)
            "detected_at": ws + self.win,
            "observed": round(observed, 6),
            "expected": round(expected, 6),
            "score": round(score, 3),
            "est_lost_conversions": round(lost, 3),
            "total_observed": round(t_obs, 6),
            "total_expected": round(t_exp, 6),
            "anomaly_score": round(inc.get("peak", 0.0), 4),
        }


def converted_count(upper: int, converted: int | None, lower: int) -> int:
    """Persons of the window's stage-k cohort who reached stage k+1 (the binomial numerator).

    Funnel rows carry it (``converted``, see ``funnel.py``). Rows without it (hand-made, or from
    an older producer) fall back to the stage-(k+1) persons of the same dimension: the same
    number when every stage-(k+1) person came through stage k in the window; otherwise a rate
    ratio that can exceed 1, which the detector then tests as a Poisson rate, not a binomial."""
    if converted is not None:
        return min(converted, upper)
    return lower
