"""The attribution yardstick: exact when the pipeline is right, and it says how wrong otherwise."""

from __future__ import annotations

from typing import Any

from streams.core.attribution import MODELS, Attribution
from streams.core.model import Touchpoint
from streams.core.state import MemoryStore
from streams.devtools.evaluate_attribution import emitted_credits, evaluate, expected_credits

T0 = 1_767_225_600_000
H = 3_600_000


def truth() -> dict[str, Any]:
    return {"config": {"start_ms": T0 - 10 * H}, "attribution": {"deals": [
        {"tenant_id": "t", "deal_id": "D1", "deal_at": T0, "amount": 100.0, "currency": "EUR",
         "acquisition": {"channel": "ads", "campaign": "spring"}, "arrived_at": T0 - 5 * H,
         "touches": [[T0 - 5 * H, "e1", "ads", "spring", "ad_impression"], [T0 - 5 * H + 1, "e2", "ads", "spring",
                                                                             "ad_click"],
                     [T0 - 2 * H, "e3", "email", "news", "ad_click"], [T0 - H, "e4", "whatsapp", None, "message_in"]]},
        {"tenant_id": "t", "deal_id": "D2", "deal_at": T0, "amount": 7, "currency": "JPY", "acquisition": None,
         "arrived_at": T0, "touches": []},
    ]}}


def pipeline(events: list[tuple[str, str, int, str, str | None]], person_of: dict[str, str]) -> list[dict[str, Any]]:
    """The core's attribution over events, each given to the person ``person_of`` says."""
    at = Attribution(MemoryStore())
    out: list[dict[str, Any]] = []
    for event_id, etype, t, channel, campaign in events:
        tp = Touchpoint(event_id=event_id, tenant_id="t", occurred_at=t, channel=channel, type=etype,
                        identities={"anonymous_id": "x"}, campaign=None if campaign is None else {"name": campaign})
        out += at.observe(tp, person_of.get(event_id, "p")).records
    for deal_id, value, currency in (("D1", 100.0, "EUR"), ("D2", 7, "JPY")):
        tp = Touchpoint(event_id=f"deal-{deal_id}", tenant_id="t", occurred_at=T0, channel="phone", type="deal_won",
                        identities={"anonymous_id": "x"}, value={"amount": value, "currency": currency},
                        properties={"deal_id": deal_id})
        out += at.observe(tp, "p" if deal_id == "D1" else "q").records
    return out


EVENTS = [("e1", "ad_impression", T0 - 5 * H, "ads", "spring"), ("e2", "ad_click", T0 - 5 * H + 1, "ads", "spring"),
          ("e3", "ad_click", T0 - 2 * H, "email", "news"), ("e4", "message_in", T0 - H, "whatsapp", None)]


def test_expected_credits_follow_the_core_rules() -> None:
    want = expected_credits(truth())
    d1 = want[("t", "D1")]
    assert d1["by_model"]["first_touch"] == {"e2": 10_000}  # impressions are not touches by default
    assert d1["by_model"]["linear"] == {"e2": 3333, "e3": 3333, "e4": 3334}
    assert want[("t", "D2")]["by_model"]["linear"] == {None: 7}  # no touch, JPY has no minor unit


def test_a_right_pipeline_is_exact() -> None:
    report = evaluate(truth(), pipeline(EVENTS, {}))
    assert report["deals"] == report["deals_attributed"] == 2 and report["totals_exact"]
    assert all(m["exact_deals"] == 2 and m["credit_accuracy"] == 1.0 for m in report["models"].values())
    assert report["acquisition"] == {"deals_with_campaign": 1, "first_touch_names_it": 1, "share": 1.0}
    spring = next(c for c in report["campaigns"]["first_touch"] if c["campaign"] == "spring")
    assert spring["truth_minor"] == spring["pipeline_minor"] == 10_000


def test_an_unlinked_device_shows_in_accuracy_and_acquisition() -> None:
    """The email click went to a person the identity graph never linked: its credit goes elsewhere."""
    records = pipeline(EVENTS, {"e3": "other"})
    report = evaluate(truth(), records)
    linear = report["models"]["linear"]
    assert linear["exact_deals"] == 1 and 0.6 < linear["credit_accuracy"] < 0.7  # two of the three touches still right
    assert report["models"]["first_touch"]["credit_accuracy"] == 1.0  # e2 is still first
    news = next(c for c in report["campaigns"]["linear"] if c["campaign"] == "news")
    assert news["truth_minor"] == 3333 and news["pipeline_minor"] == 0


def test_missing_deals_and_broken_totals_are_reported() -> None:
    records = [r for r in pipeline(EVENTS, {}) if r["deal_id"] == "D1"]
    records[0] = {**records[0], "credit_minor": records[0]["credit_minor"] - 1}
    report = evaluate(truth(), records)
    assert report["deals_missing"] == ["t/D2"] and not report["totals_exact"]
    assert report["total_problems"][0].startswith("t/D1 revision 1 credit first_touch: credits sum to 9999")
    got, problems = emitted_credits(records)
    assert set(got[("t", "D1")]["by_model"]) == set(MODELS) and len(problems) == 1
