"""Contract v1 validation: every reason, normalisation, and 'arbitrary bytes never raise'."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from streams.core.contract import (
    REASONS,
    Rejection,
    format_timestamp,
    from_valid_dict,
    normalise_email,
    normalise_phone,
    parse_timestamp,
    read_timestamp,
    to_valid_dict,
    validate,
)
from streams.core.model import Touchpoint

NOW = parse_timestamp("2026-11-25T10:00:00Z")


def event(**over: object) -> dict:
    base = {
        "event_id": "e-1",
        "tenant_id": "acme",
        "occurred_at": "2026-11-25T10:00:00.250+01:00",
        "channel": "web",
        "type": "page_view",
        "identities": {"anonymous_id": "a-1"},
    }
    base.update(over)
    return {k: v for k, v in base.items() if v is not ...}


def check(obj: object, now: int | None = NOW) -> Touchpoint | Rejection:
    return validate(orjson.dumps(obj), now_ms=now)


def reason(obj: object, **kw: object) -> str:
    res = check(obj, **kw)  # type: ignore[arg-type]
    assert isinstance(res, Rejection), res
    return res.reason


def test_valid_event_is_normalised() -> None:
    tp = check(event(identities={"email": "  Ann@Example.COM ", "phone": "0049 (151) 123-45", "whatsapp_id": "4915"}))
    assert isinstance(tp, Touchpoint)
    assert tp.occurred_at == parse_timestamp("2026-11-25T09:00:00.250Z")
    assert tp.identities == {"email": "ann@example.com", "phone": "+4915112345", "whatsapp_id": "4915"}
    assert format_timestamp(tp.occurred_at) == "2026-11-25T09:00:00.250Z"


def test_unknown_fields_are_kept_and_round_trip() -> None:
    tp = check(event(custom={"a": 1}, conversation=None))
    assert isinstance(tp, Touchpoint)
    assert tp.extra == {"custom": {"a": 1}}
    d = to_valid_dict(tp)
    assert from_valid_dict(orjson.loads(orjson.dumps(d))) == tp


@pytest.mark.parametrize(
    ("obj", "expected"),
    [
        (event(event_id=...), "missing_field"),
        (event(event_id=""), "invalid_field"),
        (event(event_id="x" * 129), "invalid_field"),
        (event(tenant_id=5), "invalid_field"),
        (event(tenant_id="a|b"), "invalid_field"),
        (event(tenant_id="a\nb"), "invalid_field"),
        (event(occurred_at=...), "missing_field"),
        (event(occurred_at="2026-11-25T10:00:00"), "bad_timestamp"),  # no offset
        (event(occurred_at="2026-11-25"), "bad_timestamp"),
        (event(occurred_at="yesterday"), "bad_timestamp"),
        (event(occurred_at=1764064800), "bad_timestamp"),
        (event(occurred_at="1999-12-31T23:59:59Z"), "bad_timestamp"),
        (event(occurred_at="2026-11-25T11:00:00Z"), "future_timestamp"),
        (event(channel="fax"), "unknown_channel"),
        (event(channel=...), "missing_field"),
        (event(type="purchase"), "unknown_type"),
        (event(identities={}), "no_identity"),
        (event(identities={"email": "   "}), "no_identity"),
        (event(identities={"twitter": "x"}), "no_identity"),
        (event(identities=["a"]), "invalid_field"),
        (event(identities={"email": ["a"]}), "invalid_field"),
        (event(identities={"email": True}), "invalid_field"),
        # identifiers are strings: a number is refused, never coerced ("5" is no email)
        (event(identities={"email": 5}), "invalid_field"),
        (event(identities={"whatsapp_id": 4915}), "invalid_field"),
        (event(identities={"user_id": 1.5}), "invalid_field"),
        (event(identities={"anonymous_id": {"a": 1}}), "invalid_field"),
        (event(type="message_in"), "missing_conversation"),
        (event(type="message_out", conversation={"agent_id": "x"}), "missing_conversation"),
        (event(type="message_in", conversation={"id": "c", "priority": "asap"}), "invalid_field"),
        (event(campaign="spring"), "invalid_field"),
        (event(value={"amount": "12"}), "invalid_field"),
    ],
)
def test_rejections(obj: dict, expected: str) -> None:
    assert reason(obj) == expected


def test_not_json_not_object_utf8_oversized() -> None:
    assert validate(b"{nope", now_ms=NOW).reason == "not_json"  # type: ignore[union-attr]
    assert validate(b'{"a": NaN}', now_ms=NOW).reason == "not_json"  # type: ignore[union-attr]
    assert validate(b"[1,2]", now_ms=NOW).reason == "not_object"  # type: ignore[union-attr]
    assert validate(b'"x"', now_ms=NOW).reason == "not_object"  # type: ignore[union-attr]
    assert validate(b'{"a": "\xff"}', now_ms=NOW).reason == "invalid_utf8"  # type: ignore[union-attr]
    assert validate(b" " * 300_000, now_ms=NOW).reason == "oversized"  # type: ignore[union-attr]
    deep = b"[" * 5000 + b"]" * 5000
    assert validate(deep, now_ms=NOW).reason == "not_json"  # type: ignore[union-attr]


def test_offline_skips_future_check() -> None:
    assert isinstance(check(event(occurred_at="2030-01-01T00:00:00Z"), now=None), Touchpoint)


def test_conversation_defaults() -> None:
    tp = check(event(type="message_in", conversation={"id": 42}))
    assert isinstance(tp, Touchpoint)
    assert tp.conversation == {"id": "42"}  # no priority given: none invented (the conversation keeps its own)


@pytest.mark.parametrize(
    ("raw", "norm"),
    [
        ("+49 151 1234", "+491511234"), ("0049151", "+49151"), ("(555) 123", "555123"), ("", ""),
        ("(+49) 151-12.34", "+491511234"), ("+(49) 151", "+49151"), ("00", "00"), ("0", "0"),
        # not written like a number: kept as written, so distinct ids stay distinct and never become junk
        ("wa-c1", "wa-c1"), ("wa-1", "wa-1"), ("wa-c0", "wa-c0"), ("-1", "-1"), ("１２３", "１２３"),
        ("49 151 ext 7", "49 151 ext 7"), ("+", "+"), ("1+2", "1+2"),
    ],
)
def test_phone_normalisation(raw: str, norm: str) -> None:
    assert normalise_phone(raw) == norm


def test_email_folds_ascii_case_only() -> None:
    assert normalise_email("  Ann@Example.COM ") == "ann@example.com"
    # str.lower() folds the Kelvin sign onto "k" and "İ" onto "i̇": distinct addresses would meet
    assert normalise_email("\u212a@x.io") != normalise_email("k@x.io")
    assert normalise_email("İ@x.io") == "İ@x.io" != normalise_email("i\u0307@x.io")


@settings(max_examples=400, deadline=None)
@given(st.binary(max_size=2000))
def test_arbitrary_bytes_never_raise(data: bytes) -> None:
    res = validate(data, now_ms=NOW)
    assert isinstance(res, Rejection | Touchpoint)
    if isinstance(res, Rejection):
        assert res.reason in REASONS


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**63 - 1) | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=20,
)


@settings(max_examples=400, deadline=None)
@given(
    st.fixed_dictionaries(
        {},
        optional={
            "event_id": json_values,
            "tenant_id": json_values,
            "occurred_at": st.one_of(json_values, st.datetimes().map(lambda d: d.isoformat())),
            "channel": st.one_of(json_values, st.sampled_from(["web", "whatsapp", "email"])),
            "type": st.one_of(json_values, st.sampled_from(["message_in", "page_view", "lead"])),
            "identities": st.one_of(json_values, st.dictionaries(st.sampled_from(["email", "phone"]), json_values)),
            "conversation": json_values,
            "campaign": json_values,
            "value": json_values,
        },
    )
)
def test_arbitrary_objects_never_raise(obj: dict) -> None:
    res = validate(orjson.dumps(obj), now_ms=NOW)
    assert isinstance(res, Rejection | Touchpoint)
    if isinstance(res, Touchpoint):  # whatever passed is fully typed
        assert isinstance(res.occurred_at, int) and res.identities
        assert res.channel and res.type


@settings(max_examples=300)
@given(st.integers(min_value=-(10**12), max_value=253_402_300_799_999))
def test_timestamps_round_trip_through_the_per_second_caches(ms: int) -> None:
    text = format_timestamp(ms)
    assert text == (datetime(1970, 1, 1, tzinfo=UTC) + timedelta(milliseconds=ms)).strftime(
        "%Y-%m-%dT%H:%M:%S.") + f"{ms % 1000:03d}Z"
    assert read_timestamp(text) == ms
    assert parse_timestamp(text) == ms
