"""Seeded, realistic multi-tenant touchpoint feed (contract v1) with injected, recorded incidents.

Why a simulator: the funnel anomaly detector and the SLA clocks can only be judged against data
whose truth is known. So the feed has realistic *rates* (CTR, click→visit, chat reply delays)
and a truth file (:func:`truth`) that says exactly which incident happened where and when.

The world, per tenant (built-in templates; every number lives in :class:`Mix` / :class:`TenantSpec`):

* Arrivals are Poisson per source (each campaign, organic search/direct, a B2B marketplace).
  A campaign person sees 1 + Geometric impressions (minutes apart); with probability
  ``ctr × impressions_per_person`` they click a few seconds after the last one, so
  clicks / impressions = ``ctr`` (2-5 %). Email campaigns: "impression" = open, and the person
  is known by email from the start.
* A click lands (``page_view`` with the campaign's UTM URL and ``campaign``) with probability
  ``p_land`` (0.85); the landing session has 1 + Geometric pages (mean 3.5), gaps lognormal.
  With ``p_return`` (0.25; 0.45 once they left an email) the person comes back after > 30 min
  (a new session, no campaign); an identified returner uses a second device with
  ``p_second_device`` (new anonymous_id, then an ``identify`` with email + user_id links it).
* In a session some start a conversation (live chat, WhatsApp, Messenger, email; see below) and
  some submit a form (``form_submit`` with email → CRM ``lead`` with crm_contact_id →
  ``opportunity`` → ``deal_won`` with value / ``deal_lost``). Sales cycles are compressed from
  days to minutes so a one-hour run shows the whole funnel.
* Conversations: customer ``message_in``, agent ``message_out`` after a lognormal delay with a
  Pareto tail (per channel; most within target, some minutes late), bot auto-acks
  (``properties.auto: true``, ``agent_id: "bot"``), double texts, "any update?" nudges while
  waiting, then ``conversation_closed``. Priority mostly normal, some high/urgent/low.
* Identities: web events carry ``anonymous_id`` only; email appears on forms, pre-chat forms and
  email campaigns; WhatsApp messages carry ``whatsapp_id`` == ``phone`` (E.164), Messenger a
  ``messenger_psid``; the first message of a WhatsApp/Messenger chat also carries the web
  ``anonymous_id`` (click-to-chat ref), which is what links the channel ids to the web person.

Which events carry ``campaign``: impressions, clicks, the landing page view (its URL has the
UTM parameters) and the form/lead/opportunity/deal of the landing session (hidden UTM fields
copied into the CRM). Later page views, returns and conversations carry none, as real trackers
do; so per campaign, landing visits / clicks = ``p_land`` exactly, which is what the
landing_page_outage incident halves. Channels: impressions/clicks on the campaign's channel
(ads, social, email), page views/forms/leads on ``web`` (marketplace: ``b2b_platform``),
opportunities/deals on the tenant's sales channel, messages on their conversation channel.

Incidents (:class:`Incident`, recorded by :func:`truth`):

* ``landing_page_outage``: for one campaign and window, P(landing | click) = p_land × factor
  (click time decides). stage_from="click", stage_to="visit".
* ``team_silent``: the team's human agents send nothing in the window; replies (and closes)
  due in it are sent after it ends plus an exponential drain (mean 120 s). Bot auto-acks
  continue. factor=0.0 (fraction of replies still sent).
* ``tracking_broken``: a campaign's impressions are not recorded in the window (clicks
  continue). stage_from=None, stage_to="impression", factor=0.0 (volume multiplier).

Volume: ``rate`` is the mean of emitted events/s. Each source's arrival rate is
``rate × tenant weight × source share / expected events per arrival``; the expected events of
the click-onward journey are measured once per (mix, tenant) by a pilot run with a fixed seed
(cached), so the calibration can never drift from the journey code. The stream is stationary
from its first minute: generation starts ``warmup_s`` (900 s) before ``start_ms`` without
emitting (impression chains and sessions in flight), and the return visits of people who
"arrived before the beginning" are injected at exactly the missing rate (see
``_Sim.prehistory_returners``). Measured at rate 200 without incidents: 197-200 events/s in
every quarter-hour of a 3-hour run (multi-hour tails such as email replies and deals ramp a
little). Incidents remove events (the outage loses landing sessions): the default plan costs
~2 % of a one-hour run.

Expected per-minute counts at rate 200 (3 tenants, weights 0.65 / 0.233 / 0.117;
:func:`expected_per_minute` computes them for any config; a measured 1-hour run, seed 7,
matches within Poisson noise outside the incident windows):

=================================== ====== ====== ===== ===== ===== ===== =====
tenant / campaign                     impr  click visit  form  lead   opp   won
=================================== ====== ====== ===== ===== ===== ===== =====
acme-shop / winter-sale-search        4925    246   209   6.3   3.1   0.9   0.6
acme-shop / winter-sale-social         423    8.5   7.2   0.2   0.1
acme-shop / weekly-newsletter          263    9.2   7.8   0.2   0.1
northwind-b2b / crm-demo-search       1018     41    35   2.8   1.9   0.6   0.2
northwind-b2b / q4-demo-linkedin       626     13    11   0.9   0.6   0.2   0.1
northwind-b2b / product-webinar        238    7.1   6.1   0.5   0.3   0.1
globex-travel / flights-search         613     28    23   0.9   0.6   0.1   0.1
globex-travel / summer-deals-insta     251    5.0   4.3   0.2   0.1
globex-travel / loyalty-mail           120    3.6   3.0   0.1   0.1
=================================== ====== ====== ===== ===== ===== ===== =====

visit = landing page views (those carrying the campaign); one click per person, so
click-stage persons/min = clicks/min (measured for winter-sale-search over an hour with the
default incidents, seed 7: min 210, mean 244, max 276 per minute). All tenants together per
minute: ~11,750 events, ~8,400 impressions, ~355 clicks, ~2,600 page views, ~15 identifies,
~130 customer messages in ~49 conversations, ~46 forms, ~29 leads, ~8 opportunities,
~2 deals won. Measured agent reply delays (first
customer message → first human reply), against the SLA engine's default first-reply targets:
live_chat median 21 s, 87 % within 60 s, 0.7 % > 5 min; WhatsApp median 64 s, 88 % within
5 min; Messenger median 86 s, 82 % within 5 min; email median ~4-6 min in a one-hour window
(which cuts off the longest email replies; the model's median is 12 min).

Constants derived from the real samples in ``/work/shared/data`` (read once by hand, never at
run time): page gaps lognormal(mu=3.42, sigma=1.26) seconds = OTTO within-session click gaps
(median 30 s, p90 146 s; ``otto-sessions-sample``), return probability ~0.25 from OTTO's 15 % of
gaps > 30 min; email reply delays lognormal(median 720 s, sigma 1.93) = TWCS company reply
times (median 727 s, p90 6.4 h; ``support-twcs-sample``), whose sigma also bounds the
messenger tail; lead → won 10.5 % (p_opp 0.3 × p_won 0.35) for the B2B tenant =
Olist MQL → closed deal (``olist-marketing-funnel``).

Determinism: one ``random.Random(seed)``, drawn in a fixed order; all times derive from
``start_ms``; a heap ordered by (time, scheduling sequence) breaks ties; ``orjson`` with sorted
keys makes the bytes stable. ``event_id`` = ``sim<seed>-<start_ms>-<n>`` so two live runs with
the same seed do not collide in the dedup window.

Memory: a heap of at most one pending event per active journey (person, conversation, CRM
chain, arrival source); nothing is precomputed for the whole run.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import math
import random
import time
from bisect import bisect
from collections.abc import Awaitable, Callable, Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from os import PathLike
from typing import Any

import orjson

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

    tenants: tuple[TenantSpec, ...] | None = None  # None: built-in templates (see _TEMPLATES)
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


# ----------------------------------------------------------------------------- tenant templates

_SHOP = TenantSpec(
    tenant_id="acme-shop",
    domain="shop.acme.example",
    email_domains=("example.com", "example.org", "example.net", "mail.example"),
    currency="EUR",
    phone_prefix="+49151",
    phone_digits=8,
    crm_offset="+01:00",
    campaigns=(
        CampaignSpec(
            "winter-sale-search", "google", "cpc", "ads", 0.80, 0.05, 1.2, "/sale/winter",
            "Winter sale - up to 50% off", "https://www.google.com/", ("rsa-1", "rsa-2", "rsa-3"),
            ("winter boots", "down jacket", "wool coat sale"),
        ),
        CampaignSpec(
            "winter-sale-social", "facebook", "paid_social", "social", 0.06, 0.02, 2.0, "/sale/winter",
            "Winter sale - up to 50% off", "https://l.facebook.com/", ("carousel-1", "video-15s"),
        ),
        CampaignSpec(
            "weekly-newsletter", "newsletter", "email", "email", 0.04, 0.035, 1.0, "/new-in",
            "New in this week", None, ("hero", "footer"),
        ),
    ),
    organic_share=0.10,
    marketplace_share=0.0,
    pages=(
        ("/", "Acme Shop"), ("/women/boots", "Women's boots"), ("/men/jackets", "Men's jackets"),
        ("/product/alpine-down-jacket", "Alpine down jacket"), ("/product/trail-boot-gtx", "Trail boot GTX"),
        ("/cart", "Your cart"), ("/help/shipping", "Shipping and returns"), ("/contact", "Contact us"),
    ),
    chat_channels=(("live_chat", 0.6), ("whatsapp", 0.3), ("messenger", 0.1)),
    teams=(("support", 8, 0.8), ("sales", 3, 0.2)),
    sales_channel="web",
    p_chat=0.05,
    p_form=0.03,
    p_lead=0.5,
    p_opp=0.3,
    p_won=0.6,
    p_lost=0.2,
    deal_median=120.0,
)

_B2B = TenantSpec(
    tenant_id="northwind-b2b",
    domain="www.northwind.example",
    email_domains=(),  # B2B: a company domain per person (see _Tenant.email)
    currency="GBP",
    phone_prefix="+447",
    phone_digits=9,
    crm_offset="+00:00",
    campaigns=(
        CampaignSpec(
            "crm-demo-search", "google", "cpc", "ads", 0.45, 0.04, 1.3, "/lp/crm-demo",
            "The CRM your sales team will actually use", "https://www.google.com/", ("rsa-a", "rsa-b"),
            ("crm software", "sales pipeline tool", "hubspot alternative"),
        ),
        CampaignSpec(
            "q4-demo-linkedin", "linkedin", "paid_social", "social", 0.25, 0.02, 2.2, "/lp/q4-demo",
            "Book your Q4 demo", "https://www.linkedin.com/", ("single-image", "document-ad"),
        ),
        CampaignSpec(
            "product-webinar", "hubspot", "email", "email", 0.10, 0.03, 1.0, "/webinar",
            "Webinar: forecasting that works", None, ("invite", "reminder"),
        ),
    ),
    organic_share=0.19,
    marketplace_share=0.01,
    pages=(
        ("/", "Northwind CRM"), ("/features", "Features"), ("/pricing", "Pricing"),
        ("/integrations", "Integrations"), ("/customers", "Customer stories"), ("/demo", "Book a demo"),
        ("/docs/getting-started", "Getting started"), ("/security", "Security"),
    ),
    chat_channels=(("live_chat", 0.5), ("email", 0.3), ("whatsapp", 0.2)),
    teams=(("support", 5, 0.5), ("sales", 4, 0.5)),
    sales_channel="phone",
    p_chat=0.07,
    p_form=0.08,
    p_lead=0.7,
    p_opp=0.3,  # Olist MQL → closed deal 10.5 % = 0.3 × 0.35
    p_won=0.35,
    p_lost=0.3,
    deal_median=4800.0,
)

_TRAVEL = TenantSpec(
    tenant_id="globex-travel",
    domain="www.globex-travel.example",
    email_domains=("example.com", "example.net", "mail.example"),
    currency="USD",
    phone_prefix="+1415",
    phone_digits=7,
    crm_offset="-05:00",
    campaigns=(
        CampaignSpec(
            "flights-search", "google", "cpc", "ads", 0.55, 0.045, 1.2, "/flights/deals",
            "Cheap flights to Europe", "https://www.google.com/", ("rsa-1", "rsa-2"),
            ("cheap flights london", "nyc to paris", "flight deals"),
        ),
        CampaignSpec(
            "summer-deals-insta", "instagram", "paid_social", "social", 0.20, 0.02, 2.0, "/deals/summer",
            "Summer deals", "https://l.instagram.com/", ("reel-1", "story-2"),
        ),
        CampaignSpec(
            "loyalty-mail", "braze", "email", "email", 0.10, 0.03, 1.0, "/account/rewards",
            "Your rewards", None, ("points", "upgrade"),
        ),
    ),
    organic_share=0.15,
    marketplace_share=0.0,
    pages=(
        ("/", "Globex Travel"), ("/flights", "Flights"), ("/flights/nyc-lon", "New York to London"),
        ("/hotels", "Hotels"), ("/deals", "Deals"), ("/checkout", "Checkout"),
        ("/help/baggage", "Baggage"), ("/account", "My trips"),
    ),
    chat_channels=(("whatsapp", 0.45), ("messenger", 0.35), ("live_chat", 0.2)),
    teams=(("support", 6, 0.7), ("sales", 3, 0.3)),
    sales_channel="web",
    p_chat=0.08,
    p_form=0.04,
    p_lead=0.6,
    p_opp=0.25,
    p_won=0.45,
    p_lost=0.25,
    deal_median=650.0,
)

_TEMPLATES: tuple[TenantSpec, ...] = (_SHOP, _B2B, _TRAVEL)

_FIRST = (
    "anna", "ben", "clara", "david", "emma", "felix", "hannah", "jonas", "lea", "lukas",
    "maria", "noah", "olivia", "paul", "sara", "tom", "yara", "zoe", "omar", "mei",
)
_LAST = (
    "fischer", "smith", "garcia", "kim", "novak", "rossi", "meyer", "khan",
    "silva", "jensen", "dubois", "nowak", "chen", "wagner", "lopez", "brown",
)
_SAY_IN = (
    "Hi, where is my order?", "Do you ship to Austria?", "Can I change my booking?",
    "Is there a discount for teams?", "How do I reset my password?", "My payment failed.",
    "Can I get an invoice?", "Which plan includes the API?", "Is this in stock in size 42?",
)
_SAY_NUDGE = ("Hello?", "Any update?", "Still waiting...")
_SAY_OUT = (
    "Thanks for reaching out! Let me check.", "Sure, here is the link.", "I have updated that for you.",
    "Could you send me your order number?", "That is included in the Pro plan.", "Done - anything else?",
)
_SAY_AUTO = "Thanks for your message - an agent will reply shortly."
_PROPS_IN = tuple({"text": s} for s in _SAY_IN)
_PROPS_NUDGE = tuple({"text": s} for s in _SAY_NUDGE)
_PROPS_OUT = tuple({"text": s} for s in _SAY_OUT)
_PROPS_AUTO = {"auto": True, "text": _SAY_AUTO}
_FORMS = ({"form": "contact"}, {"form": "demo"}, {"form": "quote"}, {"form": "newsletter"})
_LOST_REASONS = ({"reason": "price"}, {"reason": "competitor"}, {"reason": "no_response"})
_ORGANIC_REFERRERS = ("https://www.google.com/", None, "https://duckduckgo.com/", "https://www.bing.com/")


def tenant_specs(cfg: SimConfig) -> tuple[TenantSpec, ...]:
    """The tenants of a run: the mix's own list, else the templates cycled (ids suffixed -2, -3, ...)."""
    if cfg.tenants < 1:
        raise ValueError("tenants must be >= 1")
    base = cfg.mix.tenants or _TEMPLATES
    out: list[TenantSpec] = []
    for i in range(cfg.tenants):
        spec = base[i % len(base)]
        if i >= len(base):
            spec = replace(spec, tenant_id=f"{spec.tenant_id}-{i // len(base) + 1}")
        out.append(spec)
    return tuple(out)


def agent_ids(spec: TenantSpec) -> dict[str, tuple[str, ...]]:
    """Agent ids per team, e.g. ``agt-acme-su01``: stable so SLA reports can name agents."""
    short = spec.tenant_id.split("-")[0][:4]
    return {team: tuple(f"agt-{short}-{team[:2]}{i + 1:02d}" for i in range(n)) for team, n, _ in spec.teams}


def tenant_weights(n: int, lead: float) -> tuple[float, ...]:
    """One big tenant, the rest halving: skew is what makes per-tenant fairness and SLA load visible."""
    if n == 1:
        return (1.0,)
    rest = [0.5**i for i in range(n - 1)]
    total = sum(rest)
    return (lead, *((1.0 - lead) * r / total for r in rest))


# ----------------------------------------------------------------------------- small helpers

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


class _Iso:
    """Epoch ms → RFC 3339; caches the minute prefix because strftime per event would dominate."""

    __slots__ = ("_cache",)

    def __init__(self) -> None:
        self._cache: dict[int, str] = {}

    def __call__(self, ms: int, offset_min: int = 0, suffix: str = "Z") -> str:
        local = ms + offset_min * 60_000
        minute, rest = divmod(local, 60_000)
        prefix = self._cache.get(minute)
        if prefix is None:
            if len(self._cache) > 100_000:
                self._cache.clear()
            prefix = (_EPOCH + timedelta(minutes=minute)).strftime("%Y-%m-%dT%H:%M:")
            self._cache[minute] = prefix
        sec, milli = divmod(rest, 1000)
        return f"{prefix}{sec:02d}.{milli:03d}{suffix}"


def _offset_minutes(offset: str) -> int:
    if offset in ("Z", "z"):
        return 0
    sign = -1 if offset[0] == "-" else 1
    hh, mm = offset[1:].split(":")
    return sign * (int(hh) * 60 + int(mm))


def _cum(weights: Iterable[float]) -> list[float]:
    out = list(itertools.accumulate(weights))
    return [w / out[-1] for w in out]


def _in_window(windows: Sequence[tuple[int, int, float]], t: int) -> float | None:
    for s, e, factor in windows:
        if s <= t < e:
            return factor
    return None


# ----------------------------------------------------------------------------- runtime state


class _Person:
    __slots__ = ("anon", "anon_ids", "born", "crm", "email", "n", "phone", "psid", "user")

    def __init__(self, n: int, anon: str, born: int) -> None:
        self.n = n
        self.born = born
        self.anon = anon
        self.anon_ids = {"anonymous_id": anon}
        self.email: str | None = None
        self.phone: str | None = None
        self.psid: str | None = None
        self.crm: str | None = None
        self.user: str | None = None


class _Camp:
    """A campaign at run time: prebuilt (immutable, shared) dicts, rates and incident windows."""

    __slots__ = (
        "camps", "channel", "imp_mean", "is_email", "lam", "landing", "outage", "p_click",
        "spec", "tenant", "tracking_off",
    )

    def __init__(self, spec: CampaignSpec, tenant: _Tenant) -> None:
        self.spec = spec
        self.tenant = tenant
        self.channel = spec.channel
        self.is_email = spec.channel == "email"
        self.imp_mean = max(1.0, spec.impressions_per_person)
        self.p_click = min(0.95, spec.ctr * self.imp_mean)
        self.lam = 0.0  # arrivals per ms, set by calibration
        camps: list[dict[str, Any]] = []
        for creative in spec.creatives:
            for term in spec.terms or (None,):
                c: dict[str, Any] = {
                    "source": spec.source, "medium": spec.medium, "name": spec.name, "content": creative,
                }
                if term is not None:
                    c["term"] = term
                camps.append(c)
        self.camps = tuple(camps)
        url = (
            f"https://{tenant.spec.domain}{spec.landing_path}?utm_source={spec.source}"
            f"&utm_medium={spec.medium}&utm_campaign={spec.name}"
        )
        page: dict[str, Any] = {"url": url, "title": spec.landing_title}
        if spec.referrer:
            page["referrer"] = spec.referrer
        self.landing = page
        self.outage: list[tuple[int, int, float]] = []
        self.tracking_off: list[tuple[int, int, float]] = []


class _Tenant:
    __slots__ = (
        "agents", "camps", "chat_channels", "chat_cum", "convs", "crm_off", "crm_suffix", "crms",
        "idx", "pages", "persons", "silent", "spec", "team_cum", "teams", "tid", "users",
    )

    def __init__(self, spec: TenantSpec, idx: int) -> None:
        self.spec = spec
        self.idx = idx
        self.tid = spec.tenant_id
        self.camps = [_Camp(c, self) for c in spec.campaigns]
        self.pages = tuple((f"https://{spec.domain}{path}", title) for path, title in spec.pages)
        self.chat_channels = tuple(c for c, _ in spec.chat_channels)
        self.chat_cum = _cum(w for _, w in spec.chat_channels)
        self.teams = tuple(t for t, _, _ in spec.teams)
        self.team_cum = _cum(w for _, _, w in spec.teams)
        self.agents = agent_ids(spec)
        self.crm_suffix = spec.crm_offset
        self.crm_off = _offset_minutes(spec.crm_offset)
        self.silent: dict[str, list[tuple[int, int, float]]] = {}
        self.persons = 0
        self.convs = 0
        self.crms = 0
        self.users = 0

    def email(self, n: int, rng: random.Random) -> str:
        first = _FIRST[rng.randrange(len(_FIRST))]
        last = _LAST[rng.randrange(len(_LAST))]
        if not self.spec.email_domains:
            return f"{first}.{last}@company{n}.example"
        dom = self.spec.email_domains[rng.randrange(len(self.spec.email_domains))]
        return f"{first}.{last}{n}@{dom}"

    def phone(self, n: int) -> str:
        # n × 7919 (coprime with 10) is a bijection mod 10^d: unique numbers, scattered digits.
        mod = 10**self.spec.phone_digits
        return f"{self.spec.phone_prefix}{(n * 7919 + 12345) % mod:0{self.spec.phone_digits}d}"


# ----------------------------------------------------------------------------- the simulation

Journey = Iterator[tuple[int, "dict[str, Any] | None"]]


class _Sim:
    """Discrete-event loop: journeys are generators yielding (time, event) in their own time order.

    The heap holds one pending (time, seq, event, generator) per live journey; popping emits the
    event and advances its generator. Journeys spawn concurrent children (a conversation, a CRM
    chain) whose first event is never earlier than the parent's current time, so the heap
    yields a globally time-ordered stream.
    """

    def __init__(
        self, mix: Mix, specs: Sequence[TenantSpec], seed: int, end_ms: int, emit_from: int
    ) -> None:
        self.mix = mix
        self.rng = random.Random(seed)
        self.heap: list[tuple[int, int, dict[str, Any] | None, Journey]] = []
        self.seq = itertools.count().__next__
        self.end_ms = end_ms
        self.emit_from = emit_from
        self.iso = _Iso()
        self.tenants = [_Tenant(s, i) for i, s in enumerate(specs)]
        m = mix
        self.reply = {c: (math.log(med), sig, math.log(ans)) for c, med, sig, ans in m.reply}
        self.p_auto = dict(m.p_auto)
        self.prio_names = tuple(p for p, _ in m.priorities)
        self.prio_cum = _cum(w for _, w in m.priorities)
        self.log_q_pages = math.log(1.0 - 1.0 / m.pages_mean) if m.pages_mean > 1 else 0.0
        self.log_q_turns = math.log(1.0 - 1.0 / m.turns_mean) if m.turns_mean > 1 else 0.0
        self.page_gap_max_ms = int(m.max_page_gap_s * 1000)
        self.max_reply_ms = int(m.max_reply_s * 1000)
        self.on_return: Callable[[int, _Person], None] | None = None  # the calibration pilot listens

    # --- scheduling ---
    def spawn(self, gen: Journey) -> None:
        first = next(gen, None)
        if first is not None:
            heapq.heappush(self.heap, (first[0], self.seq(), first[1], gen))

    def run(self) -> Iterator[tuple[int, dict[str, Any]]]:
        heap = self.heap
        end = self.end_ms
        emit_from = self.emit_from
        seq = self.seq
        pop = heapq.heappop
        rep = heapq.heapreplace
        while heap:
            t, _, ev, gen = heap[0]
            if t >= end:
                return
            nxt = next(gen, None)
            if nxt is None:
                pop(heap)
            else:
                if nxt[0] < t:
                    raise RuntimeError("journey went back in time")  # a bug, never data
                rep(heap, (nxt[0], seq(), nxt[1], gen))
            if ev is not None and t >= emit_from:
                yield t, ev

    # --- random helpers ---
    def uuid(self) -> str:
        h = f"{self.rng.getrandbits(128):032x}"
        return f"{h[:8]}-{h[8:12]}-4{h[13:16]}-{h[16:20]}-{h[20:]}"

    def geom(self, log_q: float) -> int:
        """1 + Geometric: counts of pages / turns / impressions (mean 1 / (1 - q))."""
        if log_q == 0.0:
            return 1
        return 1 + int(math.log(1.0 - self.rng.random()) / log_q)

    def lognorm_ms(self, median_s: float, sigma: float) -> int:
        return int(median_s * math.exp(sigma * self.rng.gauss()) * 1000.0)

    def pick(self, names: Sequence[str], cum: Sequence[float]) -> str:
        return names[min(bisect(cum, self.rng.random()), len(names) - 1)]

    def new_person(self, tr: _Tenant, t: int) -> _Person:
        tr.persons += 1
        return _Person(tr.persons, self.uuid(), t)

    # --- arrivals ---
    def arrivals(self, lam_per_ms: float, start: int, make: Callable[[int], Journey | None]) -> Journey:
        """A Poisson source; ``make`` may return None when it emitted nothing worth a generator."""
        rng = self.rng
        clock = float(start)  # float accumulator: truncating each gap would speed the source up
        expo = rng.expovariate
        while True:
            clock += expo(lam_per_ms)
            t = int(clock)
            ev_or_gen = make(t)
            if ev_or_gen is not None:
                self.spawn(ev_or_gen)
            yield t, None

    def campaign_arrivals(self, c: _Camp, start: int) -> Journey:
        """Ad arrivals; the common case (one impression, no click) is emitted inline, no journey."""
        rng = self.rng
        clock = float(start)
        expo = rng.expovariate
        lam = c.lam
        log_q = math.log(1.0 - 1.0 / c.imp_mean) if c.imp_mean > 1 else 0.0
        p_click = c.p_click
        while True:
            clock += expo(lam)
            t = int(clock)
            k = self.geom(log_q)
            click = rng.random() < p_click
            if k == 1 and not click:
                if t < self.emit_from or (c.tracking_off and _in_window(c.tracking_off, t) is not None):
                    yield t, None  # warm-up or not tracked: nothing to build
                    continue
                tr = c.tenant
                tr.persons += 1
                ids = {"email": tr.email(tr.persons, rng)} if c.is_email else {"anonymous_id": self.uuid()}
                yield t, {
                    "tenant_id": tr.tid, "occurred_at": self.iso(t), "channel": c.channel,
                    "type": "ad_impression", "identities": ids,
                    "campaign": c.camps[rng.randrange(len(c.camps))],
                }
            else:
                self.spawn(self.ad_person(c, t, k, click))
                yield t, None

    # --- journeys ---
    def ad_person(self, c: _Camp, t: int, k: int, click: bool) -> Journey:
        rng = self.rng
        tr = c.tenant
        p = self.new_person(tr, t)
        if c.is_email:
            p.email = tr.email(p.n, rng)
            ids: dict[str, str] = {"email": p.email}
        else:
            ids = p.anon_ids
        camp = c.camps[rng.randrange(len(c.camps))]
        gap = 1.0 / (self.mix.impression_gap_s * 1000.0)
        for i in range(k):
            if i:
                t += 1000 + int(rng.expovariate(gap))
            if c.tracking_off and _in_window(c.tracking_off, t) is not None:
                continue
            yield t, {
                "tenant_id": tr.tid, "occurred_at": self.iso(t), "channel": c.channel,
                "type": "ad_impression", "identities": ids, "campaign": camp,
            }
        if click:
            t += self.lognorm_ms(self.mix.click_delay_median_s, 0.7)
            yield from self.after_click(p, c, t, camp)

    def after_click(self, p: _Person, c: _Camp, t: int, camp: dict[str, Any]) -> Journey:
        rng = self.rng
        tr = c.tenant
        ids = {"email": p.email} if c.is_email else p.anon_ids
        yield t, {
            "tenant_id": tr.tid, "occurred_at": self.iso(t), "channel": c.channel,
            "type": "ad_click", "identities": ids, "campaign": camp,
        }
        p_land = self.mix.p_land
        if c.outage:
            factor = _in_window(c.outage, t)
            if factor is not None:
                p_land *= factor
        if rng.random() >= p_land:
            return
        t += self.lognorm_ms(self.mix.load_median_s, 0.5)
        yield from self.visits(p, tr, t, c, camp, None)

    def organic_person(self, tr: _Tenant, t: int) -> Journey:
        p = self.new_person(tr, t)
        ref = _ORGANIC_REFERRERS[self.rng.randrange(len(_ORGANIC_REFERRERS))]
        return self.visits(p, tr, t, None, None, ref)

    def prehistory_returners(self, tr: _Tenant, start: int, lam_per_ms: float, ret: _Returns) -> Journey:
        """Return visits of people who arrived before the simulation began.

        Without them the return-session rate would ramp up over hours (returns come > 30 min
        after a session, chains of them later still). A stationary arrival process started at
        ``start`` lacks, at age x, exactly rate R·S(x) of return sessions, where R is the
        steady-state return rate and S(x) the share of return sessions that come more than x after
        their journey began; both come from the pilot. Thinning a Poisson(R) stream with S(x)
        fills that gap with one-session returners, in expectation exactly.
        """
        rng = self.rng
        ages = ret.ages
        if not ages or lam_per_ms <= 0:
            return
        n = len(ages)
        cand = lam_per_ms * ret.per_journey
        clock = float(start)
        while True:
            clock += rng.expovariate(cand)
            t = int(clock)
            x = t - start
            if x > ages[-1]:
                return
            if rng.random() * n < n - bisect(ages, x):
                p = self.new_person(tr, t - ages[-1])
                if rng.random() < ret.identified:
                    p.email = tr.email(p.n, rng)
                self.spawn(self.visits(p, tr, t, None, None, None, session=1, returns=False))
            yield t, None

    def marketplace_person(self, tr: _Tenant, t: int) -> Journey:
        """B2B marketplace inquiries (Olist-style): known by email, straight to a form and the CRM."""
        rng = self.rng
        p = self.new_person(tr, t)
        p.email = tr.email(p.n, rng)
        yield t, {
            "tenant_id": tr.tid, "occurred_at": self.iso(t), "channel": "b2b_platform",
            "type": "form_submit", "identities": {"email": p.email},
            "properties": {"form": "marketplace_inquiry"},
        }
        if rng.random() < tr.spec.p_lead:
            self.spawn(self.crm(p, tr, t, None, "b2b_platform"))

    def visits(
        self,
        p: _Person,
        tr: _Tenant,
        t: int,
        c: _Camp | None,
        camp: dict[str, Any] | None,
        referrer: str | None,
        session: int = 0,
        returns: bool = True,
    ) -> Journey:
        """Sessions of one person: the first (landing or organic), then returns after > 30 min."""
        rng = self.rng
        mix = self.mix
        spec = tr.spec
        iso = self.iso
        tid = tr.tid
        pages = tr.pages
        npages = len(pages)
        while True:
            if session and self.on_return is not None:
                self.on_return(t, p)
            n = self.geom(self.log_q_pages)
            chat_at = rng.randrange(n) if rng.random() < spec.p_chat else -1
            form_at = n - 1 if rng.random() < spec.p_form else -1
            login = session > 0 and p.email is not None and rng.random() < mix.p_second_device
            if login:
                p.anon = self.uuid()
                p.anon_ids = {"anonymous_id": p.anon}
            prev_url = referrer if session == 0 else None
            for i in range(n):
                if i:
                    g = int(math.exp(mix.page_gap_mu + mix.page_gap_sigma * rng.gauss()) * 1000.0)
                    t += max(1000, min(g, self.page_gap_max_ms))
                if i == 0 and session == 0 and c is not None:
                    page = c.landing
                    # An email link is decorated with the recipient: the landing links the two ids.
                    land_ids = {"anonymous_id": p.anon, "email": p.email} if c.is_email else p.anon_ids
                    ev: dict[str, Any] = {
                        "tenant_id": tid, "occurred_at": iso(t), "channel": "web", "type": "page_view",
                        "identities": land_ids, "page": page, "campaign": camp,
                    }
                    prev_url = page["url"]
                else:
                    url, title = pages[rng.randrange(npages)]
                    page = {"url": url, "title": title}
                    if prev_url:
                        page["referrer"] = prev_url
                    prev_url = url
                    ev = {
                        "tenant_id": tid, "occurred_at": iso(t), "channel": "web", "type": "page_view",
                        "identities": p.anon_ids, "page": page,
                    }
                yield t, ev
                if login and i == 0:
                    t += self.lognorm_ms(8.0, 0.6)
                    if p.user is None:
                        tr.users += 1
                        p.user = f"u{tr.idx}-{tr.users}"
                    assert p.email is not None
                    yield t, {
                        "tenant_id": tid, "occurred_at": iso(t), "channel": "web", "type": "identify",
                        "identities": {"anonymous_id": p.anon, "email": p.email, "user_id": p.user},
                    }
                if i == chat_at:
                    self.spawn(self.conversation(p, tr, t + self.lognorm_ms(10.0, 0.8)))
                if i == form_at:
                    t += self.lognorm_ms(mix.form_fill_median_s, 0.6)
                    if p.email is None:
                        p.email = tr.email(p.n, rng)
                    shown = p.email
                    if rng.random() < mix.p_mixed_case_email:
                        shown = shown.title()
                    form_camp = camp if session == 0 else None
                    fev: dict[str, Any] = {
                        "tenant_id": tid, "occurred_at": iso(t), "channel": "web", "type": "form_submit",
                        "identities": {"anonymous_id": p.anon, "email": shown},
                        "properties": _FORMS[rng.randrange(len(_FORMS))],
                    }
                    if form_camp is not None:
                        fev["campaign"] = form_camp
                    yield t, fev
                    if rng.random() < spec.p_lead:
                        self.spawn(self.crm(p, tr, t, form_camp, "web"))
            p_ret = mix.p_return if p.email is None else mix.p_return_identified
            if not returns or rng.random() >= p_ret:
                return
            session += 1
            ret = self.lognorm_ms(mix.return_gap_median_s, 0.6)
            t += max(ret, 31 * 60_000)

    def crm(self, p: _Person, tr: _Tenant, t: int, camp: dict[str, Any] | None, channel: str) -> Journey:
        """Lead → opportunity → deal, with the CRM's local-time offset on occurred_at."""
        rng = self.rng
        spec = tr.spec
        iso = self.iso
        off, suffix = tr.crm_off, tr.crm_suffix
        t += self.lognorm_ms(20.0, 0.7)
        if p.crm is None:
            tr.crms += 1
            p.crm = f"crm-{tr.idx}-{tr.crms:07d}"
        assert p.email is not None
        ids = {"email": p.email, "crm_contact_id": p.crm}
        ev: dict[str, Any] = {
            "tenant_id": tr.tid, "occurred_at": iso(t, off, suffix), "channel": channel, "type": "lead",
            "identities": ids,
        }
        if camp is not None:
            ev["campaign"] = camp
        yield t, ev
        if rng.random() >= spec.p_opp:
            return
        t += self.lognorm_ms(600.0, 0.8)
        amount = round(spec.deal_median * math.exp(0.8 * rng.gauss()), 2)
        value = {"amount": amount, "currency": spec.currency}
        ev = {
            "tenant_id": tr.tid, "occurred_at": iso(t, off, suffix), "channel": spec.sales_channel,
            "type": "opportunity", "identities": {"crm_contact_id": p.crm}, "value": value,
        }
        if camp is not None:
            ev["campaign"] = camp
        yield t, ev
        u = rng.random()
        if u < spec.p_won:
            t += self.lognorm_ms(900.0, 0.8)
            ev = {
                "tenant_id": tr.tid, "occurred_at": iso(t, off, suffix), "channel": spec.sales_channel,
                "type": "deal_won", "identities": ids, "value": value,
            }
        elif u < spec.p_won + spec.p_lost:
            t += self.lognorm_ms(1200.0, 0.8)
            ev = {
                "tenant_id": tr.tid, "occurred_at": iso(t, off, suffix), "channel": spec.sales_channel,
                "type": "deal_lost", "identities": ids, "value": value,
                "properties": _LOST_REASONS[rng.randrange(len(_LOST_REASONS))],
            }
        else:
            return
        if camp is not None:
            ev["campaign"] = camp
        yield t, ev

    def reply_ms(self, mu: float, sigma: float) -> int:
        """Lognormal body, Pareto tail: most replies on time, a few agents busy for many minutes."""
        rng = self.rng
        d = math.exp(mu + sigma * rng.gauss())
        if rng.random() < self.mix.slow_prob:
            d *= self.mix.slow_scale * rng.paretovariate(self.mix.slow_alpha)
        return min(int(d * 1000.0) + 500, self.max_reply_ms)

    def after_silence(self, windows: list[tuple[int, int, float]], t: int) -> int:
        for s, e, _ in windows:
            if s <= t < e:
                return e + int(self.rng.expovariate(1.0 / (self.mix.drain_mean_s * 1000.0)))
        return t

    def conversation(self, p: _Person, tr: _Tenant, t: int) -> Journey:
        rng = self.rng
        mix = self.mix
        iso = self.iso
        tid = tr.tid
        channel = self.pick(tr.chat_channels, tr.chat_cum)
        team = self.pick(tr.teams, tr.team_cum)
        agents = tr.agents[team]
        prio = self.pick(self.prio_names, self.prio_cum)
        tr.convs += 1
        cid = f"{tid}-c{tr.convs}"
        conv = {"id": cid, "agent_id": agents[rng.randrange(len(agents))], "team": team, "priority": prio}
        bot = {"id": cid, "agent_id": "bot", "team": team, "priority": prio}
        ids: dict[str, str]
        if channel == "live_chat":
            if p.email is None and rng.random() < mix.p_prechat_email:
                p.email = tr.email(p.n, rng)
            ids = {"anonymous_id": p.anon} if p.email is None else {"anonymous_id": p.anon, "email": p.email}
            first_ids = ids
        elif channel == "whatsapp":
            if p.phone is None:
                p.phone = tr.phone(p.n)
            ids = {"whatsapp_id": p.phone, "phone": p.phone}
            first_ids = {**ids, "anonymous_id": p.anon}
        elif channel == "messenger":
            if p.psid is None:
                p.psid = str(10**15 + rng.randrange(9 * 10**15))
            ids = {"messenger_psid": p.psid}
            first_ids = {**ids, "anonymous_id": p.anon}
        else:
            if p.email is None:
                p.email = tr.email(p.n, rng)
            ids = {"email": p.email}
            first_ids = ids
        silent = tr.silent.get(team)
        mu, sigma, ans_mu = self.reply[channel]
        p_auto = self.p_auto.get(channel, 0.0)
        nudge_ms = int(mix.nudge_after_s * 1000)
        turns = self.geom(self.log_q_turns)
        for k in range(turns):
            props = _PROPS_IN[rng.randrange(len(_PROPS_IN))]
            pending: list[tuple[int, int, dict[str, Any]]] = [(t, 0, {
                "tenant_id": tid, "occurred_at": iso(t), "channel": channel, "type": "message_in",
                "identities": first_ids if k == 0 else ids, "conversation": conv, "properties": props,
            })]
            if k == 0 and rng.random() < p_auto:
                ta = t + 800 + rng.randrange(2200)
                pending.append((ta, 1, {
                    "tenant_id": tid, "occurred_at": iso(ta), "channel": channel, "type": "message_out",
                    "identities": ids, "conversation": bot, "properties": _PROPS_AUTO,
                }))
            reply = t + self.reply_ms(mu, sigma)
            if silent:
                reply = self.after_silence(silent, reply)
            if rng.random() < mix.p_double_text:
                td = t + 4000 + rng.randrange(16_000)
                if td < reply:
                    pending.append((td, 2, {
                        "tenant_id": tid, "occurred_at": iso(td), "channel": channel, "type": "message_in",
                        "identities": ids, "conversation": conv,
                        "properties": _PROPS_IN[rng.randrange(len(_PROPS_IN))],
                    }))
            if reply - t > nudge_ms and rng.random() < mix.p_nudge:
                tn = t + nudge_ms + rng.randrange(60_000)
                if tn < reply:
                    pending.append((tn, 3, {
                        "tenant_id": tid, "occurred_at": iso(tn), "channel": channel, "type": "message_in",
                        "identities": ids, "conversation": conv,
                        "properties": _PROPS_NUDGE[rng.randrange(len(_PROPS_NUDGE))],
                    }))
            pending.append((reply, 4, {
                "tenant_id": tid, "occurred_at": iso(reply), "channel": channel, "type": "message_out",
                "identities": ids, "conversation": conv,
                "properties": _PROPS_OUT[rng.randrange(len(_PROPS_OUT))],
            }))
            pending.sort(key=lambda x: (x[0], x[1]))
            for te, _, ev in pending:
                yield te, ev
            t = reply
            if k < turns - 1:
                t += max(2000, int(math.exp(ans_mu + 0.8 * rng.gauss()) * 1000.0))
        tc = t + self.lognorm_ms(mix.close_median_s, 0.8)
        if silent:
            tc = self.after_silence(silent, tc)
        resolution = {"resolution": "resolved" if rng.random() < 0.85 else "inactivity"}
        yield tc, {
            "tenant_id": tid, "occurred_at": iso(tc), "channel": channel, "type": "conversation_closed",
            "identities": ids, "conversation": conv, "properties": resolution,
        }


# ----------------------------------------------------------------------------- calibration


@dataclass(frozen=True)
class _Returns:
    per_journey: float  # return sessions per journey
    ages: tuple[int, ...]  # sorted ms from journey start to each return session
    identified: float  # share of return sessions whose person has an email by then


@dataclass(frozen=True)
class _Calibration:
    click_events: float  # expected events of a journey from ad_click on (incl. the click)
    organic_events: float
    market_events: float
    click_returns: _Returns
    organic_returns: _Returns


@lru_cache(maxsize=64)
def _calibrate(mix: Mix, spec: TenantSpec) -> _Calibration:
    """Mean events per journey, measured by a pilot run with a fixed seed (independent of cfg.seed).

    Measured rather than derived by hand so the rate calibration always matches the journey
    code, whatever knob a mix changes.
    """
    n = max(100, mix.pilot_journeys)
    far = 2**62

    def count(make: Callable[[_Sim, _Tenant, int], Journey], journeys: int) -> tuple[float, _Returns]:
        sim = _Sim(mix, [spec], 0x5EED, far, 0)
        tr = sim.tenants[0]
        ages: list[int] = []
        known = 0

        def on_return(t: int, p: _Person) -> None:
            nonlocal known
            ages.append(t - p.born)
            known += p.email is not None

        sim.on_return = on_return
        for i in range(journeys):
            sim.spawn(make(sim, tr, 1_700_000_000_000 + i * 1000))
        events = sum(1 for _ in sim.run()) / journeys
        ret = _Returns(len(ages) / journeys, tuple(sorted(ages)), known / len(ages) if ages else 0.0)
        return events, ret

    def clicker(sim: _Sim, tr: _Tenant, t: int) -> Journey:
        c = tr.camps[0]
        p = sim.new_person(tr, t)
        if c.is_email:
            p.email = tr.email(p.n, sim.rng)
        return sim.after_click(p, c, t, c.camps[0])

    click_events, click_returns = count(clicker, n)
    organic_events, organic_returns = count(lambda sim, tr, t: sim.organic_person(tr, t), n)
    market_events, _ = count(lambda sim, tr, t: sim.marketplace_person(tr, t), max(100, n // 4))
    return _Calibration(click_events, organic_events, market_events, click_returns, organic_returns)


def _check_shares(spec: TenantSpec) -> None:
    total = sum(c.share for c in spec.campaigns) + spec.organic_share + spec.marketplace_share
    if abs(total - 1.0) > 1e-6:
        raise ValueError(f"{spec.tenant_id}: campaign + organic + marketplace shares sum to {total}, not 1")


def _rates(cfg: SimConfig) -> list[dict[str, Any]]:
    """Per tenant: weight, and arrivals/s per source, from rate × weight × share / events per arrival."""
    specs = tenant_specs(cfg)
    weights = tenant_weights(len(specs), cfg.mix.lead_tenant_weight)
    out: list[dict[str, Any]] = []
    for spec, w in zip(specs, weights, strict=True):
        _check_shares(spec)
        cal = _calibrate(cfg.mix, spec)
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


# ----------------------------------------------------------------------------- incidents


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


def _incidents(cfg: SimConfig) -> tuple[Incident, ...]:
    return default_incidents(cfg) if cfg.incidents is None else tuple(cfg.incidents)


def _apply_incidents(tenants: Sequence[_Tenant], incidents: Iterable[Incident]) -> None:
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


# ----------------------------------------------------------------------------- public API


def _timed(cfg: SimConfig) -> Iterator[tuple[int, dict[str, Any]]]:
    """(epoch ms, event) in occurred_at order; the ms rides along so pacing never re-parses."""
    if cfg.rate <= 0 or cfg.duration_s <= 0:
        return
    end_ms = cfg.start_ms + int(cfg.duration_s * 1000)
    begin = cfg.start_ms - int(cfg.mix.warmup_s * 1000)
    rates = _rates(cfg)
    sim = _Sim(cfg.mix, [r["spec"] for r in rates], cfg.seed, end_ms, cfg.start_ms)
    _apply_incidents(sim.tenants, _incidents(cfg))
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
        cal: _Calibration = r["calibration"]
        sim.spawn(sim.prehistory_returners(tr, begin, r["clicks"] / 1000.0, cal.click_returns))
        sim.spawn(sim.prehistory_returners(tr, begin, r["organic"] / 1000.0, cal.organic_returns))
    prefix = f"sim{cfg.seed}-{cfg.start_ms}-"
    for n, (t, ev) in enumerate(sim.run(), 1):
        ev["event_id"] = f"{prefix}{n}"
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

    visit = landing page views (the ones carrying the campaign); form/lead/opportunity/deal
    count only the landing session's, i.e. those carrying the campaign.
    """
    mix = cfg.mix
    out: dict[str, dict[str, dict[str, float]]] = {}
    for r in _rates(cfg):
        spec: TenantSpec = r["spec"]
        per: dict[str, dict[str, float]] = {}
        for c in spec.campaigns:
            lam = r["campaigns"][c.name] * 60.0
            imp = max(1.0, c.impressions_per_person)
            clicks = lam * min(0.95, c.ctr * imp)
            visits = clicks * mix.p_land
            # P(a landing session has a form) — forms are only in the landing session's last page.
            forms = visits * spec.p_form
            leads = forms * spec.p_lead
            opps = leads * spec.p_opp
            per[c.name] = {
                "arrivals": lam,
                "impression": lam * imp,
                "click": clicks,
                "visit": visits,
                "form_submit": forms,
                "lead": leads,
                "opportunity": opps,
                "deal_won": opps * spec.p_won,
                "deal_lost": opps * spec.p_lost,
            }
        out[spec.tenant_id] = per
    return out


def truth(cfg: SimConfig) -> dict[str, Any]:
    """What the run contains by construction: the yardstick for detector and SLA evaluation."""
    rates = _rates(cfg)
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
            }
            for c in spec.campaigns
        }
    return {
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
        "incidents": [asdict(i) for i in _incidents(cfg)],
        "tenants": tenants,
        "campaigns": campaigns,
    }


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


# ----------------------------------------------------------------------------- noise for DLQ demos

#: Kinds of malformed messages add_noise produces → the DLQ reason the validator gives them.
#: "duplicate" is an exact re-send: valid, then dropped by dedup (counted, not dead-lettered).
NOISE_KINDS: dict[str, str] = {
    "truncated_json": "not_json",
    "invalid_utf8": "invalid_utf8",
    "not_object": "not_object",
    "missing_field": "missing_field",
    "unknown_channel": "unknown_channel",
    "unknown_type": "unknown_type",
    "bad_timestamp": "bad_timestamp",
    "no_identity": "no_identity",
    "missing_conversation": "missing_conversation",
    "duplicate": "duplicate",
}


def _corrupt(ev: dict[str, Any], raw: bytes, kind: str, rng: random.Random) -> bytes:
    bad = dict(ev)
    bad["event_id"] = f"{ev['event_id']}-noise"
    if kind == "truncated_json":
        cut = max(1, len(raw) // 2)
        while cut > 1 and raw[cut - 1] >= 0x80:  # never split a UTF-8 sequence: that would be invalid_utf8
            cut -= 1
        return raw[:cut]
    if kind == "invalid_utf8":
        i = raw.index(b'"', 2) + 1  # inside the first string value
        return raw[:i] + b"\xff\xfe" + raw[i:]
    if kind == "not_object":
        return orjson.dumps([bad], option=orjson.OPT_SORT_KEYS)
    if kind == "missing_field":
        del bad[("event_id", "tenant_id", "occurred_at", "channel", "type", "identities")[rng.randrange(6)]]
    elif kind == "unknown_channel":
        bad["channel"] = ("fax", "tiktok", "WEB")[rng.randrange(3)]
    elif kind == "unknown_type":
        bad["type"] = ("pageview", "purchase", "click")[rng.randrange(3)]
    elif kind == "bad_timestamp":
        bad["occurred_at"] = ev["occurred_at"][:19].replace("T", " ")  # no offset: ambiguous
    elif kind == "no_identity":
        bad["identities"] = {}
    elif kind == "missing_conversation":
        bad["type"] = "message_in"
        bad.pop("conversation", None)
    elif kind == "duplicate":
        return raw
    else:
        raise ValueError(f"unknown noise kind {kind!r}")
    return dumps(bad)


def add_noise(
    events: Iterable[dict[str, Any]], rate: float, seed: int, kinds: Sequence[str] = tuple(NOISE_KINDS)
) -> Iterator[bytes]:
    """Every event's bytes, plus (after a fraction ``rate`` of them) one malformed variant.

    Added rather than substituted, so the valid stream stays exactly ``generate(cfg)`` and the
    truth file still holds; corrupted copies get event_id + "-noise" so they never shadow the
    original in dedup. The kinds and the reason each must get are in :data:`NOISE_KINDS`.
    """
    for k in kinds:
        if k not in NOISE_KINDS:
            raise ValueError(f"unknown noise kind {k!r}")
    rng = random.Random(seed ^ 0x0BAD)
    for ev in events:
        raw = dumps(ev)
        yield raw
        if rng.random() < rate:
            yield _corrupt(ev, raw, kinds[rng.randrange(len(kinds))], rng)
