"""Response-time SLA clocks per conversation (Zendesk/Intercom-style first and next reply).

A conversation alternates customer messages (``message_in``) and agent replies
(``message_out``). The first unanswered customer message starts a *wait*; further customer
messages do not restart it; the next qualifying agent reply ends it and reports its response
time. ``conversation_closed`` ends a wait without a breach and ends the conversation. The
wait before the conversation's first qualifying reply is ``first_reply``, every later one is
``next_reply``. Replies flagged ``properties.auto is True`` (bots, auto-acknowledgements) do not
end a wait unless the policy says ``auto_replies_count``.

Deadlines count business time (:mod:`streams.core.business_hours`); a warning fires at
``warning_ratio`` of the target (also in business time), a breach at the target.

Why the store records fired milestones: the pager dedups on ``wait_id`` but a restart must
neither lose a breach that fell due while the worker was down nor page twice. The store (a
changelogged table live) holds every open wait with its ``warned``/``breached`` flags; the
deadline heap is only an in-memory index rebuilt from it (:meth:`SlaEngine.rebuild`), and
``advance`` fires a milestone only after checking and setting the flag in the store.

Why fired_at is the scheduled time: replaying the same input gives byte-identical records,
whatever the tick cadence. ``emitted_at`` carries the actual processing time for lateness.
For the same reason, a reply or close whose *event time* is past a milestone that no tick fired
yet fires that milestone first (then ``resolved``), so output does not depend on tick timing.

Why a closed conversation is kept for a while (``closed_retention_ms``, default 30 days)
instead of deleted at once: conversations get reopened by a customer's next message, and a
forgotten conversation would restart its wait ordinals, reusing ``wait_id``s the pager has
already deduplicated (its next warning or breach would be swallowed). A closed conversation
is reduced to its counters (``wait`` None, ``closed_at`` set) and deleted by ``advance`` once
``closed_at + closed_retention_ms`` has passed; reopening within that time continues the
ordinals (and, if an agent had replied, the new wait is a ``next_reply``). A conversation
that never receives ``conversation_closed`` stays in the store (~300 bytes of JSON).

Store layout (one key per conversation with state, ``"{tenant_id}|{conversation_id}"``)::

    {"tenant_id": str, "conversation_id": str, "team": str|None, "agent_id": str|None,
     "priority": str|None, "waits": int,       # waits started so far (ordinal of the last)
     "replied": bool,                          # a qualifying reply happened: next wait is next_reply
     "closed_at": ms|None,                     # set while closed; deleted after the retention
     "wait": None | {"n": int, "kind": "first_reply"|"next_reply", "channel": str,
                     "priority": str|None, "policy": str, "schedule": str|None, "auto_ok": bool,
                     "started_at": ms, "target_s": float, "warn_at": ms|None, "due_at": ms,
                     "warned": bool, "breached": bool}}

Policy file (JSON, parsed by :meth:`PolicySet.from_dict`; example in
``deploy/sla-policies.example.json``)::

    {
      "schedules": {"<name>": <schedule, see streams.core.business_hours>, ...},
      "policies": [
        {
          "name": "vip_chat",                    # unique, not "default"; reported as `policy`
          "match": {                             # omitted field / null / "*" = any
            "tenant_id": "acme",                 # each a string or a list of strings
            "channel": ["live_chat", "whatsapp"],
            "priority": "high",
            "team": "vip"
          },
          "first_reply_s": 30,                   # required, > 0 (business seconds)
          "next_reply_s": 60,                    # required, > 0
          "warning_ratio": 0.8,                  # optional, 0 < r < 1, null = no warning
          "schedule": "eu_office",               # optional; omitted/null = 24/7
          "auto_replies_count": false,           # optional: do bot replies stop the clock?
          "priority_factors": {"urgent": 0.5}    # optional target multipliers; default none
        }
      ]
    }

The most specific matching policy wins (number of non-wildcard ``match`` fields); ties go to
the earlier one in the file. A conversation no policy matches gets the built-in ``default``
policy of its channel (also what :meth:`PolicySet.default` uses everywhere): first reply
live_chat 60 s, whatsapp/messenger 300 s, social 900 s, email 4 h, others 1 h; next reply
live_chat 120 s, whatsapp/messenger 600 s, social 1800 s, email 4 h, others 1 h; ``urgent``
halves the target; 24/7; warning at 80 %. Keys starting with ``_`` are ignored (comments).

The policy of a wait is chosen when the wait starts and its deadlines are stored with it, so a
changed policy file applies to new waits only; team or priority changes mid-wait likewise.
"""

from __future__ import annotations

import heapq
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from streams.core.business_hours import Schedule
from streams.core.model import CHANNELS, PRIORITIES, Touchpoint
from streams.core.state import Store

KINDS: tuple[str, ...] = ("first_reply", "next_reply")
#: How long a closed conversation is remembered: a reopened one continues its wait ordinals.
CLOSED_RETENTION_MS = 30 * 86_400_000
MATCH_FIELDS: tuple[str, ...] = ("tenant_id", "channel", "priority", "team")
DEFAULT_POLICY_NAME = "default"
#: A conversation's priority until one of its events names one (events without it keep the last).
DEFAULT_PRIORITY = "normal"
DEFAULT_FIRST_REPLY_S: Mapping[str, float] = MappingProxyType({
    "live_chat": 60, "whatsapp": 300, "messenger": 300, "social": 900, "email": 14_400,
})
DEFAULT_NEXT_REPLY_S: Mapping[str, float] = MappingProxyType({
    "live_chat": 120, "whatsapp": 600, "messenger": 600, "social": 1800, "email": 14_400,
})
DEFAULT_OTHER_S = 3600.0
DEFAULT_WARNING_RATIO = 0.8
DEFAULT_PRIORITY_FACTORS: Mapping[str, float] = MappingProxyType({"urgent": 0.5})

_POLICY_FIELDS = frozenset(
    {"name", "match", "first_reply_s", "next_reply_s", "warning_ratio", "schedule", "auto_replies_count",
     "priority_factors"}
)
_MATCH_CACHE_MAX = 10_000
_ALWAYS = Schedule.always()


@dataclass(frozen=True, slots=True, eq=False)
class Policy:
    """Targets and clock rules for the conversations a ``match`` selects.

    ``match`` maps a field of :data:`MATCH_FIELDS` to the values it accepts; an absent field is
    a wildcard. ``schedule_name`` is what waits store, so a restart finds the same calendar.
    """

    name: str
    first_reply_s: float
    next_reply_s: float
    warning_ratio: float | None = DEFAULT_WARNING_RATIO
    schedule: Schedule = _ALWAYS
    schedule_name: str | None = None
    auto_replies_count: bool = False
    priority_factors: Mapping[str, float] = field(default_factory=dict)
    match: Mapping[str, frozenset[str]] = field(default_factory=dict)

    @property
    def specificity(self) -> int:
        return len(self.match)

    def matches(self, tenant_id: str, channel: str, priority: str | None, team: str | None) -> bool:
        values = {"tenant_id": tenant_id, "channel": channel, "priority": priority, "team": team}
        return all(values[f] in allowed for f, allowed in self.match.items())

    def target_s(self, kind: str, priority: str | None) -> float:
        base = self.first_reply_s if kind == "first_reply" else self.next_reply_s
        return base * self.priority_factors.get(priority or "", 1.0)


def default_policy(channel: str) -> Policy:
    """The built-in policy for a channel (what applies when no file policy matches)."""
    return Policy(
        name=DEFAULT_POLICY_NAME,
        first_reply_s=float(DEFAULT_FIRST_REPLY_S.get(channel, DEFAULT_OTHER_S)),
        next_reply_s=float(DEFAULT_NEXT_REPLY_S.get(channel, DEFAULT_OTHER_S)),
        priority_factors=DEFAULT_PRIORITY_FACTORS,
    )


_DEFAULTS: dict[str, Policy] = {ch: default_policy(ch) for ch in sorted(CHANNELS)}


class PolicySet:
    """Ordered policies plus their named schedules; falls back to the built-in defaults."""

    __slots__ = ("_by_name", "_cache", "policies", "schedules")

    def __init__(
        self, policies: Sequence[Policy] = (), schedules: Mapping[str, Schedule] | None = None
    ) -> None:
        self.policies: tuple[Policy, ...] = tuple(policies)
        self.schedules: dict[str, Schedule] = dict(schedules or {})
        self._by_name: dict[str, Policy] = {p.name: p for p in self.policies}
        self._cache: dict[tuple[str, str, str | None, str | None], Policy] = {}

    @classmethod
    def default(cls) -> PolicySet:
        return cls()

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> PolicySet:
        """Validate and build a policy set; ``ValueError`` says which entry and field is wrong."""
        if not isinstance(d, Mapping):
            raise ValueError("SLA policy file: top level must be an object with 'schedules' and 'policies'")
        unknown = sorted(k for k in d if not k.startswith("_") and k not in ("schedules", "policies"))
        if unknown:
            raise ValueError(f"SLA policy file: unknown field(s) {unknown}; use schedules, policies")
        raw_schedules = d.get("schedules", {})
        if not isinstance(raw_schedules, Mapping):
            raise ValueError("SLA policy file: 'schedules' must be an object of name -> schedule")
        schedules = {
            name: Schedule.from_dict(spec, name)
            for name, spec in raw_schedules.items()
            if not name.startswith("_")
        }
        raw_policies = d.get("policies", [])
        if not isinstance(raw_policies, list):
            raise ValueError("SLA policy file: 'policies' must be a list")
        policies: list[Policy] = []
        seen: set[str] = set()
        for i, raw in enumerate(raw_policies):
            p = _parse_policy(raw, i, schedules)
            if p.name in seen:
                raise ValueError(f"SLA policy {p.name!r}: name used twice")
            seen.add(p.name)
            policies.append(p)
        return cls(policies, schedules)

    def match(self, tenant_id: str, channel: str, priority: str | None, team: str | None) -> Policy:
        key = (tenant_id, channel, priority, team)
        got = self._cache.get(key)
        if got is not None:
            return got
        best: Policy | None = None
        for p in self.policies:
            if best is not None and p.specificity <= best.specificity:
                continue  # ties go to the earlier policy
            if p.matches(tenant_id, channel, priority, team):
                best = p
        if best is None:
            best = _DEFAULTS.get(channel) or default_policy(channel)
        if len(self._cache) >= _MATCH_CACHE_MAX:
            self._cache.clear()
        self._cache[key] = best
        return best

    def by_name(self, name: str) -> Policy | None:
        return self._by_name.get(name)

    def schedule(self, name: str | None) -> Schedule:
        """The named schedule; 24/7 for ``None`` or a name the current file no longer defines."""
        if name is None:
            return _ALWAYS
        return self.schedules.get(name, _ALWAYS)


def _parse_policy(raw: Any, i: int, schedules: Mapping[str, Schedule]) -> Policy:
    where = f"SLA policy #{i}"
    if not isinstance(raw, Mapping):
        raise ValueError(f"{where}: must be an object")
    name = raw.get("name")
    if not isinstance(name, str) or not name.strip():
        raise ValueError(f"{where}: 'name' must be a non-empty string")
    where = f"SLA policy {name!r}"
    if name == DEFAULT_POLICY_NAME:
        raise ValueError(f"{where}: the name 'default' is reserved for the built-in defaults")
    unknown = sorted(k for k in raw if not k.startswith("_") and k not in _POLICY_FIELDS)
    if unknown:
        raise ValueError(f"{where}: unknown field(s) {unknown}; allowed: {', '.join(sorted(_POLICY_FIELDS))}")

    match: dict[str, frozenset[str]] = {}
    raw_match = raw.get("match", {})
    if raw_match is None:
        raw_match = {}
    if not isinstance(raw_match, Mapping):
        raise ValueError(f"{where}: 'match' must be an object")
    for f, v in raw_match.items():
        if f.startswith("_"):
            continue
        if f not in MATCH_FIELDS:
            raise ValueError(f"{where}: cannot match on {f!r}; use {', '.join(MATCH_FIELDS)}")
        if v is None or v == "*":
            continue
        values = [v] if isinstance(v, str) else v
        if not isinstance(values, list) or not values or not all(isinstance(x, str) and x for x in values):
            raise ValueError(f"{where}: match.{f} must be a non-empty string or list of strings")
        allowed = {"channel": CHANNELS, "priority": PRIORITIES}.get(f)
        if allowed is not None:
            bad = sorted(set(values) - allowed)
            if bad:
                raise ValueError(f"{where}: match.{f} has unknown value(s) {bad}; known: {sorted(allowed)}")
        match[f] = frozenset(values)

    def positive(key: str) -> float:
        v = raw.get(key)
        if not (_is_number(v) and 0 < v < float("inf")):
            raise ValueError(f"{where}: {key!r} is required and must be a number of seconds > 0")
        return float(v)

    first, nxt = positive("first_reply_s"), positive("next_reply_s")

    ratio = raw.get("warning_ratio", DEFAULT_WARNING_RATIO)
    if ratio is not None and not (_is_number(ratio) and 0 < ratio < 1):
        raise ValueError(f"{where}: 'warning_ratio' must be a number between 0 and 1 (exclusive) or null")

    sched_name = raw.get("schedule")
    if sched_name is not None and (not isinstance(sched_name, str) or sched_name not in schedules):
        raise ValueError(f"{where}: schedule {sched_name!r} is not one of 'schedules' {sorted(schedules)}")

    auto = raw.get("auto_replies_count", False)
    if not isinstance(auto, bool):
        raise ValueError(f"{where}: 'auto_replies_count' must be true or false")

    factors = raw.get("priority_factors", {})
    if not isinstance(factors, Mapping):
        raise ValueError(f"{where}: 'priority_factors' must be an object like {{\"urgent\": 0.5}}")
    for prio, fac in factors.items():
        if prio not in PRIORITIES:
            raise ValueError(f"{where}: priority_factors: bad priority {prio!r} (use {sorted(PRIORITIES)})")
        if not (_is_number(fac) and 0 < fac < float("inf")):
            raise ValueError(f"{where}: priority_factors.{prio} must be a number > 0")

    return Policy(
        name=name,
        first_reply_s=first,
        next_reply_s=nxt,
        warning_ratio=None if ratio is None else float(ratio),
        schedule=_ALWAYS if sched_name is None else schedules[sched_name],
        schedule_name=sched_name,
        auto_replies_count=auto,
        priority_factors={k: float(v) for k, v in factors.items()},
        match=match,
    )


class SlaEngine:
    """Runs every conversation's reply clock; all persistent state goes through ``store``."""

    __slots__ = (
        "_due", "_expiry", "_open", "_policies", "_sched", "_starts", "_store", "closed_retention_ms",
    )

    def __init__(
        self,
        store: Store,
        policies: PolicySet | None = None,
        *,
        closed_retention_ms: int = CLOSED_RETENTION_MS,
    ) -> None:
        """``closed_retention_ms``: how long a closed conversation is remembered (see module doc);
        0 forgets it at once, at the price of reusing wait ids if it is reopened."""
        self._store = store
        self._policies = policies if policies is not None else PolicySet.default()
        self.closed_retention_ms = closed_retention_ms
        self._due: list[tuple[int, str]] = []  # heap of (fire_ms, key); stale entries skipped lazily
        self._sched: dict[str, int] = {}  # key -> fire time of its next unfired milestone (truth for _due)
        self._open: dict[str, int] = {}  # key -> started_at of its open wait
        self._starts: list[tuple[int, str]] = []  # heap of (started_at, key) for the oldest open wait
        self._expiry: list[tuple[int, str]] = []  # heap of (closed_at + retention, key) of closed ones
        self.rebuild()

    # --- recovery ---------------------------------------------------------------------------
    def rebuild(self) -> None:
        """Re-derive the deadline index from the store (after a changelog restore).

        Milestones whose time passed while nobody ran are due at once on the next ``advance``;
        the stored flags keep the already-fired ones from firing again.
        """
        self._due.clear()
        self._sched.clear()
        self._open.clear()
        self._starts.clear()
        self._expiry.clear()
        for key, st in self._store.items():
            if not isinstance(st, dict):
                continue
            if st.get("wait"):
                self._index(key, st)
            elif st.get("closed_at") is not None:
                self._expiry.append((st["closed_at"] + self.closed_retention_ms, key))
        heapq.heapify(self._expiry)

    # --- event path -------------------------------------------------------------------------
    def observe(self, tp: Touchpoint) -> list[dict[str, Any]]:
        conv = tp.conversation
        conv_id = None if conv is None else conv.get("id")
        if conv is None or not conv_id:
            return []
        key = f"{tp.tenant_id}|{conv_id}"
        st: dict[str, Any] | None = self._store.get(key)
        if tp.type == "message_in":
            if st is None:
                st = {
                    "tenant_id": tp.tenant_id, "conversation_id": conv_id, "team": None, "agent_id": None,
                    "priority": None, "waits": 0, "replied": False, "wait": None, "closed_at": None,
                }
                _update_attrs(st, conv)
            elif st.get("closed_at") is not None:
                st["closed_at"] = None  # reopened: wait ordinals continue, so wait ids stay unique
                _update_attrs(st, conv)
            elif not _update_attrs(st, conv) and st["wait"] is not None:
                return []  # a further customer message: the clock keeps running, nothing changed
            if st["wait"] is None:
                st["wait"] = self._start_wait(st, tp)
            self._store.put(key, st)
            self._index(key, st)
            return []
        if st is None or st.get("closed_at") is not None:
            return []  # agent-initiated or closed: nothing is waiting
        changed = _update_attrs(st, conv)
        out: list[dict[str, Any]] = []
        wait = st["wait"]
        if tp.type == "message_out":
            auto = (tp.properties or {}).get("auto") is True
            if wait is not None and (not auto or wait["auto_ok"]):
                out = self._end_wait(st, wait, tp.occurred_at, replied=True)
                st["wait"] = None
                st["replied"] = True
                changed = True
        elif tp.type == "conversation_closed":
            if wait is not None:
                out = self._end_wait(st, wait, tp.occurred_at, replied=False)
            if self.closed_retention_ms <= 0:
                self._store.delete(key)
                self._index(key, None)
                return out
            st["wait"] = None
            st["closed_at"] = tp.occurred_at
            heapq.heappush(self._expiry, (tp.occurred_at + self.closed_retention_ms, key))
            changed = True
        if changed:
            self._store.put(key, st)
            self._index(key, st)
        return out

    def _start_wait(self, st: dict[str, Any], tp: Touchpoint) -> dict[str, Any]:
        kind = "next_reply" if st["replied"] else "first_reply"
        prio = st["priority"] or DEFAULT_PRIORITY  # until an event names one
        policy = self._policies.match(tp.tenant_id, tp.channel, prio, st["team"])
        target = policy.target_s(kind, prio)
        sched = policy.schedule
        start = tp.occurred_at
        ratio = policy.warning_ratio
        warn_at = None if ratio is None else sched.add_business_seconds(start, target * ratio)
        st["waits"] += 1
        return {
            "n": st["waits"], "kind": kind, "channel": tp.channel, "priority": prio, "policy": policy.name,
            "schedule": policy.schedule_name, "auto_ok": policy.auto_replies_count, "started_at": start,
            "target_s": target, "warn_at": warn_at, "due_at": sched.add_business_seconds(start, target),
            "warned": False, "breached": False,
        }

    def _end_wait(
        self, st: dict[str, Any], wait: dict[str, Any], at: int, replied: bool
    ) -> list[dict[str, Any]]:
        """Records for a wait ending at event time ``at`` (a reply, or a close if not ``replied``).

        Milestones at or before ``at`` that no tick fired yet fire first, so the result is the
        same whether or not the shell ticked in between.
        """
        out: list[dict[str, Any]] = []
        for event, t in _milestones(wait):
            if t <= at:
                wait["warned" if event == "warning" else "breached"] = True
                out.append(_sla_event(st, wait, event, t, at, None))
        response_s: float | None = None
        if replied:
            sched = self._policies.schedule(wait["schedule"])
            response_s = sched.business_seconds_between(wait["started_at"], at)
        if wait["warned"] or wait["breached"]:
            out.append(_sla_event(st, wait, "resolved", at, at, response_s))
        if replied:
            out.append({
                "record": "response_time", "tenant_id": st["tenant_id"],
                "conversation_id": st["conversation_id"],
                "channel": wait["channel"], "team": st["team"], "agent_id": st["agent_id"],
                "priority": wait["priority"], "policy": wait["policy"], "kind": wait["kind"],
                "started_at": wait["started_at"], "replied_at": at, "response_s": response_s,
                "response_wall_s": max(0, at - wait["started_at"]) / 1000, "target_s": wait["target_s"],
                "breached": at >= wait["due_at"], "wait_id": _wait_id(st, wait),
            })
        return out

    # --- time path --------------------------------------------------------------------------
    def advance(self, now_ms: int, until_ms: int | None = None) -> list[dict[str, Any]]:
        """Fire every warning and breach due at or before ``until_ms`` (default ``now_ms``), in due
        order (ties by key); ``now_ms`` is the processing time the records carry (``emitted_at``)."""
        out: list[dict[str, Any]] = []
        due = self._due
        limit = now_ms if until_ms is None else min(now_ms, until_ms)
        while due and due[0][0] <= limit:
            t, key = heapq.heappop(due)
            if self._sched.get(key) != t:
                continue  # stale: the wait ended or its milestone moved on
            del self._sched[key]
            st = self._store.get(key)
            wait = None if st is None else st.get("wait")
            nxt = None if wait is None else _next_milestone(wait)
            if st is None or wait is None or nxt is None or nxt[1] != t:
                self._index(key, st)  # index out of step with the store: trust the store
                continue
            event = nxt[0]
            wait["warned" if event == "warning" else "breached"] = True
            self._store.put(key, st)
            out.append(_sla_event(st, wait, event, t, now_ms, None))
            self._index(key, st)
        self._forget_closed(now_ms)
        self._compact()
        return out

    def _forget_closed(self, now_ms: int) -> None:
        expiry = self._expiry
        while expiry and expiry[0][0] <= now_ms:
            _, key = heapq.heappop(expiry)
            st = self._store.get(key)
            closed_at = None if st is None else st.get("closed_at")
            if closed_at is not None and closed_at + self.closed_retention_ms <= now_ms:
                self._store.delete(key)  # else reopened, or closed again later (a newer entry exists)

    def next_due(self) -> int | None:
        """When the next warning or breach falls due (the shell may sleep until then)."""
        due = self._due
        while due and self._sched.get(due[0][1]) != due[0][0]:
            heapq.heappop(due)
        return due[0][0] if due else None

    def open_waits(self) -> int:
        return len(self._open)

    def oldest_wait_started(self) -> int | None:
        starts = self._starts
        while starts and self._open.get(starts[0][1]) != starts[0][0]:
            heapq.heappop(starts)
        return starts[0][0] if starts else None

    # --- index ------------------------------------------------------------------------------
    def _index(self, key: str, st: dict[str, Any] | None) -> None:
        """Bring the in-memory index for ``key`` in line with its stored state."""
        wait = None if st is None else st.get("wait")
        if wait is None:
            self._open.pop(key, None)
            self._sched.pop(key, None)
            return
        started = wait["started_at"]
        if self._open.get(key) != started:
            self._open[key] = started
            heapq.heappush(self._starts, (started, key))
        nxt = _next_milestone(wait)
        if nxt is None:
            self._sched.pop(key, None)
        elif self._sched.get(key) != nxt[1]:
            self._sched[key] = nxt[1]
            heapq.heappush(self._due, (nxt[1], key))

    def _compact(self) -> None:
        """Drop stale heap entries once they dominate (most waits end before their warning)."""
        if len(self._due) > 2 * len(self._sched) + 1024:
            self._due = [(t, k) for k, t in self._sched.items()]
            heapq.heapify(self._due)
        if len(self._starts) > 2 * len(self._open) + 1024:
            self._starts = [(t, k) for k, t in self._open.items()]
            heapq.heapify(self._starts)


def _is_number(v: Any) -> bool:
    """A JSON number that is not a bool (``True`` is an int in Python) and not NaN."""
    return isinstance(v, int | float) and not isinstance(v, bool) and v == v


def _update_attrs(st: dict[str, Any], conv: Mapping[str, Any]) -> bool:
    """Take team/agent/priority from an event that carries them; True if anything changed."""
    changed = False
    for f in ("team", "agent_id", "priority"):
        v = conv.get(f)
        if isinstance(v, str) and v and st[f] != v:
            st[f] = v
            changed = True
    return changed


def _milestones(wait: Mapping[str, Any]) -> list[tuple[str, int]]:
    """Unfired milestones of a wait, in firing order."""
    out: list[tuple[str, int]] = []
    if wait["warn_at"] is not None and not wait["warned"]:
        out.append(("warning", wait["warn_at"]))
    if not wait["breached"]:
        out.append(("breach", wait["due_at"]))
    return out


def _next_milestone(wait: Mapping[str, Any]) -> tuple[str, int] | None:
    ms = _milestones(wait)
    return ms[0] if ms else None


def _wait_id(st: Mapping[str, Any], wait: Mapping[str, Any]) -> str:
    return f"{st['tenant_id']}:{st['conversation_id']}:{wait['n']}"


def _sla_event(
    st: Mapping[str, Any], wait: Mapping[str, Any], event: str, fired_at: int, emitted_at: int,
    response_s: float | None,
) -> dict[str, Any]:
    return {
        "record": "sla_event", "event": event, "tenant_id": st["tenant_id"],
        "conversation_id": st["conversation_id"], "channel": wait["channel"], "team": st["team"],
        "agent_id": st["agent_id"], "priority": wait["priority"], "policy": wait["policy"],
        "kind": wait["kind"],
        "started_at": wait["started_at"], "due_at": wait["due_at"], "fired_at": fired_at,
        "response_s": response_s, "wait_id": _wait_id(st, wait), "emitted_at": emitted_at,
    }
