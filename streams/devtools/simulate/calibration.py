"""Rates: how many arrivals per source give the requested events/s, measured by a pilot run."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from streams.devtools.simulate.config import Mix, SimConfig, TenantSpec
from streams.devtools.simulate.journeys import Journey, Sim
from streams.devtools.simulate.tenants import tenant_specs, tenant_weights
from streams.devtools.simulate.world import Person, TenantState


@dataclass(frozen=True)
class Returns:
    per_journey: float  # return sessions per journey
    ages: tuple[int, ...]  # sorted ms from journey start to each return session
    identified: float  # share of return sessions whose person has an email by then


@dataclass(frozen=True)
class Calibration:
    click_events: float  # expected events of a journey from ad_click on (incl. the click)
    organic_events: float
    market_events: float
    click_returns: Returns
    organic_returns: Returns


@lru_cache(maxsize=64)
def calibrate(mix: Mix, spec: TenantSpec) -> Calibration:
    """Mean events per journey, measured by a pilot run with a fixed seed (independent of cfg.seed).

    Measured rather than derived by hand so the rate calibration always matches the journey
    code, whatever knob a mix changes.
    """
    n = max(100, mix.pilot_journeys)
    far = 2**62

    def count(make: Callable[[Sim, TenantState, int], Journey], journeys: int) -> tuple[float, Returns]:
        sim = Sim(mix, [spec], 0x5EED, far, 0)
        tr = sim.tenants[0]
        ages: list[int] = []
        known = 0

        def on_return(t: int, p: Person) -> None:
            nonlocal known
            ages.append(t - p.born)
            known += p.email is not None

        sim.on_return = on_return
        for i in range(journeys):
            sim.spawn(make(sim, tr, 1_700_000_000_000 + i * 1000))
        events = sum(1 for _ in sim.run()) / journeys
        ret = Returns(len(ages) / journeys, tuple(sorted(ages)), known / len(ages) if ages else 0.0)
        return events, ret

    def clicker(sim: Sim, tr: TenantState, t: int) -> Journey:
        c = tr.camps[0]
        p = sim.new_person(tr, t)
        if c.is_email:
            p.email = tr.email(p.n, sim.rng)
        return sim.after_click(p, c, t, c.camps[0])

    click_events, click_returns = count(clicker, n)
    organic_events, organic_returns = count(lambda sim, tr, t: sim.organic_person(tr, t)[0], n)
    market_events, _ = count(lambda sim, tr, t: sim.marketplace_person(tr, t)[0], max(100, n // 4))
    return Calibration(click_events, organic_events, market_events, click_returns, organic_returns)


def check_shares(spec: TenantSpec) -> None:
    total = sum(c.share for c in spec.campaigns) + spec.organic_share + spec.marketplace_share
    if abs(total - 1.0) > 1e-6:
        raise ValueError(f"{spec.tenant_id}: campaign + organic + marketplace shares sum to {total}, not 1")


def source_rates(cfg: SimConfig) -> list[dict[str, Any]]:
    """Per tenant: weight, and arrivals/s per source, from rate × weight × share / events per arrival."""
    specs = tenant_specs(cfg)
    weights = tenant_weights(len(specs), cfg.mix.lead_tenant_weight)
    out: list[dict[str, Any]] = []
    for spec, w in zip(specs, weights, strict=True):
        check_shares(spec)
        cal = calibrate(cfg.mix, spec)
        budget = cfg.rate * w
        camps: dict[str, float] = {}
        for c in spec.campaigns:
            imp = max(1.0, c.impressions_per_person)
            per_arrival = imp + min(0.95, c.ctr * imp) * cal.click_events
            camps[c.name] = budget * c.share / per_arrival
        out.append({
            "spec": spec,
            "weight": w,
            "campaigns": camps,
            "organic": budget * spec.organic_share / cal.organic_events,
            "marketplace": budget * spec.marketplace_share / cal.market_events,
            "clicks": sum(
                camps[c.name] * min(0.95, c.ctr * max(1.0, c.impressions_per_person)) for c in spec.campaigns
            ),
            "calibration": cal,
        })
    return out
