"""ROI helpers: costs read from events and feed files, the conversion chain, the ratios."""

from __future__ import annotations

from datetime import date
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from streams.core.model import Touchpoint
from streams.core.roi import (
    CostFeedError,
    chain_product,
    conversion_chain,
    event_cost,
    parse_cost_feed,
    roi,
    to_micros,
)

HEADER = "date,tenant_id,channel,campaign,cost,currency\n"


def ad(props: dict[str, Any] | None) -> Touchpoint:
    return Touchpoint(event_id="e", tenant_id="t", occurred_at=0, channel="ads", type="ad_click",
                      identities={"anonymous_id": "a"}, properties=props)


@pytest.mark.parametrize(("amount", "micros"), [(0.0065, 6500), (1, 1_000_000), ("0.42", 420_000), (0, 0)])
def test_to_micros(amount: Any, micros: int) -> None:
    assert to_micros(amount) == micros


@pytest.mark.parametrize("bad", [-0.01, float("nan"), True, None, "x", 10**10])
def test_to_micros_refuses(bad: Any) -> None:
    assert to_micros(bad) is None


def test_event_cost_reads_properties_cost_only() -> None:
    assert event_cost(ad({"cost": {"amount": 0.42, "currency": "EUR"}})) == (420_000, "EUR")
    assert event_cost(ad({"cost": 0.42})) is None  # a currency is required
    assert event_cost(ad({"cost": {"amount": 0.42, "currency": "eur"}})) is None
    assert event_cost(ad(None)) is None


def test_cost_feed_sums_nothing_itself_and_keeps_lines() -> None:
    rows = parse_cost_feed(HEADER + "# a comment\n2026-01-01,acme,ads,spring,12.50,EUR\n\n"
                           "2026-01-01, acme , social , \"summer, big\" ,0.0065,USD\n", "f.csv")
    assert [(r.day, r.tenant_id, r.channel, r.campaign, r.cost_micros, r.currency, r.line) for r in rows] == [
        (date(2026, 1, 1), "acme", "ads", "spring", 12_500_000, "EUR", 3),
        (date(2026, 1, 1), "acme", "social", "summer, big", 6500, "USD", 5),
    ]


@pytest.mark.parametrize(("text", "line", "words"), [
    ("", 1, "empty feed"),
    ("day,tenant,cost\n", 1, "the header must be"),
    (HEADER + "2026-13-01,acme,ads,c,1,EUR\n", 2, "not YYYY-MM-DD"),
    (HEADER + "2026-01-01,acme,fax,c,1,EUR\n", 2, "unknown channel"),
    (HEADER + "2026-01-01,acme,ads,c,-1,EUR\n", 2, "not a non-negative amount"),
    (HEADER + "2026-01-01,acme,ads,c,1,euro\n", 2, "ISO 4217"),
    (HEADER + "2026-01-01,acme,ads,,1,EUR\n", 2, "campaign is empty"),
    (HEADER + "2026-01-01,a|b,ads,c,1,EUR\n", 2, "tenant_id"),
    (HEADER + "2026-01-01,acme,ads,c,1\n", 2, "expected 6 columns"),
])
def test_cost_feed_errors_name_the_line(text: str, line: int, words: str) -> None:
    with pytest.raises(CostFeedError) as err:
        parse_cost_feed(text, "costs/jan.csv")
    assert err.value.line == line and str(err.value).startswith(f"costs/jan.csv:{line}: ") and words in str(err.value)


@given(st.text(max_size=300))
def test_any_feed_text_parses_or_names_a_line(text: str) -> None:
    try:
        parse_cost_feed(text, "x.csv")
    except CostFeedError as err:
        assert err.line >= 1 and str(err).startswith(f"x.csv:{err.line}: ")


def test_chain_and_ratios() -> None:
    chain = conversion_chain({"impression": 1000, "click": 50, "visit": 40, "lead": 4, "deal": 1})
    assert [c["persons"] for c in chain] == [1000, 50, 40, 0, 4, 0, 1]
    assert [c["rate"] for c in chain] == [None, 0.05, 0.8, 0.0, None, 0.0, None]  # after an empty stage: None
    assert chain_product(chain) == 0.001
    assert chain_product(conversion_chain({})) is None
    assert roi(300.0, 100.0) == {"revenue": 300.0, "cost": 100.0, "roas": 3.0, "roi": 2.0}
    assert roi(300.0, 0.0)["roi"] is None
