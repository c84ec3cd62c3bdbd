"""The discrete-event loop and the journeys: ad persons, visits, conversations, the CRM chain."""

from __future__ import annotations

import heapq
import itertools
import math
import random
from bisect import bisect
from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING, Any

from streams.devtools.simulate.config import Mix, TenantSpec
from streams.devtools.simulate.tenants import (
    FORMS,
    LOST_REASONS,
    ORGANIC_REFERRERS,
    PROPS_AUTO,
    PROPS_IN,
    PROPS_NUDGE,
    PROPS_OUT,
)
from streams.devtools.simulate.world import Campaign, Iso, Person, TenantState, cum, in_window

if TYPE_CHECKING:
    from streams.devtools.simulate.calibration import Returns


Journey = Iterator[tuple[int, "dict[str, Any] | None"]]


class Sim:
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
        self.iso = Iso()
        self.tenants = [TenantState(s, i) for i, s in enumerate(specs)]
        m = mix
        self.reply = {c: (math.log(med), sig, math.log(ans)) for c, med, sig, ans in m.reply}
        self.p_auto = dict(m.p_auto)
        self.prio_names = tuple(p for p, _ in m.priorities)
        self.prio_cum = cum(w for _, w in m.priorities)
        self.log_q_pages = math.log(1.0 - 1.0 / m.pages_mean) if m.pages_mean > 1 else 0.0
        self.log_q_turns = math.log(1.0 - 1.0 / m.turns_mean) if m.turns_mean > 1 else 0.0
        self.page_gap_max_ms = int(m.max_page_gap_s * 1000)
        self.max_reply_ms = int(m.max_reply_s * 1000)
        self.on_return: Callable[[int, Person], None] | None = None  # the calibration pilot listens
        # Who each journey belongs to, kept only when a truth recorder asks (track_owners): the
        # simulator knows the person behind every event, which is the attribution ground truth.
        self.owners: dict[Journey, Person] | None = None
        self.live: dict[Person, int] = {}  # person -> journeys still running
        self.on_done: Callable[[Person], None] | None = None  # a person can emit nothing more

    def track_owners(self, on_done: Callable[[Person], None]) -> None:
        self.owners = {}
        self.on_done = on_done

    # --- scheduling ---
    def spawn(self, gen: Journey, owner: Person | None = None) -> None:
        first = next(gen, None)
        if first is None:
            return
        heapq.heappush(self.heap, (first[0], self.seq(), first[1], gen))
        if self.owners is not None and owner is not None:
            self.owners[gen] = owner
            self.live[owner] = self.live.get(owner, 0) + 1

    def run(self) -> Iterator[tuple[int, dict[str, Any], Person | None]]:
        """(time, event, its person when owners are tracked) in time order."""
        heap = self.heap
        end = self.end_ms
        emit_from = self.emit_from
        seq = self.seq
        pop = heapq.heappop
        rep = heapq.heapreplace
        owners = self.owners
        while heap:
            t, _, ev, gen = heap[0]
            if t >= end:
                return
            nxt = next(gen, None)
            owner = None if owners is None else owners.get(gen)
            if nxt is None:
                pop(heap)
            else:
                if nxt[0] < t:
                    raise RuntimeError("journey went back in time")  # a bug, never data
                rep(heap, (nxt[0], seq(), nxt[1], gen))
            if ev is not None and t >= emit_from:
                yield t, ev, owner
            if nxt is None and owner is not None:
                self._finished(gen, owner)

    def _finished(self, gen: Journey, owner: Person) -> None:
        assert self.owners is not None
        del self.owners[gen]
        left = self.live[owner] - 1
        if left:
            self.live[owner] = left
            return
        del self.live[owner]
        if self.on_done is not None:
            self.on_done(owner)

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

    def new_person(self, tr: TenantState, t: int) -> Person:
        tr.persons += 1
        return Person(tr.persons, self.uuid(), t)

    # --- arrivals ---
    def arrivals(self, lam_per_ms: float, start: int, make: Callable[[int], tuple[Journey, Person]]) -> Journey:
        """A Poisson source of persons: ``make`` returns one's journey and the person."""
        rng = self.rng
        clock = float(start)  # float accumulator: truncating each gap would speed the source up
        expo = rng.expovariate
        while True:
            clock += expo(lam_per_ms)
            t = int(clock)
            self.spawn(*make(t))
            yield t, None

    def campaign_arrivals(self, c: Campaign, start: int) -> Journey:
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
                if t < self.emit_from or (c.tracking_off and in_window(c.tracking_off, t) is not None):
                    yield t, None  # warm-up or not tracked: nothing to build
                    continue
                tr = c.tenant
                tr.persons += 1
                ids = {"email": tr.email(tr.persons, rng)} if c.is_email else {"anonymous_id": self.uuid()}
                ev: dict[str, Any] = {
                    "tenant_id": tr.tid, "occurred_at": self.iso(t), "channel": c.channel,
                    "type": "ad_impression", "identities": ids,
                    "campaign": c.camps[rng.randrange(len(c.camps))],
                }
                if c.imp_props is not None:
                    ev["properties"] = c.imp_props
                yield t, ev
            else:
                p = self.new_person(c.tenant, t)
                p.source = (c.channel, c.spec.name)
                self.spawn(self.ad_person(p, c, t, k, click), p)
                yield t, None

    # --- journeys ---
    def ad_person(self, p: Person, c: Campaign, t: int, k: int, click: bool) -> Journey:
        rng = self.rng
        tr = c.tenant
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
            if c.tracking_off and in_window(c.tracking_off, t) is not None:
                continue
            ev: dict[str, Any] = {
                "tenant_id": tr.tid, "occurred_at": self.iso(t), "channel": c.channel,
                "type": "ad_impression", "identities": ids, "campaign": camp,
            }
            if c.imp_props is not None:
                ev["properties"] = c.imp_props
            yield t, ev
        if click:
            t += self.lognorm_ms(self.mix.click_delay_median_s, 0.7)
            yield from self.after_click(p, c, t, camp)

    def click(self, p: Person, c: Campaign, t: int, camp: dict[str, Any]) -> dict[str, Any]:
        ev: dict[str, Any] = {
            "tenant_id": c.tenant.tid, "occurred_at": self.iso(t), "channel": c.channel,
            "type": "ad_click", "identities": {"email": p.email} if c.is_email else p.anon_ids, "campaign": camp,
        }
        if c.click_props is not None:
            ev["properties"] = c.click_props
        return ev

    def lands(self, c: Campaign, t: int) -> bool:
        """Does a click at ``t`` reach the landing page (p_land, times the outage factor)?"""
        p_land = self.mix.p_land
        if c.outage:
            factor = in_window(c.outage, t)
            if factor is not None:
                p_land *= factor
        return self.rng.random() < p_land

    def after_click(self, p: Person, c: Campaign, t: int, camp: dict[str, Any]) -> Journey:
        yield t, self.click(p, c, t, camp)
        if not self.lands(c, t):
            return
        t += self.lognorm_ms(self.mix.load_median_s, 0.5)
        yield from self.visits(p, c.tenant, t, c, camp, None)

    def retarget(self, p: Person, tr: TenantState) -> Campaign | None:
        """The campaign a return visit comes through: the newsletter for some people with an email,
        else a paid (ads / social) campaign by share."""
        rng = self.rng
        mail = p.email is not None and bool(tr.mail_camps)
        if mail and (rng.random() < self.mix.p_return_email or not p.web):
            return tr.mail_camps[min(bisect(tr.mail_cum, rng.random()), len(tr.mail_camps) - 1)]
        if not tr.paid_camps or not p.web:
            return None  # (a retargeting ad needs the device's cookie from a visit)
        return tr.paid_camps[min(bisect(tr.paid_cum, rng.random()), len(tr.paid_camps) - 1)]

    def organic_person(self, tr: TenantState, t: int) -> tuple[Journey, Person]:
        p = self.new_person(tr, t)
        p.source = ("web", None)
        ref = ORGANIC_REFERRERS[self.rng.randrange(len(ORGANIC_REFERRERS))]
        return self.visits(p, tr, t, None, None, ref), p

    def prehistory_returners(self, tr: TenantState, start: int, lam_per_ms: float, ret: Returns) -> Journey:
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
                p.web = True  # (its earlier visits were before the run)
                if rng.random() < ret.identified:
                    p.email = tr.email(p.n, rng)
                self.spawn(self.visits(p, tr, t, None, None, None, session=1, returns=False), p)
            yield t, None

    def marketplace_person(self, tr: TenantState, t: int) -> tuple[Journey, Person]:
        """B2B marketplace inquiries (Olist-style): known by email, straight to a form and the CRM."""
        p = self.new_person(tr, t)
        p.email = tr.email(p.n, self.rng)
        p.source = ("b2b_platform", None)
        return self.marketplace_inquiry(p, tr, t), p

    def marketplace_inquiry(self, p: Person, tr: TenantState, t: int) -> Journey:
        rng = self.rng
        assert p.email is not None
        yield t, {
            "tenant_id": tr.tid, "occurred_at": self.iso(t), "channel": "b2b_platform",
            "type": "form_submit", "identities": {"email": p.email},
            "properties": {"form": "marketplace_inquiry"},
        }
        if rng.random() < tr.spec.p_lead:
            self.spawn(self.crm(p, tr, t, None, "b2b_platform"), p)

    def visits(
        self,
        p: Person,
        tr: TenantState,
        t: int,
        c: Campaign | None,
        camp: dict[str, Any] | None,
        referrer: str | None,
        session: int = 0,
        returns: bool = True,
    ) -> Journey:
        """Sessions of one person: the first (landing or organic), then returns after > 30 min,
        some of them through a campaign (a retargeting ad, the newsletter): its click, then, if
        it lands, a session that starts on that campaign's landing page."""
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
            land, land_camp = (c, camp) if session == 0 else (None, None)
            if session and rng.random() < mix.p_return_via_campaign:
                rc = self.retarget(p, tr)
                if rc is not None:
                    land_camp = rc.camps[rng.randrange(len(rc.camps))]
                    yield t, self.click(p, rc, t, land_camp)
                    if not self.lands(rc, t):
                        n = 0  # bounced: no session this time
                    land = rc
                    t += self.lognorm_ms(mix.load_median_s, 0.5)
            for i in range(n):
                if i:
                    g = int(math.exp(mix.page_gap_mu + mix.page_gap_sigma * rng.gauss()) * 1000.0)
                    t += max(1000, min(g, self.page_gap_max_ms))
                if i == 0 and land is not None:
                    page = land.landing
                    # An email link is decorated with the recipient: the landing links the two ids.
                    land_ids = {"anonymous_id": p.anon, "email": p.email} if land.is_email else p.anon_ids
                    ev: dict[str, Any] = {
                        "tenant_id": tid, "occurred_at": iso(t), "channel": "web", "type": "page_view",
                        "identities": land_ids, "page": page, "campaign": land_camp,
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
                p.web = True
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
                    self.spawn(self.conversation(p, tr, t + self.lognorm_ms(10.0, 0.8)), p)
                if i == form_at:
                    t += self.lognorm_ms(mix.form_fill_median_s, 0.6)
                    if p.email is None:
                        p.email = tr.email(p.n, rng)
                    shown = p.email
                    if rng.random() < mix.p_mixed_case_email:
                        shown = shown.title()
                    form_camp = land_camp
                    fev: dict[str, Any] = {
                        "tenant_id": tid, "occurred_at": iso(t), "channel": "web", "type": "form_submit",
                        "identities": {"anonymous_id": p.anon, "email": shown},
                        "properties": FORMS[rng.randrange(len(FORMS))],
                    }
                    if form_camp is not None:
                        fev["campaign"] = form_camp
                    yield t, fev
                    if rng.random() < spec.p_lead:
                        self.spawn(self.crm(p, tr, t, form_camp, "web"), p)
            p_ret = mix.p_return if p.email is None else mix.p_return_identified
            if not returns or rng.random() >= p_ret:
                return
            session += 1
            ret = self.lognorm_ms(mix.return_gap_median_s, 0.6)
            t += max(ret, 31 * 60_000)

    def nurture(self, p: Person, tr: TenantState, t: int) -> Journey:
        """A lead clicks a newsletter or a retargeting ad, lands and looks at a few pages."""
        rng = self.rng
        c = self.retarget(p, tr)
        if c is None:
            return
        camp = c.camps[rng.randrange(len(c.camps))]
        yield t, self.click(p, c, t, camp)
        if not self.lands(c, t):
            return
        t += self.lognorm_ms(self.mix.load_median_s, 0.5)
        ids = {"anonymous_id": p.anon, "email": p.email} if c.is_email else p.anon_ids
        yield t, {"tenant_id": tr.tid, "occurred_at": self.iso(t), "channel": "web", "type": "page_view",
                  "identities": ids, "page": c.landing, "campaign": camp}
        p.web = True
        pages, prev = tr.pages, c.landing["url"]
        for _ in range(self.geom(self.log_q_pages) - 1):
            g = int(math.exp(self.mix.page_gap_mu + self.mix.page_gap_sigma * rng.gauss()) * 1000.0)
            t += max(1000, min(g, self.page_gap_max_ms))
            url, title = pages[rng.randrange(len(pages))]
            yield t, {"tenant_id": tr.tid, "occurred_at": self.iso(t), "channel": "web", "type": "page_view",
                      "identities": p.anon_ids, "page": {"url": url, "title": title, "referrer": prev}}
            prev = url

    def crm(self, p: Person, tr: TenantState, t: int, camp: dict[str, Any] | None, channel: str) -> Journey:
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
        if rng.random() < self.mix.p_nurture:
            self.spawn(self.nurture(p, tr, t + self.lognorm_ms(self.mix.nurture_delay_s, 0.6)), p)
        if rng.random() >= spec.p_opp:
            return
        t += self.lognorm_ms(300.0, 0.8)
        amount = round(spec.deal_median * math.exp(0.8 * rng.gauss()), 2)
        value = {"amount": amount, "currency": spec.currency}
        tr.deals += 1
        deal = {"deal_id": f"deal-{tr.idx}-{tr.deals:07d}"}  # the CRM's id: a re-sent deal keeps it
        ev = {
            "tenant_id": tr.tid, "occurred_at": iso(t, off, suffix), "channel": spec.sales_channel,
            "type": "opportunity", "identities": {"crm_contact_id": p.crm}, "value": value, "properties": deal,
        }
        if camp is not None:
            ev["campaign"] = camp
        yield t, ev
        u = rng.random()
        if u < spec.p_won:
            t += self.lognorm_ms(600.0, 0.8)
            ev = {
                "tenant_id": tr.tid, "occurred_at": iso(t, off, suffix), "channel": spec.sales_channel,
                "type": "deal_won", "identities": ids, "value": value, "properties": deal,
            }
        elif u < spec.p_won + spec.p_lost:
            t += self.lognorm_ms(800.0, 0.8)
            ev = {
                "tenant_id": tr.tid, "occurred_at": iso(t, off, suffix), "channel": spec.sales_channel,
                "type": "deal_lost", "identities": ids, "value": value,
                "properties": {**LOST_REASONS[rng.randrange(len(LOST_REASONS))], **deal},
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

    def conversation(self, p: Person, tr: TenantState, t: int) -> Journey:
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
            props = PROPS_IN[rng.randrange(len(PROPS_IN))]
            pending: list[tuple[int, int, dict[str, Any]]] = [(t, 0, {
                "tenant_id": tid, "occurred_at": iso(t), "channel": channel, "type": "message_in",
                "identities": first_ids if k == 0 else ids, "conversation": conv, "properties": props,
            })]
            if k == 0 and rng.random() < p_auto:
                ta = t + 800 + rng.randrange(2200)
                pending.append((ta, 1, {
                    "tenant_id": tid, "occurred_at": iso(ta), "channel": channel, "type": "message_out",
                    "identities": ids, "conversation": bot, "properties": PROPS_AUTO,
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
                        "properties": PROPS_IN[rng.randrange(len(PROPS_IN))],
                    }))
            if reply - t > nudge_ms and rng.random() < mix.p_nudge:
                tn = t + nudge_ms + rng.randrange(60_000)
                if tn < reply:
                    pending.append((tn, 3, {
                        "tenant_id": tid, "occurred_at": iso(tn), "channel": channel, "type": "message_in",
                        "identities": ids, "conversation": conv,
                        "properties": PROPS_NUDGE[rng.randrange(len(PROPS_NUDGE))],
                    }))
            pending.append((reply, 4, {
                "tenant_id": tid, "occurred_at": iso(reply), "channel": channel, "type": "message_out",
                "identities": ids, "conversation": conv,
                "properties": PROPS_OUT[rng.randrange(len(PROPS_OUT))],
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
