"""Issue #9, bad input at volume: 100,000 hostile messages mixed with a few thousand valid events.

Everything is generated from one seed. Each hostile message is built to fail for one known
reason (the *expected reason by construction*); the core validator is run in-process over the
same bytes only as a cross-check of the generator. Then everything goes to the raw topic of a
real worker, and the test checks what came out:

* the worker is alive at the end, and its log shows no agent crash;
* every hostile message is on ``touchpoints.dlq`` exactly once, found by its raw partition and
  offset, with the expected reason, its original key and byte-for-byte original value;
* every valid event is on ``touchpoints.enriched`` exactly once and in ClickHouse exactly once;
  valid events sent twice are dropped by dedup, not dead-lettered;
* ``/metrics``: ``touchstream_dlq_total{reason}`` equals the per-reason counts generated,
  ``touchstream_duplicates_total`` the duplicates sent.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import random
import time
import urllib.request
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import jsonschema
import orjson
import pytest
from aiokafka import AIOKafkaProducer

from streams.core.contract import MAX_DEPTH, Rejection, format_timestamp, validate
from streams.core.deadletter import MAX_ORIGINAL_BYTES
from tests.conftest import ROOT, WorkerProc, ch_query, start_worker, wait_until
from tests.kafka_util import message_count, produce, read_all, stage_lag

pytestmark = [pytest.mark.integration, pytest.mark.faults]

SEED = 9
N_BAD = 100_000
N_VALID = 3_000
N_DUP = 600
MAX_BYTES = 262_144  # TOUCHSTREAM_MAX_MESSAGE_BYTES, set explicitly in the worker env below
MAX_FUTURE_S = 900
TENANTS = ("acme", "globex", "initech", "umbrella", "tenant-ü", "t.5")
DLQ_SCHEMA = json.loads((ROOT / "schemas" / "dlq.v1.json").read_text())
#: reasons given after validation: by the core (too_late) and by the stages that read internal topics
LATER_STAGE_REASONS = {"too_late", "invalid_internal", "sink_unmappable", "unreadable_page"}
RAW_REASONS = [r for r in DLQ_SCHEMA["properties"]["reason"]["enum"] if r not in LATER_STAGE_REASONS]

Msg = tuple[bytes | None, bytes | None]  # key, value (None = tombstone)


# ----------------------------------------------------------------------------- generator
def _event(i: int, ts_ms: int, tenant: str = "acme") -> dict[str, Any]:
    """A valid page_view; hostile cases mutate one thing of it."""
    return {
        "event_id": f"h-{i}", "tenant_id": tenant, "occurred_at": format_timestamp(ts_ms), "channel": "web",
        "type": "page_view", "identities": {"anonymous_id": f"anon-{i % 97}"},
        "campaign": {"source": "google", "medium": "cpc", "name": "spring"}, "page": {"url": "https://x.test/a"},
    }


DEEP = "@@deep@@"


def _deep_json(depth: int) -> bytes:
    """Nested arrays as bytes: orjson.dumps itself refuses more than 254 levels."""
    return b"[" * depth + b"1" + b"]" * depth


def _splice(e: dict[str, Any], depth: int) -> bytes:
    return orjson.dumps(e).replace(orjson.dumps(DEEP), _deep_json(depth))


def _nest(depth: int, inner: Any = 1) -> Any:
    for _ in range(depth):
        inner = [inner]
    return inner


_NON_STRINGS: tuple[Any, ...] = (123, -1, 1.5, True, False, [], {}, ["web"], {"a": 1})
_BAD_STRINGS: tuple[Any, ...] = ("", "   ", "x" * 129)
# (field, value, reason, event type): one wrong value of one field; None = field present as null
WRONG_TYPES: list[tuple[str, Any, str, str]] = [
    *((f, v, "invalid_field", "page_view") for f in ("event_id", "tenant_id") for v in _NON_STRINGS + _BAD_STRINGS),
    *((f, None, "missing_field", "page_view") for f in ("event_id", "tenant_id", "occurred_at", "channel", "type")),
    *(("occurred_at", v, "bad_timestamp", "page_view") for v in (
        *_NON_STRINGS, "", "yesterday", "2026-01-01T00:00:00", "2026-01-01", "2026-13-01T00:00:00Z",
        "2026-01-01T00:00:00+25:00", "2026-01-01T25:00:00Z", "x" * 41, "1764064800")),
    *((f, v, "invalid_field", "page_view") for f in ("channel", "type") for v in _NON_STRINGS),
    *(("channel", v, "unknown_channel", "page_view") for v in ("fax", "WEB", "", " web", "web\x00")),
    *(("type", v, "unknown_type", "page_view") for v in ("purchase", "PAGE_VIEW", "", "page_view ")),
    *(("identities", v, "invalid_field", "page_view") for v in (123, 1.5, True, "anon", [], ["a"])),
    ("identities", None, "missing_field", "page_view"),
    *(("identities", v, "no_identity", "page_view") for v in ({}, {"email": "  "}, {"twitter": "x"}, {"email": None})),
    *(("identities", {"email": v}, "invalid_field", "page_view") for v in (True, 1.5, [], {}, ["a"], "e" * 257)),
    *(("conversation", v, "invalid_field", "message_in") for v in (123, "c-1", True, [], ["c"])),
    ("conversation", None, "missing_conversation", "message_in"),
    *(("conversation", {"id": v}, "missing_conversation", "message_in") for v in (True, 1.5, [], {}, *_BAD_STRINGS)),
    *(("conversation", {"id": "c", k: v}, "invalid_field", "message_in")
      for k in ("agent_id", "team") for v in (5, 1.5, True, [], {})),
    *(("conversation", {"id": "c", "priority": v}, "invalid_field", "message_in")
      for v in ("asap", "URGENT", 5, True, [], {})),
    *((f, v, "invalid_field", "page_view") for f in ("campaign", "page", "value", "properties")
      for v in (5, 1.5, True, "x", [], ["x"])),
    *(("campaign", {k: v}, "invalid_field", "page_view")
      for k in ("source", "medium", "name", "content", "term") for v in (5, 1.5, True, [], {"a": 1})),
    *(("page", {k: v}, "invalid_field", "page_view") for k in ("url", "referrer", "title") for v in (5, [], {})),
    *(("value", {"amount": v}, "invalid_field", "page_view") for v in ("12", True, [], {})),
    *(("value", {"currency": v}, "invalid_field", "page_view") for v in (5, True, [], {})),
]
REQUIRED = ("event_id", "tenant_id", "occurred_at", "channel", "type", "identities")
BAD_UTF8 = (b"\xff", b"\xfe\xff", b"\xc0\xaf", b"\xed\xa0\x80", b"\xf8\x88\x80\x80\x80", b"\xe2\x82", b"\x80",
            b"\xf4\x90\x80\x80")
CONTROL = ("\x00", "\x1f", "\n", "\x7f", "\u2028", "\x1b", "\t")
NAN_LITERALS = (b"NaN", b"Infinity", b"-Infinity", b"1e400", b"-1e400", b"nan", b"inf")


class Hostile:
    """Deterministic generator; ``now_ms`` only anchors the timestamps."""

    def __init__(self, seed: int, now_ms: int) -> None:
        self.rng = random.Random(seed)
        self.now = now_ms
        self.n = 0

    def ts(self) -> int:
        return self.now - 90_000 + self.rng.randrange(60_000)

    def ev(self, tenant: str = "acme") -> dict[str, Any]:
        self.n += 1
        return _event(self.n, self.ts(), tenant)

    # each returns (value, expected reason)
    def wrong_type(self) -> tuple[bytes, str]:
        field, value, reason, etype = self.rng.choice(WRONG_TYPES)
        e = self.ev()
        e["type"] = etype
        if etype == "message_in":
            e["channel"], e["conversation"] = "whatsapp", {"id": f"c-{self.n}"}
        e[field] = value
        return orjson.dumps(e), reason

    def missing(self) -> tuple[bytes, str]:
        e = self.ev()
        if self.rng.random() < 0.15:
            e["type"], e["channel"] = self.rng.choice(("message_in", "message_out", "conversation_closed")), "email"
            return orjson.dumps(e), "missing_conversation"
        for f in self.rng.sample(REQUIRED, self.rng.randint(1, 3)):
            del e[f]
        return orjson.dumps(e), "missing_field"

    def deep(self) -> tuple[bytes, str]:
        k = self.rng.randrange(8)
        if k == 0:
            return _deep_json(10_000), "not_json"
        if k == 1:
            return b'{"a":' * 10_000 + b"1" + b"}" * 10_000, "not_json"
        if k == 2:
            return b"[" * 10_000, "not_json"
        if k == 3:  # parses (under orjson's 1024 levels) but is no object
            return _deep_json(self.rng.randint(300, 1000)), "not_object"
        e = self.ev()
        if k == 4:  # a valid event, except properties nested past the contract (and orjson.dumps' 254) limit
            e["properties"] = {"p": DEEP}
            return _splice(e, self.rng.choice((MAX_DEPTH, 253, 254, 300, 1000))), "invalid_field"
        if k == 5:  # the same in an unknown (extra) field, which is passed through
            e["x_extra"] = DEEP
            return _splice(e, self.rng.randint(MAX_DEPTH, 1000)), "invalid_field"
        if k == 6:  # ... and inside campaign
            e["campaign"] = {"name": "spring", "deep": DEEP}
            return _splice(e, self.rng.randint(MAX_DEPTH, 1000)), "invalid_field"
        e["properties"] = {"p": DEEP}  # past orjson's parser limit (1024): not JSON at all for us
        return _splice(e, self.rng.randint(1100, 5000)), "not_json"

    def huge(self) -> tuple[bytes, str]:
        k = self.rng.randrange(4)
        if k == 0:  # a well-formed event just over the limit
            return self._sized(MAX_BYTES + self.rng.choice((1, 2, 100, 50_000, 200_000))), "oversized"
        if k == 1:  # garbage over the limit, not even UTF-8
            return b"\xff" + self.rng.randbytes(MAX_BYTES + self.rng.randrange(1, 100_000)), "oversized"
        if k == 2:  # just under the limit, not JSON
            return b"x" * (MAX_BYTES - self.rng.randrange(0, 100)), "not_json"
        e = self.ev()  # just under the limit, an event id far longer than allowed
        e["event_id"] = "i" * (MAX_BYTES - 1000)
        return orjson.dumps(e), "invalid_field"

    def monster(self) -> tuple[bytes, str]:
        """3 MiB: far past our limit, within the broker's (4 MiB): its dead letter must still fit on the DLQ."""
        return self._sized(3 << 20), "oversized"

    def _sized(self, size: int, e: dict[str, Any] | None = None) -> bytes:
        e = e or self.ev()
        e["properties"] = {"blob": ""}
        pad = size - len(orjson.dumps(e))
        e["properties"]["blob"] = "y" * pad
        raw = orjson.dumps(e)
        assert len(raw) == size
        return raw

    def invalid_utf8(self) -> tuple[bytes, str]:
        raw = orjson.dumps(self.ev())
        bad = self.rng.choice(BAD_UTF8)
        if self.rng.random() < 0.2:  # binary junk, never decodable (starts with a lone continuation byte)
            return b"\x80" + self.rng.randbytes(self.rng.randrange(1, 300)), "invalid_utf8"
        at = raw.index(b'"page_view"') + 5  # inside a string: the JSON stays well-formed around it
        return raw[:at] + bad + raw[at:], "invalid_utf8"

    def nan(self) -> tuple[bytes, str]:
        lit = self.rng.choice(NAN_LITERALS)
        k = self.rng.randrange(3)
        if k == 0:
            return lit, "not_json"
        raw = orjson.dumps({**self.ev(), "value": {"amount": 0}})
        if k == 1:
            return raw.replace(b'"amount":0', b'"amount":' + lit), "not_json"
        return raw[:-1] + b',"score":' + lit + b"}", "not_json"

    def not_object(self) -> tuple[bytes, str]:
        return self.rng.choice((b"[]", b"[1,2,3]", b'"a string"', b"123", b"-1.5", b"true", b"false", b"null",
                                b'[{"event_id":"x"}]', orjson.dumps([self.ev()]), b'"{\\"a\\":1}"')), "not_object"

    def empty(self) -> tuple[bytes | None, str]:
        return self.rng.choice((b"", None, b" ", b"\n", b"\t\r\n ", b"\x00")), "not_json"

    def skew(self) -> tuple[bytes, str]:
        e = self.ev()
        k = self.rng.randrange(6)
        if k == 0:  # beyond TOUCHSTREAM_MAX_FUTURE_S by at least an hour
            e["occurred_at"] = format_timestamp(self.now + (MAX_FUTURE_S + 3600 + self.rng.randrange(86_400)) * 1000)
            return orjson.dumps(e), "future_timestamp"
        if k == 1:
            e["occurred_at"] = self.rng.choice(("9999-12-31T23:59:59.999Z", "9999-12-31T23:59:59-14:00",
                                                "3000-01-01T00:00:00Z", "2200-06-01T12:00:00+05:30"))
            return orjson.dumps(e), "future_timestamp"
        if k == 2:
            e["occurred_at"] = self.rng.choice(("1970-01-01T00:00:00Z", "1970-01-01T00:00:00.000+00:00",
                                                "1999-12-31T23:59:59.999Z", "2000-01-01T00:59:59+01:00"))
            return orjson.dumps(e), "bad_timestamp"
        if k == 3:
            e["occurred_at"] = self.rng.choice(("0001-01-01T00:00:00Z", "0001-01-01T00:00:00+14:00",
                                                "1900-02-28T23:59:59-12:00"))
            return orjson.dumps(e), "bad_timestamp"
        if k == 4:  # epoch numbers instead of strings
            e["occurred_at"] = self.rng.choice((0, self.now, self.now // 1000, -1, 2**63 - 1, 1e300))
            return orjson.dumps(e), "bad_timestamp"
        e["occurred_at"] = format_timestamp(self.now)[:19]  # no offset: ambiguous
        return orjson.dumps(e), "bad_timestamp"

    def control(self) -> tuple[bytes, str]:
        k = self.rng.randrange(3)
        if k == 0:  # escaped control characters in the tenant id
            return orjson.dumps(self.ev("acme" + self.rng.choice(CONTROL) + "x")), "invalid_field"
        raw = orjson.dumps(self.ev())
        ch = bytes([self.rng.choice([*range(0, 9), 11, 12, *range(14, 32)])])
        if k == 1:  # a raw (unescaped) control character inside a string is not JSON
            at = raw.index(b'"anon-') + 3
            return raw[:at] + ch + raw[at:], "not_json"
        return ch + raw, "not_json"

    def pipe(self) -> tuple[bytes, str]:
        tenant = self.rng.choice(("a|b", "|", "acme|", "|acme", "acme||globex", "ac|me|" * 20))
        return orjson.dumps(self.ev(tenant)), "invalid_field"

    def unknown(self) -> tuple[bytes, str]:
        e = self.ev()
        k = self.rng.randrange(3)
        if k == 0:
            e["channel"] = self.rng.choice(("fax", "telegram", "sms", "carrier_pigeon", "Web"))
            return orjson.dumps(e), "unknown_channel"
        if k == 1:
            e["type"] = self.rng.choice(("purchase", "click", "view", "deal"))
            return orjson.dumps(e), "unknown_type"
        e["identities"] = self.rng.choice(({}, {"twitter": "x"}, {"email": ""}, {"phone": " "}, {"user_id": None}))
        return orjson.dumps(e), "no_identity"

    def valid(self, i: int) -> dict[str, Any]:
        """Valid events of every kind; every 7th one is hostile but legal (odd ids, deep-ish properties)."""
        tenant = TENANTS[i % len(TENANTS)]
        ts = self.now - 100_000 + i * 50  # 150 s span: well inside the dedup window
        kind = i % 9
        e: dict[str, Any] = {"event_id": f"v-{i}", "tenant_id": tenant, "occurred_at": format_timestamp(ts),
                             "identities": {"anonymous_id": f"anon-{tenant}-{i % 300}"}}
        channel, etype = [("ads", "ad_impression"), ("ads", "ad_click"), ("web", "page_view"), ("web", "form_submit"),
                          ("web", "lead"), ("whatsapp", "message_in"), ("whatsapp", "message_out"), ("web", "identify"),
                          ("b2b_platform", "deal_won")][kind]
        e["channel"], e["type"] = channel, etype
        if kind in (0, 1, 2):
            e["campaign"] = {"source": "google", "medium": "cpc", "name": f"camp-{i % 4}"}
            e["page"] = {"url": f"https://shop.test/p/{i % 20}"}
        if kind in (3, 7):
            e["identities"]["email"] = f"  Person{i % 150}@Example.TEST "
        if kind in (5, 6):
            e["conversation"] = {"id": f"c-{tenant}-{i % 40}", "priority": self.rng.choice(("low", "normal", "urgent"))}
            e["identities"]["whatsapp_id"] = f"+49 151 {i % 40:04d}"
            if kind == 6:
                e["conversation"]["agent_id"] = "agent-1"
        if kind == 8:
            e["value"] = {"amount": self.rng.choice((0, 99.5, 10**15, -3)), "currency": "EUR"}
        if i % 7 == 3:
            self._legal_but_hostile(e, i)
        return e

    def _legal_but_hostile(self, e: dict[str, Any], i: int) -> None:
        k = (i // 7) % 6
        if k == 0:  # '|', NUL, unit separator, quotes and emoji inside ids (never at the ends: ids are stripped)
            e["event_id"] = f"v-{i}|x\x00y\x1fz\"q\\🙂"
            e["identities"]["anonymous_id"] += "|with|pipes"
        elif k == 1:
            e["properties"] = {"nested": _nest(MAX_DEPTH - 3, {"leaf": "ok"}), "auto": False}
        elif k == 2:
            e["x_unknown"], e["x_other"] = {"k": [1, {"z": None}]}, "kept"
        elif k == 3:
            e["conversation"] = {"id": 100_000 + i, "team": "tier-1"}
            e["type"], e["channel"] = "message_in", "live_chat"
        elif k == 4:  # an explicit offset and a slightly future clock, inside TOUCHSTREAM_MAX_FUTURE_S
            ist = timezone(timedelta(hours=5, minutes=30))
            at = datetime.fromtimestamp((self.now + 120_000) / 1000, UTC).astimezone(ist)
            e["occurred_at"] = at.isoformat(timespec="milliseconds")
        else:
            e["identities"]["user_id"] = str(10**12 + i)  # a numeric id, as a string: identifiers are strings
            e["campaign"] = {"name": "🙂 spring — ünïcode", "term": "x" * 500}


def generate(now_ms: int, monsters: int = 2) -> tuple[list[tuple[Msg, str]], list[dict[str, Any]], int]:
    """(messages with their expected outcome — a DLQ reason, "valid" or "dup" —, valid events, huge count)."""
    g = Hostile(SEED, now_ms)
    plan: dict[Callable[[], tuple[bytes | None, str]], int] = {
        g.deep: 300, g.huge: 24, g.monster: monsters, g.invalid_utf8: 8_000, g.nan: 4_000, g.not_object: 5_000,
        g.empty: 3_000, g.skew: 12_000, g.control: 8_000, g.pipe: 4_000, g.missing: 12_000, g.unknown: 8_000,
    }
    plan[g.wrong_type] = N_BAD - sum(plan.values())
    out: list[tuple[Msg, str]] = []
    for make, n in plan.items():
        for _ in range(n):
            value, reason = make()
            key = None if len(out) % 53 == 0 and value is not None else f"bad-{len(out):06d}".encode()
            out.append(((key, value), reason))
    valid = [g.valid(i) for i in range(N_VALID)]
    valid_raw = [orjson.dumps(e) for e in valid]
    valid_raw[5] = g._sized(MAX_BYTES, valid[5])  # exactly at the limit: accepted
    for j in (11, 12, 13, 14):
        valid_raw[j] = g._sized(MAX_BYTES - g.rng.randrange(1, 2000), valid[j])
    for e, raw in zip(valid, valid_raw, strict=True):
        out.append(((e["tenant_id"].encode(), raw), "valid"))
    for j in g.rng.sample(range(N_VALID), N_DUP):  # sent twice, sometimes under another key: dropped by dedup
        key = valid[j]["tenant_id"].encode() if j % 2 else f"dup-{j}".encode()
        out.append(((key, valid_raw[j]), "dup"))
    g.rng.shuffle(out)
    return out, valid, plan[g.huge] + plan[g.monster]


# ----------------------------------------------------------------------------- helpers
async def _produce(bootstrap: str, topic: str, msgs: list[Msg]) -> list[tuple[int, int]]:
    """Batch-produce; returns (partition, offset) per message, in order."""
    p = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", enable_idempotence=True, linger_ms=50,
                         max_batch_size=1 << 20, max_request_size=4 << 20)
    await p.start()
    try:
        futures = [await p.send(topic, value=v, key=k) for k, v in msgs]
        metas = await asyncio.gather(*futures)
    finally:
        await p.stop()
    return [(m.partition, m.offset) for m in metas]


def scrape(port: str) -> dict[str, float]:
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
    out: dict[str, float] = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            out[name] = float(value)
    return out


# ----------------------------------------------------------------------------- the test
@pytest.mark.timeout(420)
def test_hostile_input_at_volume(pipeline_env: dict[str, str], tmp_path: Path, workers: list[WorkerProc]) -> None:
    t0 = time.monotonic()
    env = {**pipeline_env, "TOUCHSTREAM_MAX_MESSAGE_BYTES": str(MAX_BYTES),
           "TOUCHSTREAM_MAX_FUTURE_S": str(MAX_FUTURE_S)}
    prefix, bootstrap = env["TOUCHSTREAM_TOPIC_PREFIX"], env["KAFKA_BOOTSTRAP_SERVERS"]
    group = env["TOUCHSTREAM_APP_ID"]
    raw_topic, dlq_topic, enriched_topic = (prefix + t for t in ("touchpoints.raw", "touchpoints.dlq",
                                                                 "touchpoints.enriched"))
    w = start_worker(env, tmp_path / "worker.log", workers)

    now = int(time.time() * 1000)
    # 3 MiB messages need the test broker's 4 MiB message.max.bytes; an external cluster may refuse them
    msgs, valid, n_huge = generate(now, monsters=0 if os.environ.get("KAFKA_BOOTSTRAP_SERVERS") else 2)
    outcome = [o for _, o in msgs]
    expected = Counter(o for o in outcome if o not in ("valid", "dup"))
    assert sum(expected.values()) == N_BAD and outcome.count("dup") == N_DUP and outcome.count("valid") == N_VALID
    # every reason of the DLQ contract is exercised, and the categories known by construction are there in bulk
    assert set(expected) == set(RAW_REASONS), set(expected)
    assert expected["oversized"] >= 5 and expected["invalid_utf8"] >= 8_000 and expected["future_timestamp"] >= 2_000

    # cross-check of the generator with the core validator, in-process, with the worker's limits
    check_now = int(time.time() * 1000)
    mismatches = []
    for (_, value), want in msgs:
        res = validate(value or b"", now_ms=check_now, max_bytes=MAX_BYTES, max_future_ms=MAX_FUTURE_S * 1000)
        got = res.reason if isinstance(res, Rejection) else "valid"
        if got != (want if want != "dup" else "valid"):
            mismatches.append((want, got, getattr(res, "detail", ""), (value or b"")[:120]))
    assert not mismatches, mismatches[:20]
    t_gen = time.monotonic() - t0

    positions = asyncio.run(_produce(bootstrap, raw_topic, [m for m, _ in msgs]))
    t_produced = time.monotonic() - t0

    def progress() -> str:
        return (f"dlq={message_count(bootstrap, dlq_topic)}/{N_BAD} enriched={message_count(bootstrap, enriched_topic)}"
                f"/{N_VALID} raw lag={stage_lag(bootstrap, group, prefix, 'touchpoints.raw')} alive={w.alive()}"
                f"\n{w.tail(3000)}")

    wait_until(lambda: message_count(bootstrap, dlq_topic) >= N_BAD, 240, what="every bad message on the DLQ",
               explain=progress)
    wait_until(lambda: message_count(bootstrap, enriched_topic) >= N_VALID, 120, what="valid events enriched",
               explain=progress)
    for topic in ("touchpoints.raw", "touchpoints.valid", "touchpoints.enriched"):  # validate, process, sink caught up
        wait_until(lambda t=topic: stage_lag(bootstrap, group, prefix, t) == 0, 120, what=f"lag 0 on {topic}",
                   explain=progress)
    t_drained = time.monotonic() - t0

    # the worker survived: alive, no agent crashed on the way
    assert w.alive(), w.tail()
    log = (tmp_path / "worker.log").read_text(errors="replace")
    assert "Traceback" not in log and "Crashed" not in log, log[-5000:]

    m = scrape(env["TOUCHSTREAM_WEB_PORT"])
    assert m['touchstream_events_in_total{topic="touchpoints.raw"}'] == len(msgs)
    assert m['touchstream_events_out_total{topic="touchpoints.valid"}'] == N_VALID + N_DUP
    assert m["touchstream_duplicates_total"] == N_DUP
    reasons = RAW_REASONS
    got_metric = {r: m.get(f'touchstream_dlq_total{{reason="{r}"}}', 0.0) for r in reasons}
    assert got_metric == {r: float(expected[r]) for r in got_metric}
    assert m['touchstream_sink_rows_total{table="touchpoints"}'] == N_VALID
    assert w.stop() == 0, w.tail()

    # the DLQ: each bad message exactly once, at its raw position, with its reason, key and bytes
    dlq = [orjson.loads(v) for _, v, _ in read_all(bootstrap, dlq_topic, timeout=120)]
    assert len(dlq) == N_BAD
    by_pos = {(d["source"]["partition"], d["source"]["offset"]): d for d in dlq}
    assert len(by_pos) == N_BAD, "a raw message was dead-lettered twice"
    required = set(DLQ_SCHEMA["required"])
    wrong = []
    for ((key, value), want), pos in zip(msgs, positions, strict=True):
        if want in ("valid", "dup"):
            assert pos not in by_pos, (want, value[:200] if value else value)
            continue
        d, value = by_pos[pos], value or b""
        truncated = len(value) > MAX_ORIGINAL_BYTES  # the 3 MiB ones: a prefix, flagged (never replayed)
        if (d["reason"] != want or base64.b64decode(d["original_b64"]) != value[:MAX_ORIGINAL_BYTES]
                or d.get("original_truncated", False) != truncated
                or d.get("original_size", len(value)) != len(value)
                or d.get("key_b64") != (base64.b64encode(key).decode() if key is not None else None)):
            wrong.append((want, d["reason"], d["detail"], value[:100]))
        assert required <= d.keys() and d["reason"] in reasons and d["source"]["topic"] == raw_topic
    assert not wrong, (len(wrong), wrong[:10])
    assert Counter(d["reason"] for d in dlq) == expected

    # enriched: every valid event exactly once, nothing else
    enriched = Counter(orjson.loads(v)["event_id"] for _, v, _ in read_all(bootstrap, enriched_topic, timeout=60))
    ids = {e["event_id"] for e in valid}
    assert set(enriched) == ids and max(enriched.values()) == 1, enriched.most_common(3)

    # ClickHouse: exactly once, before and after merges
    assert ch_query(env, "SELECT count() FROM {db}.touchpoints FINAL") == [[N_VALID]]
    assert ch_query(env, "SELECT count() FROM {db}.touchpoints") == [[N_VALID]]
    assert {r[0] for r in ch_query(env, "SELECT event_id FROM {db}.touchpoints")} == ids
    print(f"\nhostile: generated+checked {t_gen:.1f}s, produced {len(msgs)} ({n_huge} huge) at {t_produced:.1f}s, "
          f"drained at {t_drained:.1f}s, total {time.monotonic() - t0:.1f}s")


def test_bad_records_on_internal_topics_are_dead_lettered_not_fatal(pipeline_env: dict[str, str], tmp_path: Path,
                                                                    workers: list[WorkerProc]) -> None:
    """Something other than the validate stage writes ``touchpoints.valid``, and something else an
    output topic: each bad record becomes a dead letter with the later stage's reason, the worker
    goes on, and the good records around them are processed."""
    env = pipeline_env
    prefix, bootstrap = env["TOUCHSTREAM_TOPIC_PREFIX"], env["KAFKA_BOOTSTRAP_SERVERS"]
    w = start_worker(env, tmp_path / "worker.log", workers)
    good = {"event_id": "g-1", "tenant_id": "acme", "occurred_at": "2026-01-01T10:00:00Z", "channel": "web",
            "type": "page_view", "identities": {"anonymous_id": "a1"}}
    produce(bootstrap, prefix + "touchpoints.valid", [(b"acme", b"not json"), (b"acme", b'{"tenant_id": 3}')])
    produce(bootstrap, prefix + "sessions.closed", [(b"p", b'{"session_id": []}')])
    produce(bootstrap, prefix + "touchpoints.raw", [(b"acme", orjson.dumps(good))])
    dlq_topic = prefix + "touchpoints.dlq"
    wait_until(lambda: message_count(bootstrap, dlq_topic) >= 3, 120, what="three dead letters", explain=w.tail)
    letters = [orjson.loads(v) for _, v, _ in read_all(bootstrap, dlq_topic)]
    assert sorted((d["reason"], d["source"]["topic"]) for d in letters) == [
        ("invalid_internal", prefix + "touchpoints.valid"), ("invalid_internal", prefix + "touchpoints.valid"),
        ("sink_unmappable", prefix + "sessions.closed")]
    for d in letters:
        jsonschema.validate(d, DLQ_SCHEMA)
    wait_until(lambda: message_count(bootstrap, prefix + "touchpoints.enriched") >= 1, 60, what="the good event")
    m = scrape(env["TOUCHSTREAM_WEB_PORT"])
    assert m['touchstream_dlq_total{reason="invalid_internal"}'] == 2
    assert m['touchstream_dlq_total{reason="sink_unmappable"}'] == 1
    assert w.alive(), w.tail()
    assert w.stop() == 0, w.tail()
