"""The simulator is the yardstick for the detector and SLA evaluation, so these tests pin what
the yardstick promises: valid contract-v1 events, byte-identical replays, time order, the
documented rates, and incidents that really move the numbers they claim to move."""

from __future__ import annotations

import asyncio
import re
import statistics
from collections import Counter, defaultdict
from collections.abc import Iterator
from dataclasses import replace
from datetime import datetime
from itertools import islice, pairwise
from pathlib import Path
from typing import Any

import orjson
import pytest

from streams.core.contract import Rejection, validate
from streams.core.model import CHANNELS, CONVERSATION_TYPES, IDENTITY_TYPES, PRIORITIES, TYPES
from streams.devtools import simulate as sim
from streams.devtools.simulate import Incident, Mix, SimConfig

START = 1_764_064_800_000  # 2025-11-25T10:00:00Z
MIN = 60_000
FAST = Mix(warmup_s=120.0)  # less warm-up where the test does not look at the first minutes

# --------------------------------------------------------------------------- contract checker

_RFC3339 = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{1,9})?(Z|[+-]\d\d:\d\d)$")
_E164 = re.compile(r"^\+\d{8,15}$")
_TOP = {
    "event_id", "tenant_id", "occurred_at", "channel", "type", "identities",
    "conversation", "campaign", "page", "value", "properties",
}


def contract_errors(ev: dict[str, Any]) -> list[str]:
    """Independent of streams.core.contract on purpose: a second reading of the contract."""
    errs: list[str] = []
    for name in ("event_id", "tenant_id"):
        v = ev.get(name)
        if not isinstance(v, str) or not 1 <= len(v) <= 128:
            errs.append(f"{name} must be a 1..128 string")
    ts = ev.get("occurred_at")
    if not isinstance(ts, str) or not _RFC3339.match(ts):
        errs.append(f"occurred_at {ts!r} is not RFC 3339 with offset")
    if ev.get("channel") not in CHANNELS:
        errs.append(f"channel {ev.get('channel')!r}")
    if ev.get("type") not in TYPES:
        errs.append(f"type {ev.get('type')!r}")
    errs += [f"unknown field {k}" for k in ev if k not in _TOP]
    ids = ev.get("identities")
    if not isinstance(ids, dict) or not ids:
        errs.append("identities must be a non-empty object")
    else:
        for k, v in ids.items():
            if k not in IDENTITY_TYPES or not isinstance(v, str) or not v:
                errs.append(f"identity {k}={v!r}")
        if "email" in ids and "@" not in ids["email"]:
            errs.append("email without @")
        for k in ("phone", "whatsapp_id"):
            if k in ids and not _E164.match(ids[k]):
                errs.append(f"{k} not E.164")
        if "phone" in ids and "whatsapp_id" in ids and ids["phone"] != ids["whatsapp_id"]:
            errs.append("whatsapp_id != phone")
    conv = ev.get("conversation")
    has_id = isinstance(conv, dict) and isinstance(conv.get("id"), str) and bool(conv["id"])
    if ev.get("type") in CONVERSATION_TYPES and not has_id:
        errs.append("conversation.id required")
    if conv is not None:
        if conv.get("priority") not in PRIORITIES:
            errs.append("priority")
        if not isinstance(conv.get("agent_id"), str) or not isinstance(conv.get("team"), str):
            errs.append("conversation agent_id/team")
    props = ev.get("properties")
    if props is not None and not isinstance(props, dict):
        errs.append("properties must be an object")
    auto = ev.get("type") == "message_out" and (props or {}).get("auto")
    if auto and conv and conv.get("agent_id") != "bot":
        errs.append("auto reply not from the bot")
    camp = ev.get("campaign")
    camp_keys = {"source", "medium", "name", "content", "term"}
    if camp is not None and (not isinstance(camp, dict) or set(camp) - camp_keys):
        errs.append("campaign keys")
    page = ev.get("page")
    if page is not None and (not isinstance(page, dict) or set(page) - {"url", "referrer", "title"}):
        errs.append("page keys")
    value = ev.get("value")
    if value is not None and (
        not isinstance(value.get("amount"), int | float)
        or not re.fullmatch(r"[A-Z]{3}", value.get("currency", ""))
    ):
        errs.append("value")
    return errs


def ms(ts: str) -> int:
    return int(datetime.fromisoformat(ts).timestamp() * 1000)


# --------------------------------------------------------------------------- shared runs


@pytest.fixture(scope="module")
def base() -> tuple[SimConfig, list[dict[str, Any]]]:
    """15 min at 100/s: ~90k events, shared by the read-only tests. Without incidents: they remove
    events on purpose (the outage loses landing sessions: ~2-3 % of a 15-minute run, where the
    default plan covers a quarter of it), and their own tests below check what they do."""
    cfg = SimConfig(rate=100, duration_s=900, seed=11, start_ms=START, incidents=())
    return cfg, list(sim.generate(cfg))


INC_CFG = SimConfig(
    rate=100,
    duration_s=600,
    seed=5,
    start_ms=START,
    mix=FAST,
    incidents=(
        Incident("landing_page_outage", "acme-shop", START + 3 * MIN, START + 7 * MIN,
                 campaign="winter-sale-search", channel="ads", stage_from="click", stage_to="visit",
                 factor=0.3),
        Incident("team_silent", "northwind-b2b", START + 2 * MIN, START + 6 * MIN, team="support"),
        Incident("tracking_broken", "globex-travel", START + 2 * MIN, START + 6 * MIN,
                 campaign="summer-deals-insta", channel="social", stage_to="impression"),
    ),
)


@pytest.fixture(scope="module")
def incident_run() -> list[dict[str, Any]]:
    return list(sim.generate(INC_CFG))


# --------------------------------------------------------------------------- determinism


def test_same_seed_same_bytes_other_seed_other_bytes(tmp_path: Path) -> None:
    cfg = SimConfig(rate=50, duration_s=120, seed=3, start_ms=START, mix=FAST)
    a, b, c = tmp_path / "a.jsonl", tmp_path / "b.jsonl", tmp_path / "c.jsonl"
    n = sim.write_jsonl(cfg, a)
    assert sim.write_jsonl(cfg, b) == n
    sim.write_jsonl(replace(cfg, seed=4), c)
    assert a.read_bytes() == b.read_bytes()
    assert a.read_bytes() != c.read_bytes()
    lines = a.read_bytes().splitlines()
    assert len(lines) == n > 3000
    assert lines == [sim.dumps(ev) for ev in sim.generate(cfg)]  # file and iterator agree
    assert lines[0] == orjson.dumps(orjson.loads(lines[0]), option=orjson.OPT_SORT_KEYS)


def test_start_ms_shifts_times_and_event_ids() -> None:
    cfg = SimConfig(rate=20, duration_s=60, seed=9, start_ms=START, mix=FAST)
    a = list(sim.generate(cfg))
    b = list(sim.generate(replace(cfg, start_ms=START + 3_600_000)))
    assert [e["type"] for e in a] == [e["type"] for e in b]
    assert ms(b[0]["occurred_at"]) - ms(a[0]["occurred_at"]) == 3_600_000
    assert not {e["event_id"] for e in a} & {e["event_id"] for e in b}  # no dedup clash between runs


# --------------------------------------------------------------------------- contract & order


def test_every_event_follows_the_contract(base: tuple[SimConfig, list[dict[str, Any]]]) -> None:
    _, events = base
    bad = [(ev, errs) for ev in events if (errs := contract_errors(ev))]
    assert not bad[:3]
    rejected = Counter(r.reason for ev in events if isinstance(r := validate(sim.dumps(ev)), Rejection))
    assert not rejected  # and the project's own validator agrees
    assert len({ev["event_id"] for ev in events}) == len(events)
    assert {ev["type"] for ev in events} == TYPES  # every type occurs
    assert {ev["channel"] for ev in events} >= {"ads", "social", "email", "web", "live_chat", "whatsapp",
                                                 "messenger", "b2b_platform", "phone"}
    offsets = {ev["occurred_at"][23:] for ev in events}
    assert offsets >= {"Z", "+01:00", "-05:00"}  # CRM events in local time with an offset


def test_events_in_time_order_within_the_window(base: tuple[SimConfig, list[dict[str, Any]]]) -> None:
    cfg, events = base
    times = [ms(ev["occurred_at"]) for ev in events]
    assert times == sorted(times)
    assert times[0] >= cfg.start_ms and times[-1] < cfg.start_ms + cfg.duration_s * 1000


def test_volume_matches_rate_from_the_first_minute(base: tuple[SimConfig, list[dict[str, Any]]]) -> None:
    cfg, events = base
    assert len(events) == pytest.approx(cfg.rate * cfg.duration_s, rel=0.04)
    per_min = Counter((ms(ev["occurred_at"]) - cfg.start_ms) // MIN for ev in events)
    first, rest = per_min[0], [per_min[m] for m in range(1, 15)]
    assert first == pytest.approx(statistics.mean(rest), rel=0.06)  # warm-up: no ramp
    types = Counter(ev["type"] for ev in events)
    ctr = types["ad_click"] / types["ad_impression"]
    assert 0.02 <= ctr <= 0.06


def test_largest_campaign_has_200_click_persons_per_minute_at_rate_200() -> None:
    cfg = SimConfig(rate=200, duration_s=240, seed=1, start_ms=START, incidents=())
    expected = sim.expected_per_minute(cfg)
    biggest = max(
        ((t, c, v) for t, camps in expected.items() for c, v in camps.items()), key=lambda x: x[2]["click"]
    )
    assert biggest[:2] == ("acme-shop", "winter-sale-search")
    assert biggest[2]["click"] >= 230
    clickers: dict[int, set[str]] = defaultdict(set)
    for ev in sim.generate(cfg):
        if ev["type"] == "ad_click" and ev["campaign"]["name"] == "winter-sale-search":
            clickers[(ms(ev["occurred_at"]) - START) // MIN].add(ev["identities"]["anonymous_id"])
    counts = [len(clickers[m]) for m in range(4)]
    assert min(counts) >= 200
    assert statistics.mean(counts) == pytest.approx(biggest[2]["click"], rel=0.08)


def test_generation_is_lazy() -> None:
    endless = SimConfig(rate=100, duration_s=10**9, seed=2, start_ms=START, mix=FAST)
    first = list(islice(sim.generate(endless), 2000))
    assert len(first) == 2000


# --------------------------------------------------------------------------- behaviour


def test_people_identify_later_and_across_devices(base: tuple[SimConfig, list[dict[str, Any]]]) -> None:
    _, events = base
    anon_only: set[str] = set()
    anon_then_email: set[str] = set()
    email_anons: dict[str, set[str]] = defaultdict(set)
    for ev in events:
        ids = ev["identities"]
        a = ids.get("anonymous_id")
        if a is None:
            continue
        if set(ids) == {"anonymous_id"}:
            anon_only.add(a)
        elif "email" in ids:
            if a in anon_only:
                anon_then_email.add(a)
            email_anons[ids["email"].lower()].add(a)
    assert len(anon_then_email) > 50  # seen anonymously first, identified by email later
    whatsapp = [ev for ev in events if "whatsapp_id" in ev["identities"]]
    assert whatsapp and all(ev["identities"]["whatsapp_id"] == ev["identities"]["phone"] for ev in whatsapp)
    assert any("anonymous_id" in ev["identities"] for ev in whatsapp)  # click-to-chat ref links web → phone
    leads = [ev for ev in events if ev["type"] == "lead"]
    assert leads and all({"email", "crm_contact_id"} <= set(ev["identities"]) for ev in leads)
    forms = [ev["identities"]["email"] for ev in events if ev["type"] == "form_submit"]
    assert any(e != e.lower() for e in forms)  # mixed-case emails: normalisation must cope


def test_sessions_have_several_pages_and_returns(base: tuple[SimConfig, list[dict[str, Any]]]) -> None:
    _, events = base
    pages: dict[str, list[int]] = defaultdict(list)
    for ev in events:
        if ev["type"] == "page_view":
            pages[ev["identities"]["anonymous_id"]].append(ms(ev["occurred_at"]))
    per_person = [len(v) for v in pages.values()]
    assert 2.5 < statistics.mean(per_person) < 6
    gaps = [b - a for v in pages.values() for a, b in pairwise(v)]
    assert 20_000 < statistics.median(gaps) < 60_000  # OTTO-like: median ~30 s
    landing = [ev for ev in events if ev["type"] == "page_view" and "campaign" in ev]
    assert all("utm_campaign=" + ev["campaign"]["name"] in ev["page"]["url"] for ev in landing)


Run = tuple[SimConfig, list[dict[str, Any]]]


def test_conversations_replies_are_heavy_tailed_with_bots(base: Run) -> None:
    _, events = base
    convs: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for ev in events:
        if "conversation" in ev:
            convs[ev["conversation"]["id"]].append(ev)
    assert len(convs) > 300
    delays: dict[str, list[int]] = defaultdict(list)
    autos = closed = 0
    prio: Counter[str] = Counter()
    for msgs in convs.values():
        prio[msgs[0]["conversation"]["priority"]] += 1
        assert len({(m["conversation"]["team"], m["conversation"]["priority"]) for m in msgs}) == 1
        waiting: int | None = None
        for m in msgs:
            if m["type"] == "message_in" and waiting is None:
                waiting = ms(m["occurred_at"])
            elif m["type"] == "message_out":
                if m.get("properties", {}).get("auto"):
                    autos += 1
                    assert m["conversation"]["agent_id"] == "bot"
                    continue
                assert m["conversation"]["agent_id"].startswith("agt-")
                if waiting is not None:
                    delays[m["channel"]].append(ms(m["occurred_at"]) - waiting)
                    waiting = None
            elif m["type"] == "conversation_closed":
                closed += 1
                assert m is msgs[-1]
    assert autos > 50 and closed > 0.5 * len(convs)
    assert prio.most_common(1)[0][0] == "normal" and prio["urgent"] + prio["high"] > 0.05 * len(convs)
    chat = sorted(delays["live_chat"])
    assert statistics.median(chat) < 60_000  # most within a one-minute target
    assert sum(d > 2 * MIN for d in chat) > 0  # ... and a tail of slow ones
    everything = [d for v in delays.values() for d in v]
    assert sum(d > 5 * MIN for d in everything) > 0.01 * len(everything)  # heavy tail overall


def test_returns_and_second_devices_over_a_longer_run() -> None:
    """Returns come > 30 min later, so this needs a run longer than the shared 15 minutes."""
    cfg = SimConfig(rate=40, duration_s=3000, seed=12, start_ms=START, mix=FAST)
    pages: dict[str, list[int]] = defaultdict(list)
    email_anons: dict[str, set[str]] = defaultdict(set)
    identifies = 0
    for ev in sim.generate(cfg):
        ids = ev["identities"]
        if ev["type"] == "page_view":
            pages[ids["anonymous_id"]].append(ms(ev["occurred_at"]))
        if "email" in ids and "anonymous_id" in ids:
            email_anons[ids["email"].lower()].add(ids["anonymous_id"])
        identifies += ev["type"] == "identify"
    gaps = [b - a for v in pages.values() for a, b in pairwise(v)]
    assert sum(g > 30 * MIN for g in gaps) > 50  # a return after > 30 min: a new session
    two_devices = [e for e, a in email_anons.items() if len(a) >= 2 and all(x in pages for x in a)]
    assert two_devices and identifies > len(two_devices)  # second device, linked by the same email


# --------------------------------------------------------------------------- incidents


def test_landing_page_outage_scales_click_to_visit(incident_run: list[dict[str, Any]]) -> None:
    s, e = START + 3 * MIN, START + 7 * MIN
    clicks: dict[str, int] = {}
    landed: set[str] = set()
    for ev in incident_run:
        camp = ev.get("campaign")
        if not camp or camp["name"] != "winter-sale-search":
            continue
        if ev["type"] == "ad_click":
            clicks[ev["identities"]["anonymous_id"]] = ms(ev["occurred_at"])
        elif ev["type"] == "page_view":
            landed.add(ev["identities"]["anonymous_id"])
    inside = [a for a, t in clicks.items() if s <= t < e]
    outside = [a for a, t in clicks.items() if t < s or e <= t < START + 10 * MIN - 10_000]
    r_in = sum(a in landed for a in inside) / len(inside)
    r_out = sum(a in landed for a in outside) / len(outside)
    assert len(inside) > 300
    assert r_out == pytest.approx(0.85, abs=0.04)
    assert r_in / r_out == pytest.approx(0.3, abs=0.06)


def test_team_silent_holds_replies_until_the_window_ends(incident_run: list[dict[str, Any]]) -> None:
    s, e = START + 2 * MIN, START + 6 * MIN
    support_in = support_out = after = other_team_out = 0
    for ev in incident_run:
        if ev["tenant_id"] != "northwind-b2b" or "conversation" not in ev:
            continue
        t = ms(ev["occurred_at"])
        team = ev["conversation"]["team"]
        human = ev["conversation"]["agent_id"] != "bot"
        if team == "support" and s <= t < e:
            if ev["type"] == "message_in":
                support_in += 1
            elif ev["type"] in ("message_out", "conversation_closed") and human:
                support_out += 1
        if team == "support" and ev["type"] == "message_out" and human and e <= t < e + 3 * MIN:
            after += 1
        if team == "sales" and ev["type"] == "message_out" and human and s <= t < e:
            other_team_out += 1
    assert support_in >= 5 and support_out == 0
    assert after > 5  # the backlog drains after the window
    assert other_team_out > 0  # only the named team is silent


def test_tracking_broken_stops_impressions_not_clicks(incident_run: list[dict[str, Any]]) -> None:
    s, e = START + 2 * MIN, START + 6 * MIN
    seen: Counter[tuple[str, bool]] = Counter()
    for ev in incident_run:
        camp = ev.get("campaign")
        if ev["tenant_id"] == "globex-travel" and camp and camp["name"] == "summer-deals-insta":
            seen[(ev["type"], s <= ms(ev["occurred_at"]) < e)] += 1
    assert seen[("ad_impression", True)] == 0
    assert seen[("ad_impression", False)] > 300
    assert seen[("ad_click", True)] > 0


def test_default_incident_plan_scales_and_truth_records_it() -> None:
    hour = SimConfig(rate=200, duration_s=3600, seed=1, start_ms=START)
    kinds = {i.kind: i for i in sim.default_incidents(hour)}
    assert set(kinds) == set(sim.INCIDENT_KINDS)
    outage = kinds["landing_page_outage"]
    assert (outage.start_ms - START, outage.end_ms - outage.start_ms) == (1_200_000, 900_000)
    assert (outage.tenant_id, outage.campaign, outage.factor) == ("acme-shop", "winter-sale-search", 0.5)
    assert kinds["team_silent"].team == "support"
    short = sim.default_incidents(replace(hour, duration_s=600))
    assert all(START < i.start_ms < i.end_ms <= START + 600_000 for i in short)
    endless = sim.default_incidents(replace(hour, duration_s=10**9))
    assert max(i.end_ms for i in endless) <= START + 3600_000  # capped: a live run sees them early

    t = orjson.loads(orjson.dumps(sim.truth(hour, attribution=False)))  # (attribution: its own tests)
    assert t["config"]["seed"] == 1 and t["config"]["end_ms"] == START + 3_600_000
    assert [i["kind"] for i in t["incidents"]] == [i.kind for i in sim.default_incidents(hour)]
    assert [x["tenant_id"] for x in t["tenants"]] == ["acme-shop", "northwind-b2b", "globex-travel"]
    assert sum(x["weight"] for x in t["tenants"]) == pytest.approx(1.0)
    search = t["campaigns"]["acme-shop"]["winter-sale-search"]
    assert search["expected_per_minute"]["click"] >= 200
    assert sim.truth(replace(hour, incidents=()), attribution=False)["incidents"] == []


def test_bad_incidents_and_more_tenants() -> None:
    bad = Incident("landing_page_outage", "acme-shop", START, START + MIN, campaign="nope", factor=0.5)
    with pytest.raises(ValueError, match="unknown campaign"):
        next(sim.generate(SimConfig(rate=10, duration_s=60, seed=1, start_ms=START, incidents=(bad,))))
    with pytest.raises(ValueError, match="unknown incident kind"):
        next(sim.generate(SimConfig(rate=10, duration_s=60, seed=1, start_ms=START,
                                    incidents=(replace(bad, kind="meteor"),))))
    five = SimConfig(rate=50, duration_s=60, seed=1, start_ms=START, tenants=5, mix=FAST)
    assert len({ev["tenant_id"] for ev in sim.generate(five)}) == 5


# --------------------------------------------------------------------------- live pacing


class FakeClock:
    def __init__(self, t: float) -> None:
        self.t = t
        self.sleeps = 0

    def now(self) -> float:
        return self.t

    async def sleep(self, seconds: float) -> None:
        assert seconds > 0
        self.sleeps += 1
        self.t += seconds


@pytest.mark.parametrize("speed", [1.0, 4.0])
def test_stream_live_paces_to_the_clock(speed: float) -> None:
    t0 = START / 1000 + 0.25
    clock = FakeClock(t0)
    sent: list[tuple[float, bytes, bytes]] = []

    async def send(key: bytes, value: bytes) -> None:
        sent.append((clock.t, key, value))

    cfg = SimConfig(rate=20, duration_s=120, seed=4, start_ms=0, mix=FAST)
    n = asyncio.run(sim.stream_live(cfg, send, now=clock.now, sleep=clock.sleep, speed=speed))
    assert n == len(sent) > 1500
    expected = [sim.dumps(ev) for ev in sim.generate(replace(cfg, start_ms=int(t0 * 1000)))]
    assert [v for _, _, v in sent] == expected  # start_ms = now() at the call
    for at, key, value in sent:
        ev = orjson.loads(value)
        assert key == ev["tenant_id"].encode()
        due = t0 + (ms(ev["occurred_at"]) - int(t0 * 1000)) / 1000 / speed
        assert due - 1e-6 <= at <= due + 1e-6  # never early, never late on an idle clock
    assert clock.sleeps > 100
    assert clock.t - t0 == pytest.approx(120 / speed, abs=2 / speed)


# --------------------------------------------------------------------------- noise


def _small() -> Iterator[dict[str, Any]]:
    return sim.generate(SimConfig(rate=20, duration_s=120, seed=8, start_ms=START, mix=FAST))


def test_add_noise_produces_each_documented_reason() -> None:
    events = list(_small())
    noisy = list(sim.add_noise(events, 0.3, seed=1))
    assert noisy == list(sim.add_noise(events, 0.3, seed=1))
    assert list(sim.add_noise(events, 0.0, seed=1)) == [sim.dumps(ev) for ev in events]
    reasons: Counter[str] = Counter()
    seen: set[str] = set()
    for raw in noisy:
        r = validate(raw)
        if isinstance(r, Rejection):
            reasons[r.reason] += 1
        elif r.event_id in seen:
            reasons["duplicate"] += 1
        else:
            seen.add(r.event_id)
    assert len(seen) == len(events)  # every original still arrives intact
    assert set(reasons) == set(sim.NOISE_KINDS.values())
    assert sum(reasons.values()) == len(noisy) - len(events)
    assert sum(reasons.values()) == pytest.approx(0.3 * len(events), rel=0.15)


def test_add_noise_single_kind() -> None:
    for kind, reason in sim.NOISE_KINDS.items():
        if kind == "duplicate":
            continue
        out = list(sim.add_noise(islice(_small(), 50), 1.0, seed=2, kinds=(kind,)))
        bad = out[1::2]
        assert len(bad) == 50
        assert {r.reason for raw in bad if isinstance(r := validate(raw), Rejection)} == {reason}
        assert all(isinstance(validate(raw), Rejection) for raw in bad)
    with pytest.raises(ValueError):
        list(sim.add_noise([], 0.1, seed=1, kinds=("cosmic_ray",)))


# --------------------------------------------------------------------------- detector scoring


def test_evaluation_plan_matching_and_pooled_figures() -> None:
    """``streams.devtools.evaluate``: the long-run incident plan is valid for the simulator and spaced out;
    an anomaly naming the incident's campaign, kind and stage within the window is a hit (with
    its delay), anything unexplained is a false alarm, and series-days count watched series."""
    from streams.devtools.evaluate import evaluate, incident_plan, totals

    cfg = SimConfig(rate=200, duration_s=24 * 3600, seed=5, start_ms=START)
    plan = incident_plan(cfg, seed=5)
    assert len(plan) >= 6 and all(inc.end_ms > inc.start_ms for inc in plan)
    assert all(b.start_ms - a.start_ms >= 100 * MIN for a, b in pairwise(plan))
    assert next(sim.generate(replace(cfg, incidents=plan)))  # (unknown tenants/campaigns would raise)
    assert {inc.kind for inc in plan} <= {"landing_page_outage", "tracking_broken"}

    inc = {"kind": "landing_page_outage", "tenant_id": "t", "campaign": "c", "stage_from": "click",
           "stage_to": "visit", "factor": 0.5, "start_ms": START + 60 * MIN, "end_ms": START + 75 * MIN}
    truth = {"config": {"duration_s": 86_400, "window_ms": MIN}, "incidents": [inc]}

    def anomaly(aid: str, at: int, campaign: str | None, kind: str = "conversion_drop") -> dict[str, Any]:
        return {"anomaly_id": aid, "tenant_id": "t", "dimension": {"channel": None, "campaign": campaign},
                "kind": kind, "stage_from": "click", "stage_to": "visit", "status": "open",
                "window_start": at - 2 * MIN, "detected_at": at}

    funnel = [{"tenant_id": "t", "window_start": START + i * MIN, "channel": None, "campaign": cm,
               "stage": stage, "persons": n, "converted": conv}
              for i in range(1440) for cm in (None, "c")
              for stage, n, conv in (("click", 250, 210), ("visit", 900, 30), ("interaction", 5, 0))]
    hit = anomaly("a1", START + 62 * MIN, "c")
    res = evaluate(truth, [hit, anomaly("a2", START + 300 * MIN, None, "volume_surge"),
                           anomaly("a3", START + 80 * MIN, None)], funnel)
    assert res["recall"] == 1.0 and res["incidents"][0]["delay_windows"] == 2.0
    assert res["incidents"][0]["upper_persons_per_min"] == 250.0 and res["incidents"][0]["eligible"]
    assert res["false_alarms"] == 1 and res["secondary_alarms_during_incidents"] == 1  # a3: recovery tail
    assert res["series"] == 2 * 13 and res["series_days"] == 26.0
    # watched: click, visit volumes and click→visit, visit→interaction conversions, per dimension
    assert res["watched_series"] == 2 * 4 and res["false_alarms_per_100_watched_series_days"] == 12.5
    assert res["false_alarms_by_kind"] == {"volume_surge click→visit @total": 1}
    pooled = totals([res, evaluate(truth, [], funnel)])
    assert (pooled["eligible_incidents"], pooled["detected"], pooled["false_alarms"]) == (2, 1, 1)
    assert pooled["series_days"] == 52.0 and pooled["median_delay_windows"] == 2.0


# --------------------------------------------------------------------------- costs, deals, journeys, truth


def test_ad_events_carry_their_cost_by_the_campaigns_cost_model(base: Run) -> None:
    cfg, events = base
    specs = {(s.tenant_id, c.name): (c, s.currency) for s in sim.tenant_specs(cfg) for c in s.campaigns}
    seen: Counter[tuple[str, str]] = Counter()
    for ev in events:
        if ev["type"] not in ("ad_impression", "ad_click"):
            assert "cost" not in (ev.get("properties") or {})
            continue
        spec, currency = specs[(ev["tenant_id"], ev["campaign"]["name"])]
        cost = (ev.get("properties") or {}).get("cost")
        billed = {"cpc": "ad_click", "cpm": "ad_impression"}.get(spec.cost_model)
        if ev["type"] == billed:
            per_event = spec.cost if billed == "ad_click" else spec.cost / 1000
            assert cost == {"amount": pytest.approx(per_event, abs=1e-6), "currency": currency}
            seen[(spec.cost_model, ev["type"])] += 1
        else:
            assert cost is None
    assert seen[("cpc", "ad_click")] > 1000 and seen[("cpm", "ad_impression")] > 1000


def test_deals_carry_a_crm_deal_id_and_a_value(base: Run) -> None:
    _, events = base
    by_id: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for ev in events:
        if ev["type"] in ("opportunity", "deal_won", "deal_lost"):
            by_id[ev["properties"]["deal_id"]].append(ev)
            assert ev["value"]["amount"] > 0
    assert sum(1 for evs in by_id.values() for e in evs if e["type"] == "deal_won") > 5
    for evs in by_id.values():  # one opportunity, at most one outcome, same value and tenant
        assert evs[0]["type"] == "opportunity" or len(evs) == 1  # (the opportunity may precede the run)
        assert len({(e["tenant_id"], e["value"]["amount"]) for e in evs}) == 1
        assert sum(e["type"] != "opportunity" for e in evs) <= 1


@pytest.fixture(scope="module")
def truth_run() -> tuple[SimConfig, dict[str, Any], list[dict[str, Any]]]:
    cfg = SimConfig(rate=20, duration_s=2 * 3600, seed=21, start_ms=START, mix=FAST)
    return cfg, sim.truth(cfg), list(sim.generate(cfg))


def test_return_visits_come_through_other_campaigns(truth_run: Any) -> None:
    """Multi-channel journeys: some people return through a retargeting ad or the newsletter,
    landing on that campaign's page; one person then has touches of several campaigns."""
    _, truth, events = truth_run
    campaigns: dict[str, set[str]] = defaultdict(set)
    for ev in events:
        camp = ev.get("campaign")
        who = ev["identities"].get("anonymous_id")
        if camp and ev["type"] in ("ad_click", "page_view") and who:
            campaigns[who].add(camp["name"])
        if ev["type"] == "page_view" and camp:
            assert f"utm_campaign={camp['name']}" in ev["page"]["url"]
    assert sum(len(c) >= 2 for c in campaigns.values()) > 20
    channels = [{(x[2], x[3]) for x in d["touches"] if x[3]} for d in truth["attribution"]["deals"]]
    assert any(len({camp for _, camp in c}) >= 2 for c in channels)  # a deal after touches of two campaigns


def test_truth_knows_every_deal_and_its_persons_touches(truth_run: Any) -> None:
    cfg, truth, events = truth_run
    by_id = {ev["event_id"]: ev for ev in events}
    won = {ev["properties"]["deal_id"]: ev for ev in events if ev["type"] == "deal_won"}
    deals = truth["attribution"]["deals"]
    assert {d["deal_id"] for d in deals} == set(won) and len(deals) > 10
    with_touches = 0
    for d in deals:
        ev = won[d["deal_id"]]
        assert d["deal_event_id"] == ev["event_id"] and d["amount"] == ev["value"]["amount"]
        assert ms(ev["occurred_at"]) == d["deal_at"]
        times = [x[0] for x in d["touches"]]
        assert times == sorted(times) and all(t <= d["deal_at"] for t in times)
        for at, event_id, channel, campaign, etype in d["touches"]:
            src = by_id[event_id]  # every touch is an emitted event, as the truth says
            assert (ms(src["occurred_at"]), src["channel"], (src.get("campaign") or {}).get("name"), src["type"]) == (
                at, channel, campaign, etype)
        with_touches += bool(d["touches"])
        acq = d["acquisition"]
        if acq and acq["campaign"] and d["arrived_at"] >= cfg.start_ms:  # arrived in the run: its click is here
            assert any(x[3] == acq["campaign"] and x[4] == "ad_click" for x in d["touches"]) or any(
                x[3] == acq["campaign"] for x in d["touches"])
    assert with_touches > len(deals) / 2


def test_truth_costs_are_what_the_events_carried_and_the_feed_parses(truth_run: Any) -> None:
    from streams.core.contract import validate as check
    from streams.core.roi import event_cost, parse_cost_feed

    cfg, truth, events = truth_run
    sums: Counter[tuple[str, str, str]] = Counter()
    for ev in events:
        tp = check(sim.dumps(ev))
        assert not isinstance(tp, Rejection)
        cost = event_cost(tp)
        if cost is not None:
            sums[(ev["tenant_id"], ev["campaign"]["name"], cost[1])] += cost[0]
    assert {(c["tenant_id"], c["campaign"], c["currency"]): c["cost_micros"] for c in truth["costs"]["events"]} == sums
    rows = parse_cost_feed(sim.cost_feed(cfg), "feed.csv")
    mail = {(s.tenant_id, c.name): c.cost for s in sim.tenant_specs(cfg) for c in s.campaigns if c.cost_model == "feed"}
    assert {(r.tenant_id, r.campaign) for r in rows} == set(mail)
    for r in rows:  # two hours of a day: 1/12 of the daily cost
        assert r.cost_micros == pytest.approx(mail[(r.tenant_id, r.campaign)] / 12 * 1_000_000, abs=5_000)
    for c in truth["campaigns"]["acme-shop"].values():
        assert c["expected_cost_per_minute"] > 0 and c["cost_model"] in ("cpc", "cpm", "feed")


def test_the_pipeline_attributes_the_simulated_deals_as_the_truth_says(truth_run: Any, tmp_path: Path) -> None:
    """End to end: the offline core over the feed, judged against the simulator's ground truth."""
    from streams.devtools.evaluate_attribution import evaluate
    from streams.offline import run

    _, truth, events = truth_run
    run((sim.dumps(ev) for ev in events), tmp_path)
    records = [orjson.loads(x) for x in (tmp_path / "attribution.jsonl").read_bytes().splitlines()]
    report = evaluate(truth, records)
    assert report["totals_exact"] and not report["deals_missing"] and not report["deals_unexpected"]
    assert report["deals_attributed"] == report["deals"] > 10
    for model in report["models"].values():
        assert model["credit_accuracy"] > 0.95 and model["exact_share"] > 0.9
    assert report["acquisition"]["deals_with_campaign"] > 0 and report["acquisition"]["share"] > 0.8
    # a pipeline that lost half the revision records is caught
    broken = evaluate(truth, [r for i, r in enumerate(records) if r["revision"] == 1 or i % 2])
    assert not broken["totals_exact"] or broken["models"]["linear"]["exact_deals"] <= report["models"]["linear"][
        "exact_deals"]
