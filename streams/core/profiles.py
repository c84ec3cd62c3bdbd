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

State: ``{tenant}|{person_id}`` → one flat tuple (positions below), because there is one per
person ever seen: ≤ 1 KB per person in memory is the budget (measured in
docs/profiles-and-attribution.md), and the per-event cost must stay small. Sets are bit masks,
counts are slots, and the few nested values are tuples too: a tuple of numbers and strings is
dropped from the cyclic collector's lists the first time it looks at it, so a million profiles
add nothing to every full collection (lists would: the collector's work grows with the number of
long-lived containers). An update builds the next tuple. The bit orders below are append-only
(tests pin them): a new channel or identifier type gets the next bit. (Restored from a
changelog the tuples are JSON arrays, i.e. lists; every reader indexes, every writer copies.)

===  =========================================================================================
 0   version (int, +1 per change)
 1   lifecycle stage index (tagrules.LIFECYCLE)
 2   event time the current lifecycle stage was first reached (ms)
 3   first seen (ms)          4  last seen (ms)          5  events (int)
 6   identifier types seen: bit i = IDENTIFIER_BITS[i] (types, never values)
 7   channels used: bit i = CHANNEL_BITS[i]
 8   campaigns touched: sorted tuple of at most ``max_campaigns`` names, or None
 9   more campaigns were touched than named (bool)
10   won deals (int)          11  revenue: [currency, minor units, ...] sorted, or None
12   tags: [tag, since ms, until ms or None, ...] or None
13   count-condition times: [condition id, [times], ...] or None
14   event time of the last change (ms)
15+  events per funnel stage, one slot per streams.core.stages.STAGES
===  =========================================================================================
"""

from __future__ import annotations

import sys
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from streams.core.model import Touchpoint
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

VER, STAGE, STAGE_AT, FIRST, LAST, EVENTS, IDS, CHANNELS_USED, CAMPAIGNS, MORE_CAMPAIGNS = range(10)
DEALS, REVENUE, TAGS, WINDOWS, UPDATED, FUNNEL = range(10, 16)
SLOTS = FUNNEL + len(STAGES)

#: bit order of the persisted masks: append only (tests/unit/core/test_profiles.py pins them)
IDENTIFIER_BITS: tuple[str, ...] = (
    "user_id", "crm_contact_id", "email", "phone", "whatsapp_id", "messenger_psid", "anonymous_id",
)
CHANNEL_BITS: tuple[str, ...] = (
    "web", "live_chat", "whatsapp", "messenger", "email", "social", "b2b_platform", "phone", "ads", "other",
)
_ID_BIT: dict[str, int] = {t: 1 << i for i, t in enumerate(IDENTIFIER_BITS)}
_CHANNEL_BIT: dict[str, int] = {c: 1 << i for i, c in enumerate(CHANNEL_BITS)}
_intern = sys.intern


@dataclass(frozen=True)
class ProfileConfig:
    #: tenant → its compiled rule file; tenants without one use ``default_rules``
    rules: Mapping[str, RuleSet] = field(default_factory=dict)
    default_rules: RuleSet = DEFAULT_RULES
    #: campaigns named on a profile; beyond, ``campaigns_truncated`` says there were more
    max_campaigns: int = 20


_NO_FUNNEL = [0] * len(STAGES)


def new_profile(t: int) -> list[Any]:
    return [0, 0, t, t, t, 0, 0, 0, None, False, 0, None, None, None, t, *_NO_FUNNEL]


# ----------------------------------------------------------------------------- small maps


def _add_revenue(flat: Sequence[Any] | None, currency: str, minor: int) -> tuple[Any, ...]:
    """(currency, minor, ...) sorted by currency, with ``minor`` added to ``currency``."""
    out = list(flat or ())
    for i in range(0, len(out), 2):
        if out[i] == currency:
            out[i + 1] += minor
            return tuple(out)
        if out[i] > currency:
            out[i:i] = (currency, minor)
            return tuple(out)
    out += (currency, minor)
    return tuple(out)


def _tags_dict(flat: Sequence[Any] | None) -> Tags:
    return {} if not flat else {flat[i]: [flat[i + 1], flat[i + 2]] for i in range(0, len(flat), 3)}


def _tags_flat(tags: Tags) -> tuple[Any, ...] | None:
    if not tags:
        return None
    out: list[Any] = []
    for name in sorted(tags):
        since, until = tags[name]
        out += (_intern(name), since, until)
    return tuple(out)


def _windows_dict(flat: Sequence[Any] | None) -> dict[str, list[int]]:
    return {} if not flat else {flat[i]: list(flat[i + 1]) for i in range(0, len(flat), 2)}


def _windows_flat(windows: Mapping[str, list[int]]) -> tuple[Any, ...] | None:
    out: list[Any] = []
    for cid in sorted(windows):
        if windows[cid]:
            out += (cid, tuple(windows[cid]))
    return tuple(out) or None


def _with_campaigns(named: Sequence[str] | None, more: Iterable[str], cap: int) -> tuple[tuple[str, ...], bool]:
    """The named campaigns with ``more`` added, capped: the smallest names stay (a merge must not
    depend on which side came first); the flag says some were left out."""
    names = sorted({*(named or ()), *more})
    return tuple(_intern(n) for n in names[:cap]), len(names) > cap


class _Facts:
    """The profile as :class:`streams.core.tagrules.Facts` (what tag conditions may ask)."""

    __slots__ = ("p",)

    def __init__(self, p: Sequence[Any]) -> None:
        self.p = p

    def lifecycle(self) -> int:
        return int(self.p[STAGE])

    def used_channel(self, channel: str) -> bool:
        return bool(self.p[CHANNELS_USED] & _CHANNEL_BIT.get(channel, 0))

    def touched_campaign(self, campaign: str) -> bool:
        return campaign in (self.p[CAMPAIGNS] or ())

    def reached_funnel(self, stage_idx: int, or_later: bool) -> bool:
        p = self.p
        if not or_later:
            return bool(p[FUNNEL + stage_idx])
        return any(p[FUNNEL + i] for i in range(stage_idx, len(STAGES)))

    def revenue_major(self) -> float:
        flat = self.p[REVENUE]
        return 0.0 if not flat else sum(to_major(flat[i + 1], flat[i]) for i in range(0, len(flat), 2))

    def deals(self) -> int:
        return int(self.p[DEALS])

    def events(self) -> int:
        return int(self.p[EVENTS])


# ----------------------------------------------------------------------------- the component


class Profiles:
    __slots__ = ("_default", "_max_campaigns", "_pending", "_rules", "_store", "config")

    def __init__(self, store: Store, config: ProfileConfig | None = None) -> None:
        self._store = store
        self.config = cfg = config or ProfileConfig()
        self._max_campaigns = cfg.max_campaigns
        self._rules = cfg.rules
        self._default = cfg.default_rules
        # (tenant, person) → None (changed) or (into, version, at) (merged away), in first-change order
        self._pending: dict[tuple[str, str], tuple[str, int, int] | None] = {}

    def rules_for(self, tenant_id: str) -> RuleSet:
        return self._rules.get(tenant_id, self._default)

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
        key = f"{tenant}|{person_id}"
        store = self._store
        t = tp.occurred_at
        old: Sequence[Any] | None = store.get(key)
        p = new_profile(t) if old is None else list(old)
        p[VER] += 1
        if t < p[FIRST]:
            p[FIRST] = t
        elif t > p[LAST]:
            p[LAST] = t
        p[EVENTS] += 1
        ids = p[IDS]
        for id_type in tp.identities:
            ids |= _ID_BIT.get(id_type, 0)
        p[IDS] = ids
        p[CHANNELS_USED] |= _CHANNEL_BIT.get(tp.channel, 0)
        if funnel_stage is not None:
            p[FUNNEL + STAGE_INDEX[funnel_stage]] += 1
        camp = tp.campaign
        campaign = None if camp is None else camp.get("name")
        if campaign is not None:
            named = p[CAMPAIGNS]
            if named is None:
                p[CAMPAIGNS] = (_intern(campaign),) if self._max_campaigns else ()
                p[MORE_CAMPAIGNS] = not self._max_campaigns
            elif campaign not in named:
                p[CAMPAIGNS], truncated = _with_campaigns(named, (campaign,), self._max_campaigns)
                p[MORE_CAMPAIGNS] = p[MORE_CAMPAIGNS] or truncated
        if new_deals:
            p[DEALS] += new_deals
        for currency, change in revenue:
            if change:
                p[REVENUE] = _add_revenue(p[REVENUE], _intern(currency), change)
        rules = self._rules.get(tenant, self._default)
        q = rules.event_stage(tp, funnel_stage)
        if q > p[STAGE]:
            p[STAGE], p[STAGE_AT] = q, t
        elif q == p[STAGE] and t < p[STAGE_AT]:
            p[STAGE_AT] = t
        if rules.tag_rules or p[TAGS]:
            self._tags(p, rules, t, tp, funnel_stage)
        p[UPDATED] = t
        store.put(key, tuple(p))
        self._pending.setdefault((tenant, person_id), None)

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
        loser: Sequence[Any] | None = store.get(from_key)
        if loser is None:
            return
        store.delete(from_key)
        self._pending[(tenant_id, from_person_id)] = (into_person_id, loser[VER] + 1, at_ms)
        into_key = self._key(tenant_id, into_person_id)
        winner: Sequence[Any] | None = store.get(into_key)
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
        store.put(into_key, tuple(p))
        self._pending.setdefault((tenant_id, into_person_id), None)

    def _fold(self, a: Sequence[Any], b: Sequence[Any], tenant_id: str) -> list[Any]:
        p = list(a)
        p[VER] = max(a[VER], b[VER]) + 1
        if b[STAGE] > a[STAGE] or (b[STAGE] == a[STAGE] and b[STAGE_AT] < a[STAGE_AT]):
            p[STAGE], p[STAGE_AT] = b[STAGE], b[STAGE_AT]
        p[FIRST] = min(a[FIRST], b[FIRST])
        p[LAST] = max(a[LAST], b[LAST])
        p[EVENTS] = a[EVENTS] + b[EVENTS]
        p[IDS] = a[IDS] | b[IDS]
        p[CHANNELS_USED] = a[CHANNELS_USED] | b[CHANNELS_USED]
        if b[CAMPAIGNS]:
            p[CAMPAIGNS], truncated = _with_campaigns(a[CAMPAIGNS], b[CAMPAIGNS], self._max_campaigns)
            p[MORE_CAMPAIGNS] = a[MORE_CAMPAIGNS] or b[MORE_CAMPAIGNS] or truncated
        else:
            p[MORE_CAMPAIGNS] = a[MORE_CAMPAIGNS] or b[MORE_CAMPAIGNS]
        p[DEALS] = a[DEALS] + b[DEALS]
        if b[REVENUE]:
            rev = a[REVENUE]
            for i in range(0, len(b[REVENUE]), 2):
                rev = _add_revenue(rev, b[REVENUE][i], b[REVENUE][i + 1])
            p[REVENUE] = rev
        tags = _tags_dict(a[TAGS])
        fold_tags(tags, _tags_dict(b[TAGS]))
        p[TAGS] = _tags_flat(tags)
        windows = _windows_dict(a[WINDOWS])
        fold_windows(self.rules_for(tenant_id), windows, _windows_dict(b[WINDOWS]))
        p[WINDOWS] = _windows_flat(windows)
        p[UPDATED] = max(a[UPDATED], b[UPDATED])
        for i in range(FUNNEL, SLOTS):
            p[i] = a[i] + b[i]
        return p

    # --- output ---
    def flush(self) -> list[dict[str, Any]]:
        """Records of the profiles changed since the last flush (see the module docstring)."""
        if not self._pending:
            return []
        out: list[dict[str, Any]] = []
        get = self._store.get
        for (tenant, person), merged in self._pending.items():
            if merged is not None:
                out.append(merged_record(tenant, person, *merged))
                continue
            p = get(f"{tenant}|{person}")
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


def record(tenant_id: str, person_id: str, p: Sequence[Any]) -> dict[str, Any]:
    """One ``persons.profile`` record (schemas/person_profile.v1.json). Built for every change
    offline (and per batch live), so it mostly copies."""
    rev, tags = p[REVENUE], p[TAGS]
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
        "identifier_types": list(_ID_NAMES.get(p[IDS]) or _names(p[IDS], IDENTIFIER_BITS, _ID_NAMES)),
        "channels": list(_CH_NAMES.get(p[CHANNELS_USED]) or _names(p[CHANNELS_USED], CHANNEL_BITS, _CH_NAMES)),
        "funnel_stages": _funnel(p),
        "campaigns": list(p[CAMPAIGNS] or ()),
        "campaigns_truncated": p[MORE_CAMPAIGNS],
        "deals_won": p[DEALS],
        "revenue_minor": {} if not rev else {rev[i]: rev[i + 1] for i in range(0, len(rev), 2)},
        "tags": [] if not tags else [
            {"tag": tags[i], "since": tags[i + 1], "expires_at": tags[i + 2]} for i in range(0, len(tags), 3)
        ],
        "updated_at": p[UPDATED],
    }


def _funnel(p: Sequence[Any]) -> dict[str, int]:
    out = {}
    i = FUNNEL
    for stage in STAGES:
        n = p[i]
        if n:
            out[stage] = n
        i += 1
    return out


_ID_NAMES: dict[int, tuple[str, ...]] = {}
_CH_NAMES: dict[int, tuple[str, ...]] = {}


def _names(bits: int, order: tuple[str, ...], cache: dict[int, tuple[str, ...]]) -> tuple[str, ...]:
    """Names of the set bits (cached per mask: at most 2^len(order) of them); identifier types
    keep their strength order, channels are sorted."""
    names = tuple(n for i, n in enumerate(order) if bits >> i & 1)
    cache[bits] = names = names if order is IDENTIFIER_BITS else tuple(sorted(names))
    return names


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
