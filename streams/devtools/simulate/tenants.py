"""The built-in tenants (a shop, a B2B SaaS, a travel agency) and the texts their events carry."""

from __future__ import annotations

from dataclasses import replace

from streams.devtools.simulate.config import CampaignSpec, SimConfig, TenantSpec

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
            ("winter boots", "down jacket", "wool coat sale"), cost_model="cpc", cost=0.45,
        ),
        CampaignSpec(
            "winter-sale-social", "facebook", "paid_social", "social", 0.06, 0.02, 2.0, "/sale/winter",
            "Winter sale - up to 50% off", "https://l.facebook.com/", ("carousel-1", "video-15s"),
            cost_model="cpm", cost=6.50,
        ),
        CampaignSpec(
            "weekly-newsletter", "newsletter", "email", "email", 0.04, 0.035, 1.0, "/new-in",
            "New in this week", None, ("hero", "footer"), cost_model="feed", cost=30.0,
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
    email_domains=(),  # B2B: a company domain per person (see TenantState.email)
    currency="GBP",
    phone_prefix="+447",
    phone_digits=9,
    crm_offset="+00:00",
    campaigns=(
        CampaignSpec(
            "crm-demo-search", "google", "cpc", "ads", 0.45, 0.04, 1.3, "/lp/crm-demo",
            "The CRM your sales team will actually use", "https://www.google.com/", ("rsa-a", "rsa-b"),
            ("crm software", "sales pipeline tool", "hubspot alternative"), cost_model="cpc", cost=6.80,
        ),
        CampaignSpec(
            "q4-demo-linkedin", "linkedin", "paid_social", "social", 0.25, 0.02, 2.2, "/lp/q4-demo",
            "Book your Q4 demo", "https://www.linkedin.com/", ("single-image", "document-ad"),
            cost_model="cpm", cost=35.0,
        ),
        CampaignSpec(
            "product-webinar", "hubspot", "email", "email", 0.10, 0.03, 1.0, "/webinar",
            "Webinar: forecasting that works", None, ("invite", "reminder"), cost_model="feed", cost=80.0,
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
            ("cheap flights london", "nyc to paris", "flight deals"), cost_model="cpc", cost=1.10,
        ),
        CampaignSpec(
            "summer-deals-insta", "instagram", "paid_social", "social", 0.20, 0.02, 2.0, "/deals/summer",
            "Summer deals", "https://l.instagram.com/", ("reel-1", "story-2"), cost_model="cpm", cost=7.50,
        ),
        CampaignSpec(
            "loyalty-mail", "braze", "email", "email", 0.10, 0.03, 1.0, "/account/rewards",
            "Your rewards", None, ("points", "upgrade"), cost_model="feed", cost=20.0,
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

TEMPLATES: tuple[TenantSpec, ...] = (_SHOP, _B2B, _TRAVEL)

FIRST_NAMES = (
    "anna", "ben", "clara", "david", "emma", "felix", "hannah", "jonas", "lea", "lukas",
    "maria", "noah", "olivia", "paul", "sara", "tom", "yara", "zoe", "omar", "mei",
)
LAST_NAMES = (
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
PROPS_IN = tuple({"text": s} for s in _SAY_IN)
PROPS_NUDGE = tuple({"text": s} for s in _SAY_NUDGE)
PROPS_OUT = tuple({"text": s} for s in _SAY_OUT)
PROPS_AUTO = {"auto": True, "text": _SAY_AUTO}
FORMS = ({"form": "contact"}, {"form": "demo"}, {"form": "quote"}, {"form": "newsletter"})
LOST_REASONS = ({"reason": "price"}, {"reason": "competitor"}, {"reason": "no_response"})
ORGANIC_REFERRERS = ("https://www.google.com/", None, "https://duckduckgo.com/", "https://www.bing.com/")


def tenant_specs(cfg: SimConfig) -> tuple[TenantSpec, ...]:
    """The tenants of a run: the mix's own list, else the templates cycled (ids suffixed -2, -3, ...)."""
    if cfg.tenants < 1:
        raise ValueError("tenants must be >= 1")
    base = cfg.mix.tenants or TEMPLATES
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
