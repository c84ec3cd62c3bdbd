"""Pseudonymised identifiers: what leaves the worker carries no raw email or phone of a configured tenant.

Where it applies. Inside the processing stage identifiers stay raw: the identity graph joins on
them (``touchpoints.valid``, the state changelog and the worker's memory hold raw values; they
are internal, see README "Security"). Right after identity resolution,
:meth:`streams.core.pipeline.Pipeline.process` (live and ``touchstream process`` alike) turns
the event into :meth:`Pseudonymiser.public_touchpoint` once, and everything after uses that:
the enriched record, the sessionizer, the funnel. ClickHouse rows are built from the emitted
records by the sink, so they inherit it. Per output:

* ``touchpoints.enriched`` (and ClickHouse ``touchpoints.identities``): every identifier of a
  configured type is replaced by its pseudonym; any occurrence of those raw values inside the
  free-form objects of the same record (``properties``, ``page``, ``campaign``, ``value``,
  ``extra``, e.g. ``properties.email`` of a form) is replaced too (emails case-insensitively,
  phones as ``+digits`` and as bare digits). Values shorter than :data:`MIN_SCRUB_LEN` are
  not searched for in free text, and an identifier written in another spelling (``0151 234
  ...``) is not recognised there: producers must not put personal data in free-form fields.
* ``sessions.closed`` keeps a session's first and last page and campaign, and the funnel and
  anomaly records the campaign name: those come from the same public touchpoint, so what the
  sessionizer and the funnel keep in state is already clean.
* ``identity.merges``, ``sessions.closed`` and the SLA/funnel/anomaly records carry no
  identifier values, only person/session ids. Those ids are hashes of the founding identifier,
  and an *unkeyed* hash of a phone number is reversible by enumerating numbers; so for a
  configured tenant the identity graph derives new person ids with a keyed hash
  (:meth:`Pseudonymiser.person_key`), and session ids (hashes of the person id) follow.
* The dead-letter topic keeps the original bytes (replay needs them); the live board and the
  CLI queries show no identifier values.

The pseudonym. ``"h:" + hex(HMAC-SHA256(k, f"{tenant}|{domain}|{value}"))[:32]`` with ``k``
derived from the secret salt (``TOUCHSTREAM_PSEUDONYM_SALT``), ``value`` the normalised
identifier (emails lower-cased, phones ``+digits``: the validator's normal form, so spellings
of one number give one pseudonym). Properties:

* deterministic: same salt + tenant + value → same pseudonym, so downstream joins and
  distinct counts still work; a salt change starts new pseudonyms (a rotation is a re-keying).
* tenant-separated: the tenant id is part of the keyed input (tenant ids cannot contain ``|``,
  the contract refuses them, so the encoding is unambiguous), so one person's email at two
  tenants gives two unrelated pseudonyms and tenants cannot be joined on it.
* ``phone`` and ``whatsapp_id`` share the domain ``phone`` (a WhatsApp id *is* the number), so
  a number has one pseudonym in both fields and the two stay joinable; every other type is its
  own domain.
* not reversible without the key: emails and phones have little entropy (all 10^10 numbers
  of a country can be hashed in minutes), so an unkeyed hash would be a lookup table away from
  the raw value. HMAC with a secret of at least :data:`MIN_SALT_LEN` characters is a PRF;
  without the salt the pseudonyms reveal only equality.
* length: 32 hex characters = 128 bits. The birthday bound gives a collision probability of
  about n² / 2^129 for n distinct identifiers of one (tenant, domain): 1.5e-21 for a billion,
  so two people never share a pseudonym in practice; 34 characters per value in storage.
"""

from __future__ import annotations

import hmac
import re
from collections.abc import Iterable, Mapping
from dataclasses import replace
from typing import Any

from streams.core.model import IDENTITY_TYPES, Touchpoint

PREFIX = "h:"
#: Hex characters kept from the HMAC: 128 bits (collision reasoning in the module docstring).
HEX_LEN = 32
#: Shortest accepted salt when pseudonymisation is on (a short secret is guessable).
MIN_SALT_LEN = 16
DEFAULT_TYPES: tuple[str, ...] = ("email", "phone", "whatsapp_id")
#: Names accepted in TOUCHSTREAM_PSEUDONYM_TYPES besides the identity types themselves.
TYPE_ALIASES: dict[str, str] = {"whatsapp": "whatsapp_id", "messenger": "messenger_psid", "psid": "messenger_psid"}
#: Identifier types that name the same thing hash in one domain (a WhatsApp id is a phone number).
DOMAINS: dict[str, str] = {"whatsapp_id": "phone"}
#: Raw values shorter than this are not searched for inside free-form fields (they would match ordinary text).
MIN_SCRUB_LEN = 6
#: Free-form objects of an enriched record that are searched for the record's own raw identifiers.
FREE_FORM: tuple[str, ...] = ("properties", "page", "campaign", "value", "extra")
_PHONE_DOMAIN = "phone"


def parse_types(raw: str | Iterable[str]) -> tuple[str, ...]:
    """``"email, phone,whatsapp"`` → canonical identity types (sorted, unique); unknown names raise."""
    names = raw.split(",") if isinstance(raw, str) else list(raw)
    out: set[str] = set()
    for name in names:
        n = name.strip().lower()
        if not n:
            continue
        n = TYPE_ALIASES.get(n, n)
        if n not in IDENTITY_TYPES:
            known = ", ".join((*IDENTITY_TYPES, *TYPE_ALIASES))
            raise ValueError(f"unknown identifier type {name.strip()!r} (one of {known})")
        out.add(n)
    return tuple(sorted(out))


def parse_tenants(raw: str | None) -> tuple[str, ...]:
    """``"acme, globex"`` → ("acme", "globex"); ``"*"`` → ("*",) = every tenant; empty → off."""
    if not raw:
        return ()
    names = tuple(sorted({t.strip() for t in raw.split(",") if t.strip()}))
    return ("*",) if "*" in names else names


class Pseudonymiser:
    """Keyed, per-tenant pseudonyms of identifier values; immutable once built."""

    __slots__ = ("_all", "_key", "_person_keys", "_person_root", "tenants", "types")

    def __init__(self, salt: str | bytes, tenants: Iterable[str] = ("*",), types: Iterable[str] = DEFAULT_TYPES):
        secret = salt.encode() if isinstance(salt, str) else bytes(salt)
        if len(secret) < MIN_SALT_LEN:
            raise ValueError(f"the pseudonym salt must be at least {MIN_SALT_LEN} characters")
        # Two sub-keys with distinct labels: a pseudonym can never equal a person-id key.
        self._key = hmac.digest(secret, b"touchstream pseudonym v1", "sha256")
        self._person_root = hmac.digest(secret, b"touchstream person id v1", "sha256")
        self.tenants = frozenset(tenants)
        self._all = "*" in self.tenants
        self.types = frozenset(parse_types(types))
        self._person_keys: dict[str, bytes] = {}

    def __repr__(self) -> str:  # never the key
        tenants = "*" if self._all else ",".join(sorted(self.tenants))
        return f"Pseudonymiser(tenants={tenants!r}, types={','.join(sorted(self.types))!r})"

    @classmethod
    def configured(
        cls, tenants: Iterable[str], salt: str | None, types: Iterable[str] = DEFAULT_TYPES
    ) -> Pseudonymiser | None:
        """From settings values: None when no tenant is configured (the feature is off)."""
        tenants = tuple(tenants)
        if not tenants:
            return None
        if not salt:
            raise ValueError("TOUCHSTREAM_PSEUDONYM_SALT must be set when TOUCHSTREAM_PSEUDONYMISE is")
        return cls(salt, tenants, types)

    # --- what and whom ---
    def applies(self, tenant_id: str) -> bool:
        return self._all or tenant_id in self.tenants

    def pseudonym(self, tenant_id: str, id_type: str, value: str) -> str:
        """The pseudonym of one normalised identifier (also for tenants not configured: a pure function)."""
        domain = DOMAINS.get(id_type, id_type)
        mac = hmac.digest(self._key, f"{tenant_id}|{domain}|{value}".encode(), "sha256")
        return PREFIX + mac.hex()[:HEX_LEN]

    def person_key(self, tenant_id: str) -> bytes | None:
        """Key for the identity graph's person-id hash of a configured tenant; None = unkeyed (as before)."""
        if not self.applies(tenant_id):
            return None
        key = self._person_keys.get(tenant_id)
        if key is None:
            key = self._person_keys[tenant_id] = hmac.digest(self._person_root, tenant_id.encode(), "sha256")
        return key

    # --- records ---
    def _swaps(self, tenant: str, ids: Mapping[str, Any]) -> tuple[dict[str, Any], list[tuple[str, str, str]]]:
        """(identities with pseudonyms, [(domain, raw, pseudonym)]) for a configured tenant."""
        types = self.types
        swaps: list[tuple[str, str, str]] = []
        new_ids = dict(ids)
        for t, v in ids.items():
            if t in types and isinstance(v, str):
                p = new_ids[t] = self.pseudonym(tenant, t, v)
                swaps.append((DOMAINS.get(t, t), v, p))
        return new_ids, swaps

    def _pseudonymised(
        self, tenant: str, ids: Mapping[str, Any], free: Mapping[str, Any]
    ) -> tuple[dict[str, Any], dict[str, Any]] | None:
        """(identities, scrubbed free-form members) of one event of a configured tenant; ``None``
        when the event carries nothing of its own to hide."""
        new_ids, swaps = self._swaps(tenant, ids)
        if not swaps:
            return None
        needles = _needles(swaps)
        scrubbed = {name: _scrub(v, needles) for name, v in free.items() if v is not None} if needles else {}
        return new_ids, scrubbed

    def public_touchpoint(self, tp: Touchpoint) -> Touchpoint:
        """The touchpoint as everything after identity resolution may use it: the enriched
        record, and what sessions and the funnel keep in state and emit later (a session's
        first/last page, the funnel's and anomalies' campaign). Identities are pseudonyms, raw
        identifier values in the free-form members are replaced. The same object when nothing
        changes. The identity graph itself joins on the raw values, before this.
        """
        if not tp.identities or not self.applies(tp.tenant_id):
            return tp
        res = self._pseudonymised(tp.tenant_id, tp.identities, {name: getattr(tp, name) for name in FREE_FORM})
        if res is None:
            return tp
        ids, scrubbed = res
        return replace(tp, identities=ids, **scrubbed)

    def enriched(self, rec: dict[str, Any]) -> dict[str, Any]:
        """An enriched touchpoint record as it may leave the worker: the same dict when nothing changes."""
        tenant = rec.get("tenant_id")
        ids = rec.get("identities")
        if not ids or not isinstance(tenant, str) or not self.applies(tenant):
            return rec
        res = self._pseudonymised(tenant, ids, {name: rec.get(name) for name in FREE_FORM})
        if res is None:
            return rec
        out = dict(rec)
        out["identities"], scrubbed = res
        out.update(scrubbed)
        return out


def _needles(swaps: list[tuple[str, str, str]]) -> list[tuple[str, str]]:
    """(lower-cased raw value, pseudonym) to search free text for, longest first (so ``+4915...`` is
    replaced before its bare-digit suffix could split it)."""
    out: list[tuple[str, str]] = []
    for domain, raw, pseud in swaps:
        for needle in (raw, raw[1:]) if domain == _PHONE_DOMAIN and raw.startswith("+") else (raw,):
            if len(needle) >= MIN_SCRUB_LEN:
                out.append((needle.lower(), pseud))
    out.sort(key=lambda x: -len(x[0]))
    return out


def _scrub(v: Any, needles: list[tuple[str, str]]) -> Any:
    """Copy of a JSON value with every raw identifier occurrence in its strings replaced.

    The common case (no occurrence) costs one ``lower()`` and ``in`` test per string; a regex is
    only compiled for a string that contains a value."""
    if isinstance(v, str):
        low = v.lower()
        for needle, pseud in needles:
            if needle in low:
                v = re.sub(re.escape(needle), pseud, v, flags=re.IGNORECASE)
                low = v.lower()
                if needle in low:  # a case mapping the regex does not share (rare Unicode): drop the text
                    return pseud
        return v
    if isinstance(v, dict):
        return {_scrub(k, needles): _scrub(x, needles) for k, x in v.items()}
    if isinstance(v, list):
        return [_scrub(x, needles) for x in v]
    return v
