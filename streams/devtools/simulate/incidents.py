"""Injected incidents: the default plan scaled to a run, and applying a plan to the world."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from streams.devtools.simulate.config import INCIDENT_KINDS, Incident, SimConfig
from streams.devtools.simulate.tenants import tenant_specs
from streams.devtools.simulate.world import TenantState


def default_incidents(cfg: SimConfig) -> tuple[Incident, ...]:
    """A plan scaled to the run, capped in absolute time so an endless live run still sees it.

    tracking_broken on the last tenant's social campaign at 15 % (≤ 10 min) for 12 % (≤ 8 min);
    landing_page_outage halving click→visit of the first tenant's largest campaign at 40 %
    (≤ 20 min) for 25 % (≤ 15 min); team "support" of the second tenant silent at 65 % (≤ 40 min)
    for 15 % (≤ 10 min).
    """
    specs = tenant_specs(cfg)
    d = cfg.duration_s

    def window(at: float, at_cap: float, length: float, length_cap: float) -> tuple[int, int]:
        s = cfg.start_ms + int(min(at * d, at_cap) * 1000)
        return s, s + max(1000, int(min(length * d, length_cap) * 1000))

    out: list[Incident] = []
    last = specs[-1]
    social = [c for c in last.campaigns if c.channel == "social"] or list(last.campaigns[-1:])
    if social:
        s, e = window(0.15, 600, 0.12, 480)
        out.append(Incident("tracking_broken", last.tenant_id, s, e, campaign=social[0].name,
                            channel=social[0].channel, stage_to="impression", factor=0.0))
    first = specs[0]
    if first.campaigns:
        big = max(first.campaigns, key=lambda c: c.share)
        s, e = window(0.40, 1200, 0.25, 900)
        out.append(Incident("landing_page_outage", first.tenant_id, s, e, campaign=big.name,
                            channel=big.channel, stage_from="click", stage_to="visit", factor=0.5))
    second = specs[1 % len(specs)]
    team = "support" if any(t == "support" for t, _, _ in second.teams) else second.teams[0][0]
    s, e = window(0.65, 2400, 0.15, 600)
    out.append(Incident("team_silent", second.tenant_id, s, e, team=team, factor=0.0))
    return tuple(out)


def incidents_of(cfg: SimConfig) -> tuple[Incident, ...]:
    return default_incidents(cfg) if cfg.incidents is None else tuple(cfg.incidents)


def apply_incidents(tenants: Sequence[TenantState], incidents: Iterable[Incident]) -> None:
    by_id = {t.tid: t for t in tenants}
    for inc in incidents:
        tr = by_id.get(inc.tenant_id)
        if tr is None:
            raise ValueError(f"incident for unknown tenant {inc.tenant_id!r}")
        if inc.kind not in INCIDENT_KINDS:
            raise ValueError(f"unknown incident kind {inc.kind!r}; known: {', '.join(INCIDENT_KINDS)}")
        if inc.end_ms <= inc.start_ms:
            raise ValueError(f"incident {inc.kind} of {inc.tenant_id} ends before it starts")
        win = (inc.start_ms, inc.end_ms, inc.factor)
        if inc.kind == "team_silent":
            if inc.team not in tr.agents:
                raise ValueError(f"incident for unknown team {inc.team!r} of {inc.tenant_id}")
            tr.silent.setdefault(inc.team, []).append(win)
            continue
        camp = next((c for c in tr.camps if c.spec.name == inc.campaign), None)
        if camp is None:
            raise ValueError(f"incident for unknown campaign {inc.campaign!r} of {inc.tenant_id}")
        if inc.kind == "landing_page_outage":
            camp.outage.append(win)
        else:
            camp.tracking_off.append(win)
