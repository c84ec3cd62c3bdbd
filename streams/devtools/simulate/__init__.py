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
``Sim.prehistory_returners``). Measured at rate 200 without incidents: 197-200 events/s in
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

from streams.devtools.simulate.config import INCIDENT_KINDS, CampaignSpec, Incident, Mix, SimConfig, TenantSpec
from streams.devtools.simulate.feed import dumps, expected_per_minute, generate, stream_live, truth, write_jsonl
from streams.devtools.simulate.incidents import default_incidents
from streams.devtools.simulate.noise import NOISE_KINDS, add_noise
from streams.devtools.simulate.tenants import agent_ids, tenant_specs, tenant_weights
from streams.devtools.simulate.truth import cost_feed

__all__ = [
    "INCIDENT_KINDS", "NOISE_KINDS", "CampaignSpec", "Incident", "Mix", "SimConfig", "TenantSpec", "add_noise",
    "agent_ids", "cost_feed", "default_incidents", "dumps", "expected_per_minute", "generate", "stream_live",
    "tenant_specs", "tenant_weights", "truth", "write_jsonl",
]
