"""Pseudonymisation: keyed, tenant-separated pseudonyms on every output; stitching still on raw values."""

from __future__ import annotations

import logging
import re
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from streams.core.contract import Rejection, validate
from streams.core.identity import person_id_for
from streams.core.pipeline import Outputs, Pipeline, PipelineConfig
from streams.core.pseudonym import HEX_LEN, MIN_SALT_LEN, Pseudonymiser, parse_tenants, parse_types
from streams.logs import Redact
from streams.settings import Settings

SALT = "s3cret-salt-for-tests-only"
T0 = 1_767_225_600_000  # 2026-01-01T00:00:00Z
PSEUDONYM = re.compile(rf"^h:[0-9a-f]{{{HEX_LEN}}}$")


def iso(ms: int) -> str:
    from streams.core.contract import format_timestamp

    return format_timestamp(ms)


def tp(tenant: str, event_id: str, at: int, identities: dict[str, Any], **extra: Any) -> Any:
    raw = {"event_id": event_id, "tenant_id": tenant, "occurred_at": iso(at), "channel": "web",
           "type": "form_submit", "identities": identities, **extra}
    res = validate(orjson.dumps(raw))
    assert not isinstance(res, Rejection), res
    return res


def run(events: list[Any], pseudonyms: Pseudonymiser | None) -> Outputs:
    p = Pipeline(PipelineConfig(pseudonyms=pseudonyms))
    out = Outputs()
    for e in events:
        p.process(e)
        _extend(out, p.drain())
    last = max(e.occurred_at for e in events)
    p.tick(last, wall=False)
    p.close_all(last)
    _extend(out, p.drain())
    return out


def _extend(into: Outputs, more: Outputs) -> None:
    for name in ("enriched", "merges", "sessions", "sla", "response_times", "pages", "funnel", "anomalies"):
        getattr(into, name).extend(getattr(more, name))


def dump(out: Outputs) -> bytes:
    return b"\n".join(orjson.dumps(r, option=orjson.OPT_SORT_KEYS) for name in (
        "enriched", "merges", "sessions", "sla", "response_times", "pages", "funnel", "anomalies"
    ) for r in getattr(out, name))


# --------------------------------------------------------------------------- the function
def test_pseudonym_shape_determinism_and_separation() -> None:
    ps = Pseudonymiser(SALT)
    a = ps.pseudonym("acme", "email", "anna@example.com")
    assert PSEUDONYM.match(a)
    assert a == Pseudonymiser(SALT).pseudonym("acme", "email", "anna@example.com")  # same salt: joinable
    assert a != ps.pseudonym("globex", "email", "anna@example.com")  # tenants cannot be joined
    assert a != Pseudonymiser(SALT + "x").pseudonym("acme", "email", "anna@example.com")  # salt is the key
    assert a != ps.pseudonym("acme", "user_id", "anna@example.com")  # types are separate domains...
    # ...except a WhatsApp id, which is the phone number: one pseudonym in both fields
    assert ps.pseudonym("acme", "phone", "+4915112345678") == ps.pseudonym("acme", "whatsapp_id", "+4915112345678")


def test_configuration_parsing_and_refusals() -> None:
    assert parse_types("email, Phone,whatsapp") == ("email", "phone", "whatsapp_id")
    assert parse_types("messenger,user_id") == ("messenger_psid", "user_id")
    with pytest.raises(ValueError, match="unknown identifier type"):
        parse_types("email,fax")
    assert parse_tenants("") == () and parse_tenants(None) == ()
    assert parse_tenants(" acme , globex,acme") == ("acme", "globex")
    assert parse_tenants("acme,*") == ("*",)
    assert Pseudonymiser.configured((), None) is None  # off: no salt needed
    with pytest.raises(ValueError, match="SALT must be set"):
        Pseudonymiser.configured(("acme",), None)
    with pytest.raises(ValueError, match=f"at least {MIN_SALT_LEN}"):
        Pseudonymiser.configured(("acme",), "short")
    ps = Pseudonymiser(SALT, ("acme",))
    assert ps.applies("acme") and not ps.applies("globex")
    assert Pseudonymiser(SALT).applies("anyone")
    assert SALT not in repr(ps) and "acme" in repr(ps)


def test_person_key_only_for_configured_tenants_and_keyed_ids_differ() -> None:
    ps = Pseudonymiser(SALT, ("acme",))
    assert ps.person_key("globex") is None
    key = ps.person_key("acme")
    assert key is not None and key == Pseudonymiser(SALT, ("acme",)).person_key("acme")
    assert key != Pseudonymiser(SALT, ("*",)).person_key("globex")
    unkeyed = person_id_for("acme", "email", "anna@example.com")
    keyed = person_id_for("acme", "email", "anna@example.com", key)
    assert keyed != unkeyed and re.match(r"^p_[0-9a-f]{16}$", keyed)


# --------------------------------------------------------------------------- records
def test_enriched_identities_and_free_form_fields_are_pseudonymised() -> None:
    ps = Pseudonymiser(SALT, ("acme",))
    rec = {
        "tenant_id": "acme", "event_id": "e1",
        "identities": {"email": "anna@example.com", "phone": "+4915112345678", "anonymous_id": "a-1"},
        "properties": {"email": "Anna@Example.COM", "note": "call 4915112345678 or +4915112345678",
                       "tags": ["x", {"deep": "anna@example.com"}], "Anna@example.com": True},
        "page": {"url": "https://x.example/?e=anna@example.com"},
        "extra": {"contact": "anna@example.com"},
        "conversation": {"id": "c-1"},
    }
    out = ps.enriched(rec)
    pe = ps.pseudonym("acme", "email", "anna@example.com")
    pp = ps.pseudonym("acme", "phone", "+4915112345678")
    assert out["identities"] == {"email": pe, "phone": pp, "anonymous_id": "a-1"}  # anonymous ids untouched
    assert out["properties"] == {"email": pe, "note": f"call {pp} or {pp}", "tags": ["x", {"deep": pe}], pe: True}
    assert out["page"]["url"] == f"https://x.example/?e={pe}"
    assert out["extra"] == {"contact": pe}
    assert out["conversation"] == {"id": "c-1"}
    assert rec["identities"]["email"] == "anna@example.com"  # the input record is not mutated
    other = {"tenant_id": "globex", "identities": {"email": "anna@example.com"}}
    assert ps.enriched(other) is other  # a tenant not configured passes untouched
    anon = {"tenant_id": "acme", "identities": {"anonymous_id": "a-1"}, "properties": {"x": "anna@example.com"}}
    assert ps.enriched(anon) is anon  # nothing of this event's own to hide


def test_short_values_are_not_searched_in_free_text() -> None:
    ps = Pseudonymiser(SALT, types=("phone", "email"))
    out = ps.enriched({"tenant_id": "t", "identities": {"phone": "+12"}, "properties": {"qty": "12 items"}})
    assert out["identities"]["phone"].startswith("h:")
    assert out["properties"] == {"qty": "12 items"}


def test_configured_types_only() -> None:
    ps = Pseudonymiser(SALT, types=("user_id",))
    out = ps.enriched({"tenant_id": "t", "identities": {"user_id": "u-123456", "email": "a@b.example"}})
    assert out["identities"]["email"] == "a@b.example" and PSEUDONYM.match(out["identities"]["user_id"])


# --------------------------------------------------------------------------- through the pipeline
def test_stitching_uses_raw_values_and_outputs_carry_pseudonyms() -> None:
    ps = Pseudonymiser(SALT, ("acme",))
    events = [
        tp("acme", "e1", T0, {"anonymous_id": "a1", "email": "Anna@Example.com"}),
        tp("acme", "e2", T0 + 1000, {"anonymous_id": "a2", "phone": "0049 151 1234 5678"}),
        tp("acme", "e3", T0 + 2000, {"email": "anna@example.com", "phone": "+4915112345678"}),  # links both
        tp("acme", "e4", T0 + 3000, {"whatsapp_id": "+4915112345678", "phone": "+4915112345678"}),
        tp("globex", "g1", T0, {"email": "anna@example.com"}),
    ]
    out = run(events, ps)
    plain = run(events, None)
    acme = [r for r in out.enriched if r["tenant_id"] == "acme"]
    # one person in the end: merged on the raw values, as without pseudonymisation
    merged = [m for m in out.merges if m["status"] == "merged"]
    assert len(merged) == 1 and {acme[2]["person_id"], acme[3]["person_id"]} == {merged[0]["into_person_id"]}
    assert [m["status"] for m in plain.merges] == [m["status"] for m in out.merges]
    # keyed person ids for acme, the unkeyed ones for globex
    assert acme[0]["person_id"] != person_id_for("acme", "email", "anna@example.com")
    assert out.enriched[-1]["person_id"] == person_id_for("globex", "email", "anna@example.com")
    pp = ps.pseudonym("acme", "phone", "+4915112345678")
    assert acme[3]["identities"] == {"whatsapp_id": pp, "phone": pp} and acme[1]["identities"]["phone"] == pp
    text = dump(out).lower()
    assert b"anna@example.com" in text  # globex, not configured
    acme_text = b"\n".join(orjson.dumps(r) for r in acme + out.merges + out.sessions if r["tenant_id"] == "acme")
    assert b"anna@example.com" not in acme_text.lower() and b"4915112345678" not in acme_text
    assert [r for r in out.enriched if r["tenant_id"] == "globex"] == [
        r for r in plain.enriched if r["tenant_id"] == "globex"
    ]


# --------------------------------------------------------------------------- property
_local = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789._", min_size=2, max_size=12).filter(
    lambda s: s[0].isalnum()
)
_email = st.builds(lambda a, b: f"{a}@{b}.example", _local, st.sampled_from(["mail", "corp", "shop"]))
_phone = st.integers(min_value=10**8, max_value=10**13).map(lambda n: f"+{n}")
_ids = st.fixed_dictionaries(
    {},
    optional={"email": _email, "phone": _phone, "whatsapp_id": _phone, "anonymous_id": _local},
).filter(bool)
_event = st.tuples(st.sampled_from(["acme", "globex"]), _ids, st.integers(0, 3_600_000),
                   st.booleans(), st.booleans())


@settings(max_examples=60, deadline=None)
@given(st.lists(_event, min_size=1, max_size=25))
def test_property_no_raw_value_leaves_a_configured_tenant(raw_events: list[tuple[Any, ...]]) -> None:
    events = []
    for i, (tenant, ids, at, shout, copy) in enumerate(raw_events):
        shown = {k: (v.upper() if shout and k == "email" else v) for k, v in ids.items()}
        # the identifier copied into free text: properties, and the page and campaign that sessions,
        # funnel rows and anomalies keep
        value = next(iter(shown.values()))
        free = {"properties": {"contact": value}, "page": {"url": f"https://shop.example/thanks?c={value}"},
                "campaign": {"name": f"promo {value}"}} if copy else {}
        events.append(tp(tenant, f"e{i}", T0 + at, shown, **free))
    ps = Pseudonymiser(SALT, ("acme",))
    out = run(events, ps)
    # deterministic: the same input and salt give the same bytes
    assert dump(out) == dump(run(events, Pseudonymiser(SALT, ("acme",))))
    acme = dump(_only(out, "acme")).lower()
    for e in events:
        if e.tenant_id != "acme":
            continue
        for t, v in e.identities.items():
            if t in ("email", "phone", "whatsapp_id"):
                assert v.lower().encode() not in acme, (t, v)
                # tenant-separated: the same value at another tenant is another pseudonym
                assert ps.pseudonym("acme", t, v) != ps.pseudonym("globex", t, v)
    # a tenant not configured is untouched: byte for byte what an un-pseudonymised pipeline emits
    assert dump(_only(out, "globex")) == dump(_only(run(events, None), "globex"))


def _only(out: Outputs, tenant: str) -> Outputs:
    sel = Outputs()
    for name in ("enriched", "merges", "sessions", "sla", "response_times", "pages", "funnel", "anomalies"):
        getattr(sel, name).extend(r for r in getattr(out, name) if r.get("tenant_id") == tenant)
    return sel


# --------------------------------------------------------------------------- settings and logs
def test_settings_and_secret_masking(caplog: pytest.LogCaptureFixture) -> None:
    env = {"TOUCHSTREAM_PSEUDONYMISE": "acme", "TOUCHSTREAM_PSEUDONYM_SALT": SALT,
           "TOUCHSTREAM_PSEUDONYM_TYPES": "email,whatsapp"}
    s = Settings.from_env(env)
    assert s.pseudonymise == ("acme",) and s.pseudonym_types == ("email", "whatsapp_id")
    assert SALT not in repr(s)
    ps = s.pseudonymiser()
    assert ps is not None and ps.pseudonym("acme", "email", "a@b.c") == Pseudonymiser(SALT).pseudonym(
        "acme", "email", "a@b.c")
    assert Settings.from_env({}).pseudonymiser() is None
    assert Settings.from_env({}).pseudonym_types == ("email", "phone", "whatsapp_id")
    with pytest.raises(ValueError, match="SALT"):
        Settings.from_env({"TOUCHSTREAM_PSEUDONYMISE": "*"})
    with pytest.raises(ValueError, match="at least"):
        Settings.from_env({"TOUCHSTREAM_PSEUDONYMISE": "*", "TOUCHSTREAM_PSEUDONYM_SALT": "abc"})
    with pytest.raises(ValueError, match="unknown identifier type"):
        Settings.from_env({"TOUCHSTREAM_PSEUDONYM_TYPES": "fax"})

    from streams.cli import _secrets

    assert SALT in _secrets(s)
    record = logging.LogRecord("x", logging.INFO, __file__, 1, "salt is %s", (SALT,), None)
    Redact(_secrets(s)).filter(record)
    assert SALT not in record.getMessage()
