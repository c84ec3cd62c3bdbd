"""What a simulated run is made of: the tenants' templates' types, behaviour knobs, incidents.

Every number of the world lives in these frozen dataclasses (:class:`Mix` is hashable: the
calibration is cached on it), so a run is fully described by its :class:`SimConfig`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

INCIDENT_KINDS: tuple[str, ...] = ("landing_page_outage", "team_silent", "tracking_broken")

# ----------------------------------------------------------------------------- configuration


@dataclass(frozen=True)
class Incident:
    """One injected fault; the truth file lists these so detector hits can be scored."""

    kind: str  # "landing_page_outage" | "team_silent" | "tracking_broken"
    tenant_id: str
    start_ms: int
    end_ms: int
    campaign: str | None = None
    channel: str | None = None
    team: str | None = None
    stage_from: str | None = None
    stage_to: str | None = None
    factor: float = 0.0  # landing_page_outage: click→visit multiplier; others: 0.0


@dataclass(frozen=True)
class CampaignSpec:
    name: str
    source: str
    medium: str
    channel: str  # ads | social | email: where its impressions and clicks are tracked
    share: float  # of the tenant's events (campaign shares + organic + marketplace = 1)
    ctr: float  # clicks / impressions
    impressions_per_person: float
    landing_path: str
    landing_title: str
    referrer: str | None
    creatives: tuple[str, ...]
    terms: tuple[str, ...] = ()
    #: how the campaign is paid: "cpc" (each click carries properties.cost = cost), "cpm" (each
    #: impression carries cost / 1000) or "feed" (a daily cost outside the events: cost_feed())
    cost_model: str = "cpc"
    cost: float = 0.0


@dataclass(frozen=True)
class TenantSpec:
    tenant_id: str
    domain: str
    email_domains: tuple[str, ...]
    currency: str
    phone_prefix: str  # E.164 prefix, e.g. "+49151"
    phone_digits: int  # digits after the prefix
    crm_offset: str  # the CRM writes local time with this RFC 3339 offset, e.g. "+01:00"
    campaigns: tuple[CampaignSpec, ...]
    organic_share: float
    marketplace_share: float
    pages: tuple[tuple[str, str], ...]  # (path, title)
    chat_channels: tuple[tuple[str, float], ...]  # conversation channel weights
    teams: tuple[tuple[str, int, float], ...]  # (team, agents, weight of conversations)
    sales_channel: str  # channel of opportunity / deal events
    p_chat: float  # per session
    p_form: float  # per session
    p_lead: float  # per form
    p_opp: float  # per lead
    p_won: float  # per opportunity
    p_lost: float  # per opportunity
    deal_median: float  # deal value, lognormal median in the tenant's currency


@dataclass(frozen=True)
class Mix:
    """Behaviour shared by all tenants. Frozen and hashable: the calibration is cached on it."""

    tenants: tuple[TenantSpec, ...] | None = None  # None: built-in templates (see TEMPLATES)
    lead_tenant_weight: float = 0.65  # the first tenant's share of all events; others halve
    impression_gap_s: float = 180.0
    click_delay_median_s: float = 4.0
    p_land: float = 0.85
    load_median_s: float = 1.5
    pages_mean: float = 3.5
    page_gap_mu: float = 3.42  # ln(seconds); OTTO within-session gaps
    page_gap_sigma: float = 1.26
    max_page_gap_s: float = 1500.0  # < 30 min: a longer gap would be a new session
    p_return: float = 0.25
    p_return_identified: float = 0.45  # people who left an email are the engaged ones
    return_gap_median_s: float = 3600.0
    p_second_device: float = 0.4
    form_fill_median_s: float = 45.0
    turns_mean: float = 2.5
    # (channel, reply median s, lognormal sigma, customer answer median s)
    reply: tuple[tuple[str, float, float, float], ...] = (
        ("live_chat", 20.0, 0.9, 20.0),
        ("whatsapp", 60.0, 1.3, 45.0),
        ("messenger", 90.0, 1.5, 60.0),
        ("email", 720.0, 1.93, 1800.0),
    )
    p_auto: tuple[tuple[str, float], ...] = (
        ("live_chat", 0.3),
        ("whatsapp", 0.6),
        ("messenger", 0.6),
        ("email", 0.9),
    )
    slow_prob: float = 0.04  # a reply falls into the Pareto tail (agent busy elsewhere)
    slow_alpha: float = 1.5
    slow_scale: float = 4.0
    max_reply_s: float = 6 * 3600.0
    p_double_text: float = 0.2
    nudge_after_s: float = 90.0
    p_nudge: float = 0.4
    p_prechat_email: float = 0.4
    close_median_s: float = 120.0
    drain_mean_s: float = 120.0  # after team_silent: backlog replies spread over this
    priorities: tuple[tuple[str, float], ...] = (
        ("normal", 0.80), ("high", 0.12), ("urgent", 0.03), ("low", 0.05),
    )
    p_mixed_case_email: float = 0.08  # forms with "Anna.Fischer@Example.com": normalisation demo
    #: a return visit comes through a campaign (retargeting ad, or the newsletter for people with
    #: an email): multi-channel journeys for attribution
    p_return_via_campaign: float = 0.4
    p_return_email: float = 0.5  # ... of those by people with an email: through an email campaign
    #: a new lead is nurtured: before the sales call they click a newsletter or retargeting ad and
    #: look around (a touch of another campaign between lead and deal, as in real B2B cycles)
    p_nurture: float = 0.5
    nurture_delay_s: float = 150.0
    warmup_s: float = 900.0
    pilot_journeys: int = 2000


@dataclass(frozen=True)
class SimConfig:
    rate: float  # mean events/s overall
    duration_s: float
    seed: int
    start_ms: int
    tenants: int = 3
    incidents: Sequence[Incident] | None = None  # None: default_incidents(cfg); empty: none
    mix: Mix = field(default_factory=Mix)
