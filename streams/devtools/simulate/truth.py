"""Ground truth for attribution and ROI: what the simulator knows and the pipeline must infer.

The pipeline sees identifiers and has to decide which events belong to one person; the
simulator *knows*: every journey is a person's. :class:`AttributionRecorder` keeps, per person,
the events that can be attribution touches, and at each won deal writes down the deal (id,
time, value) with that person's touches so far and how the person first arrived (the campaign
or source the simulator started them from). ``streams.devtools.evaluate_attribution`` turns
those touches into the credits each model should give, with the core's own touch and model
rules, and compares them with what the pipeline emitted: a difference is the identity
stitching's (or a late event's) doing, not a model's.

Costs are known too: what the ad events carried (summed per campaign while generating) and a
cost feed for the campaigns paid outside the events (:func:`cost_feed`).
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from typing import Any

from streams.core.roi import to_micros
from streams.devtools.simulate.config import SimConfig
from streams.devtools.simulate.tenants import tenant_specs
from streams.devtools.simulate.world import Person

#: event types recorded per person: every type an attribution configuration may count as a touch
RECORDED_TYPES: frozenset[str] = frozenset({"ad_impression", "ad_click", "page_view", "form_submit", "message_in"})
DAY_MS = 86_400_000


class AttributionRecorder:
    """Fed every emitted event with its person (``Sim.track_owners``); memory is bounded by the
    persons whose journeys are still running (:meth:`done` forgets the others)."""

    __slots__ = ("costs", "deals", "touches")

    def __init__(self) -> None:
        self.touches: dict[Person, list[list[Any]]] = {}
        self.deals: list[dict[str, Any]] = []
        #: (tenant, campaign, currency) -> micro-units carried by ad events
        self.costs: dict[tuple[str, str, str], int] = {}

    def observe(self, t: int, ev: dict[str, Any], person: Person | None) -> None:
        etype = ev["type"]
        props = ev.get("properties")
        if props is not None and "cost" in props:
            cost = props["cost"]
            key = (ev["tenant_id"], ev["campaign"]["name"], cost["currency"])
            self.costs[key] = self.costs.get(key, 0) + (to_micros(cost["amount"]) or 0)
        if person is None:
            return
        if etype in RECORDED_TYPES:
            camp = ev.get("campaign")
            touch = [t, ev["event_id"], ev["channel"], None if camp is None else camp["name"], etype]
            self.touches.setdefault(person, []).append(touch)
        elif etype == "deal_won":
            source = person.source
            self.deals.append({
                "tenant_id": ev["tenant_id"],
                "deal_id": ev["properties"]["deal_id"],
                "deal_event_id": ev["event_id"],
                "deal_at": t,
                "amount": ev["value"]["amount"],
                "currency": ev["value"]["currency"],
                "person": f"{ev['tenant_id']}#{person.n}",
                "acquisition": None if source is None else {"channel": source[0], "campaign": source[1]},
                "arrived_at": person.born,  # before config.start_ms: the arrival was not emitted
                "touches": [list(x) for x in self.touches.get(person, ())],
            })

    def done(self, person: Person) -> None:
        self.touches.pop(person, None)

    def result(self) -> dict[str, Any]:
        return {
            "touch_types_recorded": sorted(RECORDED_TYPES),
            "touch_fields": ["at", "event_id", "channel", "campaign", "type"],
            "deals": self.deals,
        }

    def event_costs(self) -> list[dict[str, Any]]:
        return [{"tenant_id": t, "campaign": c, "currency": cur, "cost_micros": m}
                for (t, c, cur), m in sorted(self.costs.items())]


def feed_days(cfg: SimConfig) -> Iterable[tuple[str, float]]:
    """UTC days the run covers, with the share of each day inside the run."""
    start, end = cfg.start_ms, cfg.start_ms + int(cfg.duration_s * 1000)
    day = start - start % DAY_MS
    while day < end:
        covered = min(end, day + DAY_MS) - max(start, day)
        yield (datetime(1970, 1, 1, tzinfo=UTC) + timedelta(milliseconds=day)).date().isoformat(), covered / DAY_MS
        day += DAY_MS


def cost_feed_rows(cfg: SimConfig) -> list[dict[str, Any]]:
    """What the campaigns paid outside the events cost (``cost_model="feed"``): the daily cost,
    prorated to the part of each day the run covers, rounded to cents."""
    rows: list[dict[str, Any]] = []
    for spec in tenant_specs(cfg):
        for c in spec.campaigns:
            if c.cost_model != "feed" or c.cost <= 0:
                continue
            for day, share in feed_days(cfg):
                rows.append({"date": day, "tenant_id": spec.tenant_id, "channel": c.channel, "campaign": c.name,
                             "cost": f"{c.cost * share:.2f}", "currency": spec.currency})
    return rows


def cost_feed(cfg: SimConfig) -> str:
    """The cost feed file of the run (CSV, streams/core/roi.py ``parse_cost_feed`` reads it)."""
    lines = ["date,tenant_id,channel,campaign,cost,currency"]
    lines += [",".join(str(r[k]) for k in ("date", "tenant_id", "channel", "campaign", "cost", "currency"))
              for r in cost_feed_rows(cfg)]
    return "\n".join(lines) + "\n"
