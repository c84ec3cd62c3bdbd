"""Event-time sessionization per person: runs of touchpoints with no gap above the inactivity.

Why event time: touchpoints arrive out of order (mobile SDK batches, webhook retries, CRM
syncs), and a session is a statement about when the person was active, not about when we
heard of it. Two events whose ``occurred_at`` differ by *exactly* ``inactivity_ms`` are in the
same session; one millisecond more splits them.

Watermark: the caller keeps a per-tenant watermark ``W`` (max ``occurred_at`` − allowed
lateness, plus its processing-time fallback) and calls :meth:`Sessionizer.advance`. ``W`` is
inclusive: a session closes once ``ended_at + inactivity_ms <= W``, and an event with
``occurred_at <= W`` (the last ``W`` given for its tenant) is *late*, because a session it would
have joined may already be closed and published. Events after ``W`` are placed exactly, so
delivery order within the allowed lateness does not change the sessions.

Placement of an event at ``t`` for a person:

* it joins every open session whose extended range ``[started_at - gap, ended_at + gap]``
  contains ``t``; when it bridges two, they join into the earlier one (its id survives, the
  other's id goes to ``merged_session_ids``);
* otherwise, if it is late and the person has an open session, it is attached to the latest
  one (``late=True``): it counts in ``touchpoints``, ``late_events``, ``channels`` and
  ``max_stage`` (a late conversion still converts), but does not stretch ``started_at`` /
  ``ended_at`` nor change first/last touch, which would otherwise claim activity at times the
  session's own events contradict;
* otherwise it starts a new session (also when late and nothing is open: a closed session is
  never re-opened, since it was already published; the new record has ``late_events`` ≥ 1).

An identity merge (:meth:`Sessionizer.merge_persons`) moves the absorbed person's open sessions
to the survivor; sessions that overlap or are within the inactivity gap join (earlier one
survives). Moved sessions keep their ids: events already published carry them.

``session_id = "s_" + blake2b(f"{person_id}|{first_event_id}|{first_occurred_at}")`` of the
event that opened it (by arrival: the id is published with that event, before any earlier
event may arrive). First/last touch are by event time, ties broken by event id, so they do not
depend on arrival order.

Store layout (every key starts with ``{tenant}|``, so tenant ids must not contain ``|``):

* ``{tenant}|p|{person_id}`` → list of the person's open sessions, sorted by start, each
  ``{"id", "start", "end", "n", "ch": [sorted channels], "ft": touch, "lt": touch, "stage",
  "merged": [ids], "late": count}`` with touch = ``[t, event_id, channel, campaign, page]``.
  One key per person keeps the per-event cost at one get and one put.
* ``{tenant}|w`` → the last watermark given to :meth:`advance` (decides lateness after a restart).

In memory only (rebuilt by :meth:`Sessionizer.rebuild`): per tenant a heap of
``(due, person_id)`` with ``due <= min(end) + gap`` of the person's open sessions, one live
entry per person (``_due``), and the open-session count.
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass
from hashlib import blake2b
from sys import intern
from typing import Any

from streams.core.model import Touchpoint
from streams.core.stages import is_converted, stage_index
from streams.core.state import Store

Session = dict[str, Any]


@dataclass(frozen=True, slots=True)
class SessionConfig:
    inactivity_ms: int = 30 * 60_000
    allowed_lateness_ms: int = 5 * 60_000


@dataclass(slots=True)
class Assignment:
    session_id: str
    session_seq: int  # 1-based arrival index within the session (after joins: continues the sum)
    late: bool  # arrived after allowed lateness (at or before the tenant's watermark)


def session_id_for(person_id: str, event_id: str, occurred_at: int) -> str:
    return "s_" + blake2b(f"{person_id}|{event_id}|{occurred_at}".encode(), digest_size=8).hexdigest()


def _touch(tp: Touchpoint) -> list[Any]:
    """A session's first or last touch. Campaign names and pages repeat across millions of
    sessions: each is kept as one shared string (``sys.intern``; CPython frees an interned string
    once nothing refers to it), not one copy per session."""
    page = tp.page
    campaign = tp.campaign_name
    url = None if page is None else page.get("url")
    return [
        tp.occurred_at,
        tp.event_id,
        tp.channel,
        intern(campaign) if type(campaign) is str else campaign,
        intern(url) if type(url) is str else url,
    ]


def _touch_dict(touch: list[Any]) -> dict[str, Any]:
    return {"channel": touch[2], "campaign": touch[3], "page": touch[4]}


def _absorb(into: Session, other: Session) -> None:
    """Join ``other`` into ``into`` (whose id survives)."""
    if other["start"] < into["start"]:
        into["start"] = other["start"]
    if other["end"] > into["end"]:
        into["end"] = other["end"]
    into["n"] += other["n"]
    into["late"] += other["late"]
    if other["ch"] != into["ch"]:
        into["ch"] = sorted(set(into["ch"]).union(other["ch"]))
    oft, olt = other["ft"], other["lt"]
    if (oft[0], oft[1]) < (into["ft"][0], into["ft"][1]):
        into["ft"] = oft
    if (olt[0], olt[1]) > (into["lt"][0], into["lt"][1]):
        into["lt"] = olt
    if stage_index(other["stage"]) > stage_index(into["stage"]):
        into["stage"] = other["stage"]
    into["merged"].append(other["id"])
    into["merged"].extend(other["merged"])


def _record(tenant_id: str, person_id: str, s: Session) -> dict[str, Any]:
    return {
        "session_id": s["id"],
        "tenant_id": tenant_id,
        "person_id": person_id,
        "started_at": s["start"],
        "ended_at": s["end"],
        "touchpoints": s["n"],
        "channels": list(s["ch"]),
        "first_touch": _touch_dict(s["ft"]),
        "last_touch": _touch_dict(s["lt"]),
        "max_stage": s["stage"],
        "converted": is_converted(s["stage"]),
        "merged_session_ids": sorted(s["merged"]),
        "late_events": s["late"],
    }


def _session_order(s: Session) -> tuple[int, str]:
    return s["start"], s["id"]


def _record_order(r: dict[str, Any]) -> tuple[str, int, str]:
    return r["tenant_id"], r["ended_at"], r["session_id"]


class Sessionizer:
    __slots__ = ("_due", "_gap", "_heaps", "_open", "_store", "config")

    def __init__(self, store: Store, config: SessionConfig | None = None) -> None:
        self._store = store
        self.config = config or SessionConfig()
        self._gap = self.config.inactivity_ms
        self._heaps: dict[str, list[tuple[int, str]]] = {}  # tenant -> heap of (due, person_id)
        self._due: dict[str, int] = {}  # person key -> due of its live heap entry
        self._open = 0
        self.rebuild()

    @staticmethod
    def _pkey(tenant_id: str, person_id: str) -> str:
        return f"{tenant_id}|p|{person_id}"

    def _schedule(self, tenant_id: str, person_id: str, key: str, due: int) -> None:
        """Keep one live heap entry per person, never later than its earliest session's due."""
        cur = self._due.get(key)
        if cur is None or due < cur:
            self._due[key] = due
            heapq.heappush(self._heaps.setdefault(tenant_id, []), (due, person_id))

    # --- recovery ---
    def rebuild(self) -> None:
        """Re-derive the expiry heaps and the open count from the store (after changelog recovery)."""
        self._heaps.clear()
        self._due.clear()
        self._open = 0
        gap = self._gap
        for key, value in self._store.items():
            parts = key.split("|", 2)
            if len(parts) != 3 or parts[1] != "p" or not value:
                continue
            tenant_id, _, person_id = parts
            self._open += len(value)
            due = min(s["end"] for s in value) + gap
            self._due[key] = due
            self._heaps.setdefault(tenant_id, []).append((due, person_id))
        for heap in self._heaps.values():
            heapq.heapify(heap)

    # --- event path ---
    def observe(self, tp: Touchpoint, person_id: str, stage: str | None) -> Assignment:
        tenant_id = tp.tenant_id
        t = tp.occurred_at
        gap = self._gap
        store = self._store
        key = self._pkey(tenant_id, person_id)
        sessions: list[Session] | None = store.get(key)
        if sessions is None:
            sessions = []
        wm = store.get(f"{tenant_id}|w")
        late = wm is not None and t <= wm

        target: Session | None = None
        in_range = True
        for s in sessions:
            if s["start"] - gap <= t <= s["end"] + gap:
                if target is None:
                    target = s
                else:  # the event bridges two open sessions: the earlier one (first hit) survives
                    _absorb(target, s)
                    s["n"] = -1  # mark for removal below
        if target is not None:
            if len(sessions) > 1:
                before = len(sessions)
                sessions[:] = [s for s in sessions if s["n"] >= 0]
                self._open -= before - len(sessions)
        elif late and sessions:
            target = sessions[-1]  # sorted by start and > gap apart: the last one is the latest
            in_range = False
        else:
            touch = _touch(tp)
            target = {
                "id": session_id_for(person_id, tp.event_id, t),
                "start": t,
                "end": t,
                "n": 0,
                "ch": [],
                "ft": touch,
                "lt": touch,
                "stage": None,
                "merged": [],
                "late": 0,
            }
            sessions.append(target)
            if len(sessions) > 1:
                sessions.sort(key=_session_order)
            self._open += 1
            self._schedule(tenant_id, person_id, key, t + gap)

        if in_range:
            if t < target["start"]:
                target["start"] = t
            elif t > target["end"]:
                target["end"] = t
            ft, lt = target["ft"], target["lt"]
            if (t, tp.event_id) < (ft[0], ft[1]):
                target["ft"] = _touch(tp)
            elif (t, tp.event_id) > (lt[0], lt[1]):
                target["lt"] = _touch(tp)
        ch = target["ch"]
        if tp.channel not in ch:
            ch.append(tp.channel)
            ch.sort()
        if stage is not None and stage_index(stage) > stage_index(target["stage"]):
            target["stage"] = stage
        target["n"] += 1
        if late:
            target["late"] += 1
        store.put(key, sessions)
        return Assignment(target["id"], target["n"], late)

    def merge_persons(self, tenant_id: str, from_person_id: str, into_person_id: str) -> None:
        """Move the absorbed person's open sessions to the survivor, joining those within the gap."""
        if from_person_id == into_person_id:
            return
        store = self._store
        from_key = self._pkey(tenant_id, from_person_id)
        moved = store.get(from_key)
        if moved is None:
            return
        store.delete(from_key)
        self._due.pop(from_key, None)  # its heap entries become stale and are skipped
        if not moved:
            return
        into_key = self._pkey(tenant_id, into_person_id)
        combined = sorted([*moved, *(store.get(into_key) or ())], key=_session_order)
        joined = [combined[0]]
        gap = self._gap
        for s in combined[1:]:
            cur = joined[-1]
            if s["start"] - cur["end"] <= gap:
                _absorb(cur, s)
                self._open -= 1
            else:
                joined.append(s)
        store.put(into_key, joined)
        self._schedule(tenant_id, into_person_id, into_key, min(s["end"] for s in joined) + gap)

    # --- time path ---
    def advance(self, tenant_id: str, watermark_ms: int) -> list[dict[str, Any]]:
        """Close this tenant's sessions with ``ended_at + inactivity <= watermark``, oldest first."""
        store = self._store
        wkey = f"{tenant_id}|w"
        prev = store.get(wkey)
        if prev is None or watermark_ms > prev:
            store.put(wkey, watermark_ms)
        heap = self._heaps.get(tenant_id)
        out: list[dict[str, Any]] = []
        gap = self._gap
        while heap and heap[0][0] <= watermark_ms:
            due, person_id = heapq.heappop(heap)
            key = self._pkey(tenant_id, person_id)
            if self._due.get(key) != due:
                continue  # superseded by an earlier entry, or the person was merged away
            sessions = store.get(key)
            if not sessions:
                del self._due[key]
                continue
            keep: list[Session] = []
            for s in sessions:
                if s["end"] + gap <= watermark_ms:
                    out.append(_record(tenant_id, person_id, s))
                else:
                    keep.append(s)
            self._open -= len(sessions) - len(keep)
            if not keep:
                store.delete(key)
                del self._due[key]
                continue
            if len(keep) != len(sessions):
                store.put(key, keep)
            nxt = min(s["end"] for s in keep) + gap
            self._due[key] = nxt
            heapq.heappush(heap, (nxt, person_id))
        out.sort(key=_record_order)
        return out

    def close_all(self) -> list[dict[str, Any]]:
        """End of offline input: close every open session, ordered by (tenant, ended_at, session_id)."""
        store = self._store
        out: list[dict[str, Any]] = []
        for key, value in store.items():
            parts = key.split("|", 2)
            if len(parts) != 3 or parts[1] != "p":
                continue
            tenant_id, _, person_id = parts
            out.extend(_record(tenant_id, person_id, s) for s in value)
            store.delete(key)
        self._heaps.clear()
        self._due.clear()
        self._open = 0
        out.sort(key=_record_order)
        return out

    def open_sessions(self) -> int:
        return self._open
