"""Malformed variants of events, for dead-letter demos and tests."""

from __future__ import annotations

import random
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

import orjson

from streams.devtools.simulate.feed import dumps

#: Kinds of malformed messages add_noise produces → the DLQ reason the validator gives them.
#: "duplicate" is an exact re-send: valid, then dropped by dedup (counted, not dead-lettered).
NOISE_KINDS: dict[str, str] = {
    "truncated_json": "not_json",
    "invalid_utf8": "invalid_utf8",
    "not_object": "not_object",
    "missing_field": "missing_field",
    "unknown_channel": "unknown_channel",
    "unknown_type": "unknown_type",
    "bad_timestamp": "bad_timestamp",
    "no_identity": "no_identity",
    "missing_conversation": "missing_conversation",
    "duplicate": "duplicate",
}


def _corrupt(ev: dict[str, Any], raw: bytes, kind: str, rng: random.Random) -> bytes:
    bad = dict(ev)
    bad["event_id"] = f"{ev['event_id']}-noise"
    if kind == "truncated_json":
        cut = max(1, len(raw) // 2)
        while cut > 1 and raw[cut - 1] >= 0x80:  # never split a UTF-8 sequence: that would be invalid_utf8
            cut -= 1
        return raw[:cut]
    if kind == "invalid_utf8":
        i = raw.index(b'"', 2) + 1  # inside the first string value
        return raw[:i] + b"\xff\xfe" + raw[i:]
    if kind == "not_object":
        return orjson.dumps([bad], option=orjson.OPT_SORT_KEYS)
    if kind == "missing_field":
        del bad[("event_id", "tenant_id", "occurred_at", "channel", "type", "identities")[rng.randrange(6)]]
    elif kind == "unknown_channel":
        bad["channel"] = ("fax", "tiktok", "WEB")[rng.randrange(3)]
    elif kind == "unknown_type":
        bad["type"] = ("pageview", "purchase", "click")[rng.randrange(3)]
    elif kind == "bad_timestamp":
        bad["occurred_at"] = ev["occurred_at"][:19].replace("T", " ")  # no offset: ambiguous
    elif kind == "no_identity":
        bad["identities"] = {}
    elif kind == "missing_conversation":
        bad["type"] = "message_in"
        bad.pop("conversation", None)
    elif kind == "duplicate":
        return raw
    else:
        raise ValueError(f"unknown noise kind {kind!r}")
    return dumps(bad)


def add_noise(
    events: Iterable[dict[str, Any]], rate: float, seed: int, kinds: Sequence[str] = tuple(NOISE_KINDS)
) -> Iterator[bytes]:
    """Every event's bytes, plus (after a fraction ``rate`` of them) one malformed variant.

    Added rather than substituted, so the valid stream stays exactly ``generate(cfg)`` and the
    truth file still holds; corrupted copies get event_id + "-noise" so they never shadow the
    original in dedup. The kinds and the reason each must get are in :data:`NOISE_KINDS`.
    """
    for k in kinds:
        if k not in NOISE_KINDS:
            raise ValueError(f"unknown noise kind {k!r}")
    rng = random.Random(seed ^ 0x0BAD)
    for ev in events:
        raw = dumps(ev)
        yield raw
        if rng.random() < rate:
            yield _corrupt(ev, raw, kinds[rng.randrange(len(kinds))], rng)
