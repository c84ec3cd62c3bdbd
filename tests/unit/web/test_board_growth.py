"""The growth tab's lifecycle and ROI panels: their API answers (from a real embedded ClickHouse
loaded through the core and the sink's row mapping), their parameters, and what a process worker
or a failing ClickHouse answers (errors shown, never cached)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from streams.clickhouse.client import ClickHouse
from streams.core.attribution import MODELS
from streams.core.pipeline import Pipeline
from streams.core.tagrules import LIFECYCLE
from streams.web import board
from tests.unit.clickhouse.test_profiles_attribution import journey
from tests.unit.clickhouse.test_queries_growth import load
from tests.unit.web.test_board import CountingClickHouse, fake_runtime


def test_model_parameter() -> None:
    assert board.model_param(None) == board.model_param("") == "linear"
    assert board.model_param("time_decay") == "time_decay"
    with pytest.raises(board.BadRequest):
        board.model_param("w_shaped")


def test_lifecycle_payload_per_tenant_and_in_total() -> None:
    rows = [{"tenant_id": "a", "stage": "anonymous", "persons": 3},
            {"tenant_id": "a", "stage": "customer", "persons": 1}, {"tenant_id": "b", "stage": "lead", "persons": 4}]
    body = board.lifecycle_payload(rows)
    a, b = body["tenants"]
    assert (a["tenant_id"], a["persons"], b["persons"], body["total"]["persons"]) == ("a", 4, 4, 8)
    assert [s["stage"] for s in a["stages"]] == list(LIFECYCLE)
    assert {s["stage"]: (s["persons"], s["share"]) for s in body["total"]["stages"]} == {
        "anonymous": (3, 0.375), "known": (0, 0.0), "lead": (4, 0.5), "opportunity": (0, 0.0), "customer": (1, 0.125)}
    assert board.lifecycle_payload([]) == {"tenants": [], "total": {"persons": 0, "stages": [
        {"stage": s, "persons": 0, "share": None} for s in LIFECYCLE]}}


def test_panels_from_clickhouse(ch: ClickHouse) -> None:
    load(ch, journey())
    rt = fake_runtime("sink", Pipeline())
    rt.clickhouse = ch
    b = board.Board(rt)
    life = asyncio.run(b.lifecycle("acme"))
    assert life["source"] == "clickhouse" and "error" not in life
    (acme,) = life["tenants"]
    assert {s["stage"]: s["persons"] for s in acme["stages"] if s["persons"]} == {"anonymous": 1, "customer": 1}
    roi = asyncio.run(b.roi(None, "first_touch"))
    assert roi["source"] == "clickhouse" and roi["model"] == "first_touch" and roi["models"] == list(MODELS)
    spring = next(r for r in roi["campaigns"] if r["campaign"] == "spring")
    assert (spring["revenue"], spring["cost"], spring["currency"]) == ("300.00", "1.0065", "EUR")
    assert spring["roi"] == round((300 - 1.0065) / 1.0065, 4) and spring["chain_product"] == 0.5
    assert sum(r["revenue_minor"] for r in asyncio.run(b.roi(None))["campaigns"]) == 30_000  # linear


def test_process_worker_and_failing_clickhouse(monkeypatch: pytest.MonkeyPatch) -> None:
    proc = board.Board(fake_runtime("process", Pipeline()))
    body = asyncio.run(proc.lifecycle(None))
    assert body["source"] == "unavailable" and body["tenants"] == [] and "error" not in body
    assert asyncio.run(proc.roi(None))["campaigns"] == []

    failing = board.Board(fake_runtime("all", Pipeline()))
    for body in (asyncio.run(failing.lifecycle(None)), asyncio.run(failing.roi(None))):
        assert body["source"] == "unavailable" and "clickhouse down" in body["error"]
    assert not failing._cache  # a failure is not kept: the next poll asks again

    calls: list[str] = []

    def campaign_roi(ch: Any, tenant: str | None, **kw: Any) -> list[dict[str, Any]]:
        calls.append(kw["model"])
        return [{"tenant_id": "t", "campaign": "c", "revenue_minor": 1}]

    monkeypatch.setattr(board.queries, "campaign_roi", campaign_roi)
    rt = fake_runtime("all", Pipeline())
    rt.clickhouse = CountingClickHouse()
    ok = board.Board(rt)
    first = asyncio.run(ok.roi("t", "linear"))
    assert first["source"] == "clickhouse" and first["campaigns"][0]["campaign"] == "c"
    asyncio.run(ok.roi("t", "linear"))
    asyncio.run(ok.roi("t", "last_touch"))
    assert calls == ["linear", "last_touch"]  # reused within its TTL, per model


def test_page_asks_for_the_growth_panels() -> None:
    page = board.load_page()
    for needle in ('"/api/profiles/lifecycle"', '"/api/roi"', 'id="lifecycle"', 'id="roi"', 'id="roi-model"'):
        assert needle in page, needle
