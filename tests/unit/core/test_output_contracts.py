"""What the pipeline emits conforms to the JSON Schemas in ``schemas/``, and the schemas cannot drift.

Downstream services code against those schemas, so they are checked against the real output:
the offline replay (``streams.offline.run``: the validator, the :class:`Pipeline` and the outputs
the live worker routes to its topics, only the clock differs) over a simulated feed with
injected incidents (anomalies), a silent support team (SLA breaches), malformed lines (dead
letters), a pseudonymised tenant, and hand-made edge cases (identity merges and refusals,
reopened conversations, nulls, pass-through fields, truncated dead letters). Then, with a real
validator (jsonschema, draft 2020-12):

* every record of every output validates against its topic's schema;
* no drift either way: every member the code emits is declared (unless the schema explicitly
  opens the object for producer pass-through), every declared member is emitted somewhere in
  the run, and ``required`` is exactly what every record carries;
* the closed sets of the schemas are the code's own constants (channels, types, stages, ...).
"""

from __future__ import annotations

import base64
import json
import re
from collections import Counter
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import orjson
import pytest
from jsonschema import Draft202012Validator, FormatChecker

from streams.app import topics
from streams.app.deadletters import LATER_STAGE_REASONS
from streams.core import attribution, paging, sla
from streams.core.attribution import MODELS
from streams.core.contract import REASONS
from streams.core.deadletter import MAX_ORIGINAL_BYTES, dlq_record
from streams.core.model import CHANNELS, IDENTITY_TYPES, PRIORITIES, TYPES
from streams.core.pipeline import PipelineConfig
from streams.core.profiles import ProfileConfig
from streams.core.pseudonym import Pseudonymiser
from streams.core.stages import STAGES
from streams.core.tagrules import LIFECYCLE, parse_rules
from streams.devtools import simulate
from streams.devtools.simulate import Incident
from streams.offline import OUTPUT_FILES, run

OUTPUT_ATTRS = tuple(attr for attr, _ in OUTPUT_FILES)

SCHEMAS = Path(__file__).resolve().parents[3] / "schemas"

#: topic -> (offline output, i.e. the Outputs attribute or "dlq"; its schema file)
CONTRACTS: dict[str, tuple[str, str]] = {
    topics.DLQ: ("dlq", "dlq.v1.json"),
    topics.ENRICHED: ("enriched", "touchpoint_enriched.v1.json"),
    topics.MERGES: ("merges", "identity_merge.v1.json"),
    topics.SESSIONS: ("sessions", "session.v1.json"),
    topics.SLA_EVENTS: ("sla", "sla_event.v1.json"),
    topics.RESPONSE_TIMES: ("response_times", "response_time.v1.json"),
    topics.FUNNEL: ("funnel", "funnel_window.v1.json"),
    topics.ANOMALIES: ("anomalies", "anomaly.v1.json"),
    topics.PAGES: ("pages", "page.v1.json"),
    topics.PROFILES: ("profiles", "person_profile.v1.json"),
    topics.ATTRIBUTION: ("attribution", "attribution_credit.v1.json"),
}
#: Topics without a published output JSON Schema: the input contract (touchpoint.v1.json), internal topic.
NO_OUTPUT_SCHEMA = {topics.RAW, topics.VALID}

#: Members present in every record of the run that are nevertheless optional, and why.
ALWAYS_HERE_BUT_OPTIONAL: dict[tuple[str, str], str] = {
    ("touchpoint_enriched.v1.json", "source"): "every real input has a Kafka/file source; to_valid_dict omits "
    "it only for an event built without one (partition -1)",
}

START = 1_767_225_600_000  # 2026-01-01T00:00:00Z
#: tags on the hand-made tenant: one that expires, one that stays
TAG_RULES = """
tag browsing when 2 or more page_view within 1h expires after 1d
tag customer_tag when stage customer
"""
DURATION_S = 1500
TENANT = "contracts-test"  # the hand-made edge cases
PLUS_ONE = timezone(timedelta(hours=1))


def _at(s: float) -> int:
    return START + int(s * 1000)


#: After the detector's warm-up (10 one-minute windows of a series' own history; the simulated
#: feed starts at START), so the anomalies are detected, not learned.
INCIDENTS = (
    Incident("team_silent", "northwind-b2b", _at(600), _at(900), team="support"),
    Incident("tracking_broken", "acme-shop", _at(660), _at(960), campaign="winter-sale-search", channel="ads",
             stage_to="impression"),
    Incident("landing_page_outage", "acme-shop", _at(1080), _at(1380), campaign="winter-sale-search",
             channel="ads", stage_from="click", stage_to="visit", factor=0.0),
)


def _edge_cases(t0: int) -> Iterator[dict[str, Any]]:
    """Hand-made events for branches a short simulated run does not reach (times after the feed)."""
    n = 0

    def ev(dt_s: float, etype: str, ids: dict[str, str], channel: str = "web", **more: Any) -> dict[str, Any]:
        nonlocal n
        n += 1
        at = datetime.fromtimestamp((t0 + int(dt_s * 1000)) / 1000, PLUS_ONE)  # an offset: normalised to Z
        iso = at.isoformat(timespec="milliseconds")
        return {"event_id": f"edge-{n}", "tenant_id": TENANT, "occurred_at": iso, "channel": channel,
                "type": etype, "identities": ids, **more}

    # identity: two user_ids are two people (refused), a plain link (merged), three persons in one event
    yield ev(0, "identify", {"user_id": "u-1", "anonymous_id": "a-1"})
    yield ev(1, "identify", {"user_id": "u-2", "email": "Two@Example.com"})
    yield ev(2, "page_view", {"anonymous_id": "a-1", "email": "two@example.com"}, page={"url": "https://x.example/"})
    yield ev(3, "page_view", {"anonymous_id": "a-3"})
    yield ev(4, "form_submit", {"email": "three@example.com"}, properties={"form": "contact"})
    yield ev(5, "identify", {"anonymous_id": "a-3", "email": "three@example.com"})
    yield ev(6, "page_view", {"anonymous_id": "a-4"})
    yield ev(7, "lead", {"phone": "0049 151 000 00004"}, channel="phone")
    yield ev(8, "opportunity", {"crm_contact_id": "c-4"}, channel="phone")
    yield ev(9, "identify", {"crm_contact_id": "c-4", "phone": "+4915100000004", "anonymous_id": "a-4"})
    # a person over the identifier cap (a shared device): the link is refused
    for k in range(20):
        yield ev(10 + k / 10, "identify", {"user_id": "u-5", "phone": f"+49151000001{k:02d}"})
    yield ev(13, "page_view", {"anonymous_id": "a-5", "phone": "+4915100000200"})
    yield ev(14, "page_view", {"user_id": "u-5", "anonymous_id": "a-5"})
    # junk identifier: a throw-away person; unknown top-level members pass through as `extra`
    yield ev(15, "page_view", {"anonymous_id": "null"}, x_experiment={"arm": "b"}, x_flag=True)
    yield ev(16, "deal_won", {"crm_contact_id": "c-4"}, channel="phone", value={"amount": 99.5, "currency": "EUR"},
             campaign={"name": "spring", "source": "google"}, properties={"deal_id": "D-1"})
    # attribution revisions: a late ad click before the deal, a device linked after it (a merge),
    # the deal re-sent with a corrected value; a deal without a value; a deal of a junk identifier
    yield ev(12.5, "ad_click", {"anonymous_id": "a-4"}, "ads", campaign={"name": "spring", "source": "google"})
    yield ev(13, "page_view", {"anonymous_id": "a-6"}, campaign={"name": "summer"}, page={"url": "https://x.example/s"})
    yield ev(17, "identify", {"anonymous_id": "a-6", "crm_contact_id": "c-4"})
    yield ev(18, "deal_won", {"crm_contact_id": "c-4"}, channel="phone", value={"amount": 120.25, "currency": "EUR"},
             properties={"deal_id": "D-1"})
    yield ev(19, "deal_won", {"email": "three@example.com"}, channel="phone")
    yield ev(20, "deal_won", {"anonymous_id": "test"}, channel="phone", value={"amount": 5, "currency": "JPY"})
    # SLA: urgent live chat, an integer id, nulls and a producer member on the conversation;
    # closed after its breach, reopened, an auto-reply that does not count, a quick and a slower reply
    conv = {"id": 4711, "agent_id": None, "team": None, "priority": "urgent", "subject": "refund"}
    cust = {"email": "cust@example.com"}
    yield ev(40, "message_in", cust, "live_chat", conversation=conv, properties={"text": "hello?"})
    yield ev(100, "conversation_closed", cust, "live_chat", conversation={"id": "4711"})
    yield ev(110, "message_in", cust, "live_chat", conversation={"id": "4711"})
    yield ev(112, "message_out", cust, "live_chat", conversation={"id": "4711"}, properties={"auto": True})
    yield ev(115, "message_out", cust, "live_chat", conversation={"id": "4711", "agent_id": "ag-7", "team": "vip"})
    yield ev(120, "message_in", cust, "live_chat", conversation={"id": "4711"})
    yield ev(200, "message_out", cust, "live_chat", conversation={"id": "4711", "agent_id": "ag-7"})
    # a page view that arrives after the watermark passed it: counted late in the open session
    yield ev(-200, "page_view", cust)


#: Pages of the silent support team escalate (sla.pages carries escalation pages too).
PAGING = paging.PagingConfig(routes=(paging.Route(None, "default"),
                                     paging.Route("support", "support-pager", 120.0, "support-lead")))


def _bad_lines() -> list[bytes]:
    """Dead letters the simulator's noise does not produce."""
    return [
        b'{"event_id": "big", "pad": "' + b"x" * 300_000 + b'"}',  # oversized
        b"y" * (MAX_ORIGINAL_BYTES + 10),  # oversized, and only a prefix is kept
        orjson.dumps({"event_id": "e", "tenant_id": TENANT, "occurred_at": "2026-01-01T00:00:00Z", "channel": "web",
                      "type": "deal_won", "identities": {"user_id": "u"}, "value": {"amount": "12"}}),
    ]


@pytest.fixture(scope="module")
def emitted(tmp_path_factory: pytest.TempPathFactory) -> dict[str, list[dict[str, Any]]]:
    cfg = simulate.SimConfig(rate=20, duration_s=DURATION_S, seed=3, start_ms=START, incidents=INCIDENTS)
    events = list(simulate.generate(cfg))
    lines = [b"not json at all"]  # dead-lettered before any valid event: the replay clock is still 0
    lines += simulate.add_noise(events, 0.01, seed=5)
    lines += [orjson.dumps(e) for e in _edge_cases(_at(DURATION_S + 60))]
    lines += _bad_lines()
    out = tmp_path_factory.mktemp("contracts")
    config = PipelineConfig(
        pseudonyms=Pseudonymiser("a-long-enough-test-salt", tenants=("northwind-b2b", TENANT)),
        paging=PAGING,
        profiles=ProfileConfig(rules={TENANT: parse_rules(TAG_RULES, "contracts.rules")}),
    )
    run(lines, out, config)
    records = {attr: [orjson.loads(x) for x in (out / name).read_bytes().splitlines()] for attr, name in
               (*OUTPUT_FILES, ("dlq", "dlq.jsonl"))}
    # the live validate agent's letters also carry the message key
    records["dlq"].append(dlq_record("not_json", "x", b"\xff{", (topics.RAW, 3, 17), START, key=b"k-1"))
    return records


def _schema(name: str) -> dict[str, Any]:
    return json.loads((SCHEMAS / name).read_text())


def _format_checker() -> FormatChecker:
    """date-time checked without optional packages: RFC 3339 with an explicit offset."""
    checker = FormatChecker(formats=())

    @checker.checks("date-time", raises=ValueError)
    def _date_time(value: object) -> bool:
        if not isinstance(value, str):
            return True
        if not re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?(Z|[+-]\d\d:\d\d)", value):
            return False
        return datetime.fromisoformat(value.replace("Z", "+00:00")).tzinfo is not None

    return checker


# --------------------------------------------------------------------------------------- topics


def test_every_output_topic_has_its_schema_and_topics_py_names_it() -> None:
    assert set(CONTRACTS) == set(topics.ALL) - NO_OUTPUT_SCHEMA
    source = Path(topics.__file__).read_text()
    keys = {topic: key for topic, _, key in topics.PROCESS_OUTPUTS}
    for topic, (attr, name) in CONTRACTS.items():
        schema = _schema(name)
        Draft202012Validator.check_schema(schema)
        assert schema["$id"] == f"https://touchstream.dev/schemas/{name}"
        assert f"topic {topic}," in schema["title"], name
        line = next(x for x in source.splitlines() if re.match(rf'^[A-Z_]+ = "{re.escape(topic)}"', x))
        assert f"schemas/{name}" in line, f"streams/app/topics.py does not name {name} for {topic}"
        if topic in keys:  # the Kafka key is a member every record carries
            assert f"key = {keys[topic]})" in schema["title"]
            assert keys[topic] in schema["required"], name
            assert attr == dict((t, a) for t, a, _ in topics.PROCESS_OUTPUTS)[topic]
        assert schema.get("description"), f"{name}: say what a record means and how to dedupe it"
    unused = {p.name for p in SCHEMAS.glob("*.json")} - {n for _, n in CONTRACTS.values()} - {"touchpoint.v1.json"}
    assert not unused


def test_closed_sets_are_the_codes_own() -> None:
    def enum(name: str, *path: str) -> set[Any]:
        node: Any = _schema(name)
        for p in path:
            node = node[p]
        return set(node["enum"])

    channels, stages = set(CHANNELS), set(STAGES)
    assert enum("touchpoint_enriched.v1.json", "properties", "channel") == channels
    assert enum("touchpoint_enriched.v1.json", "properties", "type") == set(TYPES)
    assert enum("touchpoint_enriched.v1.json", "properties", "stage") == stages | {None}
    assert enum("touchpoint_enriched.v1.json", "properties", "identities", "propertyNames") == set(IDENTITY_TYPES)
    assert enum("touchpoint_enriched.v1.json", "properties", "conversation", "properties", "priority") == PRIORITIES
    assert enum("dlq.v1.json", "properties", "reason") == (  # duplicates are dropped, not dead-lettered
        set(REASONS) - {"duplicate"} | set(LATER_STAGE_REASONS))
    assert enum("identity_merge.v1.json", "properties", "identifier_type") == set(IDENTITY_TYPES)
    assert enum("identity_merge.v1.json", "properties", "reason") == {
        "co_occurrence", "cap_exceeded", *(f"conflicting_{t}" for t in IDENTITY_TYPES)
    }
    assert enum("session.v1.json", "properties", "channels", "items") == channels
    assert enum("session.v1.json", "properties", "max_stage") == stages | {None}
    assert enum("session.v1.json", "properties", "first_touch", "properties", "channel") == channels
    for name in ("sla_event.v1.json", "response_time.v1.json"):
        assert enum(name, "properties", "kind") == set(sla.KINDS)
        assert enum(name, "properties", "channel") == channels
        assert enum(name, "properties", "priority") == PRIORITIES
    assert enum("funnel_window.v1.json", "properties", "stage") == stages
    assert enum("funnel_window.v1.json", "properties", "channel") == channels | {None}
    assert enum("anomaly.v1.json", "properties", "stage_from") == stages
    assert enum("anomaly.v1.json", "properties", "stage_to") == stages
    assert enum("anomaly.v1.json", "properties", "dimension", "properties", "channel") == channels | {None}
    assert enum("page.v1.json", "properties", "action") == set(paging.ACTIONS)
    assert enum("page.v1.json", "properties", "severity") == set(paging.SEVERITIES)
    assert enum("page.v1.json", "properties", "channel") == channels | {None}
    kinds = {paging.KIND_BREACH, paging.KIND_WARNING, paging.KIND_STALL, paging.KIND_ESCALATION}
    assert enum("page.v1.json", "properties", "details", "properties", "kind") == kinds
    assert enum("page.v1.json", "properties", "details", "properties", "escalated_kind") == kinds - {
        paging.KIND_ESCALATION}
    waits = _schema("page.v1.json")["properties"]["details"]["properties"]["waits"]["items"]
    assert set(waits["required"]) == set(waits["properties"]) == set(paging._LISTED_FIELDS)
    assert enum("person_profile.v1.json", "properties", "lifecycle_stage") == set(LIFECYCLE)
    assert enum("person_profile.v1.json", "properties", "identifier_types", "items") == set(IDENTITY_TYPES)
    assert enum("person_profile.v1.json", "properties", "channels", "items") == channels
    assert enum("person_profile.v1.json", "properties", "funnel_stages", "propertyNames") == stages
    assert enum("attribution_credit.v1.json", "properties", "model") == set(MODELS)
    assert enum("attribution_credit.v1.json", "properties", "channel") == channels | {None}
    assert enum("attribution_credit.v1.json", "properties", "kind") == set(attribution.KINDS)
    assert enum("attribution_credit.v1.json", "properties", "reason") == set(attribution.REASONS)


# --------------------------------------------------------------------------------------- records


@pytest.mark.parametrize("topic", sorted(CONTRACTS))
def test_every_emitted_record_validates(topic: str, emitted: dict[str, list[dict[str, Any]]]) -> None:
    attr, name = CONTRACTS[topic]
    records = emitted[attr]
    assert records, f"the run emitted nothing on {topic}: the test would prove nothing"
    validator = Draft202012Validator(_schema(name), format_checker=_format_checker())
    failures = []
    for rec in records:
        for err in validator.iter_errors(rec):
            failures.append(f"{'/'.join(map(str, err.absolute_path)) or '(record)'}: {err.message[:300]}")
            break
    assert not failures, (
        f"{len(failures)} of {len(records)} {topic} records violate {name}: {Counter(failures).most_common(5)}"
    )


@pytest.mark.parametrize("topic", sorted(CONTRACTS))
def test_schema_declares_exactly_what_the_code_emits(topic: str, emitted: dict[str, list[dict[str, Any]]]) -> None:
    """Per object of the schema that lists its members: every emitted member declared (unless the
    object is explicitly open), every declared member emitted, ``required`` = members always present."""
    attr, name = CONTRACTS[topic]
    seen: dict[str, tuple[dict[str, Any], list[set[str]]]] = {}

    def walk(node: dict[str, Any], value: Any, path: str) -> None:
        if "properties" not in node or not isinstance(value, dict):
            return
        seen.setdefault(path, (node, []))[1].append(set(value))
        for key, sub in node["properties"].items():
            if key in value:
                walk(sub, value[key], f"{path}/{key}")

    schema = _schema(name)
    for rec in emitted[attr]:
        walk(schema, rec, "")
    assert "" in seen
    for path, (node, key_sets) in seen.items():
        where = f"{name} {path or '/'}"
        declared = set(node["properties"])
        union = set().union(*key_sets)
        always = set.intersection(*key_sets)
        if node.get("additionalProperties") is not True:
            assert union <= declared, f"{where}: emitted but not declared: {sorted(union - declared)}"
        assert declared <= union, f"{where}: declared but never emitted: {sorted(declared - union)}"
        exempt = {k for (n, k) in ALWAYS_HERE_BUT_OPTIONAL if n == name and not path}
        assert set(node.get("required", ())) == always - exempt, (
            f"{where}: required {sorted(node.get('required', ()))} but always emitted {sorted(always - exempt)}"
        )


def test_the_run_reached_every_branch_worth_a_contract(emitted: dict[str, list[dict[str, Any]]]) -> None:
    """The fixture exercised what the schemas describe (otherwise validation proves little)."""
    assert {r["status"] for r in emitted["merges"]} == {"merged", "refused"}
    assert {"conflicting_user_id", "cap_exceeded"} <= {r["reason"] for r in emitted["merges"]}
    assert {r["event"] for r in emitted["sla"]} == {"warning", "breach", "resolved"}
    assert any(r["event"] == "resolved" and r["response_s"] is None for r in emitted["sla"])  # closed, no reply
    assert {r["kind"] for r in emitted["response_times"]} == set(sla.KINDS)
    assert {r["breached"] for r in emitted["response_times"]} == {True, False}
    assert {r["status"] for r in emitted["anomalies"]} == {"open", "update", "resolved"}
    assert {r["kind"] for r in emitted["anomalies"]} >= {"volume_drop", "conversion_drop"}
    assert {(p["action"], p["details"]["kind"]) for p in emitted["pages"]} >= {
        ("trigger", paging.KIND_WARNING), ("trigger", paging.KIND_BREACH), ("resolve", paging.KIND_BREACH),
        ("trigger", paging.KIND_STALL), ("trigger", paging.KIND_ESCALATION)}
    assert {r["converted"] is None for r in emitted["funnel"]} == {True, False}
    assert any(r["merged_session_ids"] for r in emitted["sessions"])
    assert any(r["late_events"] for r in emitted["sessions"])
    assert any(v.startswith("h:") for r in emitted["enriched"] for v in r["identities"].values())
    assert {"oversized", "invalid_field", "not_json", "invalid_utf8"} <= {r["reason"] for r in emitted["dlq"]}
    assert any(r["dead_lettered_at"].startswith("1970-") for r in emitted["dlq"])
    assert {r["status"] for r in emitted["profiles"]} == {"active", "merged"}
    tags = [t for r in emitted["profiles"] for t in r.get("tags", ())]
    assert {t["expires_at"] is None for t in tags} == {True, False}
    assert {r["lifecycle_stage"] for r in emitted["profiles"] if r["status"] == "active"} == set(LIFECYCLE)
    assert {r["kind"] for r in emitted["attribution"]} == {"credit", "retraction"}
    assert {r["reason"] for r in emitted["attribution"]} == {"deal", "deal_updated", "touch", "merge"}
    assert {r["model"] for r in emitted["attribution"]} == set(MODELS)
    assert any(r["touch_event_id"] is None for r in emitted["attribution"])  # the junk person's deal
    assert any(r["currency_exponent"] == 0 for r in emitted["attribution"])  # JPY


def test_what_json_schema_cannot_say(emitted: dict[str, list[dict[str, Any]]]) -> None:
    """Cross-member rules the schema descriptions state in words."""
    for r in emitted["funnel"]:
        assert r["window_end"] > r["window_start"] and (r["converted"] or 0) <= r["persons"] <= r["events"]
    for r in emitted["anomalies"]:
        if r["kind"].startswith("volume_"):
            assert r["stage_to"] == r["stage_from"]
        else:
            assert STAGES.index(r["stage_to"]) == STAGES.index(r["stage_from"]) + 1
    for r in emitted["sessions"]:
        assert r["started_at"] <= r["ended_at"] and r["channels"] == sorted(r["channels"])
        assert r["merged_session_ids"] == sorted(r["merged_session_ids"])
    for r in (*emitted["sla"], *emitted["response_times"]):
        assert r["wait_id"].startswith(f"{r['tenant_id']}:{r['conversation_id']}:")
    for r in emitted["merges"]:
        assert r["into_person_id"] < r["from_person_id"]
    credits: Counter[tuple[str, str, int, str, str]] = Counter()
    for r in emitted["attribution"]:
        credits[(r["tenant_id"], r["deal_id"], r["revision"], r["kind"], r["model"])] += r["credit_minor"]
        assert r["supersedes"] == (r["revision"] - 1 if r["revision"] > 1 else None)
        assert (r["credit_minor"] < 0) == (r["kind"] == "retraction")
    values = {(r["tenant_id"], r["deal_id"], r["revision"], r["kind"]): r["deal_value_minor"]
              for r in emitted["attribution"]}
    for (tenant, deal, rev, kind, _), total in credits.items():  # exact to the cent, per model
        assert total == (-1 if kind == "retraction" else 1) * values[(tenant, deal, rev, kind)]
    for r in emitted["profiles"]:
        if r["status"] == "active":
            assert r["first_seen"] <= r["lifecycle_stage_at"] <= r["last_seen"] and r["events"] >= 1
            assert r["channels"] == sorted(r["channels"]) and r["campaigns"] == sorted(r["campaigns"])
            assert sum(r["funnel_stages"].values()) <= r["events"]
        else:
            assert r["merged_into"] < r["person_id"]
    for r in emitted["dlq"]:
        original = base64.b64decode(r["original_b64"], validate=True)
        assert ("original_truncated" in r) == (len(original) == MAX_ORIGINAL_BYTES < r.get("original_size", 0))
        if "key_b64" in r:
            base64.b64decode(r["key_b64"], validate=True)
