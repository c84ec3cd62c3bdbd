"""Run-time state of the simulated world: persons, campaigns and tenants, and small helpers."""

from __future__ import annotations

import itertools
import random
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from streams.devtools.simulate.config import CampaignSpec, TenantSpec
from streams.devtools.simulate.tenants import FIRST_NAMES, LAST_NAMES, agent_ids

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


class Iso:
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
            prefix = (EPOCH + timedelta(minutes=minute)).strftime("%Y-%m-%dT%H:%M:")
            self._cache[minute] = prefix
        sec, milli = divmod(rest, 1000)
        return f"{prefix}{sec:02d}.{milli:03d}{suffix}"


def offset_minutes(offset: str) -> int:
    if offset in ("Z", "z"):
        return 0
    sign = -1 if offset[0] == "-" else 1
    hh, mm = offset[1:].split(":")
    return sign * (int(hh) * 60 + int(mm))


def cum(weights: Iterable[float]) -> list[float]:
    out = list(itertools.accumulate(weights))
    return [w / out[-1] for w in out]


def in_window(windows: Sequence[tuple[int, int, float]], t: int) -> float | None:
    for s, e, factor in windows:
        if s <= t < e:
            return factor
    return None


# ----------------------------------------------------------------------------- runtime state


class Person:
    __slots__ = ("anon", "anon_ids", "born", "crm", "email", "n", "phone", "psid", "source", "user", "web")

    def __init__(self, n: int, anon: str, born: int) -> None:
        self.n = n
        #: (channel, campaign) the person arrived through; None: before the run (prehistory)
        self.source: tuple[str, str | None] | None = None
        self.born = born
        self.anon = anon
        self.anon_ids = {"anonymous_id": anon}
        self.email: str | None = None
        self.phone: str | None = None
        self.psid: str | None = None
        self.crm: str | None = None
        self.user: str | None = None
        #: the current device has been on the site: a retargeting ad can find it (its cookie)
        self.web = False


class Campaign:
    """A campaign at run time: prebuilt (immutable, shared) dicts, rates and incident windows."""

    __slots__ = (
        "camps", "channel", "click_props", "imp_mean", "imp_props", "is_email", "lam", "landing", "outage",
        "p_click", "spec", "tenant", "tracking_off",
    )

    def __init__(self, spec: CampaignSpec, tenant: TenantState) -> None:
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
        # what ad events cost (schemas: properties.cost); shared, never mutated
        currency = tenant.spec.currency
        self.click_props: dict[str, Any] | None = None
        self.imp_props: dict[str, Any] | None = None
        if spec.cost_model == "cpc" and spec.cost > 0:
            self.click_props = {"cost": {"amount": round(spec.cost, 2), "currency": currency}}
        elif spec.cost_model == "cpm" and spec.cost > 0:
            self.imp_props = {"cost": {"amount": round(spec.cost / 1000.0, 6), "currency": currency}}


class TenantState:
    __slots__ = (
        "agents", "camps", "chat_channels", "chat_cum", "convs", "crm_off", "crm_suffix", "crms", "deals",
        "idx", "mail_camps", "mail_cum", "pages", "paid_camps", "paid_cum", "persons", "silent", "spec",
        "team_cum", "teams", "tid", "users",
    )

    def __init__(self, spec: TenantSpec, idx: int) -> None:
        self.spec = spec
        self.idx = idx
        self.tid = spec.tenant_id
        self.camps = [Campaign(c, self) for c in spec.campaigns]
        # where return visits through a campaign come from (retargeting / the newsletter), by share
        self.paid_camps = tuple(c for c in self.camps if not c.is_email)
        self.paid_cum = cum(c.spec.share for c in self.paid_camps) if self.paid_camps else []
        self.mail_camps = tuple(c for c in self.camps if c.is_email)
        self.mail_cum = cum(c.spec.share for c in self.mail_camps) if self.mail_camps else []
        self.pages = tuple((f"https://{spec.domain}{path}", title) for path, title in spec.pages)
        self.chat_channels = tuple(c for c, _ in spec.chat_channels)
        self.chat_cum = cum(w for _, w in spec.chat_channels)
        self.teams = tuple(t for t, _, _ in spec.teams)
        self.team_cum = cum(w for _, _, w in spec.teams)
        self.agents = agent_ids(spec)
        self.crm_suffix = spec.crm_offset
        self.crm_off = offset_minutes(spec.crm_offset)
        self.silent: dict[str, list[tuple[int, int, float]]] = {}
        self.persons = 0
        self.convs = 0
        self.crms = 0
        self.deals = 0
        self.users = 0

    def email(self, n: int, rng: random.Random) -> str:
        first = FIRST_NAMES[rng.randrange(len(FIRST_NAMES))]
        last = LAST_NAMES[rng.randrange(len(LAST_NAMES))]
        if not self.spec.email_domains:
            return f"{first}.{last}@company{n}.example"
        dom = self.spec.email_domains[rng.randrange(len(self.spec.email_domains))]
        return f"{first}.{last}{n}@{dom}"

    def phone(self, n: int) -> str:
        # n × 7919 (coprime with 10) is a bijection mod 10^d: unique numbers, scattered digits.
        mod = 10**self.spec.phone_digits
        return f"{self.spec.phone_prefix}{(n * 7919 + 12345) % mod:0{self.spec.phone_digits}d}"
