"""Person profiles: who is where in their journey, per (tenant, person), updated on every event.

The funnel says where people drop; the profile says who is where: lifecycle stage (anonymous →
known → lead → opportunity → customer, by per-tenant rules, :mod:`streams.core.tagrules`), first
and last seen, the channels and campaigns touched, events per funnel stage, won deals and
revenue, and tags. Published on the compacted topic ``persons.profile`` keyed by person; each
record is the whole profile with a ``version`` that grows with every change, so a consumer (and
ClickHouse's ReplacingMergeTree) keeps the highest version per person.

Why each part is a fold: everything in a profile is a commutative, associative summary of the
person's events (sums, min/max, unions, the highest stage), so an identity merge simply folds
the absorbed person's profile into the survivor's. An event belongs to exactly one person when
it is processed, so no event is in both profiles and the fold counts nothing twice; the
absorbed person's key is deleted and a last record with ``status: "merged"`` and
``merged_into`` says where it went (compaction then keeps only that). For the same reason the
profile after a set of events does not depend on their arrival order, except for tags with a
count window (see :mod:`streams.core.tagrules`).

Deals: the caller (the pipeline) passes what a won deal changed, as decided by the attribution
stage's deal registry (:mod:`streams.core.attribution`): a new deal adds one deal and its value,
a re-sent deal with a corrected value adds only the difference, a repeat adds nothing.

Records are built when the caller drains (:meth:`Profiles.flush`), one per person changed since
the last drain, with the state at that moment: the offline replay drains after every event
(every version appears), the live worker after every batch (intermediate versions of a person
changed twice in one batch are skipped). Every record that exists in both is identical, and the
last one per person is the same, which is what a compacted topic and ClickHouse keep.

State: ``{tenant}|{person_id}`` → a list (positions below), compact because there is one per
person ever seen (≤ 1 KB per person in memory is the budget; measured in
docs/profiles-and-attribution.md). Maps are flat lists ``[key, count, key, count, ...]``: a
small dict costs 184 bytes, a two-item list 72.

===  =========================================================================================
 0   version (int, +1 per change)
 1   lifecycle stage index (tagrules.LIFECYCLE)
 2   event time the current lifecycle stage was first reached (ms)
 3   first seen (ms)          4  last seen (ms)          5  events (int)
 6   identifier types seen (bit i = streams.core.model.IDENTITY_TYPES[i]; types, never values)
 7   channels: [channel, events, ...]
 8   funnel stages: [stage, events, ...]
 9   campaigns: [name, events, ...] (at most ``max_campaigns``) or None
10   events of campaigns beyond that cap
11   won deals (int)          12  revenue: [currency, minor units, ...] or None
13   tags: [tag, since ms, until ms or None, ...] or None
14   count-condition times: [condition id, [times], ...] or None
15   event time of the last change (ms)
===  =========================================================================================
"""

from __future__ import annotations

import sys
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from streams.core.model import IDENTITY_TYPES, Touchpoint
from streams.core.money import to_major
from streams.core.stages import STAGE_INDEX, STAGES
from streams.core.state import Store
from streams.core.tagrules import (
    DEFAULT_RULES,
    LIFECYCLE,
    RuleSet,
    Tags,
    evaluate_tags,
    fold_tags,
    fold_windows,
)

VER, STAGE, STAGE_AT, FIRST, LAST, EVENTS, IDS, CHANNELS, FUNNEL, CAMPAIGNS, CAMPAIGNS_OTHER = range(11)
DEALS, REVENUE, TAGS, WINDOWS, UPDATED = range(11, 16)
SLOTS = 16

_ID_BIT: dict[str, int] = {t: 1 << i for i, t in enumerate(IDENTITY_TYPES)}
_intern = sys.intern


@dataclass(frozen=True)
class ProfileConfig:
    #: tenant → its compiled rule file; tenants without one use ``default_rules``
    rules: Mapping[str, RuleSet] = field(default_factory=dict)
    default_rules: RuleSet = DEFAULT_RULES
    #: campaigns named on a profile; a person touched by more has the rest summed in ``campaigns_other``
    max_campaigns: int = 20


# ----------------------------------------------------------------------------- flat maps


def _flat_add(flat: list[Any], key: Any, by: int) -> None:
    for i in range(0, len(flat), 2):
        if flat[i] == key:
            flat[i + 1] += by
            return
    flat.append(key)
    flat.append(by)


def _flat_get(flat: list[Any] | None, key: Any) -> int:
    if flat:
        for i in range(0, len(flat), 2):
            if flat[i] == key:
                return int(flat[i + 1])
    return 0


def _flat_dict(flat: list[Any] | None) -> dict[str, int]:
    return {} if not flat else {flat[i]: flat[i + 1] for i in range(0, len(flat), 2)}


def _flat_sum(a: list[Any] | None, b: list[Any] | None) -> list[Any] | None:
    if not b:
        return a
    out = list(a or ())
    for i in range(0, len(b), 2):
        _flat_add(out, b[i], b[i + 1])
    return out


def _tags_dict(flat: list[Any] | None) -> Tags:
    return {} if not flat else {flat[i]: [flat[i + 1], flat[i + 2]] for i in range(0, len(flat), 3)}


def _tags_flat(tags: Tags) -> list[Any] | None:
    if not tags:
        return None
    out: list[Any] = []
    for name in sorted(tags):
        since, until = tags[name]
        out += [_intern(name), since, until]
    return out


def _windows_dict(flat: list[Any] | None) -> dict[str, list[int]]:
    return {} if not flat else {flat[i]: flat[i + 1] for i in range(0, len(flat), 2)}


def _windows_flat(windows: Mapping[str, list[int]]) -> list[Any] | None:
    out: list[Any] = []
    for cid in sorted(windows):
        if windows[cid]:
            out += [cid, windows[cid]]
    return out or None


class _Facts:
    """The profile as :class:`streams.core.tagrules.Facts` (what tag conditions may ask)."""

    __slots__ = ("p",)

    def __init__(self, p: list[Any]) -> None:
        self.p = p

    def lifecycle(self) -> int:
        return int(self.p[STAGE])

    def used_channel(self, channel: str) -> bool:
        return _flat_get(self.p[CHANNELS], channel) > 0

    def touched_campaign(self, campaign: str) -> bool:
        return _flat_get(self.p[CAMPAIGNS], campaign) > 0

    def reached_funnel(self, stage_idx: int, or_later: bool) -> bool:
        flat = self.p[FUNNEL]
        for i in range(0, len(flat), 2):
            got = STAGE_INDEX.get(flat[i], -1)
            if got == stage_idx or (or_later and got > stage_idx):
                return True
        return False

    def revenue_major(self) -> float:
        flat = self.p[REVENUE]
        return 0.0 if not flat else sum(to_major(flat[i + 1], flat[i]) for i in range(0, len(flat), 2))

    def deals(self) -> int:
        return int(self.p[DEALS])

    def events(self) -> int:
        return int(self.p[EVENTS])


# ----------------------------------------------------------------------------- the component


class Profiles:
    __slots__ = ("_max_campaigns", "_pending", "_store", "config")

    def __init__(self, store: Store, config: ProfileConfig | None = None) -> None:
        self._store = store
        self.config = cfg = config or ProfileConfig()
        self._max_campaigns = cfg.max_campaigns
        # (tenant, person) → None (changed) or (into, version, at) (merged away), in first-change order
        self._pending: dict[tuple[str, str], tuple[str, int, int] | None] = {}

    def rules_for(self, tenant_id: str) -> RuleSet:
        return self.config.rules.get(tenant_id, self.config.default_rules)

    @staticmethod
    def _key(tenant_id: str, person_id: str) -> str:
        return f"{tenant_id}|{person_id}"

    # --- the event path ---
    def observe(
        self,
        tp: Touchpoint,
        person_id: str,
        funnel_stage: str | None,
        new_deals: int = 0,
        revenue: Iterable[tuple[str, int]] = (),
    ) -> None:
        """Apply one event to its person's profile.

        ``new_deals`` / ``revenue`` ((currency, minor units) changes): what the event changed in
        the person's won deals, as the attribution stage's deal registry decided (nothing for a
        repeat)."""
        tenant = tp.tenant_id
        key = self._key(tenant, person_id)
        store = self._store
        t = tp.occurred_at
        p: list[Any] | None = store.get(key)
        if p is None:
            p = [0, 0, t, t, t, 0, 0, [], [], None, 0, 0, None, None, None, t]
        rules = self.rules_for(tenant)
        p[VER] += 1
        if t < p[FIRST]:
            p[FIRST] = t
        if t > p[LAST]:
            p[LAST] = t
        p[EVENTS] += 1
        bits = 0
        for id_type in tp.identities:
            bits |= _ID_BIT.get(id_type, 0)
        p[IDS] |= bits
        _flat_add(p[CHANNELS], _intern(tp.channel), 1)
        if funnel_stage is not None:
            _flat_add(p[FUNNEL], funnel_stage, 1)
        campaign = tp.campaign_name
        if campaign is not None:
            self._count_campaign(p, campaign, 1)
        if new_deals:
            p[DEALS] += new_deals
        for currency, change in revenue:
            if change:
                if p[REVENUE] is None:
                    p[REVENUE] = []
                _flat_add(p[REVENUE], _intern(currency), change)
        q = rules.event_stage(tp, funnel_stage)
        if q > p[STAGE]:
            p[STAGE], p[STAGE_AT] = q, t
        elif q == p[STAGE] and t < p[STAGE_AT]:
            p[STAGE_AT] = t
        if rules.tag_rules or p[TAGS]:
            self._tags(p, rules, t, tp, funnel_stage)
        p[UPDATED] = t
        store.put(key, p)
        self._pending.setdefault((tenant, person_id), None)

    def _count_campaign(self, p: list[Any], campaign: str, by: int) -> None:
        flat = p[CAMPAIGNS]
        if flat is None:
            flat = p[CAMPAIGNS] = []
        elif len(flat) >= 2 * self._max_campaigns and _flat_get(flat, campaign) == 0:
            p[CAMPAIGNS_OTHER] += by
            return
        _flat_add(flat, _intern(campaign), by)

    def _tags(
        self, p: list[Any], rules: RuleSet, t: int, tp: Touchpoint | None, funnel_stage: str | None
    ) -> None:
        windows = _windows_dict(p[WINDOWS])
        if tp is not None and rules.counts:
            touched = False
            for cond in rules.counts:
                if cond.matches(tp):
                    times = windows.get(cond.id)
                    if times is None:
                        times = windows[cond.id] = []
                    cond.record(times, t)
                    touched = True
            if touched:
                p[WINDOWS] = _windows_flat(windows)
        tags = _tags_dict(p[TAGS])
        if evaluate_tags(rules, tags, windows, _Facts(p), t, tp, funnel_stage):
            p[TAGS] = _tags_flat(tags)

    # --- identity merges ---
    def merge(self, tenant_id: str, from_person_id: str, into_person_id: str, at_ms: int) -> None:
        """Fold the absorbed person's profile into the survivor's; the absorbed key is deleted and
        its last record says where it went."""
        if from_person_id == into_person_id:
            return
        store = self._store
        from_key = self._key(tenant_id, from_person_id)
        loser: list[Any] | None = store.get(from_key)
        if loser is None:
            return
        store.delete(from_key)
        self._pending[(tenant_id, from_person_id)] = (into_person_id, loser[VER] + 1, at_ms)
        into_key = self._key(tenant_id, into_person_id)
        winner: list[Any] | None = store.get(into_key)
        if winner is None:
            p = list(loser)
            p[VER] += 1
        else:
            p = self._fold(winner, loser, tenant_id)
        rules = self.rules_for(tenant_id)
        if rules.tag_rules or p[TAGS]:
            self._tags(p, rules, at_ms, None, None)
        if at_ms > p[UPDATED]:
            p[UPDATED] = at_ms
        store.put(into_key, p)
        self._pending.setdefault((tenant_id, into_person_id), None)

    def _fold(self, a: list[Any], b: list[Any], tenant_id: str) -> list[Any]:
        p = list(a)
        p[VER] = max(a[VER], b[VER]) + 1
        if b[STAGE] > a[STAGE] or (b[STAGE] == a[STAGE] and b[STAGE_AT] < a[STAGE_AT]):
            p[STAGE], p[STAGE_AT] = b[STAGE], b[STAGE_AT]
        p[FIRST] = min(a[FIRST], b[FIRST])
        p[LAST] = max(a[LAST], b[LAST])
        p[EVENTS] = a[EVENTS] + b[EVENTS]
        p[IDS] = a[IDS] | b[IDS]
        p[CHANNELS] = _flat_sum(a[CHANNELS], b[CHANNELS])
        p[FUNNEL] = _flat_sum(a[FUNNEL], b[FUNNEL])
        # Campaigns: both sides' counts, the largest kept by name under the cap (ties by name).
        camps = _flat_dict(_flat_sum(a[CAMPAIGNS], b[CAMPAIGNS]))
        other = a[CAMPAIGNS_OTHER] + b[CAMPAIGNS_OTHER]
        if len(camps) > self._max_campaigns:
            ranked = sorted(camps.items(), key=lambda kv: (-kv[1], kv[0]))
            other += sum(n for _, n in ranked[self._max_campaigns:])
            camps = dict(ranked[: self._max_campaigns])
        p[CAMPAIGNS] = [x for kv in camps.items() for x in kv] or None
        p[CAMPAIGNS_OTHER] = other
        p[DEALS] = a[DEALS] + b[DEALS]
        p[REVENUE] = _flat_sum(a[REVENUE], b[REVENUE])
        tags = _tags_dict(a[TAGS])
        fold_tags(tags, _tags_dict(b[TAGS]))
        p[TAGS] = _tags_flat(tags)
        windows = _windows_dict(a[WINDOWS])
        fold_windows(self.rules_for(tenant_id), windows, _windows_dict(b[WINDOWS]))
        p[WINDOWS] = _windows_flat(windows)
        p[UPDATED] = max(a[UPDATED], b[UPDATED])
        return p

    # --- output ---
    def flush(self) -> list[dict[str, Any]]:
        """Records of the profiles changed since the last flush (see the module docstring)."""
        if not self._pending:
            return []
        out: list[dict[str, Any]] = []
        store = self._store
        for (tenant, person), merged in self._pending.items():
            if merged is not None:
                out.append(merged_record(tenant, person, *merged))
                continue
            p = store.get(self._key(tenant, person))
            if p is not None:  # (absent: merged away after a change, already recorded as such)
                out.append(record(tenant, person, p))
        self._pending.clear()
        return out

    def get(self, tenant_id: str, person_id: str) -> dict[str, Any] | None:
        p = self._store.get(self._key(tenant_id, person_id))
        return None if p is None else record(tenant_id, person_id, p)

    def discard_pending(self) -> None:
        """After a state reload: changes not yet flushed belong to state that was thrown away."""
        self._pending.clear()


def record(tenant_id: str, person_id: str, p: list[Any]) -> dict[str, Any]:
    """One ``persons.profile`` record (schemas/person_profile.v1.json)."""
    ids = p[IDS]
    tags = _tags_dict(p[TAGS])
    return {
        "tenant_id": tenant_id,
        "person_id": person_id,
        "version": p[VER],
        "status": "active",
        "merged_into": None,
        "lifecycle_stage": LIFECYCLE[p[STAGE]],
        "lifecycle_stage_at": p[STAGE_AT],
        "first_seen": p[FIRST],
        "last_seen": p[LAST],
        "events": p[EVENTS],
        "identifier_types": [t for t in IDENTITY_TYPES if ids & _ID_BIT[t]],
        "channels": dict(sorted(_flat_dict(p[CHANNELS]).items())),
        "funnel_stages": {s: n for s, n in sorted(_flat_dict(p[FUNNEL]).items(), key=lambda kv: STAGES.index(kv[0]))},
        "campaigns": dict(sorted(_flat_dict(p[CAMPAIGNS]).items())),
        "campaigns_other": p[CAMPAIGNS_OTHER],
        "deals_won": p[DEALS],
        "revenue_minor": dict(sorted(_flat_dict(p[REVENUE]).items())),
        "tags": [{"tag": name, "since": tags[name][0], "expires_at": tags[name][1]} for name in sorted(tags)],
        "updated_at": p[UPDATED],
    }


def merged_record(tenant_id: str, person_id: str, into_person_id: str, version: int, at_ms: int) -> dict[str, Any]:
    """The last record of a person absorbed by an identity merge."""
    return {
        "tenant_id": tenant_id,
        "person_id": person_id,
        "version": version,
        "status": "merged",
        "merged_into": into_person_id,
        "updated_at": at_ms,
    }
