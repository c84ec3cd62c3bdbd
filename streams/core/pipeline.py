"""Where a touchpoint goes, in order: dedup → identity → session → SLA clock → funnel window.

This is the whole per-tenant processing stage as one deterministic object. The live Faust
agent (``streams.app.process``) and the offline replay (``streams.offline``) both feed it
events and ticks and route what it emits; neither contains processing logic of its own, so
live and offline cannot disagree.

Time: ``process`` is driven by event time. ``tick(now_ms)`` is the only other input: live it
is the wall clock (SLA deadlines are wall-clock deadlines; idle tenants' watermarks follow the
wall clock after ``idle_advance_ms``), offline it is the replay's event-time clock.

Watermarks are per tenant (max ``occurred_at`` seen − allowed lateness). A tenant lives on
exactly one partition of ``touchpoints.valid`` (keyed by tenant), so a per-tenant watermark is
a refinement of a per-partition one: one tenant's skewed clock cannot close another's sessions.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import orjson

from streams.core.anomaly import AnomalyDetector, DetectorConfig
from streams.core.attribution import Attribution, AttributionConfig
from streams.core.contract import format_timestamp, to_valid_dict
from streams.core.deadletter import dlq_record
from streams.core.dedup import DedupWindow, SourceOffsets
from streams.core.funnel import FunnelAggregator, FunnelConfig
from streams.core.identity import IdentityConfig, IdentityGraph, event_person_id
from streams.core.model import Touchpoint
from streams.core.paging import Pager, PagingConfig
from streams.core.profiles import ProfileConfig, Profiles
from streams.core.pseudonym import Pseudonymiser
from streams.core.sessions import SessionConfig, Sessionizer
from streams.core.sla import PolicySet, SlaEngine
from streams.core.stages import StageMap
from streams.core.state import MemoryStore

#: Namespaces of persistent state; each is one MemoryStore and one key prefix in the changelog.
NAMESPACES: tuple[str, ...] = (
    "dedup", "source", "watermark", "clock", "identity", "sessions", "sla", "paging", "funnel", "anomaly",
    "profiles", "attribution",
)


@dataclass(frozen=True)
class PipelineConfig:
    #: the contract's future bound (TOUCHSTREAM_MAX_FUTURE_S): an event further ahead of the
    #: processing wall clock is dead-lettered ``future_timestamp``, here as in the validate stage
    max_future_ms: int = 900_000
    dedup_window_ms: int = 900_000
    session_gap_ms: int = 30 * 60_000
    allowed_lateness_ms: int = 5 * 60_000
    idle_advance_ms: int = 60_000
    funnel_window_ms: int = 60_000
    identity: IdentityConfig = field(default_factory=IdentityConfig)
    detector: DetectorConfig = field(default_factory=DetectorConfig)
    policies: PolicySet | None = None
    paging: PagingConfig = field(default_factory=PagingConfig)
    stage_map: StageMap = field(default_factory=StageMap)
    #: identifiers of configured tenants leave pseudonymised (applied in ``process`` after identity
    #: resolution; streams/core/pseudonym.py)
    pseudonyms: Pseudonymiser | None = None
    #: person profiles: per-tenant lifecycle and tag rules (streams/core/profiles.py, tagrules.py)
    profiles: ProfileConfig = field(default_factory=ProfileConfig)
    #: multi-touch attribution: look-back, touch types, models (streams/core/attribution.py)
    attribution: AttributionConfig = field(default_factory=AttributionConfig)


@dataclass
class Outputs:
    """What one or more calls emitted, grouped by destination topic."""

    enriched: list[dict[str, Any]] = field(default_factory=list)
    merges: list[dict[str, Any]] = field(default_factory=list)
    sessions: list[dict[str, Any]] = field(default_factory=list)
    sla: list[dict[str, Any]] = field(default_factory=list)
    response_times: list[dict[str, Any]] = field(default_factory=list)
    pages: list[dict[str, Any]] = field(default_factory=list)
    funnel: list[dict[str, Any]] = field(default_factory=list)
    anomalies: list[dict[str, Any]] = field(default_factory=list)
    #: events the core refused (schemas/dlq.v1.json records: ``future_timestamp``, ``too_late``)
    dead_letters: list[dict[str, Any]] = field(default_factory=list)
    profiles: list[dict[str, Any]] = field(default_factory=list)
    attribution: list[dict[str, Any]] = field(default_factory=list)
    duplicates: int = 0
    late_sessions: int = 0
    late_funnel: int = 0
    #: deal events without a usable value.amount: registered with value 0 (a later value revises them)
    deals_without_value: int = 0
    #: events whose identifiers are all junk: no person, so no profile (a deal still gets attributed)
    unprofiled: int = 0

    def clear(self) -> None:
        for name in (
            "enriched", "merges", "sessions", "sla", "response_times", "pages", "funnel", "anomalies", "dead_letters",
            "profiles", "attribution",
        ):
            getattr(self, name).clear()
        self.duplicates = self.late_sessions = self.late_funnel = 0
        self.deals_without_value = self.unprofiled = 0


class Pipeline:
    def __init__(self, config: PipelineConfig | None = None, stores: dict[str, MemoryStore] | None = None):
        self.config = cfg = config or PipelineConfig()
        self.stores = stores if stores is not None else {ns: MemoryStore(ns) for ns in NAMESPACES}
        self.dedup = DedupWindow(self.stores["dedup"], cfg.dedup_window_ms)
        self.sources = SourceOffsets(self.stores["source"])
        self.identity = IdentityGraph(
            self.stores["identity"], cfg.identity, cfg.pseudonyms.person_key if cfg.pseudonyms else None
        )
        self.sessions = Sessionizer(
            self.stores["sessions"], SessionConfig(cfg.session_gap_ms, cfg.allowed_lateness_ms)
        )
        self.sla = SlaEngine(self.stores["sla"], cfg.policies)
        self.pager = Pager(self.stores["paging"], cfg.paging)
        self.funnel = FunnelAggregator(self.stores["funnel"], FunnelConfig(window_ms=cfg.funnel_window_ms))
        self.detector = AnomalyDetector(self.stores["anomaly"], cfg.detector)
        self.profiles = Profiles(self.stores["profiles"], cfg.profiles)
        self.attribution = Attribution(self.stores["attribution"], cfg.attribution)
        self.out = Outputs()
        # tenant -> wall ms of its last event (processing-time fallback); not persisted: after a
        # restart the fallback simply starts counting again.
        self._last_wall: dict[str, int] = {}
        # tenant -> latest window start handed to the detector (silence detection; re-learnt after restart)
        self._last_window: dict[str, int] = {}
        # the latest occurred_at of any event: offline, the replay's clock (live, the wall clock is)
        self._event_clock = 0

    # --- recovery ---
    def rebuild(self) -> None:
        """Re-derive in-memory indexes after the stores were reloaded from a changelog."""
        self.dedup.rebuild()
        # A changelog can hold id segments that should be gone: ones a previous owner wrote after
        # this state was read (a batch it finished while losing the partition), which its
        # successor never knew and so never expired. Expire against each tenant's event-time
        # watermark now, as the tick would have, so memory stays bounded. (Which events the window
        # vouches for depends on the watermark only, never on the segments present: DedupWindow.covers.)
        for tenant, max_seen in list(self.stores["watermark"].items()):
            self.dedup.expire(tenant, max_seen - self.config.allowed_lateness_ms)
        self.sessions.rebuild()
        self.sla.rebuild()
        self.pager.rebuild()
        self.funnel.rebuild()
        self.detector.rebuild()
        self.attribution.rebuild()
        self.profiles.discard_pending()
        self._last_wall.clear()
        self._last_window.clear()

    # --- event path ---
    def process(self, tp: Touchpoint, wall_ms: int | None = None, *, received_ms: int | None = None) -> None:
        """One event. ``wall_ms``: the live wall clock (the pager's clock, the idle fallback).
        ``received_ms``: the wall clock bounding event time where it is not ``wall_ms``
        (offline, whose pager runs on event time); defaults to ``wall_ms``. With neither, the
        future bound is not checked (unit tests that drive the core in pure event time)."""
        out = self.out
        tenant = tp.tenant_id
        cfg = self.config
        bound_clock = wall_ms if received_ms is None else received_ms
        wm_store = self.stores["watermark"]
        max_seen = wm_store.get(tenant)
        # Defence in depth for the validate stage's check: no single event may carry a tenant's
        # watermark past what the contract admits (one event dated 9999 made every later event late).
        if bound_clock is not None and tp.occurred_at - bound_clock > cfg.max_future_ms:
            ahead_s = (tp.occurred_at - bound_clock) // 1000
            self._dead_letter(tp, "future_timestamp", f"occurred_at is {ahead_s} s in the future", wall_ms, max_seen)
            return
        if max_seen is not None and not self.dedup.covers(max_seen - cfg.allowed_lateness_ms, tp.occurred_at):
            # Older than the dedup floor: its id may have been forgotten, so it cannot be told from
            # a repeat. A re-delivery by validate (source offset already applied) is a duplicate;
            # anything else is refused with a reason rather than risk counting an event twice.
            if self.sources.replayed(tenant, tp.source):
                out.duplicates += 1
            else:
                behind_s = (max_seen - cfg.allowed_lateness_ms - cfg.dedup_window_ms - tp.occurred_at) // 1000 + 1
                self._dead_letter(
                    tp, "too_late", f"occurred_at is {behind_s} s before the dedup floor (TOUCHSTREAM_DEDUP_WINDOW_S "
                    f"{cfg.dedup_window_ms // 1000} s + TOUCHSTREAM_ALLOWED_LATENESS_S "
                    f"{cfg.allowed_lateness_ms // 1000} s behind the tenant's latest event)", wall_ms, max_seen,
                )
            return
        if self.dedup.seen(tenant, tp.event_id, tp.occurred_at):
            out.duplicates += 1
            return
        self.sources.applied(tenant, tp.source)
        if max_seen is None or tp.occurred_at > max_seen:
            wm_store.put(tenant, tp.occurred_at)
            max_seen = tp.occurred_at
        if wall_ms is not None:
            self._last_wall[tenant] = wall_ms
        if tp.occurred_at > self._event_clock:
            self._event_clock = tp.occurred_at
        # when (wall clock live, replay clock offline) the tenant's event time was last heard of:
        # its SLA clock runs on from there (``tenant_clock``)
        self.stores["clock"].put(tenant, self._event_clock if wall_ms is None else wall_ms)

        res = self.identity.resolve(tenant, tp.identities, tp.event_id, tp.occurred_at)
        for merge in res.merges:
            rec = merge.to_dict()
            out.merges.append(rec)
            if merge.status == "merged":
                self.sessions.merge_persons(tenant, merge.from_person_id, merge.into_person_id)
                self.profiles.merge(tenant, merge.from_person_id, merge.into_person_id, tp.occurred_at)
                out.attribution.extend(
                    self.attribution.merge(tenant, merge.from_person_id, merge.into_person_id, tp.occurred_at)
                )
        person_id = res.person_id

        stage = self.config.stage_map.stage_of(tenant, tp.type)
        # from here on everything is emitted or kept for later output: pseudonymised once, here
        public = tp if self.config.pseudonyms is None else self.config.pseudonyms.public_touchpoint(tp)
        assignment = self.sessions.observe(public, person_id, stage)
        if assignment.late:
            out.late_sessions += 1

        # The pager's clock: wall time live (stall detection compares input activity with now),
        # event time offline.
        clock = tp.occurred_at if wall_ms is None else wall_ms
        self.pager.input_seen(tenant, tp.channel, clock)
        if tp.conversation is not None:
            self._route_sla(self.sla.observe(tp), clock)

        if stage is not None and not self.funnel.observe(
            tenant, person_id, stage, tp.channel, public.campaign_name, tp.occurred_at
        ):
            out.late_funnel += 1

        self._profile(public, person_id, stage, bool(res.ignored) and person_id == event_person_id(
            tenant, tp.event_id))

        enriched = to_valid_dict(public)
        enriched["person_id"] = person_id
        enriched["session_id"] = assignment.session_id
        enriched["session_seq"] = assignment.session_seq
        enriched["stage"] = stage
        out.enriched.append(enriched)

    def _dead_letter(
        self, tp: Touchpoint, reason: str, detail: str, wall_ms: int | None, max_seen: int | None
    ) -> None:
        """A letter like the validate stage's; the original is the event as validated (the core
        never sees the raw bytes), which ``touchstream dlq replay`` can re-send as it is."""
        original = to_valid_dict(tp)
        original.pop("source", None)  # the letter's own ``source`` says where it came from
        at = wall_ms if wall_ms is not None else (max_seen if max_seen is not None else tp.occurred_at)
        self.out.dead_letters.append(
            dlq_record(reason, detail, orjson.dumps(original), tp.source, at, tp.tenant_id.encode())
        )

    def _profile(self, tp: Touchpoint, person_id: str, stage: str | None, throwaway: bool) -> None:
        """Attribution first (its deal registry decides what a deal adds), then the profile.
        A throwaway person (all identifiers junk) gets no profile; its deal is still credited,
        to "no touch", so attributed revenue stays whole."""
        out = self.out
        if throwaway:
            out.unprofiled += 1
            if tp.type not in self.config.attribution.deal_types:
                return
        res = self.attribution.observe(tp, person_id)
        if res.records:
            out.attribution.extend(res.records)
        if res.bad_value:
            out.deals_without_value += 1
        if throwaway:
            return
        deal = res.deal
        if deal is None:
            self.profiles.observe(tp, person_id, stage)
        else:
            self.profiles.observe(tp, person_id, stage, deal.new_deals, deal.revenue)

    def _route_sla(self, records: list[dict[str, Any]], now_ms: int) -> None:
        for rec in records:
            if rec.get("record") == "response_time":
                self.out.response_times.append(rec)
            else:
                self.out.sla.append(rec)
                self.out.pages.extend(p.to_dict() for p in self.pager.observe(rec, now_ms))

    # --- time path ---
    def watermark(self, tenant: str, wall_ms: int | None = None) -> int | None:
        max_seen = self.stores["watermark"].get(tenant)
        if max_seen is None:
            return None
        wm = max_seen - self.config.allowed_lateness_ms
        last = self._last_wall.get(tenant)
        if wall_ms is not None and last is not None:
            idle = wall_ms - last - self.config.idle_advance_ms
            if idle > 0:
                wm += idle
        return wm

    def tick(self, now_ms: int, wall: bool = True, input_complete_ms: int | None = None) -> None:
        """Advance clocks: SLA deadlines at ``now_ms``; per-tenant watermarks close sessions/windows.

        ``wall=True`` (live): ``now_ms`` is the wall clock and drives the idle fallback.
        ``wall=False`` (offline): ``now_ms`` is the replay's event-time clock.
        ``input_complete_ms``: see :meth:`fire_timers`.
        """
        self.fire_timers(now_ms, input_complete_ms)
        for tenant, max_seen in self.stores["watermark"].items():
            wm = self.watermark(tenant, now_ms if wall else None)
            if wm is None:
                continue
            self.out.sessions.extend(self.sessions.advance(tenant, wm))
            rows = self.funnel.advance(tenant, wm)
            if rows:
                self._emit_funnel(tenant, rows, now_ms)
            else:
                self._observe_silence(tenant)
            # the event-time watermark, not ``wm``: the floor ``process`` checks is computed from it
            self.dedup.expire(tenant, max_seen - self.config.allowed_lateness_ms)
            self.attribution.expire(tenant, wm)

    def fire_timers(self, now_ms: int, input_complete_ms: int | None = None) -> None:
        """SLA warnings/breaches and page windows/escalations due at ``now_ms`` (no watermark work).

        Live, the shell calls this at each deadline (see ``next_due``) between regular ticks, so
        a breach is not held back by the tick period. ``input_complete_ms``: the shell knows no
        input older than this is still unread (its backlog); a deadline after it is held back,
        since the reply that stops it may be in the backlog (None: nothing is outstanding)."""
        self._route_sla(self.sla.advance(now_ms, input_complete_ms, lambda t: self.tenant_clock(t, now_ms)), now_ms)
        self.out.pages.extend(p.to_dict() for p in self.pager.advance(now_ms))

    def tenant_clock(self, tenant: str, now_ms: int) -> int | None:
        """How far a tenant's own events have come: its latest ``occurred_at``, moved on by the
        time passed since it was heard of (None before its first event).

        SLA deadlines are wall-clock promises, but a deadline may fire only once the reply that
        would stop it can no longer be in what is still to come. Live, a tenant's events carry
        times near the wall clock and this is the wall clock. A replay of last hour's
        conversations carries last hour's times: its deadlines fire as its own events pass them,
        so a reply further down the replay resolves its wait instead of following a false breach
        (offline, ``now_ms`` is the replay clock and the same rule gives the same records)."""
        max_seen = self.stores["watermark"].get(tenant)
        heard = self.stores["clock"].get(tenant)
        if max_seen is None or heard is None:
            return None
        return int(max_seen + max(0, now_ms - heard))

    def next_due(self, after_ms: int) -> int | None:
        """Earliest SLA milestone or page window/escalation later than ``after_ms`` (the last
        ``fire_timers`` time: what is still due then is held back on purpose); ``None`` if none."""
        times = [t for t in (self.sla.next_due(), self.pager.next_due(after_ms)) if t is not None and t > after_ms]
        return min(times) if times else None

    def _observe_silence(self, tenant: str) -> None:
        """A tenant whose tracking died sends nothing: feed the detector the empty closed window,
        so a total volume collapse pages while it lasts instead of when data resumes."""
        boundary = self.stores["funnel"].get(f"{tenant}|c")
        if boundary is None:
            return
        window_start = boundary - self.config.funnel_window_ms
        if self._last_window.get(tenant, -1) >= window_start:
            return
        self._last_window[tenant] = window_start
        self.out.anomalies.extend(self.detector.observe_windows(tenant, window_start, [], boundary))

    def _emit_funnel(self, tenant: str, rows: list[dict[str, Any]], now_ms: int) -> None:
        self.out.funnel.extend(rows)
        self._last_window[tenant] = max(self._last_window.get(tenant, -1), rows[-1]["window_start"])
        by_window: dict[int, list[dict[str, Any]]] = {}
        for row in rows:
            by_window.setdefault(row["window_start"], []).append(row)
        for window_start in sorted(by_window):
            detected_at = by_window[window_start][0]["window_end"]
            self.out.anomalies.extend(
                self.detector.observe_windows(tenant, window_start, by_window[window_start], detected_at)
            )

    def end_batch(self) -> None:
        """Called by the shell after it persisted a batch's state (keeps written segments immutable)."""
        self.dedup.seal()
        self.funnel.seal()

    def close_all(self, now_ms: int) -> None:
        """End of offline input: close every session and window so nothing stays pending."""
        self.fire_timers(now_ms)
        self.out.sessions.extend(self.sessions.close_all())
        rows = self.funnel.close_all()
        by_tenant: dict[str, list[dict[str, Any]]] = {}
        for row in rows:
            by_tenant.setdefault(row["tenant_id"], []).append(row)
        for tenant in sorted(by_tenant):
            self._emit_funnel(tenant, by_tenant[tenant], now_ms)

    def drain(self) -> Outputs:
        """Everything emitted since the last drain: the one exit of the stage (live and offline)."""
        self.out.profiles.extend(self.profiles.flush())
        out, self.out = self.out, Outputs()
        return out


def ms_to_iso(ms: int | None) -> str | None:
    return None if ms is None else format_timestamp(ms)
