"""``query profiles|attribution|roi`` (streams/clickhouse/queries.py) on the embedded engine.

The rows come from the real core over hand-made events (the helpers of test_profiles_attribution)
and are inserted with the sink's own row mapping, so the answers are checked end to end against
numbers known by hand: a EUR 300.00 deal, ad clicks at 0.50, an impression at 0.0065, a feed."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from streams.clickhouse import queries
from streams.clickhouse.client import ClickHouse
from streams.clickhouse.rows import COST_COLUMNS, SPECS, cost_rows
from streams.core.attribution import MODELS
from streams.core.roi import parse_cost_feed
from streams.core.tagrules import LIFECYCLE
from tests.unit.clickhouse.test_profiles_attribution import at, event, insert, journey, run

TOUCHPOINTS = next(s for s in SPECS if s.table == "touchpoints")


def load(ch: ClickHouse, lines: list[bytes]) -> dict[str, list[dict]]:
    out = run(lines)
    insert(ch, "person_profiles", out["profiles"])
    insert(ch, "attribution_credits", out["attribution"])
    ch.insert("touchpoints", [TOUCHPOINTS.to_row(r) for r in out["enriched"]], TOUCHPOINTS.columns)
    return out


def feed(ch: ClickHouse, text: str) -> None:
    rows = parse_cost_feed("date,tenant_id,channel,campaign,cost,currency\n" + text, "feed.csv")
    ch.insert("campaign_costs", cost_rows(rows, "feed.csv"), COST_COLUMNS)


def test_money_is_printed_with_the_currency_exponent() -> None:
    assert queries.money_text(30_000, 2) == "300.00" and queries.money_text(7, 0) == "7"
    assert queries.money_text(1234, 3) == "1.234" and queries.money_text(-5, 2) == "-0.05"
    assert queries.money_text(0, 2) == "0.00"
    assert queries.micros_text(6_500, 2) == "0.0065"  # an impression at a 6.50 CPM: cents would hide it
    assert queries.micros_text(50_000_000, 2) == "50.00" and queries.micros_text(1_006_500, 2) == "1.0065"
    assert queries.micros_text(3_000_000, 0) == "3" and queries.micros_text(1_500, 3) == "0.0015"


def test_lifecycle_counts_and_persons_with_tags_and_rfm(ch: ClickHouse) -> None:
    lines = journey()
    lines.append(event(30, at(0), "page_view", {"anonymous_id": "c1"}, tenant="beta"))
    load(ch, lines)
    counts = queries.lifecycle_counts(ch, None)
    assert [(r["tenant_id"], r["stage"]) for r in counts] == [(t, s) for t in ("acme", "beta") for s in LIFECYCLE]
    acme = {r["stage"]: r["persons"] for r in counts if r["tenant_id"] == "acme"}
    assert acme == {"anonymous": 1, "known": 0, "lead": 0, "opportunity": 0, "customer": 1}  # x@ bought, b1 looked
    assert {r["share"] for r in counts if r["tenant_id"] == "acme" and r["persons"]} == {0.5}
    # seen since yesterday noon + 7 s: the buyer's last event (the deal) was at noon, b1's at + 9 s
    recent = queries.lifecycle_counts(ch, "acme", since_s=86_400 - 7, now_ms=at(0))
    assert {r["stage"]: r["persons"] for r in recent if r["persons"]} == {"anonymous": 1}

    assert queries.rfm_is_stale(ch)  # the profiles came after the refresh at migration
    queries.refresh_rfm(ch)
    by_revenue = queries.profiles(ch, "acme", sort="revenue", limit=5)
    buyer, looker = by_revenue
    assert (buyer["lifecycle_stage"], buyer["deals_won"], buyer["revenue"], buyer["revenue_minor"]) == (
        "customer", 1, {"EUR": "300.00"}, {"EUR": 30_000})
    assert buyer["campaigns"] == ["spring", "summer"] and buyer["max_funnel_stage"] == "deal"
    # two persons: quintile boundaries 0, 0, 300.00, 300.00; the buyer exceeds two of them
    assert (buyer["m_score"], looker["m_score"]) == (3, 1)
    assert buyer["rfm"] == f"{buyer['r_score']}{buyer['f_score']}{buyer['m_score']}"
    assert looker["lifecycle_stage"] == "anonymous" and looker["revenue"] == {}
    assert [p["person_id"] for p in queries.profiles(ch, "acme", sort="recent")] == [looker["person_id"],
                                                                                    buyer["person_id"]]
    assert [p["person_id"] for p in queries.profiles(ch, None, stage="customer")] == [buyer["person_id"]]
    assert len(queries.profiles(ch, None, limit=1)) == 1
    with pytest.raises(ValueError):
        queries.profiles(ch, None, sort="oldest")

    (one,) = queries.profile(ch, buyer["person_id"])
    assert one["funnel_stages"]["deal"] == 1 and "email" in one["identifier_types"] and "merged_from" not in one
    assert queries.profile(ch, "nobody") == []


def test_a_merged_person_is_followed_to_the_survivor(ch: ClickHouse) -> None:
    out = load(ch, [*journey(), event(10, at(0), "identify", {"anonymous_id": "b1", "user_id": "u-b"}),
                    event(11, at(0, 1), "identify", {"user_id": "u-b", "email": "x@example.com"})])
    merged = {r["person_id"]: r["merged_into"] for r in out["profiles"] if r["status"] == "merged"}
    absorbed, survivor = next(iter(merged.items()))
    (found,) = queries.profile(ch, absorbed, "acme")
    assert found["person_id"] == survivor and found["merged_from"] == absorbed
    assert {r["persons"] for r in queries.lifecycle_counts(ch, "acme") if r["stage"] == "customer"} == {1}


def test_attribution_models_side_by_side_sum_to_the_revenue(ch: ClickHouse) -> None:
    lines = journey()
    # a second deal of another tenant in yen, no touch: credited whole to "no touch" in every model
    lines.append(event(40, at(0), "deal_won", {"email": "y@example.com"}, "phone", tenant="jp",
                       value={"amount": 1234, "currency": "JPY"}))
    # a late click before acme's deal: a revision, whose retractions must not count
    lines.append(event(20, at(1, -60), "ad_click", {"email": "x@example.com"}, "email", campaign={"name": "news"}))
    load(ch, lines)
    rows = queries.attribution(ch, None)
    acme = [r for r in rows if r["tenant_id"] == "acme"]
    total = acme[-1]
    assert total["campaign"] == "(total)" and total["deals"] == 1 and total["currency"] == "EUR"
    for model in MODELS:
        assert total[model] == "300.00" and total[f"{model}_minor"] == 30_000
        assert sum(r[f"{model}_minor"] for r in acme[:-1]) == 30_000
    by = {r["campaign"]: r for r in acme[:-1]}
    assert set(by) == {"spring", "summer", "news", None}  # None: the form visit carried no campaign
    assert by["spring"]["first_touch"] == "300.00" and by["news"]["last_touch"] == "300.00"  # a minute before
    assert by[None]["last_touch"] == "0.00" and by["news"]["first_touch"] == "0.00"
    assert [by[c]["linear_minor"] for c in ("spring", "summer", None, "news")] == [7500, 7500, 7500, 7500]
    jp = [r for r in rows if r["tenant_id"] == "jp"]
    assert [(r["campaign"], r["linear"], r["exponent"]) for r in jp] == [(None, "1234", 0), ("(total)", "1234", 0)]
    channels = queries.attribution(ch, "acme", by="channel")
    assert {r["channel"] for r in channels} == {"ads", "social", "web", "email", "(total)"}
    assert channels[-1]["time_decay_minor"] == 30_000
    # deals won in the last 12 hours: acme's was a day ago
    assert [r["tenant_id"] for r in queries.attribution(ch, None, since_s=12 * 3600)] == ["jp", "jp"]


def test_roi_is_revenue_against_event_and_feed_costs(ch: ClickHouse) -> None:
    load(ch, journey())
    rows = {r["campaign"]: r for r in queries.roi(ch, "acme", model="first_touch")}
    spring = rows["spring"]
    # first touch gives spring the deal; cost: a1's impression 0.0065 + click 0.50, b1's click 0.50
    assert (spring["revenue"], spring["cost"], spring["revenue_minor"], spring["cost_micros"]) == (
        "300.00", "1.0065", 30_000, 1_006_500)
    assert spring["roas"] == round(300 / 1.0065, 4) and spring["roi"] == round((300 - 1.0065) / 1.0065, 4)
    assert (rows["summer"]["revenue"], rows["summer"]["cost"], rows["summer"]["roi"]) == ("0.00", "0.50", -1.0)
    # a cost feed for spring's first day replaces that day's event costs: 50.00 + b1's 0.50 a day ago
    day = datetime.fromtimestamp(at(3) / 1000, UTC).date()
    feed(ch, f"{day},acme,ads,spring,40.00,EUR\n{day},acme,ads,spring,10.00,EUR\n")
    spring = {r["campaign"]: r for r in queries.roi(ch, "acme", model="first_touch")}["spring"]
    assert (spring["cost"], spring["cost_micros"]) == ("50.50", 50_500_000)
    assert spring["roi"] == round((30_000 * 10_000 - 50_500_000) / 50_500_000, 4) == 4.9406
    # every model's revenue adds up to the deal; the default model is linear
    for model in MODELS:
        assert sum(r["revenue_minor"] for r in queries.roi(ch, "acme", model=model)) == 30_000
    assert {r["model"] for r in queries.roi(ch, None)} == {"linear"}
    # the last two days only: the deal (a day ago) and b1's click, not spring's first day and its feed
    recent = {r["campaign"]: r for r in queries.roi(ch, "acme", since_s=2 * 86_400 - 3600, model="first_touch")}
    assert recent["spring"]["cost"] == "0.50" and recent["spring"]["revenue"] == "300.00"
    by_channel = {r["channel"]: r for r in queries.roi(ch, "acme", by="channel", model="linear")}
    assert by_channel["ads"]["cost_micros"] == 50_500_000 and by_channel["social"]["cost"] == "0.50"
    assert sum(r["revenue_minor"] for r in by_channel.values()) == 30_000
    with pytest.raises(ValueError):
        queries.roi(ch, None, model="w_shaped")


def test_conversion_chains_per_campaign(ch: ClickHouse) -> None:
    load(ch, journey())
    chains = {c["campaign"]: c for c in queries.conversion_chains(ch, "acme")}
    assert set(chains) == {"spring", "summer"}
    spring = [(s["stage"], s["persons"], s["rate"]) for s in chains["spring"]["chain"]]
    # a1 (the buyer) reached deal; b1 visited: both persons count from impression to visit
    assert spring == [("impression", 2, None), ("click", 2, 1.0), ("visit", 2, 1.0), ("interaction", 1, 0.5),
                      ("lead", 1, 1.0), ("opportunity", 1, 1.0), ("deal", 1, 1.0)]
    assert chains["spring"]["product"] == 0.5 and chains["summer"]["product"] == 1.0
