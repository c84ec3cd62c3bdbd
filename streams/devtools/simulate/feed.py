"""The feed: generation in event-time order, files, live pacing, expected rates and the truth file."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import asdict, replace
from os import PathLike
from typing import Any

import orjson

from streams.devtools.simulate.calibration import Calibration, source_rates
from streams.devtools.simulate.config import CampaignSpec, SimConfig, TenantSpec
from streams.devtools.simulate.incidents import apply_incidents, incidents_of
from streams.devtools.simulate.journeys import Sim
from streams.devtools.simulate.tenants import agent_ids
from streams.devtools.simulate.truth import AttributionRecorder, cost_feed_rows


def _timed(cfg: SimConfig, recorder: AttributionRecorder | None = None) -> Iterator[tuple[int, dict[str, Any]]]:
    """(epoch ms, event) in occurred_at order; the ms rides along so pacing never re-parses.

    ``recorder``: told every event with the person behind it (the attribution ground truth)."""
    if cfg.rate <= 0 or cfg.duration_s <= 0:
        return
    end_ms = cfg.start_ms + int(cfg.duration_s * 1000)
    begin = cfg.start_ms - int(cfg.mix.warmup_s * 1000)
    rates = source_rates(cfg)
    sim = Sim(cfg.mix, [r["spec"] for r in rates], cfg.seed, end_ms, cfg.start_ms)
    apply_incidents(sim.tenants, incidents_of(cfg))
    if recorder is not None:
        sim.track_owners(recorder.done)
    for tr, r in zip(sim.tenants, rates, strict=True):
        for c in tr.camps:
            c.lam = r["campaigns"][c.spec.name] / 1000.0
            if c.lam > 0:
                sim.spawn(sim.campaign_arrivals(c, begin))
        if r["organic"] > 0:
            sim.spawn(sim.arrivals(r["organic"] / 1000.0, begin, lambda t, tr=tr: sim.organic_person(tr, t)))
        if r["marketplace"] > 0:
            sim.spawn(sim.arrivals(r["marketplace"] / 1000.0, begin,
                                   lambda t, tr=tr: sim.marketplace_person(tr, t)))
        cal: Calibration = r["calibration"]
        sim.spawn(sim.prehistory_returners(tr, begin, r["clicks"] / 1000.0, cal.click_returns))
        sim.spawn(sim.prehistory_returners(tr, begin, r["organic"] / 1000.0, cal.organic_returns))
    prefix = f"sim{cfg.seed}-{cfg.start_ms}-"
    for n, (t, ev, person) in enumerate(sim.run(), 1):
        ev["event_id"] = f"{prefix}{n}"
        if recorder is not None:
            recorder.observe(t, ev, person)
        yield t, ev


def generate(cfg: SimConfig) -> Iterator[dict[str, Any]]:
    """Raw contract-v1 events in occurred_at order (ties in scheduling order), lazily."""
    for _, ev in _timed(cfg):
        yield ev


def dumps(ev: dict[str, Any]) -> bytes:
    """The one serialisation: sorted keys so equal events are equal bytes."""
    return orjson.dumps(ev, option=orjson.OPT_SORT_KEYS)


def write_jsonl(cfg: SimConfig, path: str | PathLike[str]) -> int:
    """Writes one JSON object per line; returns the number of events."""
    opt = orjson.OPT_SORT_KEYS | orjson.OPT_APPEND_NEWLINE
    enc = orjson.dumps
    n = 0
    buf: list[bytes] = []
    with open(path, "wb") as f:
        for _, ev in _timed(cfg):
            buf.append(enc(ev, option=opt))
            if len(buf) >= 8192:
                f.write(b"".join(buf))
                n += len(buf)
                buf.clear()
        f.write(b"".join(buf))
        n += len(buf)
    return n


def expected_per_minute(cfg: SimConfig) -> dict[str, dict[str, dict[str, float]]]:
    """Steady-state events per minute per tenant, campaign and stage (no incidents).

    click = the campaign's own clicks plus the return visits that come through it
    (``retarget_click``: returns × p_return_via_campaign, to the newsletter for the identified
    share × p_return_email, else to the paid campaigns by share); visit = landing page views
    (the ones carrying the campaign); form/lead/opportunity/deal count only the landing
    sessions', i.e. those carrying the campaign. Not included: the nurture clicks of new leads
    (``p_nurture`` × leads, well under 1 % of a paid campaign's clicks).
    """
    mix = cfg.mix
    out: dict[str, dict[str, dict[str, float]]] = {}
    for r in source_rates(cfg):
        spec: TenantSpec = r["spec"]
        cal: Calibration = r["calibration"]
        own = {c.name: r["campaigns"][c.name] * 60.0 * min(0.95, c.ctr * max(1.0, c.impressions_per_person))
               for c in spec.campaigns}
        click_ret, org_ret = cal.click_returns, cal.organic_returns
        organic = r["organic"] * 60.0
        returns = sum(own.values()) * click_ret.per_journey + organic * org_ret.per_journey
        identified = (sum(own.values()) * click_ret.per_journey * click_ret.identified
                      + organic * org_ret.per_journey * org_ret.identified) / returns if returns else 0.0
        mail = [c for c in spec.campaigns if c.channel == "email"]
        paid = [c for c in spec.campaigns if c.channel != "email"]
        via = returns * mix.p_return_via_campaign
        to_mail = via * identified * mix.p_return_email if mail else 0.0
        to_paid = via - to_mail if paid else 0.0
        per: dict[str, dict[str, float]] = {}
        for c in spec.campaigns:
            lam = r["campaigns"][c.name] * 60.0
            imp = max(1.0, c.impressions_per_person)
            group, budget = (mail, to_mail) if c.channel == "email" else (paid, to_paid)
            retarget = budget * c.share / sum(x.share for x in group)
            clicks = own[c.name] + retarget
            visits = clicks * mix.p_land
            # P(a landing session has a form) — forms are only in the landing session's last page.
            forms = visits * spec.p_form
            leads = forms * spec.p_lead
            opps = leads * spec.p_opp
            per[c.name] = {
                "arrivals": lam,
                "impression": lam * imp,
                "click": clicks,
                "retarget_click": retarget,
                "visit": visits,
                "form_submit": forms,
                "lead": leads,
                "opportunity": opps,
                "deal_won": opps * spec.p_won,
                "deal_lost": opps * spec.p_lost,
            }
        out[spec.tenant_id] = per
    return out


def truth(cfg: SimConfig, attribution: bool = True) -> dict[str, Any]:
    """What the run contains by construction: the yardstick for detector, SLA and attribution
    evaluation.

    ``attribution``: also the won deals with their persons' true touches, the costs the ad events
    carried and the cost feed (streams/devtools/simulate/truth.py). That needs the whole run
    generated once more (the other parts are computed from the configuration alone), so callers
    that only judge the detector pass False."""
    rates = source_rates(cfg)
    expected = expected_per_minute(cfg)
    tenants: list[dict[str, Any]] = []
    campaigns: dict[str, dict[str, Any]] = {}
    for r in rates:
        spec: TenantSpec = r["spec"]
        tenants.append({
            "tenant_id": spec.tenant_id,
            "weight": r["weight"],
            "expected_events_per_s": cfg.rate * r["weight"],
            "currency": spec.currency,
            "domain": spec.domain,
            "teams": {team: list(ids) for team, ids in agent_ids(spec).items()},
            "conversation_channels": dict(spec.chat_channels),
            "organic_arrivals_per_min": r["organic"] * 60.0,
            "marketplace_arrivals_per_min": r["marketplace"] * 60.0,
        })
        campaigns[spec.tenant_id] = {
            c.name: {
                "source": c.source,
                "medium": c.medium,
                "channel": c.channel,
                "share": c.share,
                "ctr": c.ctr,
                "impressions_per_person": c.impressions_per_person,
                "p_land": cfg.mix.p_land,
                "expected_per_minute": expected[spec.tenant_id][c.name],
                "cost_model": c.cost_model,
                "cost": c.cost,
                "currency": spec.currency,
                "expected_cost_per_minute": _cost_per_minute(c, expected[spec.tenant_id][c.name]),
            }
            for c in spec.campaigns
        }
    out = {
        "config": {
            "rate": cfg.rate,
            "duration_s": cfg.duration_s,
            "seed": cfg.seed,
            "start_ms": cfg.start_ms,
            "end_ms": cfg.start_ms + int(cfg.duration_s * 1000),
            "tenants": cfg.tenants,
            "warmup_s": cfg.mix.warmup_s,
            "reply_delays": {c: {"median_s": m, "sigma": s} for c, m, s, _ in cfg.mix.reply},
            "slow_reply": {"prob": cfg.mix.slow_prob, "pareto_alpha": cfg.mix.slow_alpha,
                           "scale": cfg.mix.slow_scale},
        },
        "incidents": [asdict(i) for i in incidents_of(cfg)],
        "tenants": tenants,
        "campaigns": campaigns,
    }
    if attribution:
        recorder = AttributionRecorder()
        for _ in _timed(cfg, recorder):
            pass
        out["attribution"] = recorder.result()
        out["costs"] = {"events": recorder.event_costs(), "feed": cost_feed_rows(cfg)}
    return out


def _cost_per_minute(c: CampaignSpec, expected: dict[str, float]) -> float:
    if c.cost_model == "cpc":
        return expected["click"] * c.cost
    if c.cost_model == "cpm":
        return expected["impression"] * c.cost / 1000.0
    return c.cost / 1440.0


async def stream_live(
    cfg: SimConfig,
    send: Callable[[bytes, bytes], Awaitable[None]],
    *,
    now: Callable[[], float] = time.time,
    sleep: Callable[[float], Awaitable[Any]] = asyncio.sleep,
    speed: float = 1.0,
) -> int:
    """Sends the feed paced to the wall clock, so occurred_at ≈ the time it is sent.

    start_ms becomes ``now()`` at the call (the default incident plan moves with it). ``speed``
    > 1 replays faster than real time; occurred_at then runs ahead of the wall clock, and the
    contract rejects events more than 15 min in the future. Key = tenant_id, value = JSON.
    """
    if speed <= 0:
        raise ValueError("speed must be > 0")
    t0 = now()
    start_ms = int(t0 * 1000)
    live = replace(cfg, start_ms=start_ms)
    n = 0
    keys: dict[str, bytes] = {}
    for t, ev in _timed(live):
        due = t0 + (t - start_ms) / 1000.0 / speed
        delay = due - now()
        if delay > 0:
            await sleep(delay)
        tid = ev["tenant_id"]
        key = keys.get(tid)
        if key is None:
            key = keys[tid] = tid.encode()
        await send(key, dumps(ev))
        n += 1
    return n
