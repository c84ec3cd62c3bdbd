"""Touchpoint contract v1: raw bytes in, a normalised :class:`Touchpoint` or a rejection out.

Why this never raises: the validator is the only code that sees untrusted bytes, and a
worker must not crash on input. Every failure maps to a stable ``reason`` (a Prometheus
label and the DLQ record's ``reason``), with a human ``detail``. The JSON Schema in
``schemas/touchpoint.v1.json`` documents the same rules for producers.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from typing import Any

import orjson

from streams.core.model import (
    CHANNELS,
    CONVERSATION_TYPES,
    IDENTITY_TYPES,
    PRIORITIES,
    TYPES,
    Touchpoint,
)

#: Stable rejection reasons (metric labels; documented in README, schemas/dlq.v1.json and
#: docs/data-integrity.md). ``too_late`` (and ``future_timestamp`` again, defence in depth) are
#: given by the processing core (streams/core/pipeline.py), not by this validator.
REASONS: tuple[str, ...] = (
    "oversized",
    "invalid_utf8",
    "not_json",
    "not_object",
    "missing_field",
    "invalid_field",
    "unknown_channel",
    "unknown_type",
    "bad_timestamp",
    "future_timestamp",
    "no_identity",
    "missing_conversation",
    "too_late",
    "duplicate",
)

#: the contract's closed vocabularies, each value as one shared string object
_CANONICAL: dict[str, str] = {v: v for v in (*CHANNELS, *TYPES)}

MAX_ID_LEN = 128
MAX_IDENTIFIER_LEN = 256
#: Deepest nesting of objects/arrays (the top-level object is level 1) in an accepted event.
#: orjson parses up to 1024 levels but serialises at most 254, and every accepted event is
#: serialised again (touchpoints.valid, enriched, ClickHouse): deeper input must be refused here.
MAX_DEPTH = 64
#: Events before this are clock garbage (1970 epochs from unset device clocks), not history.
MIN_OCCURRED_MS = 946_684_800_000  # 2000-01-01T00:00:00Z
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MS = timedelta(milliseconds=1)
_KNOWN_FIELDS = frozenset(
    {
        "event_id",
        "tenant_id",
        "occurred_at",
        "channel",
        "type",
        "identities",
        "conversation",
        "campaign",
        "page",
        "value",
        "properties",
    }
)
_PHONE_TYPES = frozenset({"phone", "whatsapp_id"})
#: String members of the optional objects (schemas/touchpoint.v1.json); the core uses them as strings.
_CAMPAIGN_STRINGS = ("source", "medium", "name", "content", "term")
_PAGE_STRINGS = ("url", "referrer", "title")
_VALUE_STRINGS = ("currency",)


@dataclass(frozen=True, slots=True)
class Rejection:
    reason: str
    detail: str


class _Invalid(Exception):
    """Internal: carries a rejection out of nested checks without threading returns."""

    def __init__(self, reason: str, detail: str) -> None:
        self.reason = reason
        self.detail = detail


def parse_timestamp(value: Any) -> int:
    """RFC 3339 with an explicit offset → epoch ms (UTC). Naive times are ambiguous, so refused."""
    if not isinstance(value, str) or not (10 <= len(value) <= 40):
        raise _Invalid("bad_timestamp", "occurred_at must be an RFC 3339 string with offset")
    try:
        dt = datetime.fromisoformat(value.replace("z", "Z").replace("t", "T"))
    except ValueError:
        raise _Invalid("bad_timestamp", f"occurred_at is not RFC 3339: {value[:40]!r}") from None
    if dt.tzinfo is None or "T" not in value.upper():
        raise _Invalid("bad_timestamp", "occurred_at needs a date, a time and an offset (e.g. Z)")
    return (dt - _EPOCH) // _MS


def format_timestamp(ms: int) -> str:
    """Epoch ms → RFC 3339 UTC with milliseconds, the form every output uses.

    Called for several fields of every event; the date-time part is cached per second
    (``strftime`` was a measurable share of the worker's CPU, and events cluster in time)."""
    return f"{_second_text(ms // 1000)}{ms % 1000:03d}Z"


@lru_cache(maxsize=8192)
def _second_text(second: int) -> str:
    return (_EPOCH + timedelta(seconds=second)).strftime("%Y-%m-%dT%H:%M:%S.")


@lru_cache(maxsize=8192)
def _second_of(text: str) -> int:
    return (datetime.fromisoformat(text + "+00:00") - _EPOCH) // timedelta(seconds=1)


def read_timestamp(text: str) -> int:
    """Inverse of :func:`format_timestamp` for our own topics (trusted), cached per second too."""
    if len(text) == 24 and text[19] == "." and text[23] == "Z":
        return _second_of(text[:19]) * 1000 + int(text[20:23])
    return (datetime.fromisoformat(text) - _EPOCH) // _MS


#: A-Z → a-z and nothing else: ``str.lower`` also folds non-ASCII letters, some onto other
#: valid spellings (KELVIN SIGN → "k", "İ" → "i̇"), which would make two distinct addresses one.
_ASCII_LOWER = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ", "abcdefghijklmnopqrstuvwxyz")
#: How a phone number is written: before the first digit at most one "+" (with spaces and "("
#: around it), then digits and separators. Only such values get the phone normal form; anything else (a WhatsApp id such
#: as ``wa-c1``, a placeholder such as ``-1``) is kept as written, since dropping its other
#: characters would merge distinct ids (``wa-c1``/``wa-1`` → ``1``) or make junk (``wa-c0`` → ``0``).
_PHONE_SYNTAX = re.compile(r"[ (]*(?:\+[ (]*)?[0-9][0-9 ()./-]*")
_NOT_DIGIT = re.compile(r"[^0-9]")


def normalise_email(value: str) -> str:
    """Surrounding whitespace off, ASCII letters lower-cased: the spellings of one address."""
    return value.strip().translate(_ASCII_LOWER)


def is_phone_syntax(value: str) -> bool:
    """Written like a phone number (see ``_PHONE_SYNTAX``); leading/trailing whitespace allowed."""
    return _PHONE_SYNTAX.fullmatch(value.strip()) is not None


def normalise_phone(value: str) -> str:
    """One spelling per number: separators dropped, ``+`` or a leading ``00`` → ``+``.

    Only for values written like a phone number; any other value is returned stripped and
    otherwise unchanged (a WhatsApp id that is not a number, a placeholder). So two values map
    to one only if they are the same number (same digits, both international or both not), and
    a value with a non-zero digit never becomes an all-zero (junk) one."""
    v = value.strip()
    if _PHONE_SYNTAX.fullmatch(v) is None:
        return v
    digits = _NOT_DIGIT.sub("", v)
    if "+" in v:
        return "+" + digits
    if digits.startswith("00") and len(digits) > 2:
        return "+" + digits[2:]
    return digits


def normalise_identifier(id_type: str, value: str) -> str:
    """The normal form of one identifier of ``id_type`` (the identity graph joins on it).

    Equal normal forms mean the same identifier: ASCII case and surrounding whitespace for
    emails, formatting for phone numbers, surrounding whitespace for every other type. Idempotent."""
    if id_type == "email":
        return normalise_email(value)
    if id_type in _PHONE_TYPES:
        return normalise_phone(value)
    return value.strip()


def _str_field(obj: dict[str, Any], name: str, max_len: int = MAX_ID_LEN) -> str:
    if name not in obj or obj[name] is None:
        raise _Invalid("missing_field", f"{name} is required")
    v = obj[name]
    if not isinstance(v, str):
        raise _Invalid("invalid_field", f"{name} must be a string")
    v = v.strip()
    if not v or len(v) > max_len:
        raise _Invalid("invalid_field", f"{name} must be 1..{max_len} characters")
    return v


def _opt_object(obj: dict[str, Any], name: str, strings: tuple[str, ...] = ()) -> dict[str, Any] | None:
    v = obj.get(name)
    if v is None:
        return None
    if not isinstance(v, dict):
        raise _Invalid("invalid_field", f"{name} must be an object")
    for key in strings:
        if v.get(key) is not None and not isinstance(v[key], str):
            raise _Invalid("invalid_field", f"{name}.{key} must be a string")
    return v


def _too_deep(obj: Any, data: bytes | bytearray) -> bool:
    """Nesting deeper than MAX_DEPTH; iterative, and only walked when the bytes could be that deep."""
    if data.count(b"[") + data.count(b"{") <= MAX_DEPTH:  # each level opens one bracket
        return False
    stack = [(obj, 1)]
    while stack:
        v, depth = stack.pop()
        if depth > MAX_DEPTH:
            return True
        children = v.values() if isinstance(v, dict) else v
        stack.extend((c, depth + 1) for c in children if isinstance(c, dict | list))
    return False


def _identities(raw: Any) -> dict[str, str]:
    """Identifiers are strings: a number is refused, not turned into one (``5`` is no email, and
    ``4915`` sent as a number has lost any leading zero or ``+``)."""
    if raw is None:
        raise _Invalid("missing_field", "identities is required")
    if not isinstance(raw, dict):
        raise _Invalid("invalid_field", "identities must be an object")
    out: dict[str, str] = {}
    for id_type in IDENTITY_TYPES:
        v = raw.get(id_type)
        if v is None:
            continue
        if not isinstance(v, str):
            raise _Invalid("invalid_field", f"identities.{id_type} must be a string")
        s = normalise_identifier(id_type, v)
        if len(s) > MAX_IDENTIFIER_LEN:
            raise _Invalid("invalid_field", f"identities.{id_type} longer than {MAX_IDENTIFIER_LEN}")
        if s:
            out[id_type] = s
    if not out:
        raise _Invalid("no_identity", f"identities needs one of {', '.join(IDENTITY_TYPES)}")
    return out


def _conversation(obj: dict[str, Any], event_type: str) -> dict[str, Any] | None:
    conv = _opt_object(obj, "conversation")
    if conv is None:
        if event_type in CONVERSATION_TYPES:
            raise _Invalid("missing_conversation", f"{event_type} needs conversation.id")
        return None
    cid = conv.get("id")
    if isinstance(cid, int) and not isinstance(cid, bool):
        cid = str(cid)
    if not isinstance(cid, str) or not cid.strip() or len(cid) > MAX_ID_LEN:
        raise _Invalid("missing_conversation", "conversation.id must be a non-empty string")
    out = dict(conv)
    out["id"] = cid.strip()
    for key in ("agent_id", "team"):
        v = out.get(key)
        if v is not None and not isinstance(v, str):
            raise _Invalid("invalid_field", f"conversation.{key} must be a string")
    # No default here: an event without a priority keeps the conversation's known one (the SLA
    # state remembers it); filling in "normal" made every later message downgrade an urgent chat.
    prio = out.get("priority")
    if prio is None:
        out.pop("priority", None)
    elif not isinstance(prio, str) or prio not in PRIORITIES:
        raise _Invalid("invalid_field", f"conversation.priority must be one of {sorted(PRIORITIES)}")
    return out


def validate(
    data: bytes,
    *,
    now_ms: int | None = None,
    max_bytes: int = 262_144,
    max_future_ms: int = 900_000,
    source: tuple[str, int, int] = ("", -1, -1),
) -> Touchpoint | Rejection:
    """Decode and check one raw message. ``now_ms=None`` (offline replay) skips the future check."""
    try:
        return _validate(data, now_ms, max_bytes, max_future_ms, source)
    except _Invalid as exc:
        return Rejection(exc.reason, exc.detail)
    except Exception as exc:  # the contract is: never raise on input
        return Rejection("invalid_field", f"unexpected {type(exc).__name__}")


def _validate(
    data: bytes, now_ms: int | None, max_bytes: int, max_future_ms: int, source: tuple[str, int, int]
) -> Touchpoint:
    if not isinstance(data, bytes | bytearray | memoryview):
        raise _Invalid("not_json", "message value is not bytes")
    if isinstance(data, memoryview):
        data = bytes(data)
    if len(data) > max_bytes:
        raise _Invalid("oversized", f"{len(data)} bytes > {max_bytes}")
    try:
        obj = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        try:
            bytes(data).decode("utf-8")
        except UnicodeDecodeError:
            raise _Invalid("invalid_utf8", "message is not valid UTF-8") from None
        raise _Invalid("not_json", str(exc)[:200]) from None
    if not isinstance(obj, dict):
        raise _Invalid("not_object", f"top-level JSON is {type(obj).__name__}, not an object")
    event_id = _str_field(obj, "event_id")
    tenant_id = _str_field(obj, "tenant_id")
    if "|" in tenant_id or not tenant_id.isprintable():
        raise _Invalid("invalid_field", "tenant_id must be printable and must not contain '|'")
    if "occurred_at" not in obj or obj["occurred_at"] is None:
        raise _Invalid("missing_field", "occurred_at is required")
    occurred = parse_timestamp(obj["occurred_at"])
    if occurred < MIN_OCCURRED_MS:
        raise _Invalid("bad_timestamp", "occurred_at before 2000-01-01")
    if now_ms is not None and occurred - now_ms > max_future_ms:
        raise _Invalid("future_timestamp", f"occurred_at is {(occurred - now_ms) // 1000} s in the future")
    channel = obj.get("channel")
    if channel is None:
        raise _Invalid("missing_field", "channel is required")
    if not isinstance(channel, str):
        raise _Invalid("invalid_field", "channel must be a string")
    if channel not in CHANNELS:
        raise _Invalid("unknown_channel", f"channel {str(channel)[:40]!r} is not in contract v1")
    channel = _CANONICAL[channel]  # one string object per value: the state keeps millions of them
    etype = obj.get("type")
    if etype is None:
        raise _Invalid("missing_field", "type is required")
    if not isinstance(etype, str):
        raise _Invalid("invalid_field", "type must be a string")
    if etype not in TYPES:
        raise _Invalid("unknown_type", f"type {str(etype)[:40]!r} is not in contract v1")
    etype = _CANONICAL[etype]
    identities = _identities(obj.get("identities"))
    conversation = _conversation(obj, etype)
    campaign = _opt_object(obj, "campaign", _CAMPAIGN_STRINGS)
    page = _opt_object(obj, "page", _PAGE_STRINGS)
    value = _opt_object(obj, "value", _VALUE_STRINGS)
    if value is not None:
        amount = value.get("amount")
        if amount is not None and (isinstance(amount, bool) or not isinstance(amount, int | float)):
            raise _Invalid("invalid_field", "value.amount must be a number")
    properties = _opt_object(obj, "properties")
    if _too_deep(obj, data):
        raise _Invalid("invalid_field", f"nested deeper than {MAX_DEPTH} levels")
    extra = {k: v for k, v in obj.items() if k not in _KNOWN_FIELDS} if len(obj) > 6 else {}
    return Touchpoint(
        event_id=event_id,
        tenant_id=tenant_id,
        occurred_at=occurred,
        channel=channel,
        type=etype,
        identities=identities,
        conversation=conversation,
        campaign=campaign,
        page=page,
        value=value,
        properties=properties,
        extra=extra,
        source=source,
    )


def to_valid_dict(tp: Touchpoint) -> dict[str, Any]:
    """The normalised event as JSON (topic ``touchpoints.valid``), source offsets included."""
    out: dict[str, Any] = {
        "event_id": tp.event_id,
        "tenant_id": tp.tenant_id,
        "occurred_at": format_timestamp(tp.occurred_at),
        "channel": tp.channel,
        "type": tp.type,
        "identities": tp.identities,
    }
    for name in ("conversation", "campaign", "page", "value", "properties"):
        v = getattr(tp, name)
        if v is not None:
            out[name] = v
    if tp.extra:
        out["extra"] = tp.extra
    if tp.source[1] >= 0:
        out["source"] = {"topic": tp.source[0], "partition": tp.source[1], "offset": tp.source[2]}
    return out


def from_valid_dict(obj: dict[str, Any]) -> Touchpoint:
    """Trusting inverse of :func:`to_valid_dict` for the internal topic (already validated)."""
    src = obj.get("source")
    source = (src["topic"], src["partition"], src["offset"]) if src else ("", -1, -1)
    return Touchpoint(
        event_id=obj["event_id"],
        tenant_id=obj["tenant_id"],
        occurred_at=read_timestamp(obj["occurred_at"]),
        channel=_CANONICAL[obj["channel"]],  # a KeyError here: not a validated record (dead-lettered)
        type=_CANONICAL[obj["type"]],
        identities=obj["identities"],
        conversation=obj.get("conversation"),
        campaign=obj.get("campaign"),
        page=obj.get("page"),
        value=obj.get("value"),
        properties=obj.get("properties"),
        extra=obj.get("extra") or {},
        source=source,
    )
