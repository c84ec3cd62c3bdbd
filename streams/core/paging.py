"""What to page, and when, from SLA events: grouping, routing, escalation, inhibition.

The SLA engine (:mod:`streams.core.sla`) emits one ``sla_event`` record per warning, breach and
resolution of a customer wait. Paging a human once per record would be useless exactly when it
matters most: an outage of an agent tool or of an input feed breaches hundreds of waits within
a minute. This module turns the records into few, actionable :class:`Page` objects; delivering
them is :mod:`streams.notify`'s job. It is pure: no I/O, no wall clock (``now_ms`` is passed in),
and everything that must survive a restart lives in a :class:`~streams.core.state.Store`.

Semantics (all times int epoch ms on the *shell's* clock: ``now_ms`` and ``input_seen``'s
``at_ms`` must come from the same clock, normally processing time):

* **Grouping (no page storms).** The first warning or breach of a (tenant, team, severity)
  pages after ``group_wait_s`` (default 0: at once, so a lone breach reaches the lead within
  the tick) and opens that group's window: whatever else warns or breaches there within
  ``group_window_s`` (default 60) pages once at the window's end, then the group is quiet again.
  A page holding one wait has ``dedup_key = wait_id`` (``wait_id + ":warning"`` for a
  warning); two or more page once as ``group:{tenant}:{team}:{window_start}`` (``+
  ":warning"``; team ``-`` when unassigned) listing the count and the ``max_listed`` oldest
  waits. So a storm of 50 breaches is two pages (the first at once, the other 49 in one),
  like Alertmanager's ``group_wait``/``group_interval``; raise ``group_wait_s`` to trade the
  first page's latency for a single page per storm, or set ``group_window_s = 0`` to page
  every wait alone. Waits that resolve before their page never page: the reply already
  happened, there is nothing for a human to do (the breach is still in ClickHouse for
  reporting). A sustained storm pages at most once per window per team and severity.
* **Warnings** are pages of severity ``warning`` with their own keys and windows. A wait whose
  warning is still in a window when it breaches leaves that window (only the breach pages). A
  warning page that already went out stays open until its waits are *resolved*, not merely
  breached: resolving it on breach would show up in chat as "resolved" while things got worse.
* **Resolution.** A page resolves when every wait it covers has a ``resolved`` record (a reply
  or a close); its escalation page, if any, resolves with it.
* **Routing.** A page goes to the notifier of the most specific :class:`Route` for its team:
  exact team name, else the longest ``prefix*`` pattern, else the default route (team None).
  The route is fixed when a page triggers, so a config change never orphans an open page.
* **Escalation.** A critical page still open ``escalate_after_s`` after it triggered triggers once
  more, to ``escalate_to``, with key ``{dedup_key}:escalated`` (its own key so the first
  incident's notifier and the dispatcher's dedup keep both). Escalation waits while all of a
  page's open waits sit on stalled channels: nobody can answer those until the feed is back.
* **Inhibition.** When a (tenant, channel) has open waits (known to the pager: warned or
  breached, not resolved) but no input was seen for ``stall_after_s``, the likely cause is a dead
  feed, not slow agents. Its pending and new warning/breach pages are held and ONE critical page
  ``stall:{tenant}:{channel}:{last_input_ms}`` goes to the default route. The episode suffix
  exists because exactly-once forbids triggering one key twice and a channel can stall again
  later. When input resumes the stall page resolves and held waits still open re-enter their
  group windows (so a resumed feed does not storm either). Caveat: a genuinely quiet channel
  (email at night) looks the same; raise or disable (``None``) its threshold with
  ``channel_stall_after_s``. A channel the pager never heard input for starts its silence when
  the pager first tracks a wait on it (benefit of the doubt after a restart or rollout).
* **Exactly once.** Every trigger is recorded in the store before it is returned, and
  re-observing a record (Kafka redelivery after a restart) or rebuilding the pager from a copied
  store never triggers a key twice. Resolved pages and finished waits are kept as tombstones for
  ``retention_s`` (default one day) so replays within that time stay silent. A page is only as
  durable as the shell makes it: the store writes and the hand-over of the returned pages should
  commit together (e.g. produce pages to a topic in the same batch as the changelog).

Store layout (values are JSON; keys start with ``"{tenant_id}|"``)::

    "{t}|pw|{wait_id}"   {"k": "wait", tenant_id, wait_id, conversation_id, channel, team, agent_id,
                          priority, policy, kind, started_at, due_at,
                          "level": "warning"|"critical",
                          "where": "window"|"held"|"paged"|"done",   # of its current level
                          "window": str|None,                        # store key of its window
                          "warn_page": str|None, "crit_page": str|None,   # dedup keys
                          "done_at": ms|None}
    "{t}|pg|{sev}|{team}" {"k": "window", tenant_id, team, severity, "start": ms,
                          "phase": "wait"|"interval", "due": ms}
                          # team token: "=name", or "*" for unassigned. Its members are the waits
                          # whose "window" names it (indexed in memory, rebuilt from the waits:
                          # a stored member list was re-written whole on every change, which
                          # made a breach storm quadratic in changelog bytes)
    "{t}|pp|{dedup_key}" {"k": "page", dedup_key, kind ("wait"|"group"|"stall"|"escalation"),
                          tenant_id, team, channel, severity, notifier, summary, details,
                          "waits": [open wait_id], "channels": [str], "triggered_at": ms,
                          "escalate_at": ms|None, "escalate_to": str|None, "escalation": str|None,
                          "parent": str|None, "resolved_at": ms|None}
    "{t}|pc|{channel}"   {"k": "channel", tenant_id, channel, "last_input": ms, "stalled": bool,
                          "stall_input": ms|None, "stall_key": str|None, "held": [wait_id]}

``last_input`` is stored at 1 s resolution (exact while stalled) so a busy channel costs at most
one changelog write per second, and behaviour after a rebuild is identical to before it.
"""

from __future__ import annotations

import copy
import heapq
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from types import MappingProxyType
from typing import Any

from streams.core.state import Store

ACTIONS: tuple[str, ...] = ("trigger", "resolve")
SEVERITIES: tuple[str, ...] = ("warning", "critical")
#: Page kinds, also in ``details["kind"]`` so sinks can name alerts without parsing keys.
KIND_BREACH = "sla_breach"
KIND_WARNING = "sla_warning"
KIND_STALL = "feed_stalled"
KIND_ESCALATION = "escalation"
#: ``last_input`` granularity while the channel is healthy (bounds changelog writes).
INPUT_RESOLUTION_MS = 1000

_LISTED_FIELDS: tuple[str, ...] = (
    "wait_id", "conversation_id", "channel", "priority", "policy", "kind", "agent_id", "started_at", "due_at",
)


@dataclass(frozen=True, slots=True)
class Route:
    """Where pages of a team go. ``team``: exact name, ``"prefix*"`` pattern, or None (default)."""

    team: str | None
    notifier: str
    escalate_after_s: float | None = None
    escalate_to: str | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.notifier, str) or not self.notifier:
            raise ValueError(f"route {self.team!r}: 'notifier' must be a non-empty notifier name")
        if self.team is not None and (not isinstance(self.team, str) or not self.team):
            raise ValueError("route: 'team' must be a non-empty string or null (the default route)")
        if (self.escalate_after_s is None) != (self.escalate_to is None):
            raise ValueError(f"route {self.team!r}: set both 'escalate_after_s' and 'escalate_to', or neither")
        if self.escalate_after_s is not None and not (_is_number(self.escalate_after_s) and self.escalate_after_s > 0):
            raise ValueError(f"route {self.team!r}: 'escalate_after_s' must be a number of seconds > 0")

    def specificity(self, team: str | None) -> int | None:
        """How specifically this route matches ``team`` (higher wins); None if it does not."""
        if self.team is None:
            return 0
        if team is None:
            return None
        if self.team.endswith("*"):
            prefix = self.team[:-1]
            return 1 + len(prefix) if team.startswith(prefix) else None
        return 1 << 30 if team == self.team else None


@dataclass(frozen=True)
class PagingConfig:
    """Paging knobs; see the module docstring for what each one trades off."""

    group_window_s: float = 60.0
    #: Delay of a quiet group's first page (0: at once); see the module docstring.
    group_wait_s: float = 0.0
    max_listed: int = 5
    stall_after_s: float | None = 300.0
    routes: tuple[Route, ...] = (Route(None, "default", None, None),)
    #: Per-channel override of ``stall_after_s`` (None disables stall detection for that channel).
    channel_stall_after_s: Mapping[str, float | None] = field(default_factory=dict)
    #: How long resolved pages and finished waits are remembered to keep replays silent.
    retention_s: float = 86_400.0

    def __post_init__(self) -> None:
        object.__setattr__(self, "routes", tuple(self.routes))
        object.__setattr__(self, "channel_stall_after_s", MappingProxyType(dict(self.channel_stall_after_s)))
        if not (_is_number(self.group_window_s) and self.group_window_s >= 0):
            raise ValueError("paging: 'group_window_s' must be a number of seconds >= 0")
        if not (_is_number(self.group_wait_s) and self.group_wait_s >= 0):
            raise ValueError("paging: 'group_wait_s' must be a number of seconds >= 0")
        if not (isinstance(self.max_listed, int) and not isinstance(self.max_listed, bool) and self.max_listed >= 0):
            raise ValueError("paging: 'max_listed' must be an integer >= 0")
        for name, v in [("stall_after_s", self.stall_after_s), *self.channel_stall_after_s.items()]:
            if v is not None and not (_is_number(v) and v > 0):
                raise ValueError(f"paging: stall threshold {name!r} must be a number of seconds > 0 or null")
        if not (_is_number(self.retention_s) and self.retention_s > 0):
            raise ValueError("paging: 'retention_s' must be a number of seconds > 0")
        teams = [r.team for r in self.routes]
        if None not in teams:
            raise ValueError("paging: routes need a default route (team null)")
        dup = sorted({t or "<default>" for t in teams if teams.count(t) > 1})
        if dup:
            raise ValueError(f"paging: more than one route for team(s) {dup}")

    def route(self, team: str | None) -> Route:
        """The most specific route for ``team`` (ties go to the earlier route)."""
        best: Route | None = None
        best_spec = -1
        for r in self.routes:
            spec = r.specificity(team)
            if spec is not None and spec > best_spec:
                best, best_spec = r, spec
        assert best is not None  # a default route always exists (validated)
        return best

    def stall_after_ms(self, channel: str) -> int | None:
        v = self.channel_stall_after_s.get(channel, self.stall_after_s)
        return None if v is None else int(v * 1000)

    def notifier_names(self) -> set[str]:
        """Every notifier a page can be sent to (to check the notifier config at start-up)."""
        names = {r.notifier for r in self.routes}
        names.update(r.escalate_to for r in self.routes if r.escalate_to is not None)
        return names

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> PagingConfig:
        """Build from JSON (the ``"paging"`` object of ``deploy/notifiers.example.json``)."""
        if not isinstance(d, Mapping):
            raise ValueError("paging: must be an object")
        known = {"group_window_s", "group_wait_s", "max_listed", "stall_after_s", "channel_stall_after_s",
                 "retention_s", "routes"}
        unknown = sorted(k for k in d if not k.startswith("_") and k not in known)
        if unknown:
            raise ValueError(f"paging: unknown field(s) {unknown}; allowed: {', '.join(sorted(known))}")
        kw: dict[str, Any] = {k: d[k] for k in known - {"routes"} if k in d}
        if "routes" in d:
            raw = d["routes"]
            if not isinstance(raw, list):
                raise ValueError("paging: 'routes' must be a list")
            routes: list[Route] = []
            for i, r in enumerate(raw):
                if not isinstance(r, Mapping):
                    raise ValueError(f"paging: route #{i} must be an object")
                bad = sorted(k for k in r if not k.startswith("_") and k not in Route.__dataclass_fields__)
                if bad:
                    raise ValueError(f"paging: route #{i}: unknown field(s) {bad}")
                routes.append(Route(
                    team=r.get("team"), notifier=r.get("notifier", ""),
                    escalate_after_s=r.get("escalate_after_s"), escalate_to=r.get("escalate_to"),
                ))
            kw["routes"] = tuple(routes)
        if isinstance(kw.get("channel_stall_after_s"), Mapping):
            raw_ch = kw["channel_stall_after_s"]
            kw["channel_stall_after_s"] = {k: v for k, v in raw_ch.items() if not k.startswith("_")}
        elif "channel_stall_after_s" in kw:
            raise ValueError("paging: 'channel_stall_after_s' must be an object of channel -> seconds|null")
        return cls(**kw)


@dataclass(frozen=True, slots=True)
class Page:
    """One notification to send: open (``trigger``) or close (``resolve``) the incident ``dedup_key``."""

    action: str
    dedup_key: str
    notifier: str
    tenant_id: str
    team: str | None
    channel: str | None
    severity: str
    summary: str
    details: dict[str, Any]
    at: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class DueIndex:
    """Keys with a due time: set/pop in O(log n), and the due ones in (due, key) order.

    ``observe`` checks for due windows on every SLA record; scanning and sorting all windows
    each time made a breach storm quadratic. A heap with lazy deletion (the dict is the truth,
    stale heap entries are skipped) keeps that check O(1) when nothing is due.
    """

    __slots__ = ("_due", "_heap")

    def __init__(self) -> None:
        self._due: dict[str, int] = {}
        self._heap: list[tuple[int, str]] = []

    def __setitem__(self, key: str, due: int) -> None:
        self._due[key] = due
        heapq.heappush(self._heap, (due, key))

    def pop(self, key: str, default: int | None = None) -> int | None:
        return self._due.pop(key, default)

    def clear(self) -> None:
        self._due.clear()
        self._heap.clear()

    def values(self) -> list[int]:
        return list(self._due.values())

    def take_due(self, now_ms: int) -> list[str]:
        """Keys due at ``now_ms`` in (due, key) order; they stay set until popped."""
        out: list[str] = []
        heap, due = self._heap, self._due
        while heap and heap[0][0] <= now_ms:
            at, key = heapq.heappop(heap)
            if due.get(key) == at and (not out or out[-1] != key):
                out.append(key)
        if len(heap) > 4 * len(due) + 64:  # many stale entries: rebuild
            self._heap = [(at, key) for key, at in due.items()]
            heapq.heapify(self._heap)
        return out


class Pager:
    """Turns ``sla_event`` records and input activity into pages; state lives in ``store``."""

    __slots__ = ("_escalations", "_expiry", "_members", "_open", "_stalled", "_store", "_windows", "config", "stats")

    def __init__(self, store: Store, config: PagingConfig | None = None) -> None:
        self._store = store
        self.config = config if config is not None else PagingConfig()
        self._windows = DueIndex()  # window store key -> flush time
        self._members: dict[str, dict[str, None]] = {}  # window store key -> its wait ids (ordered set)
        self._escalations: dict[str, int] = {}  # page store key -> escalate time (unescalated, open)
        self._open: dict[tuple[str, str], set[str]] = {}  # (tenant, channel) -> open (not done) wait ids
        self._stalled: set[tuple[str, str]] = set()
        self._expiry: list[tuple[int, str]] = []  # (expire time, store key) of tombstones
        #: In-process counters for metrics (not persisted): triggered, resolved, held, ignored, replayed.
        self.stats: dict[str, int] = {"triggered": 0, "resolved": 0, "held": 0, "ignored": 0, "replayed": 0}
        self.rebuild()

    # --- recovery ---------------------------------------------------------------------------
    def rebuild(self) -> None:
        """Re-derive the in-memory indexes from the store (after a changelog restore)."""
        self._windows.clear()
        self._members.clear()
        self._escalations.clear()
        self._open.clear()
        self._stalled.clear()
        self._expiry.clear()
        retention = self._retention_ms
        for key, v in self._store.items():
            if not isinstance(v, dict):
                continue
            k = v.get("k")
            if k == "wait":
                if v["where"] == "done":
                    self._expiry.append((v["done_at"] + retention, key))
                else:
                    self._open.setdefault((v["tenant_id"], v["channel"]), set()).add(v["wait_id"])
                    if v["where"] == "window" and v["window"]:
                        self._members.setdefault(v["window"], {})[v["wait_id"]] = None
            elif k == "window":
                self._windows[key] = v.get("due", v["start"] + self._window_ms)  # state of older versions: no "due"
            elif k == "page":
                if v["resolved_at"] is not None:
                    self._expiry.append((v["resolved_at"] + retention, key))
                elif v["escalate_at"] is not None and v["escalation"] is None:
                    self._escalations[key] = v["escalate_at"]
            elif k == "channel" and v["stalled"]:
                self._stalled.add((v["tenant_id"], v["channel"]))
        heapq.heapify(self._expiry)

    # --- inputs -----------------------------------------------------------------------------
    def observe(self, rec: Mapping[str, Any], now_ms: int) -> list[Page]:
        """Apply one ``sla_event`` record; returns pages due now (resolves, stall, due windows).

        Other records are ignored, so the shell may feed the whole SLA output. Malformed
        ``sla_event`` records are counted in ``stats["ignored"]`` rather than raised: a poison
        record must not stop paging for everyone else.
        """
        if rec.get("record") != "sla_event":
            return []
        event, tenant, wait_id, channel = rec.get("event"), rec.get("tenant_id"), rec.get("wait_id"), rec.get("channel")
        if (
            event not in ("warning", "breach", "resolved")
            or not all(isinstance(x, str) and x for x in (tenant, wait_id, channel))
            or not isinstance(rec.get("started_at"), int)
        ):
            self.stats["ignored"] += 1
            return []
        assert isinstance(tenant, str) and isinstance(wait_id, str) and isinstance(channel, str)
        out: list[Page] = self._flush_due(now_ms)  # windows that ended before this record take nothing new
        wkey = _wait_key(tenant, wait_id)
        w: dict[str, Any] | None = self._store.get(wkey)
        if event == "resolved":
            if w is None or w["where"] == "done":
                self.stats["replayed" if w is not None else "ignored"] += 1
                return out
            out += self._finish_wait(w, now_ms)
        else:
            level = "critical" if event == "breach" else "warning"
            if w is not None and (w["where"] == "done" or w["level"] == "critical" or level == w["level"]):
                self.stats["replayed"] += 1  # redelivered, or a warning arriving after its breach
                return out
            if w is None:
                w = {"k": "wait", **{f: rec.get(f) for f in _LISTED_FIELDS}, "tenant_id": tenant,
                     "team": rec.get("team"), "level": level, "where": "new", "window": None,
                     "warn_page": None, "crit_page": None, "done_at": None}
                self._open.setdefault((tenant, channel), set()).add(wait_id)
                self._ensure_channel(tenant, channel, now_ms)
            else:  # warning -> breach
                w["level"] = level
                if isinstance(rec.get("team"), str):
                    w["team"] = rec["team"]
            self._place(w, now_ms)
        out += self._check_stall(tenant, channel, now_ms)
        out += self._flush_due(now_ms)
        return out

    def input_seen(self, tenant_id: str, channel: str, at_ms: int) -> None:
        """Record input activity on a channel (the shell calls this per input event or batch)."""
        ckey = _chan_key(tenant_id, channel)
        ch = self._store.get(ckey)
        if ch is None:
            self._store.put(ckey, _new_channel(tenant_id, channel, at_ms))
        elif at_ms > ch["last_input"] and (ch["stalled"] or at_ms >= ch["last_input"] + INPUT_RESOLUTION_MS):
            ch["last_input"] = at_ms
            self._store.put(ckey, ch)

    def advance(self, now_ms: int) -> list[Page]:
        """Stall checks, due group windows, due escalations, tombstone expiry; pages in that order."""
        out: list[Page] = []
        for tenant, channel in sorted(set(self._open) | self._stalled):
            out += self._check_stall(tenant, channel, now_ms)
        out += self._flush_due(now_ms)
        out += self._escalate_due(now_ms)
        self._expire(now_ms)
        return out

    def next_due(self, after_ms: int | None = None) -> int | None:
        """Earliest group flush or escalation (later than ``after_ms`` when given: an escalation
        held back by a stalled feed stays due in the past). A hint only: stall checks need
        regular ticks anyway."""
        times = [t for t in (*self._windows.values(), *self._escalations.values())
                 if after_ms is None or t > after_ms]
        return min(times) if times else None

    def open_pages(self) -> int:
        return sum(1 for _, v in self._store.items() if isinstance(v, dict) and v.get("k") == "page"
                   and v["resolved_at"] is None)

    # --- waits ------------------------------------------------------------------------------
    def _place(self, w: dict[str, Any], now_ms: int) -> None:
        """Put a wait that just warned or breached where its page will come from: held or a window."""
        if w["where"] == "window" and w["level"] == "critical" and w["window"]:
            self._drop_from_window(w)  # its warning never paged: only the breach will
        if (w["tenant_id"], w["channel"]) in self._stalled:
            ch = self._store.get(_chan_key(w["tenant_id"], w["channel"]))
            if w["where"] != "held":
                ch["held"].append(w["wait_id"])
                self._store.put(_chan_key(w["tenant_id"], w["channel"]), ch)
                self.stats["held"] += 1
            w["where"], w["window"] = "held", None
            self._store.put(_wait_key(w["tenant_id"], w["wait_id"]), w)
        else:
            self._enqueue(w, now_ms)

    def _enqueue(self, w: dict[str, Any], now_ms: int) -> None:
        sev = w["level"]
        gkey = _window_key(w["tenant_id"], sev, w["team"])
        win = self._store.get(gkey)
        if win is None:
            due = now_ms + int(self.config.group_wait_s * 1000)
            win = {"k": "window", "tenant_id": w["tenant_id"], "team": w["team"], "severity": sev, "start": now_ms,
                   "phase": "wait", "due": due}
            self._windows[gkey] = due
            self._store.put(gkey, win)
        self._members.setdefault(gkey, {})[w["wait_id"]] = None
        w["where"], w["window"] = "window", gkey
        self._store.put(_wait_key(w["tenant_id"], w["wait_id"]), w)

    def _drop_from_window(self, w: dict[str, Any]) -> None:
        gkey = w["window"]
        members = self._members.get(gkey)
        if members is not None and w["wait_id"] in members:
            del members[w["wait_id"]]
            win = self._store.get(gkey)
            if not members and (win is None or win.get("phase") != "interval"):  # an empty interval stays quiet
                self._store.delete(gkey)
                self._windows.pop(gkey, None)
                del self._members[gkey]
        w["where"], w["window"] = "new", None

    def _finish_wait(self, w: dict[str, Any], now_ms: int) -> list[Page]:
        """A wait got its reply (or close): leave its window/held list, maybe resolve its pages."""
        out: list[Page] = []
        if w["where"] == "window":
            self._drop_from_window(w)
        elif w["where"] == "held":
            ckey = _chan_key(w["tenant_id"], w["channel"])
            ch = self._store.get(ckey)
            if ch is not None and w["wait_id"] in ch["held"]:
                ch["held"].remove(w["wait_id"])
                self._store.put(ckey, ch)
        for ref in ("warn_page", "crit_page"):
            if w[ref] is not None:
                out += self._leave_page(w["tenant_id"], w[ref], w["wait_id"], now_ms)
        w["where"], w["done_at"] = "done", now_ms
        self._store.put(_wait_key(w["tenant_id"], w["wait_id"]), w)
        heapq.heappush(self._expiry, (now_ms + self._retention_ms, _wait_key(w["tenant_id"], w["wait_id"])))
        opened = self._open.get((w["tenant_id"], w["channel"]))
        if opened is not None:
            opened.discard(w["wait_id"])
            if not opened:
                del self._open[(w["tenant_id"], w["channel"])]
        return out

    def _leave_page(self, tenant: str, dedup_key: str, wait_id: str, now_ms: int) -> list[Page]:
        pkey = _page_key(tenant, dedup_key)
        page = self._store.get(pkey)
        if page is None or page["resolved_at"] is not None or wait_id not in page["waits"]:
            return []
        page["waits"].remove(wait_id)
        if page["waits"]:
            self._store.put(pkey, page)
            return []
        return self._resolve(pkey, page, now_ms, "all waits answered")

    # --- pages ------------------------------------------------------------------------------
    def _flush_due(self, now_ms: int) -> list[Page]:
        out: list[Page] = []
        for gkey in self._windows.take_due(now_ms):
            out += self._flush(gkey, now_ms)
        return out

    def _flush(self, gkey: str, now_ms: int) -> list[Page]:
        self._windows.pop(gkey, None)
        win = self._store.get(gkey)
        members = self._members.pop(gkey, {})
        if win is None:
            return []
        tenant, team, sev = win["tenant_id"], win["team"], win["severity"]
        waits: list[dict[str, Any]] = []
        for wid in members:
            w = self._store.get(_wait_key(tenant, wid))
            if w is not None and w["where"] == "window" and w["window"] == gkey and w["level"] == sev:
                waits.append(w)
        if waits and win.get("phase") == "wait" and self._window_ms > 0:
            # the group's first page goes now; followers collect until the window ends
            due = now_ms + self._window_ms
            self._store.put(gkey, {k: v for k, v in win.items() if k != "waits"}  # "waits": older versions
                            | {"phase": "interval", "due": due, "start": now_ms})
            self._windows[gkey] = due
        else:
            self._store.delete(gkey)
        if not waits:
            return []
        waits.sort(key=lambda w: (w["started_at"], w["wait_id"]))
        warning = sev == "warning"
        suffix = ":warning" if warning else ""
        if len(waits) == 1:
            base, kind = waits[0]["wait_id"] + suffix, "wait"
        else:
            base, kind = f"group:{tenant}:{team if team is not None else '-'}:{win['start']}{suffix}", "group"
        route = self.config.route(team)
        channels = sorted({w["channel"] for w in waits})
        listed = [{f: w[f] for f in _LISTED_FIELDS} for w in waits[: self.config.max_listed]]
        details = {
            "kind": KIND_WARNING if warning else KIND_BREACH, "tenant_id": tenant, "team": team,
            "count": len(waits), "channels": channels, "oldest_started_at": waits[0]["started_at"],
            "waits": listed, "not_listed": len(waits) - len(listed),
        }
        what = "SLA warning" if warning else "SLA breach"
        who = f"team {team}" if team is not None else "unassigned"
        if len(waits) == 1:
            w = waits[0]
            summary = (f"{what} [{tenant}] {who}: conversation {w['conversation_id']} ({w['channel']}) waiting since "
                       f"{_iso(w['started_at'])}, due {_iso(w['due_at'])}")
        else:
            summary = (f"{what} [{tenant}] {who}: {len(waits)} conversations ({', '.join(channels)}), oldest waiting "
                       f"since {_iso(waits[0]['started_at'])}")
        page, key = self._trigger(
            base, kind, tenant, team, channels[0] if len(channels) == 1 else None, sev, route.notifier, summary,
            details, now_ms, [w["wait_id"] for w in waits], None if warning else route,
        )
        ref = "warn_page" if warning else "crit_page"
        for w in waits:
            w["where"], w["window"], w[ref] = "paged", None, key
            self._store.put(_wait_key(tenant, w["wait_id"]), w)
        return [page]

    def _trigger(
        self, base: str, kind: str, tenant: str, team: str | None, channel: str | None, severity: str,
        notifier: str, summary: str, details: dict[str, Any], now_ms: int, waits: Sequence[str],
        route: Route | None, parent: str | None = None,
    ) -> tuple[Page, str]:
        """Record a new page under a key never used before (within retention), then return it."""
        key, n = base, 1
        while self._store.get(_page_key(tenant, key)) is not None:  # defensive: keys are unique by design
            n += 1
            key = f"{base}#{n}"
        details = {**details, "triggered_at": now_ms}
        escalate_at = None
        if route is not None and route.escalate_after_s is not None:
            escalate_at = now_ms + int(route.escalate_after_s * 1000)
        rec = {
            "k": "page", "dedup_key": key, "kind": kind, "tenant_id": tenant, "team": team, "channel": channel,
            "severity": severity, "notifier": notifier, "summary": summary, "details": details,
            "waits": list(waits), "channels": sorted({channel} if channel else details.get("channels", [])),
            "triggered_at": now_ms, "escalate_at": escalate_at,
            "escalate_to": None if route is None else route.escalate_to, "escalation": None, "parent": parent,
            "resolved_at": None,
        }
        pkey = _page_key(tenant, key)
        self._store.put(pkey, rec)
        if escalate_at is not None:
            self._escalations[pkey] = escalate_at
        self.stats["triggered"] += 1
        return _page("trigger", rec, summary, details, now_ms), key

    def _resolve(self, pkey: str, page: dict[str, Any], now_ms: int, reason: str) -> list[Page]:
        page["resolved_at"] = now_ms
        page["waits"] = []
        self._store.put(pkey, page)
        self._escalations.pop(pkey, None)
        heapq.heappush(self._expiry, (now_ms + self._retention_ms, pkey))
        self.stats["resolved"] += 1
        details = {**page["details"], "resolved_at": now_ms, "resolved_reason": reason}
        out = [_page("resolve", page, f"Resolved: {page['summary']}", details, now_ms)]
        if page["escalation"] is not None:
            ekey = _page_key(page["tenant_id"], page["escalation"])
            esc = self._store.get(ekey)
            if esc is not None and esc["resolved_at"] is None:
                out += self._resolve(ekey, esc, now_ms, reason)
        return out

    def _escalate_due(self, now_ms: int) -> list[Page]:
        out: list[Page] = []
        for pkey, due in sorted(self._escalations.items(), key=lambda kv: (kv[1], kv[0])):
            if due > now_ms:
                continue
            page = self._store.get(pkey)
            if page is None or page["resolved_at"] is not None or page["escalation"] is not None:
                del self._escalations[pkey]
                continue
            tenant = page["tenant_id"]
            if page["kind"] != "stall" and page["waits"] and all(
                (tenant, ch) in self._stalled for ch in self._page_wait_channels(page)
            ):
                continue  # inhibited: nobody can answer until the feed is back; re-checked next tick
            del self._escalations[pkey]
            open_s = (now_ms - page["triggered_at"]) // 1000
            details = {**page["details"], "kind": KIND_ESCALATION, "escalates": page["dedup_key"],
                       "escalated_kind": page["details"].get("kind"), "open_s": open_s}
            esc, ekey = self._trigger(
                f"{page['dedup_key']}:escalated", "escalation", tenant, page["team"], page["channel"], "critical",
                page["escalate_to"], f"Escalated (open {open_s}s): {page['summary']}", details, now_ms, [],
                None, parent=page["dedup_key"],
            )
            page["escalation"] = ekey
            self._store.put(pkey, page)
            out.append(esc)
        return out

    def _page_wait_channels(self, page: dict[str, Any]) -> set[str]:
        chans: set[str] = set()
        for wid in page["waits"]:
            w = self._store.get(_wait_key(page["tenant_id"], wid))
            if w is not None:
                chans.add(w["channel"])
        return chans

    # --- inhibition -------------------------------------------------------------------------
    def _ensure_channel(self, tenant: str, channel: str, now_ms: int) -> None:
        ckey = _chan_key(tenant, channel)
        if self._store.get(ckey) is None:
            self._store.put(ckey, _new_channel(tenant, channel, now_ms))

    def _check_stall(self, tenant: str, channel: str, now_ms: int) -> list[Page]:
        ckey = _chan_key(tenant, channel)
        ch = self._store.get(ckey)
        if ch is None:
            return []
        out: list[Page] = []
        if ch["stalled"]:
            if ch["last_input"] <= ch["stall_input"]:
                return []
            out += self._unstall(ckey, ch, now_ms)
        limit = self.config.stall_after_ms(channel)
        if limit is None or not self._open.get((tenant, channel)) or now_ms - ch["last_input"] < limit:
            return out
        # stalled: hold this channel's pending waits, page once for the channel
        opened = sorted(self._open[(tenant, channel)])
        held: list[str] = []
        for wid in opened:
            w = self._store.get(_wait_key(tenant, wid))
            if w is not None and w["where"] == "window":
                self._drop_from_window(w)
                w["where"] = "held"
                self._store.put(_wait_key(tenant, wid), w)
                held.append(wid)
        self.stats["held"] += len(held)
        silent_s = (now_ms - ch["last_input"]) // 1000
        route = self.config.route(None)
        details = {"kind": KIND_STALL, "tenant_id": tenant, "channel": channel, "last_input_at": ch["last_input"],
                   "silent_s": silent_s, "open_waits": len(opened)}
        summary = (f"Feed stalled [{tenant}] {channel}: no input since {_iso(ch['last_input'])} ({silent_s}s) while "
                   f"{len(opened)} conversation(s) wait; their SLA pages are held")
        page, key = self._trigger(
            f"stall:{tenant}:{channel}:{ch['last_input']}", "stall", tenant, None, channel, "critical",
            route.notifier, summary, details, now_ms, [], route,
        )
        ch.update(stalled=True, stall_input=ch["last_input"], stall_key=key, held=held)
        self._store.put(ckey, ch)
        self._stalled.add((tenant, channel))
        out.append(page)
        return out

    def _unstall(self, ckey: str, ch: dict[str, Any], now_ms: int) -> list[Page]:
        """Input resumed: resolve the stall page, send held waits that are still open on their way."""
        tenant = ch["tenant_id"]
        out: list[Page] = []
        pkey = _page_key(tenant, ch["stall_key"])
        page = self._store.get(pkey)
        if page is not None and page["resolved_at"] is None:
            out += self._resolve(pkey, page, now_ms, "input resumed")
        held = ch["held"]
        ch.update(stalled=False, stall_input=None, stall_key=None, held=[])
        self._store.put(ckey, ch)
        self._stalled.discard((tenant, ch["channel"]))
        for wid in held:
            w = self._store.get(_wait_key(tenant, wid))
            if w is not None and w["where"] == "held":
                self._enqueue(w, now_ms)
        return out

    # --- housekeeping -----------------------------------------------------------------------
    def _expire(self, now_ms: int) -> None:
        exp = self._expiry
        retention = self._retention_ms
        while exp and exp[0][0] <= now_ms:
            _, key = heapq.heappop(exp)
            v = self._store.get(key)
            if v is None:
                continue
            ended = v.get("done_at") if v.get("k") == "wait" else v.get("resolved_at")
            if ended is not None and ended + retention <= now_ms:
                self._store.delete(key)

    @property
    def _window_ms(self) -> int:
        return int(self.config.group_window_s * 1000)

    @property
    def _retention_ms(self) -> int:
        return int(self.config.retention_s * 1000)


def _page(action: str, rec: Mapping[str, Any], summary: str, details: dict[str, Any], at: int) -> Page:
    """A page with its own copy of ``details``: the store owns the stored one (see state.py)."""
    return Page(
        action=action, dedup_key=rec["dedup_key"], notifier=rec["notifier"], tenant_id=rec["tenant_id"],
        team=rec["team"], channel=rec["channel"], severity=rec["severity"], summary=summary,
        details=copy.deepcopy(details), at=at,
    )


def _new_channel(tenant: str, channel: str, last_input: int) -> dict[str, Any]:
    return {"k": "channel", "tenant_id": tenant, "channel": channel, "last_input": last_input, "stalled": False,
            "stall_input": None, "stall_key": None, "held": []}


def _wait_key(tenant: str, wait_id: str) -> str:
    return f"{tenant}|pw|{wait_id}"


def _page_key(tenant: str, dedup_key: str) -> str:
    return f"{tenant}|pp|{dedup_key}"


def _window_key(tenant: str, severity: str, team: str | None) -> str:
    return f"{tenant}|pg|{severity}|{'*' if team is None else '=' + team}"


def _chan_key(tenant: str, channel: str) -> str:
    return f"{tenant}|pc|{channel}"


def _iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, tz=UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _is_number(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool) and v == v
