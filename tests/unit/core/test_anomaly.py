"""Anomaly detector: constructed series (steps, seasonality, thin traffic, recovery, new series,
attribution, gaps, persistence, the cohort conversion with organic visits, serially correlated
volumes) and a small synthetic quality harness.

The harness is a deterministic generator: ``random.Random(seed)``, exact binomial draws, Poisson
traffic, a daily-seasonal traffic level and conversion rate. ``quality()`` measures recall,
false alarms and detection delay; the test runs a few series-days, ``python -m
tests.unit.core.test_anomaly`` runs a longer version and prints the table.
"""

from __future__ import annotations

import json
import math
import random
import statistics
import sys
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from streams.core.anomaly import AnomalyDetector, DetectorConfig, anomaly_id, baseline, evidence
from streams.core.funnel import FunnelAggregator, FunnelConfig
from streams.core.stages import STAGES
from streams.core.state import MemoryStore

W = 60_000
T0 = 1_767_225_600_000  # 2026-01-01T00:00:00Z
EVENT_KEYS = {
    "anomaly_id", "tenant_id", "dimension", "stage_from", "stage_to", "kind", "status", "window_start",
    "detected_at", "observed", "expected", "score", "est_lost_conversions", "total_observed",
    "total_expected", "anomaly_score",
}

# --- deterministic generator ------------------------------------------------------------------


def binomial(rng: random.Random, n: int, p: float) -> int:
    """Exact binomial draw by geometric skips (O(n·min(p, 1-p)))."""
    if n <= 0 or p <= 1e-12:
        return 0
    if p >= 1:
        return n
    if p > 0.5:
        return n - binomial(rng, n, 1.0 - p)
    log_q = math.log(1.0 - p)
    k = pos = 0
    while True:
        pos += int(math.log(1.0 - rng.random()) / log_q) + 1
        if pos > n:
            return k
        k += 1


def poisson(rng: random.Random, lam: float) -> int:
    if lam > 50:  # normal approximation: fine for traffic volumes
        return max(0, round(lam + math.sqrt(lam) * rng.gauss(0.0, 1.0)))
    limit, k, prod = math.exp(-lam), 0, rng.random()
    while prod > limit:
        prod *= rng.random()
        k += 1
    return k


def converted(counts: list[int], k: int) -> int | None:
    """The chain is nested (stage k+1 persons are drawn from stage k's), as the funnel's cohort count."""
    if k + 1 >= len(STAGES):
        return None
    return counts[k + 1] if k + 1 < len(counts) else 0


Cell = tuple[str, str | None]  # (channel, campaign)
#: effect(minute, channel, campaign) -> (traffic multiplier, conversion multiplier)
Effect = Callable[[int, str, str | None], tuple[float, float]]


def no_effect(i: int, channel: str, campaign: str | None) -> tuple[float, float]:
    return 1.0, 1.0


@dataclass
class Sim:
    """Persons per stage per (channel, campaign) cell; the first conversion is the one under test."""

    cells: dict[Cell, float]  # mean upper-stage persons per minute
    rates: tuple[float, ...] = (0.3,)  # conversions impression→click, click→visit, ...
    traffic_amp: float = 0.4  # daily swing of traffic (relative)
    rate_amp: float = 0.15  # daily swing of the first conversion rate (relative)
    seed: int = 0

    def rows(self, tenant: str, i: int, rng: random.Random, effect: Effect) -> list[dict[str, Any]]:
        ang = 2 * math.pi * i / 1440 + self.seed
        agg: dict[Cell, list[int]] = {}
        for (channel, campaign), base in self.cells.items():
            traffic, conv = effect(i, channel, campaign)
            counts = [poisson(rng, base * traffic * (1 + self.traffic_amp * math.sin(ang)))]
            for k, rate in enumerate(self.rates):
                if k == 0:  # the conversion under test: seasonal, and the effect applies to it
                    rate *= conv * (1 + self.rate_amp * math.sin(ang + 1.0))
                r = rate
                counts.append(binomial(rng, counts[-1], min(1.0, r)))
            dims: list[Cell] = [(None, None), (channel, None)]  # type: ignore[list-item]
            if campaign is not None:
                dims += [(None, campaign), (channel, campaign)]  # type: ignore[list-item]
            for dim in dims:
                acc = agg.setdefault(dim, [0] * len(counts))
                for k, c in enumerate(counts):
                    acc[k] += c
        ws = T0 + i * W
        return [
            {"tenant_id": tenant, "window_start": ws, "window_end": ws + W, "channel": ch, "campaign": cm,
             "stage": STAGES[k], "events": c, "persons": c, "converted": converted(counts, k)}
            for (ch, cm), counts in agg.items() for k, c in enumerate(counts) if c > 0
        ]

    def run(
        self, det: AnomalyDetector, minutes: int, effect: Effect = no_effect, tenant: str = "t",
        start: int = 0, rng: random.Random | None = None,
    ) -> list[dict[str, Any]]:
        rng = rng or random.Random(self.seed)
        out = []
        for i in range(start, start + minutes):
            ws = T0 + i * W
            for ev in det.observe_windows(tenant, ws, self.rows(tenant, i, rng, effect), ws + W):
                out.append({**ev, "i": i})
        return out


def opens(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [e for e in events if e["status"] == "open"]


def step(start: int, end: int, conv: float = 1.0, traffic: float = 1.0, channel: str | None = None,
         campaign: str | None = None) -> Effect:
    def effect(i: int, ch: str, cm: str | None) -> tuple[float, float]:
        hit = start <= i < end and channel in (None, ch) and campaign in (None, cm)
        return (traffic, conv) if hit else (1.0, 1.0)
    return effect


# --- constructed series -----------------------------------------------------------------------


def test_conversion_drop_opens_once_updates_sparingly_and_resolves() -> None:
    det = AnomalyDetector(MemoryStore())
    events = Sim({("web", None): 500}).run(det, 320, step(200, 240, conv=0.6))
    assert [e["status"] for e in events if e["status"] != "update"] == ["open", "resolved"]
    first = events[0]
    assert set(first) - {"i"} == EVENT_KEYS
    assert first["kind"] == "conversion_drop" and first["dimension"] == {"channel": None, "campaign": None}
    assert (first["stage_from"], first["stage_to"]) == ("impression", "click")
    assert 200 <= first["i"] <= 203  # detection delay ≤ 3 windows
    assert first["window_start"] == T0 + 200 * W  # the window the drop started
    assert first["detected_at"] == T0 + (first["i"] + 1) * W
    assert first["observed"] < 0.8 * first["expected"] and first["score"] < -4
    assert first["est_lost_conversions"] > 0
    assert first["total_observed"] < first["total_expected"]
    updates = [e["i"] for e in events if e["status"] == "update"]
    assert updates and all(b - a >= 5 for a, b in zip([first["i"], *updates], updates, strict=False))
    resolved = events[-1]
    assert 240 <= resolved["i"] <= 250  # hysteresis: a few normal windows after recovery
    assert {e["anomaly_id"] for e in events} == {first["anomaly_id"]}
    assert det.open_incidents() == 0


def test_conversion_surge_and_volume_surge_are_detected() -> None:
    events = Sim({("web", None): 400}).run(AnomalyDetector(MemoryStore()), 260, step(200, 230, conv=1.6))
    assert [e["kind"] for e in opens(events)] == ["conversion_surge"]
    events = Sim({("web", None): 400}).run(AnomalyDetector(MemoryStore()), 260, step(200, 230, traffic=2.0))
    assert [(e["kind"], e["stage_from"]) for e in opens(events)] == [("volume_surge", "impression")]


def test_impressions_to_zero_is_one_volume_drop_not_one_per_stage() -> None:
    sim = Sim({("ads", "a"): 600, ("ads", "b"): 600}, rates=(0.3, 0.6, 0.2))
    det = AnomalyDetector(MemoryStore())
    events = sim.run(det, 260, step(200, 230, traffic=0.0))
    found = opens(events)
    assert len(found) == 1, found
    ev = found[0]
    assert (ev["kind"], ev["stage_from"], ev["stage_to"]) == ("volume_drop", "impression", "impression")
    assert ev["observed"] == 0.0 and ev["i"] <= 202
    # lost conversions reach the end of the funnel: impressions × 0.3 × 0.6 × 0.2 ≈ 3.6 % of the deficit
    assert 0.02 * ev["expected"] < ev["est_lost_conversions"] / (ev["i"] - 199) < 0.06 * ev["expected"]
    assert det.open_incidents() == 0 or [e["status"] for e in events][-1] == "resolved"


def test_normal_daily_cycle_raises_nothing_after_warmup() -> None:
    sim = Sim({("web", "c1"): 300, ("ads", "c2"): 300}, traffic_amp=0.5, rate_amp=0.25, seed=3)
    events = sim.run(AnomalyDetector(MemoryStore()), 2 * 1440)
    assert opens(events) == []


def test_thin_traffic_never_pages() -> None:
    """2/4 → 0/3 is not news, nor is a total collapse of a series of 3 persons a minute."""
    det = AnomalyDetector(MemoryStore())
    events = Sim({("web", None): 4}, rates=(0.5,)).run(det, 200, step(120, 160, conv=0.0))
    events += Sim({("web", None): 3}).run(det, 100, step(0, 100, traffic=0.0), tenant="u")
    assert events == []


def test_evidence_respects_counts() -> None:
    cfg = DetectorConfig()
    small, _ = evidence.llr(cfg, "conversion", True, 0, 3, 1.5, 0.5, 0.75)  # expected 2/4-ish, saw 0/3
    large, _ = evidence.llr(cfg, "conversion", True, 150, 1000, 400, 0.4, 240)  # expected 400/1000, saw 150
    assert 0 < small < 1.5 and large > 5 * cfg.threshold_nats


def test_incident_stays_open_while_the_drop_lasts_then_resolves() -> None:
    """While open nothing is learned: two hours of a −40 % drop do not become the new baseline."""
    det = AnomalyDetector(MemoryStore())
    events = Sim({("web", None): 400}).run(det, 500, step(200, 320, conv=0.6))
    assert [e["status"] for e in events if e["status"] != "update"] == ["open", "resolved"]
    assert 320 <= events[-1]["i"] <= 330
    assert 0.55 < events[-1]["observed"] / events[-1]["expected"] < 0.7


def test_new_series_is_protected_within_60_windows() -> None:
    """A campaign that starts now is watched after its warm-up (10 windows; the product asks ≤ 60):
    its launch is not an incident of the total, its breakage 20 minutes later is."""
    det = AnomalyDetector(MemoryStore())
    rng = random.Random(5)
    base = Sim({("web", "old"): 300})
    both = Sim({("web", "old"): 300, ("ads", "new"): 300})
    events = base.run(det, 600, rng=rng)
    events += both.run(det, 100, step(620, 700, conv=0.5, campaign="new"), start=600, rng=rng)
    found = opens(events)
    assert len(found) == 1 and found[0]["dimension"]["campaign"] == "new"
    assert 620 <= found[0]["i"] <= 623


CELLS: dict[Cell, float] = {
    ("web", "c1"): 150, ("web", "c2"): 150, ("ads", "c1"): 100, ("ads", "c3"): 200, ("ads", "c4"): 100,
}


def test_a_campaign_drop_is_one_incident_naming_that_campaign() -> None:
    det = AnomalyDetector(MemoryStore())
    events = Sim(CELLS, seed=1).run(det, 360, step(300, 330, conv=0.5, campaign="c3"))
    found = opens(events)
    assert len(found) == 1, found
    ev = found[0]
    assert ev["dimension"] == {"channel": None, "campaign": "c3"} and ev["kind"] == "conversion_drop"
    assert ev["total_observed"] < ev["total_expected"]  # the total-level effect rides along
    assert ev["observed"] / ev["expected"] < ev["total_observed"] / ev["total_expected"]


def test_a_channel_wide_drop_names_the_channel_and_a_cell_drop_names_the_cell() -> None:
    effect = step(300, 330, conv=0.5, channel="ads")
    events = Sim(CELLS, seed=1).run(AnomalyDetector(MemoryStore()), 360, effect)
    assert [e["dimension"] for e in opens(events)] == [{"channel": "ads", "campaign": None}]
    effect = step(300, 330, conv=0.5, channel="web", campaign="c1")  # c1 also runs on ads, unaffected
    events = Sim(CELLS, seed=1).run(AnomalyDetector(MemoryStore()), 360, effect)
    assert [e["dimension"] for e in opens(events)] == [{"channel": "web", "campaign": "c1"}]


def test_a_silent_tenant_window_counts_as_zero_traffic() -> None:
    """Windows with no rows at all (nothing arrived) are filled in as zeros on the next call."""
    sim = Sim({("web", None): 500})
    det = AnomalyDetector(MemoryStore())
    rng = random.Random(0)
    events = sim.run(det, 200, rng=rng)
    for i in range(200, 205):  # the caller had no rows to give for these: an empty call is fine too
        if i == 202:
            events += det.observe_windows("t", T0 + i * W, [], T0 + (i + 1) * W)
    events += sim.run(det, 1, step(0, 10**9, traffic=0.0), start=205, rng=rng)
    found = opens(events)
    assert [(e["kind"], e["stage_from"]) for e in found] == [("volume_drop", "impression")]
    assert found[0]["window_start"] == T0 + 200 * W


def test_state_is_json_and_a_restart_from_the_store_continues_identically() -> None:
    cells = {("web", "c1"): 200, ("ads", "c2"): 200}
    sim = Sim(cells, seed=2)
    effect = step(260, 300, conv=0.5, campaign="c2")
    store = MemoryStore()
    det = AnomalyDetector(store)
    rng = random.Random(2)
    head = sim.run(det, 280, effect, rng=rng)
    restored = MemoryStore()
    for key, value in store.items():
        restored.load(key, json.loads(json.dumps(value)))  # JSON-able, and no hidden in-memory state
    rng_copy = random.Random()
    rng_copy.setstate(rng.getstate())
    tail_a = sim.run(det, 60, effect, start=280, rng=rng)
    tail_b = sim.run(AnomalyDetector(restored), 60, effect, start=280, rng=rng_copy)
    assert tail_a == tail_b
    assert [e["status"] for e in head + tail_a if e["status"] != "update"] == ["open", "resolved"]


def test_every_series_gets_a_graded_score_per_window() -> None:
    """The graded score is per window and series, not only per incident: the drop's series scores
    high when the drop begins, thin deep stages never do, and the incident record carries its peak."""
    det = AnomalyDetector(MemoryStore())
    sim = Sim({("web", None): 500}, rates=(0.3, 0.01))
    rng = random.Random(0)
    peaks: dict[str, float] = {}
    events = []
    for i in range(260):
        ws = T0 + i * W
        events += det.observe_windows("t", ws, sim.rows("t", i, rng, step(200, 240, conv=0.5)), ws + W)
        start, scores = det.window_scores("t")
        assert start == ws
        assert all(0.0 <= v < 1.0 for v in scores.values())
        for (dim, sid), v in scores.items():
            if dim == (None, None) and i >= 20 and not 200 <= i < 245:
                peaks[sid] = max(peaks.get(sid, 0.0), v)
        if i == 200:  # the drop's first window (the onset; later windows of it are not news)
            assert max(scores[((None, None), "c:impression")], scores[((None, None), "v:click")]) > 0.6
    assert max(peaks.values()) < 0.6, peaks  # calm windows of every series, thin ones included
    opened = opens(events)
    assert len(opened) == 1 and opened[0]["anomaly_score"] > 0.6


def _as_previous_version(series: dict[str, Any]) -> None:
    """The series layout the detector wrote before the graded score existed (changelogs keep it)."""
    for key in ("gA", "gB", "gW", "gA2", "gB2", "gR1", "gR2", "gRW", "sx", "st", "sn", "sw", "sp", "pd", "pu"):
        del series[key]
    series["pend"] = [pw[:4] for pw in series["pend"]]
    if series["kw"] is not None:
        series["kw"] = T0  # it was a window start, not an age


def test_a_store_written_by_the_previous_version_loads_and_keeps_its_incident() -> None:
    sim = Sim({("web", None): 500})
    store = MemoryStore()
    det = AnomalyDetector(store)
    effect = step(200, 260, conv=0.5)
    rng = random.Random(0)
    events = sim.run(det, 230, effect, rng=rng)
    assert [e["status"] for e in opens(events)] == ["open"]
    for key, value in store.items():
        if key.split("|")[1] == "s":
            for grp in ("v", "c"):
                for series in value[grp].values():
                    _as_previous_version(series)
    tail = sim.run(AnomalyDetector(store), 90, effect, start=230, rng=rng)
    assert [e["status"] for e in tail if e["status"] != "update"] == ["resolved"]
    assert all(0 <= e["anomaly_score"] < 1 for e in events + tail)


def test_replayed_or_old_windows_are_ignored_and_ids_are_deterministic() -> None:
    det = AnomalyDetector(MemoryStore())
    sim = Sim({("web", None): 500})
    events = sim.run(det, 230, step(200, 10**9, conv=0.5))
    assert det.open_incidents() == 1
    rows = sim.rows("t", 229, random.Random(0), no_effect)
    assert det.observe_windows("t", T0 + 229 * W, rows, T0) == []  # replay of the last window
    assert det.observe_windows("t", T0 + 100 * W, rows, T0) == []
    ev = opens(events)[0]
    expected_id = anomaly_id("t", (None, None), "impression", "click", "conversion_drop", T0 + 200 * W)
    assert ev["anomaly_id"] == expected_id
    again = sim.run(AnomalyDetector(MemoryStore()), 230, step(200, 10**9, conv=0.5))
    assert again == events


def test_detector_consumes_funnel_rows_end_to_end() -> None:
    """Through the real FunnelAggregator: persons, dimensions and window closing line up."""
    rng = random.Random(9)
    funnel = FunnelAggregator(MemoryStore())
    det = AnomalyDetector(MemoryStore())
    events: list[dict[str, Any]] = []
    person = 0
    for i in range(160):
        for _ in range(poisson(rng, 120)):
            person += 1
            at = T0 + i * W + rng.randrange(W)
            funnel.observe("t", f"p{person}", "visit", "web", "spring", at)
            if rng.random() < (0.4 if i < 130 else 0.1):
                funnel.observe("t", f"p{person}", "interaction", "web", "spring", at)
        rows = funnel.advance("t", T0 + (i + 1) * W)
        events += det.observe_windows("t", T0 + i * W, rows, T0 + (i + 1) * W)
    found = opens(events)
    assert [(e["kind"], e["stage_from"], e["stage_to"]) for e in found] == [
        ("conversion_drop", "visit", "interaction")
    ]
    assert found[0]["dimension"] == {"channel": None, "campaign": None}  # all traffic is that one cell


# --- the conversion definition: the stage-k cohort that advanced -----------------------------


def test_converted_counts_the_cohort_that_reached_the_next_stage_anywhere_within_a_window() -> None:
    """``converted`` of (dim, window, stage k) = persons at k in that dim and window who reached
    k+1 anywhere in the tenant in the same or the next window: a proportion's numerator."""
    f = FunnelAggregator(MemoryStore())
    f.observe("t", "a", "click", "ads", "spring", T0 + 1_000)
    f.observe("t", "a", "visit", "web", "spring", T0 + 3_000)  # lands on another channel: counts for ads
    f.observe("t", "b", "click", "ads", "spring", T0 + 59_500)
    f.observe("t", "b", "visit", "web", "spring", T0 + W + 500)  # crosses the window boundary: counts
    f.observe("t", "c", "click", "ads", "spring", T0 + 2_000)
    f.observe("t", "c", "visit", "web", None, T0 + 2 * W + 1)  # two windows later: too slow
    f.observe("t", "d", "click", "social", None, T0 + 4_000)  # clicked, never visited
    for i in range(5):  # organic visitors: no click, not anybody's conversion
        f.observe("t", f"o{i}", "visit", "web", None, T0 + 10_000 + i)
    rows = f.advance("t", T0 + 3 * W)
    got = {(r["window_start"], r["channel"], r["campaign"], r["stage"]): (r["persons"], r["converted"])
           for r in rows}
    assert got[(T0, None, None, "click")] == (4, 2)  # a, b of a, b, c, d
    assert got[(T0, "ads", None, "click")] == (3, 2)
    assert got[(T0, "social", None, "click")] == (1, 0)
    assert got[(T0, None, "spring", "click")] == (3, 2)
    assert got[(T0, "ads", "spring", "click")] == (3, 2)
    assert got[(T0, None, None, "visit")] == (6, 0)  # a + 5 organic; nobody went on to interact
    assert got[(T0 + W, None, None, "visit")] == (1, 0)
    assert all(r["converted"] <= r["persons"] for r in rows)
    f.observe("t", "e", "deal", "sales", None, T0 + 3 * W)
    assert f.advance("t", T0 + 4 * W)[0]["converted"] is None  # the last stage has no next one
    assert FunnelAggregator(MemoryStore(), FunnelConfig(conversion_lookahead_windows=0)) is not None
    with pytest.raises(ValueError):
        FunnelConfig(conversion_lookahead_windows=-1)


def _shop_minute(
    rng: random.Random, f: FunnelAggregator, i: int, seq: list[int], organic: float, p_land: float,
    p_land_small: float = 0.85,
) -> None:
    """One minute of a shop: a big search campaign on ``ads`` (250 clicks/min), a small social one
    (20/min), landing page views on ``web`` a few seconds after the click (so some cross into the
    next window), organic visitors on ``web`` who never clicked, and earlier clickers returning."""
    def person() -> str:
        seq[0] += 1
        return f"p{seq[0]}"

    base = T0 + i * W
    for channel, campaign, rate, land in (("ads", "search", 250, p_land), ("social", "small", 20, p_land_small)):
        for _ in range(poisson(rng, rate)):
            p, at = person(), base + rng.randrange(W)
            f.observe("t", p, "click", channel, campaign, at)
            if rng.random() < land:
                f.observe("t", p, "visit", "web", campaign, at + rng.randrange(500, 6_000))
    for _ in range(poisson(rng, organic)):
        f.observe("t", person(), "visit", "web", None, base + rng.randrange(W))
    for _ in range(poisson(rng, 60)):  # returning visitors (clicked long ago, no campaign now)
        f.observe("t", f"p{rng.randrange(1, seq[0] + 1)}", "visit", "web", None, base + rng.randrange(W))


def test_organic_visits_do_not_make_the_total_click_to_visit_conversion_noisy() -> None:
    """Visits include people who never clicked. As "visits / clicks" the tenant-total click→visit
    "conversion" was ~4 and swung with organic traffic (a live conversion_surge in the first hour);
    as "clickers who visited / clickers" it is p_land, whatever organic traffic does. A landing
    page outage of the big campaign is one conversion_drop naming that campaign (93 % of clicks,
    but the small campaign's clickers still land: not the tenant's), and a site-wide outage is the
    tenant's."""
    def organic(i: int) -> float:
        return 700.0 * (1 + 0.5 * math.sin(2 * math.pi * i / 90)) * (3.0 if 130 <= i < 160 else 1.0)

    def run(outage: Callable[[int], tuple[float, float]], strip: bool = False) -> tuple[list, list]:
        rng, seq = random.Random(11), [0]
        f, det = FunnelAggregator(MemoryStore()), AnomalyDetector(MemoryStore())
        events: list[dict[str, Any]] = []
        totals: list[float] = []
        for i in range(260):
            _shop_minute(rng, f, i, seq, organic(i), *outage(i))
            rows = f.advance("t", T0 + (i + 1) * W)
            if strip:  # rows as an older producer sent them: no cohort count
                rows = [{k: v for k, v in r.items() if k != "converted"} for r in rows]
            byk = {(r["channel"], r["campaign"], r["stage"]): r for r in rows}
            click = byk.get((None, None, "click"))
            if click and not strip:
                totals.append(click["converted"] / click["persons"])
            events += [{**e, "i": i} for e in det.observe_windows("t", T0 + i * W, rows, T0 + (i + 1) * W)]
        return events, totals

    events, totals = run(lambda i: (0.85, 0.85))
    assert not [e for e in opens(events) if e["kind"].startswith("conversion")], opens(events)
    assert 0.78 < statistics.fmean(totals[1:]) < 0.86 and max(totals[1:]) <= 1.0
    legacy, _ = run(lambda i: (0.85, 0.85), strip=True)  # the old ratio: the organic burst is a "surge"
    assert any(e["kind"] == "conversion_surge" and e["stage_from"] == "click" for e in opens(legacy))

    events, _ = run(lambda i: (0.3, 0.85) if 200 <= i < 215 else (0.85, 0.85))
    found = [e for e in opens(events) if e["kind"].startswith("conversion")]
    assert [(e["dimension"], e["stage_from"], e["kind"]) for e in found] == [
        ({"channel": None, "campaign": "search"}, "click", "conversion_drop")]
    assert 200 <= found[0]["i"] <= 203
    events, _ = run(lambda i: (0.3, 0.25) if 200 <= i < 215 else (0.85, 0.85))
    found = [e for e in opens(events) if e["kind"].startswith("conversion")]
    assert [(e["dimension"], e["stage_from"]) for e in found] == [({"channel": None, "campaign": None}, "click")]


def _sticky_volume(config: DetectorConfig, minutes: int, seed: int = 4) -> tuple[AnomalyDetector, list[dict]]:
    """Each minute ~6 persons arrive and each is seen in 8 consecutive windows (a long session or
    conversation): ~48 persons per window, and consecutive windows share 7/8 of them. Daily cycle
    ±30 %; after ``minutes`` arrivals fall by 60 %."""
    rng = random.Random(seed)
    det = AnomalyDetector(MemoryStore(), config)
    arrivals: list[int] = []
    found: list[dict[str, Any]] = []
    for i in range(minutes + 60):
        level = 6.0 * (1 + 0.3 * math.sin(2 * math.pi * i / 1440)) * (0.4 if i >= minutes else 1.0)
        arrivals.append(poisson(rng, level))
        x, ws = sum(arrivals[-8:]), T0 + i * W
        rows = [{"tenant_id": "t", "window_start": ws, "window_end": ws + W, "channel": None, "campaign": None,
                 "stage": "interaction", "events": x, "persons": x, "converted": 0}]
        found += [{**e, "i": i} for e in opens(det.observe_windows("t", ws, rows, ws + W))]
    return det, found


def test_serially_correlated_volumes_are_not_false_alarms_and_steps_still_are_found() -> None:
    """Windows that share persons are not independent evidence: over a 10-window run this series
    varies ~6 × as much as independent Poisson windows would. Treated as independent it raised
    ~18 false alarms in 3 days; with the learned long-run factor none, and the real step (which
    takes 8 windows to reach full depth, as the sticky persons leave) is still found."""
    minutes = 3 * 1440
    naive, naive_found = _sticky_volume(DetectorConfig(correlation_windows=1, volume_correlation_prior=1.0),
                                        minutes)
    assert len([e for e in naive_found if e["i"] < minutes]) >= 5
    det, found = _sticky_volume(DetectorConfig(), minutes)
    assert len(found) == 1 and found[0]["kind"] == "volume_drop", found
    assert minutes <= found[0]["i"] <= minutes + 10
    series = det._store.get("t|s|[null,null]")["v"]["interaction"]
    assert baseline.correlation(det.config, series, "count") > 2.5
    assert baseline.correlation(det.config, series, "count") > 2 * baseline.correlation(
        naive.config, naive._store.get("t|s|[null,null]")["v"]["interaction"], "count")


def test_sparse_dimensions_catch_up_as_zeros_and_are_forgotten_when_gone() -> None:
    """A campaign seen once every 10 minutes is "cold": it is not processed in between, yet its
    level counts the missed windows as zeros; a dimension gone for longer than the GC horizon
    is deleted, so a tenant's state stays bounded."""
    store = MemoryStore()
    det = AnomalyDetector(store, DetectorConfig(gc_after_hours=1))

    def rows(i: int, campaign_persons: int) -> list[dict[str, Any]]:
        ws = T0 + i * W
        base = {"tenant_id": "t", "window_start": ws, "window_end": ws + W, "stage": "impression"}
        out = [{**base, "channel": ch, "campaign": None, "events": 500, "persons": 500}
               for ch in (None, "web")]
        if campaign_persons:
            out += [{**base, "channel": ch, "campaign": "rare", "events": campaign_persons,
                     "persons": campaign_persons} for ch in (None, "web")]
        return out

    for i in range(240):
        assert det.observe_windows("t", T0 + i * W, rows(i, 1 if i % 10 == 0 else 0), T0 + (i + 1) * W) == []
    rare = store.get('t|s|[null,"rare"]')
    level = rare["v"]["impression"]["A"] / rare["v"]["impression"]["B"]
    assert 0.05 < level < 0.2  # ≈ 1 person per 10 windows, zeros included
    assert '[null,"rare"]' not in store.get("t|m")["hot"]
    for i in range(240, 400):  # "rare" stops; after an hour without it, it is forgotten
        det.observe_windows("t", T0 + i * W, rows(i, 0), T0 + (i + 1) * W)
    assert store.get('t|s|[null,"rare"]') is None and store.get('t|p|["web","rare"]') is None
    assert '[null,"rare"]' not in store.get("t|d")
    assert store.get("t|s|[null,null]") is not None


def test_config_is_validated() -> None:
    with pytest.raises(ValueError):
        DetectorConfig(volume_shift=1.0)
    with pytest.raises(ValueError):
        DetectorConfig(warmup_windows=61)
    assert replace(DetectorConfig(), warmup_windows=60).warmup_windows == 60


rows_st = st.lists(
    st.tuples(
        st.sampled_from([None, "web", "ads"]), st.sampled_from([None, "c1", "c2"]),
        st.sampled_from(STAGES), st.integers(0, 400),
    ),
    max_size=12,
)


@settings(max_examples=40, deadline=None)
@given(st.lists(st.tuples(st.integers(1, 3), rows_st), min_size=1, max_size=40))
def test_arbitrary_rows_never_break_it_and_state_stays_json(windows: list[tuple[int, list[tuple]]]) -> None:
    store = MemoryStore()
    det = AnomalyDetector(store, DetectorConfig(warmup_windows=2, min_upper_count=1, min_volume_count=1,
                                                 min_expected_count=1, learn_delay_windows=1))
    i = 0
    for skip, cells in windows:
        i += skip
        ws = T0 + i * W
        rows = [{"tenant_id": "t", "window_start": ws, "window_end": ws + W, "channel": ch, "campaign": cm,
                 "stage": stage, "events": n, "persons": n} for ch, cm, stage, n in cells if n > 0]
        for ev in det.observe_windows("t", ws, rows, ws + W):
            assert set(ev) == EVENT_KEYS
            numbers = ("observed", "expected", "score", "est_lost_conversions", "total_observed")
            assert all(math.isfinite(ev[k]) for k in numbers)
    json.dumps(dict(store.items()), allow_nan=False)
    assert det.open_incidents() >= 0


# --- quality harness --------------------------------------------------------------------------


def quality(
    n_rates: list[tuple[float, float]], days: float, drop: float = 0.3, duration: int = 10,
    seeds: range = range(1),
) -> dict[str, Any]:
    """Inject ``drop`` conversion drops lasting ``duration`` windows every 2.5-5 h into day-long
    seasonal series; a drop is caught if an incident opens between its start and 5 windows
    after its end. Anything else that opens is a false alarm."""
    caught = total = false = 0
    delays: list[int] = []
    series_days = 0.0
    for seed in seeds:
        for n, p in n_rates:
            rng = random.Random(10_000 * seed + n)
            drops, i = [], 60
            while True:
                i += rng.randint(150, 300)
                if i + duration >= days * 1440:
                    break
                drops.append((i, i + duration))

            def effect(i: int, ch: str, cm: str | None, drops: list = drops) -> tuple[float, float]:
                return (1.0, 1.0 - drop) if any(a <= i < b for a, b in drops) else (1.0, 1.0)

            # traffic between n and 2n per minute, so always ≥ n at the upper stage
            sim = Sim({("web", None): 1.5 * n}, rates=(p,), traffic_amp=1 / 3, seed=seed)
            found = opens(sim.run(AnomalyDetector(MemoryStore()), int(days * 1440), effect, rng=rng))
            used: set[int] = set()
            for a, b in drops:
                hit = [e for e in found if a <= e["i"] <= b + 5 and e["kind"] == "conversion_drop"]
                total += 1
                if hit:
                    caught += 1
                    delays.append(hit[0]["i"] - a)
                    used.update(id(e) for e in hit)
            false += sum(1 for e in found if id(e) not in used)
            series_days += 3 * days  # volume of 2 stages + 1 conversion series
    return {
        "recall": caught / total if total else None, "drops": total, "false_alarms": false,
        "series_days": series_days, "median_delay": statistics.median(delays) if delays else None,
        "max_delay": max(delays) if delays else None,
    }


def test_quality_targets_on_the_synthetic_harness() -> None:
    """≥ 95 % recall and median delay ≤ 3 windows for 30 % drops of 10 minutes at ≥ 200 persons/min
    (base conversion 0.3 and 0.5), and no false alarm in these few series-days."""
    q = quality([(200, 0.3), (200, 0.5), (500, 0.3)], days=1.0)
    print("harness:", q)
    assert q["recall"] >= 0.95
    assert q["median_delay"] <= 3
    assert q["false_alarms"] == 0


if __name__ == "__main__":  # the longer run quoted in the report
    days = float(sys.argv[1]) if len(sys.argv) > 1 else 2.0
    seeds = range(int(sys.argv[2]) if len(sys.argv) > 2 else 3)
    grid = [(200, 0.1), (200, 0.2), (200, 0.3), (200, 0.5), (500, 0.1), (500, 0.3), (1000, 0.05), (2000, 0.3)]
    for n, p in grid:
        print(n, p, quality([(n, p)], days=days, seeds=seeds))
