"""Identity graph: which identifiers of a tenant belong to the same person.

Why a union of identifiers rather than a probabilistic match: the inputs are exact identifiers
(already normalised by the validator), and an attribution pipeline needs merges it can explain.
Every non-junk identifier seen together in one event belongs to one person; two known persons
seen together are merged (union), unless a guard says the link is more likely wrong than right
(shared devices, forwarded emails, scripted test traffic). Refusals are published on
``identity.merges`` so analysts can see and audit them.

Person ids are stable and deterministic, so a replay of the same input yields the same ids:

* a new person is named after the strongest identifier of its founding event,
  ``"p_" + blake2b(f"{tenant}|{type}|{value}", digest_size=8)``, strength in the order of
  :data:`streams.core.model.IDENTITY_TYPES` (unknown types rank last, by name); for a tenant
  whose identifiers are pseudonymised the hash is keyed with a secret per-tenant key
  (``streams/core/pseudonym.py``), so the id does not give the identifier away;
* on a merge the lexicographically smaller person id survives; the other is gone for good: all
  its identifiers are re-pointed to the survivor eagerly and its record is deleted. No tombstone
  is kept because none is needed: identifiers are never detached, and a person's founding
  identifier is always attached when it is founded, so the identifier that derives a dead id is
  known (pointing at the survivor) and can never found that id again;
* an event whose identifiers are all junk gets a per-event person
  ``"p_" + blake2b(f"{tenant}|event|{event_id}")`` and nothing is stored (it links nothing).

Person ids therefore depend on arrival order in one way: which event founds a person. Two
orders of the same events always give the same *partition* of identifiers into persons (when
no guard fires), but the name of a group can differ, e.g. ``{anon a}`` then ``{anon a, phone x}``
names it after ``anon a``, the reverse order after ``phone x``. The name is order-independent
when every event of a group carries the same strongest identifier (e.g. a logged-in user_id).
Within one tenant the order is the partition order of ``touchpoints.valid``, so a replay
reproduces the ids exactly.

Guards (each refusal is a :class:`MergeEvent` with ``status="refused"``):

* ``conflicting_<type>``: both persons hold a value of the same strong type. Every identifier
  belongs to exactly one person, so the two value sets are always disjoint: two persons with a
  user_id (or email, ...) each are two people. A person may still hold several emails: a new,
  not yet known email seen with a known person is attached (subject to the cap).
* ``cap_exceeded``: a person would hold more than ``max_ids_per_type`` identifiers of one type
  (a kiosk or a bot reusing one device for thousands of users). An unknown identifier over the
  cap is not attached (``ignored``) and so links nothing; a merge over the cap is refused.
* junk values (``"null"``, ``"test"``, all-zero ids, ...) never link anything (``ignored``).

Pairwise order with 3+ persons in one event: persons are taken in the order of their strongest
identifier in the event; the first is the event's primary person and each next one is merged
into it (the survivor becoming the new primary) or refused. The event is assigned the primary,
i.e. the person of its strongest known identifier, so a refused link never moves the event
away from, say, the user_id it carries. New identifiers attach to the primary.

Store layout (one writer per tenant; every key starts with ``{tenant}|``):

* ``{tenant}|i|{type}|{value}`` → person id (str)
* ``{tenant}|p|{person_id}`` → ``{type: [sorted values]}``

There is no in-memory index, so nothing to rebuild after a changelog recovery.
"""

from __future__ import annotations

from bisect import insort
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from hashlib import blake2b
from typing import Any

from streams.core.model import IDENTITY_TYPES
from streams.core.state import Store

_RANK: dict[str, int] = {t: i for i, t in enumerate(IDENTITY_TYPES)}
#: Characters of placeholder ids such as "00000000-0000-0000-0000-000000000000" or "+0000000".
_ZEROISH = "0-+"


def _digest(text: str, key: bytes | None = None) -> str:
    if key:
        return "p_" + blake2b(text.encode(), digest_size=8, key=key).hexdigest()
    return "p_" + blake2b(text.encode(), digest_size=8).hexdigest()


def person_id_for(tenant_id: str, id_type: str, value: str, key: bytes | None = None) -> str:
    """The id a person founded by this identifier gets (exposed so tests and tools can predict it).

    ``key``: the tenant's person-id key when its identifiers are pseudonymised
    (:meth:`streams.core.pseudonym.Pseudonymiser.person_key`); an unkeyed hash of an email or
    phone could be reversed by enumerating candidates, a keyed one cannot.
    """
    return _digest(f"{tenant_id}|{id_type}|{value}", key)


def event_person_id(tenant_id: str, event_id: str) -> str:
    """Throw-away person of an all-junk event: deterministic, never stored, links nothing."""
    return _digest(f"{tenant_id}|event|{event_id}")


def _ordered_types(types: Mapping[str, Any] | frozenset[str]) -> list[str]:
    """Strongest first; unknown types after the known ones, by name, so the order is total."""
    known = [t for t in IDENTITY_TYPES if t in types]
    if len(known) != len(types):
        known.extend(sorted(t for t in types if t not in _RANK))
    return known


@dataclass(frozen=True, slots=True)
class IdentityConfig:
    strong_types: frozenset[str] = frozenset({"user_id", "crm_contact_id", "email"})
    max_ids_per_type: int = 20
    # Compared case-insensitively after strip; ids made only of zeros, dashes and plus are junk too.
    junk_values: frozenset[str] = frozenset(
        {
            "null",
            "none",
            "undefined",
            "nan",
            "0",
            "-1",
            "anonymous",
            "unknown",
            "n/a",
            "na",
            "test",
            "guest",
            "",
        }
    )


@dataclass(slots=True)
class MergeEvent:
    """One record of topic ``identity.merges``; refused merges are published too, for audit."""

    tenant_id: str
    status: str  # "merged" | "refused"
    from_person_id: str  # the absorbed person (refused: the one that would have been absorbed)
    into_person_id: str  # the survivor (refused: the one that would have survived)
    reason: str  # "co_occurrence" when merged; the guard's reason when refused
    identifier_type: str  # merged: type of the identifier that linked; refused: the guarded type
    event_id: str
    at: int  # epoch ms of the event that caused it

    def to_dict(self) -> dict[str, Any]:
        return {
            "tenant_id": self.tenant_id,
            "status": self.status,
            "from_person_id": self.from_person_id,
            "into_person_id": self.into_person_id,
            "reason": self.reason,
            "identifier_type": self.identifier_type,
            "event_id": self.event_id,
            "at": self.at,
        }


@dataclass(slots=True)
class Resolution:
    person_id: str
    merges: list[MergeEvent]
    ignored: list[tuple[str, str]]  # (identifier_type, "junk_value" | "cap_exceeded")


class IdentityGraph:
    __slots__ = ("_cap", "_founding_key", "_junk", "_store", "_strong", "config")

    def __init__(
        self,
        store: Store,
        config: IdentityConfig | None = None,
        person_key: Callable[[str], bytes | None] | None = None,
    ) -> None:
        """``person_key(tenant)``: key of the founding-id hash for pseudonymised tenants (None: unkeyed)."""
        self._store = store
        self._founding_key = person_key
        self.config = cfg = config or IdentityConfig()
        self._junk = frozenset(v.strip().lower() for v in cfg.junk_values)
        self._strong = tuple(_ordered_types(cfg.strong_types))
        self._cap = cfg.max_ids_per_type

    # --- keys ---
    @staticmethod
    def _id_key(tenant_id: str, id_type: str, value: str) -> str:
        return f"{tenant_id}|i|{id_type}|{value}"

    @staticmethod
    def _person_key(tenant_id: str, person_id: str) -> str:
        return f"{tenant_id}|p|{person_id}"

    def is_junk(self, value: str) -> bool:
        """Placeholder values would glue unrelated people into one giant person, so they never link."""
        v = value.strip().lower()
        return v in self._junk or not v.strip(_ZEROISH)

    # --- queries ---
    def person_of(self, tenant_id: str, id_type: str, value: str) -> str | None:
        if self.is_junk(value):
            return None
        return self._store.get(self._id_key(tenant_id, id_type, value))

    def identifiers_of(self, tenant_id: str, person_id: str) -> dict[str, list[str]]:
        rec = self._store.get(self._person_key(tenant_id, person_id))
        if not rec:
            return {}
        return {t: list(rec[t]) for t in _ordered_types(rec) if rec[t]}

    # --- the event path ---
    def resolve(self, tenant_id: str, identities: Mapping[str, str], event_id: str, at_ms: int) -> Resolution:
        """Link the event's identifiers and return the person the event belongs to.

        Writes only what changed: an event whose identifiers are all known to one person costs
        reads only, so the common case adds no changelog traffic.
        """
        ignored: list[tuple[str, str]] = []
        valid: list[tuple[str, str]] = []
        for id_type in _ordered_types(identities):
            value = identities[id_type]
            if self.is_junk(value):
                ignored.append((id_type, "junk_value"))
            else:
                valid.append((id_type, value))
        if not valid:
            return Resolution(event_person_id(tenant_id, event_id), [], ignored)

        store = self._store
        owners: list[str | None] = [store.get(self._id_key(tenant_id, t, v)) for t, v in valid]
        # Distinct known persons, in the order of their strongest identifier in this event.
        persons: list[str] = []
        link_types: list[str] = []
        for (id_type, _), owner in zip(valid, owners, strict=True):
            if owner is not None and owner not in persons:
                persons.append(owner)
                link_types.append(id_type)

        merges: list[MergeEvent] = []
        changed = False
        if not persons:
            pid = self._new_person_id(tenant_id, *valid[0])
            rec: dict[str, list[str]] = {}
        else:
            pid = persons[0]
            rec = store.get(self._person_key(tenant_id, pid)) or {}
            for other, link_type in zip(persons[1:], link_types[1:], strict=True):
                orec = store.get(self._person_key(tenant_id, other)) or {}
                survivor, loser = (pid, other) if pid < other else (other, pid)
                refusal = self._guard(rec, orec)
                if refusal is not None:
                    reason, guarded_type = refusal
                    merges.append(
                        MergeEvent(
                            tenant_id, "refused", loser, survivor, reason, guarded_type, event_id, at_ms
                        )
                    )
                    continue
                srec, lrec = (rec, orec) if survivor == pid else (orec, rec)
                for id_type, values in lrec.items():
                    svalues = srec.setdefault(id_type, [])
                    for value in values:
                        insort(svalues, value)
                        store.put(self._id_key(tenant_id, id_type, value), survivor)
                store.delete(self._person_key(tenant_id, loser))
                merges.append(
                    MergeEvent(
                        tenant_id, "merged", loser, survivor, "co_occurrence", link_type, event_id, at_ms
                    )
                )
                pid, rec, changed = survivor, srec, True

        cap = self._cap
        for (id_type, value), owner in zip(valid, owners, strict=True):
            if owner is not None:
                continue
            values = rec.get(id_type)
            if len(values or ()) >= cap:
                ignored.append((id_type, "cap_exceeded"))
                continue
            if values is None:
                values = rec[id_type] = []
            insort(values, value)
            store.put(self._id_key(tenant_id, id_type, value), pid)
            changed = True
        if changed:
            store.put(self._person_key(tenant_id, pid), rec)
        return Resolution(pid, merges, ignored)

    def _guard(self, a: dict[str, list[str]], b: dict[str, list[str]]) -> tuple[str, str] | None:
        """Why two persons must not merge, as (reason, identifier type); None if they may."""
        for id_type in self._strong:
            # Identifiers have one owner, so two non-empty value sets are disjoint: a conflict.
            if a.get(id_type) and b.get(id_type):
                return f"conflicting_{id_type}", id_type
        cap = self._cap
        for id_type in _ordered_types(b):
            if len(a.get(id_type, ())) + len(b[id_type]) > cap:
                return "cap_exceeded", id_type
        return None

    def _new_person_id(self, tenant_id: str, id_type: str, value: str) -> str:
        """Founding id; a suffix only on a 64-bit hash collision with a live person (never in practice)."""
        key = self._founding_key(tenant_id) if self._founding_key is not None else None
        base = pid = person_id_for(tenant_id, id_type, value, key)
        n = 1
        while self._store.get(self._person_key(tenant_id, pid)) is not None:
            n += 1
            pid = f"{base}_{n}"
        return pid
