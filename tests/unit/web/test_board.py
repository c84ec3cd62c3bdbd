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


def test_open_waits_are_oldest_first_with_waiting_time_and_due(sla_pipeline: Pipeline) -> None:
    states = board.snapshot_open_waits(sla_pipeline.stores["sla"], tenant="t")
    body = board.open_waits_payload(states, T0 + 90 * S)
    assert [w["conversation_id"] for w in body["waits"]] == ["c1", "c2", "c4"]  # c3 was answered
    assert (body["count"], body["overdue"], body["truncated"]) == (3, 1, False)
    c1, c2, c4 = body["waits"]
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
    assert [w["tenant_id"] for w in board.open_waits_payload(
        board.snapshot_open_waits(sla_pipeline.stores["sla"]), T0 + 90 * S)["waits"]] == ["t", "other", "t", "t"]
    limited = board.open_waits_payload(states, T0 + 90 * S, limit=2)
    assert limited["truncated"] and limited["count"] == 3 and len(limited["waits"]) == 2


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


def test_funnel_from_memory_counts_distinct_persons_across_open_windows() -> None:
    p = funnel_pipeline()
    snap, first, end = board.snapshot_funnel(p.stores["funnel"], W, tenant="t")
    assert (first, end) == (T0, T0 + 2 * W)
    body = board.funnel_payload(board.funnel_counts_from_snapshot(snap), [])
    (tenant,) = body["tenants"]
    assert tenant["tenant_id"] == "t"
    assert [s["stage"] for s in tenant["stages"]] == list(STAGES)
    got = {s["stage"]: (s["events"], s["persons"], s["conversion_from_previous"]) for s in tenant["stages"]}
    assert got == {
        "impression": (4, 4, None), "click": (2, 2, 0.5), "visit": (3, 2, 1.0), "interaction": (1, 1, 0.5),
        "lead": (0, 0, 0.0), "opportunity": (0, 0, None), "deal": (0, 0, None),
    }
    everyone, _, _ = board.snapshot_funnel(p.stores["funnel"], W)
    assert sorted(everyone) == ["t", "u"]
    recent, first, _ = board.snapshot_funnel(p.stores["funnel"], W, tenant="t", from_ms=T0 + W)
    assert first == T0 + W and board.funnel_counts_from_snapshot(recent)["t"] == {"visit": (1, 1),
                                                                                  "interaction": (1, 1)}


def test_funnel_from_clickhouse_rows_marks_anomalies_on_the_transition_they_concern() -> None:
    rows = [{"tenant_id": "acme", "stage": s, "persons": n, "events": n + 1, "conversion_from_previous": None}
            for s, n in zip(STAGES, (100, 40, 30, 10, 5, 0, 0), strict=True)]
    anomalies = [
        {"anomaly_id": "a1", "tenant_id": "acme", "dimension": {"channel": "web", "campaign": None},
         "stage_from": "impression", "stage_to": "click", "kind": "conversion_drop"},
        {"anomaly_id": "a2", "tenant_id": "acme", "dimension": {"channel": None, "campaign": None},
         "stage_from": "visit", "stage_to": "visit", "kind": "volume_surge"},
        {"anomaly_id": "a3", "tenant_id": "quiet", "dimension": {"channel": None, "campaign": None},
         "stage_from": "impression", "stage_to": "impression", "kind": "volume_drop"},
    ]
    body = board.funnel_payload(board.funnel_counts_from_rows(rows), anomalies)
    acme, quiet = body["tenants"]
    by = {s["stage"]: s for s in acme["stages"]}
    assert by["click"]["anomalies"] == [{"anomaly_id": "a1", "kind": "conversion_drop", "on": "conversion",
                                         "dimension": {"channel": "web", "campaign": None}}]
    assert [a["on"] for a in by["visit"]["anomalies"]] == ["volume"]
    assert by["impression"]["anomalies"] == [] and by["click"]["conversion_from_previous"] == 0.4
    assert (by["click"]["events"], by["click"]["persons"]) == (41, 40)
    assert quiet["tenant_id"] == "quiet" and quiet["stages"][0]["persons"] == 0  # a silent tenant still shows
    assert [a["anomaly_id"] for a in quiet["stages"][0]["anomalies"]] == ["a3"]


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
    body = board.anomalies_payload(found)
    assert body["count"] == len(found)
    funnel = board.funnel_payload({}, found)
    click = next(s for s in funnel["tenants"][0]["stages"] if s["stage"] == "click")
    assert [a["anomaly_id"] for a in click["anomalies"] if a["on"] == "conversion"] == [first["anomaly_id"]]


def test_clickhouse_anomalies_take_the_memory_shape() -> None:
    row = {"anomaly_id": "x", "tenant_id": "t", "channel": "", "campaign": "spring", "stage_from": "visit",
           "stage_to": "interaction", "kind": "conversion_drop", "status": "open",
           "window_start": "2026-03-08T20:00:00+00:00", "last_detected_at": "2026-03-08T20:03:00+00:00",
           "observed": 0.1, "expected": 0.3, "score": -7.5, "est_lost_conversions": 3.0}
    assert board.anomalies_from_clickhouse([row]) == [{
        "anomaly_id": "x", "tenant_id": "t", "dimension": {"channel": None, "campaign": "spring"},
        "stage_from": "visit", "stage_to": "interaction", "kind": "conversion_drop", "window_start": T0,
        "observed": 0.1, "expected": 0.3, "score": -7.5,
    }]


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


def test_page_is_self_contained() -> None:
    page = board.load_page()
    assert "<script>" in page and "/api/funnel" in page and "/api/sla/open" in page
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
    breaches = asyncio.run(proc.sla_breaches(None, 3600))
    assert breaches["source"] == "memory" and all(t["breaches"] is None for t in breaches["teams"])
    waits = asyncio.run(proc.sla_open("t", 10))
    assert waits["source"] == "memory" and [w["conversation_id"] for w in waits["waits"]] == ["c1"]
    assert waits["waits"][0]["overdue"] and now < waits["generated_at"]  # wall clock: long past T0's due time

    allrole = board.Board(fake_runtime("all", p))
    fell_back = asyncio.run(allrole.funnel("t", 400 * 86_400))
    assert fell_back["source"] == "memory" and "clickhouse down" in fell_back["error"]
    assert asyncio.run(allrole.sla_breaches(None, 3600))["error"].startswith("ConnectionError")

    sink = board.Board(fake_runtime("sink", Pipeline()))
    assert asyncio.run(sink.sla_open(None, 10))["source"] == "unavailable"
    sink_anomalies = asyncio.run(sink.open_anomalies(None))
    assert sink_anomalies["source"] == "unavailable" and sink_anomalies["anomalies"] == []
