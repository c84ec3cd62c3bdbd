"""Live board shaping: a real Pipeline fed a few events → the JSON the board endpoints serve.

The snapshot/shaping functions are what the HTTP handlers call under the worker's lock; testing them on
a real core (not hand-written state) keeps them honest about the store layouts they read.
"""

from __future__ import annotations

import asyncio
import itertools
import re
from types import SimpleNamespace
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from streams.core.model import Touchpoint
from streams.core.pipeline import Pipeline, PipelineConfig
from streams.core.stages import STAGES
from streams.settings import Settings
from streams.web import board

T0 = 1_773_000_000_000  # 2026-03-08T20:00:00Z, a window boundary
S = 1000
W = 60_000
_IDS = itertools.count()


def ev(type_: str, at: int, who: str, *, tenant: str = "t", channel: str = "web",
       conv: dict[str, Any] | None = None) -> Touchpoint:
    return Touchpoint(event_id=f"e{next(_IDS)}", tenant_id=tenant, occurred_at=at, channel=channel, type=type_,
                      identities={"anonymous_id": who}, conversation=conv)


def msg(type_: str, at: int, conv: str, channel: str = "live_chat", team: str | None = "support",
        priority: str | None = "normal", tenant: str = "t") -> Touchpoint:
    c: dict[str, Any] = {"id": conv}
    if team:
        c["team"] = team
    if priority:
        c["priority"] = priority
    return ev(type_, at, f"cust-{conv}", tenant=tenant, channel=channel, conv=c)


@pytest.fixture
def sla_pipeline() -> Pipeline:
    """c1 live_chat (60 s target) overdue, c2 whatsapp (300 s) not, c3 answered, c4 a next_reply wait."""
    p = Pipeline()
    for tp in [
        msg("message_in", T0, "c1", priority="high"),
        msg("message_in", T0 + 5 * S, "c3"),
        msg("message_in", T0 + 10 * S, "c2", channel="whatsapp", team="sales"),
        msg("message_out", T0 + 20 * S, "c3"),
        msg("message_in", T0 + 1 * S, "c4", team=None),
        msg("message_out", T0 + 30 * S, "c4", team=None),
        msg("message_in", T0 + 40 * S, "c4", team=None),
        msg("message_in", T0 + 2 * S, "x1", tenant="other"),
    ]:
        p.process(tp)
    p.tick(T0 + 90 * S, wall=False)  # fires c1's warning and breach
    return p


def test_open_waits_most_urgent_first_with_waiting_time_due_and_counts(sla_pipeline: Pipeline) -> None:
    states = board.snapshot_open_waits(sla_pipeline.stores["sla"], tenant="t")
    body = board.open_waits_payload(states, T0 + 90 * S)
    # c1 is overdue; c4 is due in 70 s, c2 in 220 s (c3 was answered)
    assert [w["conversation_id"] for w in body["waits"]] == ["c1", "c4", "c2"]
    assert (body["count"], body["overdue"], body["due_soon"], body["shown"], body["truncated"]) == (3, 1, 2, 3, False)
    c1, c4, c2 = body["waits"]
    assert c1 == {
        "wait_id": "t:c1:1", "tenant_id": "t", "conversation_id": "c1", "channel": "live_chat", "team": "support",
        "agent_id": None, "priority": "high", "kind": "first_reply", "policy": "default", "started_at": T0,
        "waiting_s": 90.0, "target_s": 60.0, "due_at": T0 + 60 * S, "due_in_s": -30.0, "overdue": True,
        "warned": True, "breached": True,
    }
    assert (c2["channel"], c2["team"], c2["due_in_s"], c2["overdue"], c2["breached"]) == (
        "whatsapp", "sales", 220.0, False, False)
    assert (c4["kind"], c4["team"], c4["target_s"], c4["due_in_s"], c4["waiting_s"]) == (
        "next_reply", None, 120.0, 70.0, 50.0)
    assert body["by_team"] == [
        {"tenant_id": "t", "team": "support", "open": 1, "overdue": 1, "due_soon": 0},
        {"tenant_id": "t", "team": None, "open": 1, "overdue": 0, "due_soon": 1},
        {"tenant_id": "t", "team": "sales", "open": 1, "overdue": 0, "due_soon": 1},
    ]
    assert body["by_channel"] == [
        {"channel": "live_chat", "open": 2, "overdue": 1, "due_soon": 1},
        {"channel": "whatsapp", "open": 1, "overdue": 0, "due_soon": 1},
    ]
    everyone = board.open_waits_payload(board.snapshot_open_waits(sla_pipeline.stores["sla"]), T0 + 90 * S)
    assert {w["tenant_id"] for w in everyone["waits"]} == {"t", "other"} and everyone["count"] == 4
    limited = board.open_waits_payload(states, T0 + 90 * S, limit=2)
    assert limited["truncated"] and limited["count"] == 3 and len(limited["waits"]) == 2
    # a team or channel narrows the list, not the counts
    sales = board.open_waits_payload(states, T0 + 90 * S, team="sales")
    assert [w["conversation_id"] for w in sales["waits"]] == ["c2"] and sales["count"] == 3 and sales["shown"] == 1
    no_team = board.open_waits_payload(states, T0 + 90 * S, team="-", channel="live_chat")
    assert [w["conversation_id"] for w in no_team["waits"]] == ["c4"]


def wait(due_in_s: float, priority: str | None, conv: str = "c") -> dict[str, Any]:
    return {"due_in_s": due_in_s, "priority": priority, "tenant_id": "t", "conversation_id": conv}


def test_urgency_overdue_first_urgent_first_then_time_left() -> None:
    waits = [
        wait(400, "urgent", "urgent-in-6m40"), wait(30, "low", "low-in-30s"), wait(50, "urgent", "urgent-in-50s"),
        wait(-10, "normal", "normal-10s-late"), wait(-600, "low", "low-10m-late"), wait(-5, "urgent", "urgent-5s-late"),
        wait(-300, None, "none-5m-late"), wait(59, "high", "high-in-59s"), wait(61, "urgent", "urgent-in-61s"),
    ]
    assert [w["conversation_id"] for w in sorted(waits, key=board.urgency_key)] == [
        "urgent-5s-late",  # overdue, urgent: the one to pick up first
        "none-5m-late", "normal-10s-late",  # overdue, normal priority (the default): longest overdue first
        "low-10m-late",
        "urgent-in-50s", "high-in-59s", "low-in-30s",  # due within the same minute: priority decides
        "urgent-in-61s", "urgent-in-6m40",  # then time left
    ]


def test_snapshot_is_a_copy_the_agents_can_keep_mutating(sla_pipeline: Pipeline) -> None:
    states = board.snapshot_open_waits(sla_pipeline.stores["sla"], tenant="t")
    sla_pipeline.process(msg("message_out", T0 + 95 * S, "c1"))  # the agent answers c1 meanwhile
    assert states[0]["wait"]["breached"] is True and len(states) == 3
    assert len(board.snapshot_open_waits(sla_pipeline.stores["sla"], tenant="t")) == 2


def test_breaches_by_team_combine_the_period_count_and_waits_overdue_now(sla_pipeline: Pipeline) -> None:
    states = board.snapshot_open_waits(sla_pipeline.stores["sla"], tenant="t")
    waits = board.open_waits_payload(states, T0 + 90 * S)["waits"]
    rows = [{"tenant_id": "t", "team": "billing", "breaches": 5}, {"tenant_id": "t", "team": "support", "breaches": 2},
            {"tenant_id": "t", "team": None, "breaches": 1}]
    assert board.breaches_payload(rows, waits)["teams"] == [
        {"tenant_id": "t", "team": "billing", "breaches": 5, "open_overdue": 0},
        {"tenant_id": "t", "team": "support", "breaches": 2, "open_overdue": 1},
        {"tenant_id": "t", "team": None, "breaches": 1, "open_overdue": 0},
    ]
    # a process-role worker has no ClickHouse: only what is overdue right now, breaches unknown
    assert board.breaches_payload(None, waits)["teams"] == [
        {"tenant_id": "t", "team": "support", "breaches": None, "open_overdue": 1},
    ]


def funnel_pipeline() -> Pipeline:
    p = Pipeline()
    events = [
        *(ev("ad_impression", T0 + i * S, f"a{i}", channel="ads") for i in range(4)),
        ev("ad_click", T0 + 10 * S, "a0", channel="ads"), ev("ad_click", T0 + 11 * S, "a1", channel="ads"),
        ev("page_view", T0 + 12 * S, "a0"), ev("page_view", T0 + 13 * S, "a1"),
        ev("page_view", T0 + W + 5 * S, "a0"),  # next window, same person
        ev("form_submit", T0 + W + 6 * S, "a0"),
        ev("ad_impression", T0 + 3 * S, "z", tenant="u", channel="ads"),
    ]
    for tp in events:
        p.process(tp)
    return p


def test_funnel_from_memory_is_the_cohort_rule_over_the_open_windows() -> None:
    p = funnel_pipeline()
    snap, first, end = board.snapshot_funnel(p.stores["funnel"], W, tenant="t")
    assert (first, end) == (T0, T0 + 2 * W)
    body = board.funnel_payload(board.funnel_flows_from_snapshot(snap, 1), [])
    (tenant,) = body["tenants"]
    assert tenant["tenant_id"] == "t" and tenant["other_anomalies"] == 0
    assert [s["stage"] for s in tenant["stages"]] == list(STAGES)
    got = {s["stage"]: (s["events"], s["persons"], s["converted"], s["conversion"], s["from_previous"],
                        s["skipped_previous"]) for s in tenant["stages"]}
    assert got == {
        "impression": (4, 4, 2, 0.5, None, None), "click": (2, 2, 2, 1.0, 2, 0), "visit": (3, 2, 1, 0.5, 2, 0),
        "interaction": (1, 1, 0, 0.0, 1, 0), "lead": (0, 0, 0, None, 0, 0), "opportunity": (0, 0, 0, None, 0, 0),
        "deal": (0, 0, None, None, 0, 0),
    }
    everyone, _, _ = board.snapshot_funnel(p.stores["funnel"], W)
    assert sorted(everyone) == ["t", "u"]
    # the last window only: its visit came from a click in the window before (looked up, not counted)
    recent, first, _ = board.snapshot_funnel(p.stores["funnel"], W, tenant="t", from_ms=T0 + W)
    flows = board.funnel_flows_from_snapshot(recent, 1)["t"]
    assert first == T0 + W
    assert {s: (f["persons"], f["from_previous"]) for s, f in flows.items() if f["persons"]} == {
        "visit": (1, 1), "interaction": (1, 1)}
    # one dimension: the ads clickers' conversion counts their web visits
    ads, _, _ = board.snapshot_funnel(p.stores["funnel"], W, tenant="t", dim=("ads", None))
    ads_flows = board.funnel_flows_from_snapshot(ads, 1)["t"]
    assert (ads_flows["click"]["persons"], ads_flows["click"]["conversion"]) == (2, 1.0)
    assert ads_flows["visit"]["persons"] == 0
    assert board.series_rows_from_snapshot(ads, W) == [
        {"t": T0, "stage": "impression", "persons": 4, "cohort": 0, "converted": None},
        {"t": T0, "stage": "click", "persons": 2, "cohort": 0, "converted": None},
    ]


def flow_rows(tenant: str, persons: tuple[int, ...], converted: tuple[int, ...]) -> list[dict[str, Any]]:
    out = []
    for i, (stage, n) in enumerate(zip(STAGES, persons, strict=True)):
        c = None if i == len(STAGES) - 1 else converted[i]
        fp = None if i == 0 else min(n, converted[i - 1])
        out.append({"tenant_id": tenant, "stage": stage, "events": n + 1, "persons": n, "converted": c,
                    "conversion": None if c is None or not n else round(c / n, 4), "from_previous": fp,
                    "skipped_previous": None if fp is None else n - fp})
    return out


def test_funnel_from_clickhouse_rows_marks_anomalies_on_the_number_they_concern() -> None:
    rows = flow_rows("acme", (100, 40, 30, 10, 5, 0, 0), (40, 20, 8, 3, 0, 0)) + flow_rows(
        "beta", (10, 5, 5, 0, 0, 0, 0), (5, 4, 0, 0, 0, 0))
    anomalies = [
        {"anomaly_id": "a1", "tenant_id": "acme", "dimension": {"channel": None, "campaign": None},
         "stage_from": "click", "stage_to": "visit", "kind": "conversion_drop"},
        {"anomaly_id": "a2", "tenant_id": "acme", "dimension": {"channel": None, "campaign": None},
         "stage_from": "visit", "stage_to": "visit", "kind": "volume_surge"},
        {"anomaly_id": "a3", "tenant_id": "acme", "dimension": {"channel": "web", "campaign": None},
         "stage_from": "impression", "stage_to": "click", "kind": "conversion_drop"},
        {"anomaly_id": "a4", "tenant_id": "quiet", "dimension": {"channel": None, "campaign": None},
         "stage_from": "impression", "stage_to": "impression", "kind": "volume_drop"},
    ]
    body = board.funnel_payload(board.funnel_flows_from_rows(rows), anomalies)
    acme, beta, quiet = body["tenants"]
    by = {s["stage"]: s for s in acme["stages"]}
    # click→visit's drop is on the click row, whose conversion it concerns; the visit volume on visit
    assert by["click"]["anomalies"] == [{"anomaly_id": "a1", "kind": "conversion_drop", "on": "conversion"}]
    assert [a["on"] for a in by["visit"]["anomalies"]] == ["volume"]
    assert by["impression"]["anomalies"] == [] and acme["other_anomalies"] == 1  # a3 is on channel web
    assert (by["click"]["conversion"], by["click"]["next_stage"], by["visit"]["skipped_previous"]) == (0.5, "visit", 10)
    assert quiet["tenant_id"] == "quiet" and quiet["stages"][0]["persons"] == 0  # a silent tenant still shows
    assert [a["anomaly_id"] for a in quiet["stages"][0]["anomalies"]] == ["a4"]
    total = {s["stage"]: s for s in body["total"]["stages"]}
    assert (total["click"]["persons"], total["click"]["converted"], total["click"]["conversion"]) == (45, 24, 0.5333)
    assert (total["visit"]["from_previous"], total["visit"]["skipped_previous"]) == (24, 11)
    assert body["total"]["tenants"] == 3 and total["deal"]["converted"] is None
    assert beta["stages"][1]["conversion"] == 0.8
    web = board.funnel_payload(board.funnel_flows_from_rows(rows), anomalies, ("web", None))
    assert [a["anomaly_id"] for a in web["tenants"][0]["stages"][0]["anomalies"]] == ["a3"]
    assert web["dimension"] == {"channel": "web", "campaign": None}


def test_series_payload_pools_conversion_and_averages_volume_per_window() -> None:
    b = 5 * W
    rows = [
        {"t": T0, "stage": "click", "persons": 50, "cohort": 50, "converted": 40},
        {"t": T0 + b, "stage": "click", "persons": 300, "cohort": 200, "converted": 20},
        {"t": T0 + b, "stage": "deal", "persons": 1, "cohort": 0, "converted": None},
    ]
    body = board.series_payload(rows, T0 + 30_000, T0 + 2 * b + 2 * W, b, W)
    assert body["buckets"] == [T0, T0 + b, T0 + 2 * b] and body["bucket_ms"] == b
    click, deal = body["stages"]
    assert click["stage"] == "click" and click["next_stage"] == "visit"
    assert click["persons"] == [10.0, 60.0, 0.0]  # per window; the last bucket has 2 windows so far
    assert click["conversion"] == [0.8, 0.1, None] and click["cohort"] == [50, 200, 0]
    assert deal["next_stage"] is None and deal["conversion"] == [None, None, None]


def test_merge_anomalies_memory_decides_clickhouse_completes() -> None:
    mem = [{"anomaly_id": "live", "tenant_id": "t", "window_start": 5, "est_lost_conversions": None,
            "last_detected_at": None, "status": "open", "source": "memory"}]
    ch = [{"anomaly_id": "live", "tenant_id": "t", "window_start": 5, "est_lost_conversions": 3.5,
           "last_detected_at": 9, "status": "update"},
          {"anomaly_id": "history", "tenant_id": "t", "window_start": 1, "est_lost_conversions": 7.0,
           "last_detected_at": 4, "status": "open"},
          {"anomaly_id": "over", "tenant_id": "t", "window_start": 1, "est_lost_conversions": 9.0,
           "last_detected_at": 4, "status": "resolved"}]
    merged = board.merge_anomalies(mem, ch)
    assert [(a["anomaly_id"], a["source"], a["est_lost_conversions"]) for a in merged] == [
        ("live", "memory", 3.5), ("history", "clickhouse", 7.0)]
    assert merged[0]["last_detected_at"] == 9 and merged[0]["status"] == "open"
    assert [a["anomaly_id"] for a in board.anomalies_payload(merged)["anomalies"]] == ["history", "live"]  # impact
    assert {a["anomaly_id"] for a in board.merge_anomalies(mem, ch, open_only=False)} == {"live", "history", "over"}
    assert board.merge_anomalies(mem, None) == mem


def test_open_anomalies_are_the_detector_incidents_emitted_and_not_resolved() -> None:
    """A click-through collapse after a steady half hour, through the real funnel and detector."""
    p = Pipeline(PipelineConfig(allowed_lateness_ms=0))
    emitted: list[dict[str, Any]] = []
    for i in range(44):
        ws = T0 + i * W
        ctr = 0.5 if i < 36 else 0.05
        for k in range(60):
            who = f"w{i}-{k}"
            p.process(ev("ad_impression", ws + k * 500, who, channel="ads"))
            if k < 60 * ctr:
                p.process(ev("ad_click", ws + k * 500 + 100, who, channel="ads"))
        p.tick(ws + W, wall=False)
        emitted += p.drain().anomalies
    still_open = {e["anomaly_id"] for e in emitted if e["status"] == "open"} - {
        e["anomaly_id"] for e in emitted if e["status"] == "resolved"}
    assert still_open, "the drop should have opened an incident"
    found = board.snapshot_open_anomalies(p.stores["anomaly"])
    assert {a["anomaly_id"] for a in found} == still_open
    assert board.snapshot_open_anomalies(p.stores["anomaly"], tenant="nobody") == []
    first = next(e for e in emitted if e["status"] == "open")
    mine = next(a for a in found if a["anomaly_id"] == first["anomaly_id"])
    for field in ("tenant_id", "dimension", "stage_from", "stage_to", "kind", "window_start"):
        assert mine[field] == first[field], field
    assert (mine["kind"], mine["stage_from"], mine["stage_to"]) == ("conversion_drop", "impression", "click")
    assert mine["observed"] < mine["expected"] and mine["score"] < 0
    assert mine["status"] == "open" and mine["source"] == "memory" and mine["est_lost_conversions"] is None
    body = board.anomalies_payload(found)
    assert body["count"] == len(found)
    dim = (mine["dimension"]["channel"], mine["dimension"]["campaign"])
    funnel = board.funnel_payload({}, found, dim)
    impression = funnel["tenants"][0]["stages"][0]
    assert [a["anomaly_id"] for a in impression["anomalies"] if a["on"] == "conversion"] == [first["anomaly_id"]]
    (incident,) = [i for i in board.incidents_for(found, dim) if i["anomaly_id"] == first["anomaly_id"]]
    assert incident["start"] == first["window_start"] and incident["end"] is None


def test_bearer_token_header_and_the_pages_query_token() -> None:
    assert board.authorized({}, None)
    assert board.authorized({"Authorization": "Bearer s3cret"}, "s3cret")
    assert not board.authorized({"Authorization": "Bearer s3cre"}, "s3cret")
    assert not board.authorized({}, "s3cret")
    assert not board.authorized({"Authorization": "s3cret"}, "s3cret")
    assert board.authorized({}, "s3cret", query_token="s3cret")  # only /board passes it
    assert not board.authorized({}, "s3cret", query_token="nope")


def test_parameters() -> None:
    assert board.parse_since_param(None) == 3600 and board.parse_since_param("15m") == 900
    assert board.parse_since_param("7d") == 7 * 86_400
    for bad in ("8d", "0s", "1 hour", "-1h"):
        with pytest.raises(board.BadRequest):
            board.parse_since_param(bad)
    assert board.parse_limit_param(None) == 200 and board.parse_limit_param("5") == 5
    for bad in ("0", "x", "-3", "100000"):
        with pytest.raises(board.BadRequest):
            board.parse_limit_param(bad)
    assert board.parse_since_param(None, board.DEFAULT_SERIES_SINCE_S) == 3 * 3600
    assert board.dimension_param("", "") == (None, None)
    assert board.dimension_param("ads", "spring|sale") == ("ads", "spring|sale")
    for channel, campaign in (("fax", None), (None, "x" * 300)):
        with pytest.raises(board.BadRequest):
            board.dimension_param(channel, campaign)
    # 1-minute buckets up to 6 hours, then coarser, always whole funnel windows
    assert [board.bucket_seconds(s, W) for s in (900, 3 * 3600, 6 * 3600, 86_400, 7 * 86_400)] == [
        60, 60, 60, 300, 1800]
    assert board.bucket_seconds(3600, 5 * W) == 300


def test_page_is_self_contained() -> None:
    page = board.load_page()
    for path in ("/api/funnel", "/api/funnel/series", "/api/sla/open", "/api/sla/breaches", "/api/anomalies/open"):
        assert f'"{path}"' in page, path
    assert re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", page) is None  # no CDN, no external resource
    assert "innerHTML" not in page  # event data (tenant, team names) only ever goes in as text


class FailingClickHouse:
    """Stands in for a ClickHouse that is down: ``run`` raises like the real client would."""

    async def run(self, fn: Any, *args: Any) -> Any:
        raise ConnectionError("clickhouse down")


def fake_runtime(role: str, pipeline: Pipeline) -> Any:
    """A worker as the board sees it: its process stage's tasks (one here) and its lock."""
    process = None
    if role != "sink":
        processor = SimpleNamespace(stores=pipeline.stores, pipeline=pipeline)
        process = SimpleNamespace(processors=lambda: [processor], ready=True)
    return SimpleNamespace(settings=Settings.from_env({}, role=role), process=process, lock=asyncio.Lock(),
                           clickhouse=FailingClickHouse())


def test_a_process_worker_answers_from_memory_and_a_clickhouse_failure_falls_back() -> None:
    p = funnel_pipeline()
    for tp in (msg("message_in", T0, "c1"),):
        p.process(tp)
    now = T0 + 2 * W
    proc = board.Board(fake_runtime("process", p))
    proc_funnel = asyncio.run(proc.funnel("t", 400 * 86_400))
    assert proc_funnel["source"] == "memory" and proc_funnel["role"] == "process" and "error" not in proc_funnel
    assert proc_funnel["tenants"][0]["stages"][0]["persons"] == 4
    assert proc_funnel["attribution"] == {"window_ms": W, "lookahead_windows": 1}
    series = asyncio.run(proc.series("t", 400 * 86_400, (None, None)))
    assert series["source"] == "memory" and series["dimensions"] == [] and series["bucket_ms"] == 86_400_000
    assert [s["stage"] for s in series["stages"]] == ["impression", "click", "visit", "interaction"]
    assert all(c is None for s in series["stages"] for c in s["conversion"])  # measured when windows close
    breaches = asyncio.run(proc.sla_breaches(None, 3600))
    assert breaches["source"] == "memory" and all(t["breaches"] is None for t in breaches["teams"])
    waits = asyncio.run(proc.sla_open("t", 10))
    assert waits["source"] == "memory" and [w["conversation_id"] for w in waits["waits"]] == ["c1"]
    assert waits["waits"][0]["overdue"] and now < waits["generated_at"]  # wall clock: long past T0's due time
    assert asyncio.run(proc.open_anomalies(None))["source"] == "memory"

    allrole = board.Board(fake_runtime("all", p))
    fell_back = asyncio.run(allrole.funnel("t", 400 * 86_400))
    assert fell_back["source"] == "memory" and "clickhouse down" in fell_back["error"]
    assert "clickhouse down" in asyncio.run(allrole.series("t", 3600, (None, None)))["error"]
    assert asyncio.run(allrole.sla_breaches(None, 3600))["error"].startswith("ConnectionError")

    sink = board.Board(fake_runtime("sink", Pipeline()))
    assert asyncio.run(sink.sla_open(None, 10))["source"] == "unavailable"
    sink_anomalies = asyncio.run(sink.open_anomalies(None))
    assert sink_anomalies["source"] == "unavailable" and sink_anomalies["anomalies"] == []


class CountingClickHouse:
    """A ClickHouse that answers: runs the (patched) query function and counts the calls."""

    def __init__(self) -> None:
        self.calls = 0

    async def run(self, fn: Any, *args: Any) -> Any:
        self.calls += 1
        await asyncio.sleep(0.01)
        return fn(*args)


def test_an_all_worker_reads_clickhouse_once_for_concurrent_boards(monkeypatch: pytest.MonkeyPatch) -> None:
    p = funnel_pipeline()
    rows = flow_rows("t", (10, 4, 3, 0, 0, 0, 0), (4, 3, 0, 0, 0, 0))
    seen: list[dict[str, Any]] = []

    def funnel(ch: Any, tenant: str | None, since_s: int, **kw: Any) -> list[dict[str, Any]]:
        seen.append({"tenant": tenant, "since_s": since_s, **kw})
        return rows

    history = [{"anomaly_id": "h1", "tenant_id": "t", "dimension": {"channel": None, "campaign": None},
                "stage_from": "click", "stage_to": "visit", "kind": "conversion_drop", "status": "open",
                "window_start": T0, "last_detected_at": T0 + W, "observed": 0.2, "expected": 0.6, "score": -5.0,
                "est_lost_conversions": 2.5}]
    monkeypatch.setattr(board.queries, "funnel", funnel)
    monkeypatch.setattr(board.queries, "anomaly_incidents", lambda ch, tenant, since_s: history)
    def funnel_series(ch: Any, tenant: str | None, since_s: int, bucket_s: int, now_ms: int,
                      **kw: Any) -> list[dict[str, Any]]:
        last = now_ms - now_ms % (bucket_s * 1000) - bucket_s * 1000
        return [{"t": last, "stage": "click", "persons": 4, "cohort": 4, "converted": 3}]

    monkeypatch.setattr(board.queries, "funnel_series", funnel_series)
    monkeypatch.setattr(board.queries, "funnel_dimensions", lambda ch, tenant, since_s: [
        {"channel": "ads", "campaign": None, "person_minutes": 14}])
    rt = fake_runtime("all", p)
    rt.clickhouse = CountingClickHouse()
    b = board.Board(rt)

    async def three_boards() -> list[dict[str, Any]]:
        return list(await asyncio.gather(*(b.funnel("t", 3600, ("ads", None)) for _ in range(3))))

    bodies = asyncio.run(three_boards())
    assert len(seen) == 1 and seen[0] == {"tenant": "t", "since_s": 3600, "channel": "ads", "campaign": None,
                                          "window_ms": W, "lookahead": 1}
    body = bodies[0]
    assert body["source"] == "clickhouse" and "error" not in body
    click = body["tenants"][0]["stages"][1]
    assert (click["conversion"], click["anomalies"]) == (0.75, [])  # h1 is on the total, not on ads
    assert body["tenants"][0]["other_anomalies"] == 1
    calls = rt.clickhouse.calls
    asyncio.run(b.funnel("t", 3600, ("ads", None)))
    assert len(seen) == 1 and rt.clickhouse.calls == calls + 0  # both reused within their TTL
    series = asyncio.run(b.series("t", 3 * 3600, (None, None)))
    assert series["source"] == "clickhouse" and series["dimensions"][0]["channel"] == "ads"
    assert [i["anomaly_id"] for i in series["incidents"]] == ["h1"]
    assert series["stages"][0]["stage"] == "click" and 0.75 in series["stages"][0]["conversion"]
    anomalies = asyncio.run(b.open_anomalies("t"))
    assert [(a["anomaly_id"], a["source"], a["est_lost_conversions"]) for a in anomalies["anomalies"]] == [
        ("h1", "clickhouse", 2.5)]


@settings(max_examples=200, deadline=None)
@given(dues=st.lists(st.tuples(st.integers(-400, 400), st.sampled_from(["urgent", "high", "normal", "low", None])),
                     min_size=1, max_size=30))
def test_every_wait_shown_overdue_sorts_before_every_other_whatever_its_rounding(
    dues: list[tuple[int, str | None]]
) -> None:
    """Overdue is decided on the exact time left, shown to 0.1 s: a wait 40 ms past due reads
    due_in_s -0.0 yet is overdue, and sorts with the overdue waits, urgent first among them."""
    now = T0 + 3_600 * S
    states = [{"tenant_id": "t", "conversation_id": f"c{i}", "team": None, "agent_id": None,
               "wait": {"n": 1, "channel": "live_chat", "priority": prio, "kind": "first_reply", "policy": None,
                        "started_at": now - 60 * S, "target_s": 60.0, "due_at": now + due_ms}}
              for i, (due_ms, prio) in enumerate(dues)]
    rows = board.open_waits_payload(states, now, limit=1000)["waits"]
    flags = [r["overdue"] for r in rows]
    assert flags == sorted(flags, reverse=True)
    ranks = [board.PRIORITY_RANK[r["priority"] or "normal"] for r in rows if r["overdue"]]
    assert ranks == sorted(ranks)
