"""Profiles, attribution credits, costs and what ClickHouse computes over them (embedded engine).

The records come from the real core (a :class:`Pipeline` over hand-made events), so the table
mappings are checked against what the stream publishes, not against hand-written dicts."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime
from itertools import pairwise
from typing import Any

import orjson
import pytest

from streams.clickhouse.client import ClickHouse
from streams.clickhouse.rows import COST_COLUMNS, cost_rows
from streams.clickhouse.rows import SPECS as ALL_SPECS
from streams.core.contract import Rejection, validate
from streams.core.pipeline import Pipeline
from streams.core.roi import chain_product, conversion_chain, parse_cost_feed

SPECS = {s.table: s for s in ALL_SPECS}
DAY = 86_400_000


def at(day: int, s: int = 0) -> int:
    """An event time ``day`` days before today 12:00 UTC (recent: inside every retention)."""
    noon = int(datetime.now(UTC).replace(hour=12, minute=0, second=0, microsecond=0).timestamp() * 1000)
    return noon - day * DAY + s * 1000


def event(n: int, t: int, etype: str, ids: dict[str, str], channel: str = "web", tenant: str = "acme",
          **more: Any) -> bytes:
    iso = datetime.fromtimestamp(t / 1000, UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"
    return orjson.dumps({"event_id": f"e{n}", "tenant_id": tenant, "occurred_at": iso, "channel": channel,
                         "type": etype, "identities": ids, **more})


def run(lines: list[bytes]) -> dict[str, list[dict[str, Any]]]:
    p = Pipeline()
    out: dict[str, list[dict[str, Any]]] = {"profiles": [], "attribution": [], "enriched": []}
    for line in lines:
        tp = validate(line)
        assert not isinstance(tp, Rejection), tp
        p.process(tp)
        o = p.drain()
        for k in out:
            out[k].extend(getattr(o, k))
    return out


def insert(ch: ClickHouse, table: str, records: list[dict[str, Any]]) -> None:
    spec = SPECS[table]
    ch.insert(table, [spec.to_row(r) for r in records], spec.columns)


def journey() -> list[bytes]:
    """Two persons of acme: one clicks two campaigns and buys (EUR 300.00), one only looks."""
    camp = {"name": "spring", "source": "google"}
    cost = {"cost": {"amount": 0.5, "currency": "EUR"}}
    return [
        event(1, at(3), "ad_impression", {"anonymous_id": "a1"}, "ads", campaign=camp,
              properties={"cost": {"amount": 0.0065, "currency": "EUR"}}),
        event(2, at(3, 5), "ad_click", {"anonymous_id": "a1"}, "ads", campaign=camp, properties=cost),
        event(3, at(3, 8), "page_view", {"anonymous_id": "a1"}, campaign=camp),
        event(4, at(2), "ad_click", {"anonymous_id": "a1"}, "social", campaign={"name": "summer"}, properties=cost),
        event(5, at(2, 30), "form_submit", {"anonymous_id": "a1", "email": "x@example.com"}),
        event(6, at(2, 60), "lead", {"email": "x@example.com"}),
        event(7, at(1), "deal_won", {"email": "x@example.com"}, "phone", value={"amount": 300, "currency": "EUR"}),
        event(8, at(1, 5), "ad_click", {"anonymous_id": "b1"}, "ads", campaign=camp, properties=cost),
        event(9, at(1, 9), "page_view", {"anonymous_id": "b1"}, campaign=camp),
    ]


def test_latest_profile_per_person_and_merged_persons_leave(ch: ClickHouse) -> None:
    out = run([*journey(), event(10, at(0), "identify", {"anonymous_id": "b1", "user_id": "u-b"}),
               event(11, at(0, 1), "identify", {"user_id": "u-b", "email": "x@example.com"})])
    insert(ch, "person_profiles", out["profiles"])
    insert(ch, "person_profiles", out["profiles"][:3])  # a re-delivery: older versions change nothing
    rows = ch.query(f"SELECT person_id, version, lifecycle_stage, deals_won, revenue_total_minor, max_funnel_stage, "
                    f"status FROM {ch.db}.person_profiles FINAL ORDER BY person_id")
    final = {r[0]: r for r in rows}
    latest: dict[str, dict[str, Any]] = {}
    for r in out["profiles"]:
        latest[r["person_id"]] = r
    assert set(final) == set(latest)
    for pid, r in latest.items():
        assert final[pid][1] == r["version"] and final[pid][6] == r["status"]
    merged = [pid for pid, r in latest.items() if r["status"] == "merged"]
    assert merged  # the identify of u-b with x@ merged two persons
    active = ch.query(f"SELECT person_id, lifecycle_stage, deals_won, revenue_total_minor, max_funnel_stage, "
                      f"campaigns FROM {ch.db}.profiles_latest")
    assert {r[0] for r in active} == {pid for pid, r in latest.items() if r["status"] == "active"}
    (customer,) = [r for r in active if r[2] == 1]
    assert customer[1] == "customer" and customer[3] == 30_000 and customer[4] == "deal"
    assert customer[5] == ["spring", "summer"]  # both persons' campaigns, folded


def test_credits_collapse_on_redelivery_and_revisions_stay_visible(ch: ClickHouse) -> None:
    lines = journey()
    # a late click of another campaign before the deal: revision 2 retracts revision 1
    lines.append(event(20, at(1, -60), "ad_click", {"email": "x@example.com"}, "email", campaign={"name": "news"}))
    out = run(lines)
    credits = out["attribution"]
    assert {r["revision"] for r in credits} == {1, 2}
    insert(ch, "attribution_credits", credits)
    insert(ch, "attribution_credits", credits[:10])  # a replay after a crash, cut differently: same records
    assert ch.count("attribution_credits", final=False) == len(credits) + 10
    assert ch.count("attribution_credits", final=True) == len(credits)
    q = f"SELECT model, sum(credit_minor) FROM {ch.db}.attribution_credits FINAL GROUP BY model"
    assert dict(ch.query(q)) == dict.fromkeys(("first_touch", "last_touch", "linear", "time_decay",
                                               "position_based"), 30_000)
    current = ch.query(f"SELECT model, campaign, credit_minor, revision FROM {ch.db}.attribution_current "
                       f"WHERE model = 'linear' ORDER BY touch_index")
    assert [r[1] for r in current] == ["spring", "summer", "", "news"]  # the form visit is a web touch
    assert {r[3] for r in current} == {2} and sum(r[2] for r in current) == 30_000
    daily = ch.query(f"SELECT campaign, revenue_minor FROM {ch.db}.attributed_revenue_daily "
                     f"WHERE model = 'first_touch'")
    assert daily == [("spring", 30_000)] or [tuple(r) for r in daily] == [("spring", 30_000)]


def test_roi_costs_from_events_and_a_feed_that_wins(ch: ClickHouse) -> None:
    out = run(journey())
    # the sink writes enriched touchpoints; their properties carry the ad costs
    from streams.clickhouse.rows import SPECS as TOUCH_SPECS

    tp_spec = next(s for s in TOUCH_SPECS if s.table == "touchpoints")
    ch.insert("touchpoints", [tp_spec.to_row(r) for r in out["enriched"]], tp_spec.columns)
    insert(ch, "attribution_credits", out["attribution"])
    costs = {tuple(r[:3]): r[3] for r in ch.query(
        f"SELECT campaign, channel, source, sum(cost_micros) FROM {ch.db}.campaign_costs_daily "
        f"GROUP BY campaign, channel, source")}
    assert costs == {("spring", "ads", "events"): 1_006_500, ("summer", "social", "events"): 500_000}
    roi = {r[0]: r[1:] for r in ch.query(
        f"SELECT campaign, revenue, cost, roas, roi FROM {ch.db}.roi_by_campaign WHERE model = 'last_touch'")}
    assert roi["spring"] == (0.0, pytest.approx(1.0065), 0.0, -1.0)
    assert roi[""] == (300.0, 0.0, None, None)  # the last touch before the deal was the form's visit (no campaign)
    first = {r[0]: r[1:] for r in ch.query(
        f"SELECT campaign, revenue, roas FROM {ch.db}.roi_by_campaign WHERE model = 'first_touch'")}
    assert first["spring"] == (300.0, pytest.approx(300 / 1.0065))
    # a cost feed for spring's day replaces the event costs of that day and campaign
    day = datetime.fromtimestamp(at(3) / 1000, UTC).date()
    feed = parse_cost_feed(f"date,tenant_id,channel,campaign,cost,currency\n"
                           f"{day},acme,ads,spring,40.00,EUR\n{day},acme,ads,spring,10.00,EUR\n", "feed.csv")
    ch.insert("campaign_costs", cost_rows(feed, "feed.csv"), COST_COLUMNS)
    spring = ch.query(f"SELECT cost, roas FROM {ch.db}.roi_by_campaign WHERE model = 'first_touch' "
                      f"AND campaign = 'spring'")
    assert [tuple(r) for r in spring] == [(pytest.approx(50.5), pytest.approx(300 / 50.5))]  # 50 feed + b1's click
    by_channel = {r[0]: r[1:] for r in ch.query(
        f"SELECT channel, revenue, cost FROM {ch.db}.roi_by_channel WHERE model = 'linear'")}
    assert sum(v[0] for v in by_channel.values()) == 300.0 and by_channel["social"][1] == 0.5


def test_rfm_scores_are_quintiles_with_ties_and_the_chain_per_campaign(ch: ClickHouse) -> None:
    lines = []
    n = 0
    for i in range(10):  # ten persons: i+1 page views each, the last three buy for 100 * i
        for k in range(i + 1):
            n += 1
            lines.append(event(n, at(10 - i, k), "page_view", {"anonymous_id": f"r{i}"}, campaign={"name": "c"}))
        if i >= 7:
            n += 1
            lines.append(event(n, at(10 - i, 50), "deal_won", {"anonymous_id": f"r{i}"},
                               value={"amount": 100 * i, "currency": "EUR"}))
    out = run(lines)
    insert(ch, "person_profiles", out["profiles"])
    ch.command(f"SYSTEM REFRESH VIEW {ch.db}.person_rfm")
    ch.command(f"SYSTEM WAIT VIEW {ch.db}.person_rfm")
    rows = ch.query(f"SELECT events, toUnixTimestamp64Milli(last_seen), revenue_total_minor, r_score, f_score, "
                    f"m_score, rfm FROM {ch.db}.profiles_current ORDER BY events")
    assert [r[0] for r in rows] == [1, 2, 3, 4, 5, 6, 7, 9, 10, 11]  # the buyers' deals are events too
    for col, score in ((1, 3), (0, 4), (2, 5)):  # recency, frequency, monetary
        pairs = sorted((r[col], r[score]) for r in rows)
        assert [s for _, s in pairs] == sorted(s for _, s in pairs)  # more is never scored lower
        assert pairs[0][1] == 1 and pairs[-1][1] == 5
        assert all(a[1] == b[1] for a, b in pairwise(pairs) if a[0] == b[0])  # ties: one score
        assert max(Counter(s for _, s in pairs).values()) <= 7
    assert {r[5] for r in rows if r[2] == 0} == {1}  # 7 of 10 share revenue 0: one score for all of them
    assert rows[-1][6] == "555" and rows[0][6] == "111"
    (chain,) = ch.query(f"SELECT impression, click, visit, interaction, lead, opportunity, deal "
                        f"FROM {ch.db}.campaign_conversion_chain WHERE campaign = 'c'")
    assert list(chain) == [10, 10, 10, 3, 3, 3, 3]
    steps = conversion_chain(dict(zip(("impression", "click", "visit", "interaction", "lead", "opportunity",
                                       "deal"), chain, strict=True)))
    assert [s["rate"] for s in steps][3] == 0.3 and chain_product(steps) == 0.3
