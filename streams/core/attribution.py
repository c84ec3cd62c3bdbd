"""Multi-touch attribution: each won deal's value credited to the touches of its person.

Why in the stream and not only in SQL: a deal must be credited to the touches of the *person*,
and a person is what the identity graph says after every merge so far; the graph lives here.
Each deal is credited by five models side by side, in integer minor units ("cents", see
:mod:`streams.core.money`), so that per deal and per model the credits add up to the deal
value exactly:

* ``first_touch``: everything to the earliest touch in the look-back;
* ``last_touch``: everything to the latest touch at or before the deal;
* ``linear``: equal parts;
* ``time_decay``: weight ``2^(-age / half_life)``, age = deal time - touch time (default
  half-life 7 days), quantised to integers (``round(w * 10^9)``) before the split;
* ``position_based``: 40 % first, 40 % last, 20 % shared by the touches between (one touch:
  all of it; two: half each).

Parts are split by largest remainder (:func:`streams.core.money.allocate`); a deal without any
touch in its look-back is credited whole to "no touch" (``touch_event_id`` null), so totals
still equal revenue and ROI queries show what no campaign earned.

Touches. A touch is a visit through one channel or campaign, not every page view: an event of
``touch_types`` (default: ad clicks, page views, forms, inbound messages; impressions only if
configured) joins a touch of the same person when it comes at most ``visit_gap_ms`` (30 min,
the session gap) after that touch's last event and

* carries the touch's campaign, or
* carries no campaign and is on the channel of the touch's last event (browsing on after a
  campaign landing; more messages of a chat);

otherwise it starts a new touch. So "click an ad, land, browse 5 pages" is one touch of the
campaign (on the click's channel), and a WhatsApp chat during the visit is a touch of its own.
Each touch is named by its earliest event. A late event joins or starts touches the same way;
it cannot split a touch (the events inside a touch are not kept), which is the only way arrival
order can change touches.

Revisions. The credits of a deal are recomputed when its touch list (or its value, or its
person) changes: a late touch inside the look-back, an identity merge that brings the other
device's touches, the same deal re-sent with a corrected value. Every change is a new
``revision`` of the deal: its records first retract the previous revision's credits
(``kind: "retraction"``, negated, ``supersedes`` = the previous revision), then state the new
ones (``kind: "credit"``). Summing every record ever emitted therefore gives the current
attribution (nothing is counted twice, nothing silently replaced), and "the latest revision
per deal" gives it too. A recomputation that changes nothing emits nothing. Deals stay open for
revisions ``reopen_ms`` after the deal (default: the look-back), in event time; then their
state is dropped.

Determinism: ``credit_id`` is a hash of (tenant, deal, revision, kind, model, touch index,
touch event), so a replay of the same input emits identical records, and ClickHouse collapses a
re-delivered record without ever collapsing two distinct ones.

State (every key starts with ``{tenant}|``):

* ``{tenant}|p|{person}`` → ``(touches, deal ids)``; a touch is ``(first ms, last ms, channel,
  campaign or None, event id, channel of its last event)``, sorted by (first, event id), at most
  ``max_touches`` (the oldest go first) and none older than the look-back before the person's
  latest touch or open deal;
* ``{tenant}|d|{deal id}`` → ``[person, deal ms, value minor, currency, revision, touches used]``,
  touches used = ``[first ms, channel, campaign, event id]`` of the current revision.

In memory only (rebuilt from the store): per tenant a heap of (close time, deal id).
"""

from __future__ import annotations

import heapq
import sys
from bisect import insort
from collections.abc import Sequence
from dataclasses import dataclass, field
from hashlib import blake2b
from typing import Any

from streams.core.model import Touchpoint
from streams.core.money import NO_CURRENCY, allocate, exponent, to_minor
from streams.core.state import Store

DAY_MS = 86_400_000
MODELS: tuple[str, ...] = ("first_touch", "last_touch", "linear", "time_decay", "position_based")
REASONS: tuple[str, ...] = ("deal", "deal_updated", "touch", "merge")
KINDS: tuple[str, ...] = ("credit", "retraction")
#: time-decay weights are quantised to integers with this scale before the exact split
DECAY_SCALE = 10**9

# positions in a stored touch / deal
T_FIRST, T_LAST, T_CHANNEL, T_CAMPAIGN, T_EVENT, T_LAST_CHANNEL = range(6)
D_PERSON, D_AT, D_VALUE, D_CURRENCY, D_REVISION, D_TOUCHES = range(6)
_intern = sys.intern


@dataclass(frozen=True)
class AttributionConfig:
    lookback_ms: int = 90 * DAY_MS
    touch_types: frozenset[str] = frozenset({"ad_click", "page_view", "form_submit", "message_in"})
    deal_types: frozenset[str] = frozenset({"deal_won"})
    visit_gap_ms: int = 30 * 60_000
    half_life_ms: int = 7 * DAY_MS
    #: (first, each middle, last) weights of position_based; 40/20/40
    position_weights: tuple[int, int, int] = (40, 20, 40)
    max_touches: int = 50
    #: how long after the deal it may still be revised (None: the look-back)
    reopen_ms: int | None = None

    def __post_init__(self) -> None:
        if self.lookback_ms <= 0 or self.half_life_ms <= 0 or self.visit_gap_ms < 0 or self.max_touches < 1:
            raise ValueError("lookback and half-life must be positive, the visit gap ≥ 0, max_touches ≥ 1")
        if min(self.position_weights) < 0 or sum(self.position_weights) <= 0:
            raise ValueError("position weights must be non-negative and not all zero")

    @property
    def reopen(self) -> int:
        return self.lookback_ms if self.reopen_ms is None else self.reopen_ms


@dataclass(slots=True)
class DealEffect:
    """What an event did to its person's won deals (the profile counts it): a new deal adds one
    and its value; a re-sent deal with a corrected value adds the difference; a repeat, nothing."""

    new_deals: int = 0
    #: (currency, change in minor units) pairs
    revenue: tuple[tuple[str, int], ...] = ()


@dataclass(slots=True)
class Result:
    records: list[dict[str, Any]] = field(default_factory=list)
    deal: DealEffect | None = None
    #: a deal event whose value is missing or unusable (registered with value 0, counted)
    bad_value: bool = False


# ----------------------------------------------------------------------------- the models


def weights(model: str, times: list[int], deal_at: int, cfg: AttributionConfig) -> list[int]:
    """Integer weights of the touches (sorted by time) under ``model``."""
    n = len(times)
    if model == "first_touch":
        return [1] + [0] * (n - 1)
    if model == "last_touch":
        return [0] * (n - 1) + [1]
    if model == "linear":
        return [1] * n
    if model == "time_decay":
        half = cfg.half_life_ms
        return [round(2.0 ** (-max(0, deal_at - t) / half) * DECAY_SCALE) for t in times]
    if model == "position_based":
        if n <= 2:
            return [1] * n
        first, middle, last = cfg.position_weights
        return [first * (n - 2)] + [middle] * (n - 2) + [last * (n - 2)]
    raise ValueError(f"unknown attribution model {model!r}")


def split(value_minor: int, model: str, times: list[int], deal_at: int, cfg: AttributionConfig) -> list[int]:
    """Credits per touch under ``model``; they sum to ``value_minor`` exactly."""
    return allocate(value_minor, weights(model, times, deal_at, cfg))


def credit_id(tenant_id: str, deal_id: str, revision: int, kind: str, model: str, index: int, touch: str) -> str:
    text = f"{tenant_id}|{deal_id}|{revision}|{kind}|{model}|{index}|{touch}"
    return "c_" + blake2b(text.encode(), digest_size=10).hexdigest()


# ----------------------------------------------------------------------------- touches


Touch = tuple[Any, ...]  # (first ms, last ms, channel, campaign or None, event id, channel of its last event)


def _joins(touch: Touch, t: int, channel: str, campaign: str | None, gap: int) -> bool:
    if t < touch[T_FIRST] or t - touch[T_LAST] > gap:
        return False
    if campaign is not None:
        return bool(touch[T_CAMPAIGN] == campaign)
    return bool(touch[T_LAST_CHANNEL] == channel)


def add_touch(touches: list[Touch], t: int, channel: str, campaign: str | None, event_id: str, gap: int) -> bool:
    """Add one event to a person's touches (sorted by first time); True if a touch was created or
    its start moved (what attribution sees), False if the event only extended a touch."""
    # the latest touch that started at or before t and that the event continues
    for i in range(len(touches) - 1, -1, -1):
        touch = touches[i]
        if touch[T_FIRST] <= t and _joins(touch, t, channel, campaign, gap):
            if t >= touch[T_LAST]:  # (same millisecond: the later arrival names the last channel)
                touches[i] = (touch[T_FIRST], t, touch[T_CHANNEL], touch[T_CAMPAIGN], touch[T_EVENT], channel)
            return False
    # a late event shortly before a touch whose first event would have continued it: the event
    # starts that touch now (and names it)
    for i, touch in enumerate(touches):
        if t < touch[T_FIRST] and touch[T_FIRST] - t <= gap and (
            (touch[T_CAMPAIGN] is not None and campaign == touch[T_CAMPAIGN])
            or (touch[T_CAMPAIGN] is None and channel == touch[T_CHANNEL])
        ):
            named = touch[T_CAMPAIGN] if touch[T_CAMPAIGN] is not None else campaign
            del touches[i]
            _insort(touches, (t, touch[T_LAST], channel, named, event_id, touch[T_LAST_CHANNEL]))
            return True
    _insort(touches, (t, t, channel, campaign, event_id, channel))
    return True


def _insort(touches: list[Touch], touch: Touch) -> None:
    insort(touches, touch, key=lambda x: (x[T_FIRST], x[T_EVENT]))


def fold_touches(a: Sequence[Touch], b: Sequence[Touch], gap: int) -> list[Touch]:
    """Both persons' touches as one person's: sorted, and a touch joins an earlier touch *of the
    other person* that it would have continued (same campaign, or no campaign on the channel that
    touch ended on, within the gap). Each side's own touches are already as that person's events
    made them, so they are never re-joined with each other (folding with nobody changes nothing)."""
    tagged = sorted(((list(x), side) for side, touches in enumerate((a, b)) for x in touches),
                    key=lambda ts: (ts[0][T_FIRST], ts[0][T_EVENT]))
    out: list[list[Any]] = []
    origin: list[int] = []
    for touch, side in tagged:
        host = None
        for i in range(len(out) - 1, -1, -1):
            prev = out[i]
            if origin[i] == side or touch[T_FIRST] - prev[T_LAST] > gap:
                continue
            if (touch[T_CAMPAIGN] is not None and prev[T_CAMPAIGN] == touch[T_CAMPAIGN]) or (
                touch[T_CAMPAIGN] is None and prev[T_LAST_CHANNEL] == touch[T_CHANNEL]
            ):
                host = prev
                break
        if host is None:
            out.append(touch)
            origin.append(side)
        elif touch[T_LAST] >= host[T_LAST]:
            host[T_LAST], host[T_LAST_CHANNEL] = touch[T_LAST], touch[T_LAST_CHANNEL]
    return [tuple(x) for x in out]


def touches_for(touches: Sequence[Touch], deal_at: int, lookback_ms: int) -> list[list[Any]]:
    """What a deal is credited to: touches that started in [deal - look-back, deal]."""
    lo = deal_at - lookback_ms
    return [[x[T_FIRST], x[T_CHANNEL], x[T_CAMPAIGN], x[T_EVENT]] for x in touches if lo <= x[T_FIRST] <= deal_at]


# ----------------------------------------------------------------------------- the component


class Attribution:
    __slots__ = ("_heaps", "_store", "config")

    def __init__(self, store: Store, config: AttributionConfig | None = None) -> None:
        self._store = store
        self.config = config or AttributionConfig()
        self._heaps: dict[str, list[tuple[int, str]]] = {}  # tenant -> heap of (close ms, deal id)
        self.rebuild()

    @staticmethod
    def _pkey(tenant_id: str, person_id: str) -> str:
        return f"{tenant_id}|p|{person_id}"

    @staticmethod
    def _dkey(tenant_id: str, deal_id: str) -> str:
        return f"{tenant_id}|d|{deal_id}"

    def rebuild(self) -> None:
        self._heaps.clear()
        reopen = self.config.reopen
        for key, value in self._store.items():
            tenant, kind, rest = key.split("|", 2)
            if kind == "d":
                self._heaps.setdefault(tenant, []).append((value[D_AT] + reopen, rest))
        for heap in self._heaps.values():
            heapq.heapify(heap)

    def open_deals(self) -> int:
        return sum(len(h) for h in self._heaps.values())

    def _load(self, key: str) -> list[Any] | None:
        """A person's state to work on: [touches (a list of tuples), deal ids (a list)]; stored as
        a pair of tuples, which the cyclic collector stops tracking (see streams/core/profiles.py)."""
        stored = self._store.get(key)
        return None if stored is None else [[tuple(x) for x in stored[0]], list(stored[1])]

    def _save(self, key: str, state: list[Any]) -> None:
        if state[0] or state[1]:
            self._store.put(key, (tuple(state[0]), tuple(state[1])))
        else:
            self._store.delete(key)

    # --- the event path ---
    def observe(self, tp: Touchpoint, person_id: str) -> Result:
        cfg = self.config
        etype = tp.type
        is_touch = etype in cfg.touch_types
        is_deal = etype in cfg.deal_types
        if not is_touch and not is_deal:
            return _NOTHING
        tenant = tp.tenant_id
        pkey = f"{tenant}|p|{person_id}"
        state = self._load(pkey)
        result = _NOTHING  # (shared and empty; a result of its own only when there is something to say)
        if is_touch:
            if state is None:
                state = [[], []]
            t = tp.occurred_at
            moved = add_touch(state[0], t, _intern(tp.channel), _campaign(tp), tp.event_id, cfg.visit_gap_ms)
            if state[1] or len(state[0]) > cfg.max_touches or state[0][0][T_FIRST] < t - cfg.lookback_ms:
                self._prune(tenant, state)
            self._save(pkey, state)
            if moved and state[1]:
                result = Result()
                for deal_id in list(state[1]):
                    self._revise(tenant, deal_id, person_id, state, t, "touch", result.records)
        if is_deal:
            if result is _NOTHING:
                result = Result()
            self._deal(tp, person_id, pkey, state, result)
        return result

    def _deal(self, tp: Touchpoint, person_id: str, pkey: str, state: list[Any] | None, result: Result) -> None:
        tenant = tp.tenant_id
        store = self._store
        value = tp.value or {}
        currency = value.get("currency")
        currency = _intern(currency) if isinstance(currency, str) and currency else NO_CURRENCY
        minor = to_minor(value.get("amount"), currency)
        if minor is None:
            result.bad_value = True
            minor = 0
        props = tp.properties or {}
        deal_id = props.get("deal_id")
        if not isinstance(deal_id, str | int) or isinstance(deal_id, bool) or not str(deal_id):
            deal_id = tp.event_id
        deal_id = str(deal_id)[:128]
        dkey = self._dkey(tenant, deal_id)
        deal = store.get(dkey)
        if state is None:
            state = [[], []]
        if deal is None:
            deal = [person_id, tp.occurred_at, minor, currency, 0, []]
            store.put(dkey, deal)
            state[1].append(deal_id)
            self._prune(tenant, state)
            self._save(pkey, state)
            heapq.heappush(self._heaps.setdefault(tenant, []), (tp.occurred_at + self.config.reopen, deal_id))
            result.deal = DealEffect(1, ((currency, minor),))
            self._revise(tenant, deal_id, person_id, state, tp.occurred_at, "deal", result.records)
            return
        # the same deal again: a corrected value or currency, another person, or a repeat
        old_value, old_currency = deal[D_VALUE], deal[D_CURRENCY]
        moved = deal[D_PERSON] != person_id
        if moved:
            self._move_deal(tenant, deal_id, deal[D_PERSON], state, pkey)
        elif (minor, currency) == (old_value, old_currency):
            return
        if moved:  # (the first person's profile keeps counting it: see docs, "deals")
            result.deal = DealEffect(1, ((currency, minor),))
        elif currency != old_currency:
            result.deal = DealEffect(0, tuple((c, v) for c, v in ((old_currency, -old_value), (currency, minor)) if v))
        else:
            result.deal = DealEffect(0, ((currency, minor - old_value),))
        self._revise(tenant, deal_id, person_id, state, tp.occurred_at, "deal_updated", result.records,
                     value=(minor, currency))

    def _move_deal(self, tenant: str, deal_id: str, old_person: str, state: list[Any], pkey: str) -> None:
        """The CRM re-sent a deal under another person: the deal now belongs to this one."""
        okey = self._pkey(tenant, old_person)
        old = self._load(okey)
        if old is not None and deal_id in old[1]:
            old[1].remove(deal_id)
            self._save(okey, old)
        if deal_id not in state[1]:
            state[1].append(deal_id)
        self._save(pkey, state)

    def _prune(self, tenant: str, state: list[Any]) -> None:
        """Drop touches no open deal or future deal can be credited to, then cap the count."""
        touches = state[0]
        if not touches:
            return
        cfg = self.config
        lo = touches[-1][T_FIRST] - cfg.lookback_ms
        for deal_id in state[1]:
            deal = self._store.get(self._dkey(tenant, deal_id))
            if deal is not None:
                lo = min(lo, deal[D_AT] - cfg.lookback_ms)
        if touches[0][T_FIRST] < lo:
            state[0] = touches = [x for x in touches if x[T_FIRST] >= lo]
        if len(touches) > cfg.max_touches:
            del touches[: len(touches) - cfg.max_touches]

    def _revise(
        self,
        tenant: str,
        deal_id: str,
        person_id: str,
        state: list[Any],
        at_ms: int,
        reason: str,
        out: list[dict[str, Any]],
        value: tuple[int, str] | None = None,
    ) -> None:
        """Recompute one deal; if anything changed, emit the retraction of the previous revision
        and the credits of the new one."""
        store = self._store
        dkey = self._dkey(tenant, deal_id)
        deal = store.get(dkey)
        if deal is None:
            return
        cfg = self.config
        used = touches_for(state[0], deal[D_AT], cfg.lookback_ms)
        minor, currency = value if value is not None else (deal[D_VALUE], deal[D_CURRENCY])
        revision = deal[D_REVISION]
        if revision and (deal[D_PERSON], deal[D_VALUE], deal[D_CURRENCY], deal[D_TOUCHES]) == (
            person_id, minor, currency, used
        ):
            return
        if not revision and minor == 0:
            # nothing to credit yet (a deal without a usable value); a later value revises it
            deal[D_PERSON], deal[D_TOUCHES] = person_id, used
            store.put(dkey, deal)
            return
        new_rev = revision + 1
        if revision and deal[D_VALUE]:
            out.extend(self._records(tenant, deal_id, deal, new_rev, "retraction", reason, at_ms))
        deal[D_PERSON], deal[D_VALUE], deal[D_CURRENCY], deal[D_TOUCHES] = person_id, minor, currency, used
        deal[D_REVISION] = new_rev
        store.put(dkey, deal)
        if minor:
            out.extend(self._records(tenant, deal_id, deal, new_rev, "credit", reason, at_ms))

    def _records(
        self, tenant: str, deal_id: str, deal: list[Any], revision: int, kind: str, reason: str, at_ms: int
    ) -> list[dict[str, Any]]:
        """The credits of ``deal`` as it is stored (for a retraction: the previous revision's, negated)."""
        cfg = self.config
        touches = deal[D_TOUCHES]
        value, currency, deal_at = deal[D_VALUE], deal[D_CURRENCY], deal[D_AT]
        sign = -1 if kind == "retraction" else 1
        base = {
            "tenant_id": tenant,
            "deal_id": deal_id,
            "person_id": deal[D_PERSON],
            "revision": revision,
            "supersedes": revision - 1 if revision > 1 else None,
            "kind": kind,
            "reason": reason,
            "deal_value_minor": value,
            "currency": currency,
            "currency_exponent": exponent(currency),
            "deal_at": deal_at,
            "lookback_ms": cfg.lookback_ms,
            "touch_count": len(touches),
            "attributed_at": at_ms,
        }
        out: list[dict[str, Any]] = []
        if not touches:
            for model in MODELS:
                out.append({
                    **base, "credit_id": credit_id(tenant, deal_id, revision, kind, model, -1, ""),
                    "model": model, "touch_index": None, "touch_event_id": None, "touch_at": None,
                    "channel": None, "campaign": None, "credit_minor": sign * value,
                })
            return out
        times = [x[0] for x in touches]
        for model in MODELS:
            for i, part in enumerate(split(value, model, times, deal_at, cfg)):
                if not part:
                    continue
                t_first, channel, campaign, event_id = touches[i]
                out.append({
                    **base, "credit_id": credit_id(tenant, deal_id, revision, kind, model, i, event_id),
                    "model": model, "touch_index": i, "touch_event_id": event_id, "touch_at": t_first,
                    "channel": channel, "campaign": campaign, "credit_minor": sign * part,
                })
        return out

    # --- identity merges ---
    def merge(self, tenant_id: str, from_person_id: str, into_person_id: str, at_ms: int) -> list[dict[str, Any]]:
        """The survivor gets both persons' touches and deals; every deal of the merged person is
        recomputed (its touches or its person changed) and revised if its credits changed."""
        if from_person_id == into_person_id:
            return []
        store = self._store
        fkey = self._pkey(tenant_id, from_person_id)
        loser = self._load(fkey)
        if loser is None:
            return []
        store.delete(fkey)
        ikey = self._pkey(tenant_id, into_person_id)
        winner = self._load(ikey) or [[], []]
        state = [
            fold_touches(winner[0], loser[0], self.config.visit_gap_ms),
            [*winner[1], *(d for d in loser[1] if d not in winner[1])],
        ]
        self._prune(tenant_id, state)
        self._save(ikey, state)
        out: list[dict[str, Any]] = []
        for deal_id in list(state[1]):
            self._revise(tenant_id, deal_id, into_person_id, state, at_ms, "merge", out)
        return out

    # --- the time path ---
    def expire(self, tenant_id: str, watermark_ms: int) -> int:
        """Close the deals whose revision period ended; their state goes. Returns how many."""
        heap = self._heaps.get(tenant_id)
        closed = 0
        store = self._store
        while heap and heap[0][0] <= watermark_ms:
            due, deal_id = heapq.heappop(heap)
            dkey = self._dkey(tenant_id, deal_id)
            deal = store.get(dkey)
            if deal is None or deal[D_AT] + self.config.reopen != due:
                continue
            store.delete(dkey)
            closed += 1
            pkey = self._pkey(tenant_id, deal[D_PERSON])
            state = self._load(pkey)
            if state is not None and deal_id in state[1]:
                state[1].remove(deal_id)
                self._prune(tenant_id, state)
                self._save(pkey, state)
        return closed


#: what most events do to attribution; never changed (callers only read results)
_NOTHING = Result()


def _campaign(tp: Touchpoint) -> str | None:
    name = tp.campaign_name
    return _intern(name) if name else None
