"""ROI per campaign and channel: the pure parts (costs in, ratios out).

Where each part lives: attributed revenue comes from the attribution credits
(:mod:`streams.core.attribution`), costs from ad events and from a cost feed file, and the sums
over history are ClickHouse's job (``schemas/clickhouse/0007_profiles_attribution.sql``:
``campaign_costs_daily``, ``attributed_revenue_daily``, ``roi_by_campaign``). This module holds
what must agree between the stream, the loader and the report: how a cost is read from an event,
how a cost feed line is parsed (with errors naming file and line), and how ROI and the stage
conversion chain are computed from the sums.

Costs are integer micro-units of the currency (``cost_micros``, as ad platforms report them):
an impression bought at a 6.50 CPM costs 0.0065, which no whole number of cents can hold, while
sums of micros stay exact.

Definitions (per campaign or channel, per currency, one attribution model):

* ``revenue``: attributed revenue, major units; ``cost``: ad-event costs plus cost-feed costs;
* ``roas`` = revenue / cost; ``roi`` = (revenue - cost) / cost (None without cost);
* the conversion chain: of the persons the campaign touched, how many reached each funnel stage
  (``persons``) and ``rate`` = persons at this stage / persons at the previous stage. Its
  product is deals / persons at the first stage, so ``persons at the first stage × product of
  the rates × revenue per deal / cost`` = revenue / cost: the funnel view of the same ROAS.
"""

from __future__ import annotations

import csv
import io
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import date
from decimal import ROUND_HALF_EVEN, Decimal, InvalidOperation
from typing import Any

from streams.core.model import CHANNELS, Touchpoint
from streams.core.stages import STAGES

MICROS = 1_000_000
MAX_COST_MICROS = 10**15  # a billion per line is already absurd; bigger is a typo
COST_TYPES: frozenset[str] = frozenset({"ad_impression", "ad_click"})
FEED_COLUMNS: tuple[str, ...] = ("date", "tenant_id", "channel", "campaign", "cost", "currency")
_CURRENCY = re.compile(r"[A-Z]{3}\Z")


class CostFeedError(ValueError):
    def __init__(self, source: str, line: int, message: str) -> None:
        super().__init__(f"{source}:{line}: {message}")
        self.source = source
        self.line = line


def to_micros(amount: object) -> int | None:
    """A non-negative JSON number or decimal text in major units → micro-units (None if unusable)."""
    if isinstance(amount, bool):
        return None
    if isinstance(amount, float) and not math.isfinite(amount):
        return None
    if isinstance(amount, int | float):
        text = repr(amount)
    elif isinstance(amount, str):
        text = amount.strip()
    else:
        return None
    try:
        micros = int((Decimal(text) * MICROS).quantize(Decimal(1), ROUND_HALF_EVEN))
    except (InvalidOperation, ValueError):
        return None
    return micros if 0 <= micros <= MAX_COST_MICROS else None


def event_cost(tp: Touchpoint) -> tuple[int, str] | None:
    """The cost an ad event carries: ``properties.cost = {"amount": 0.42, "currency": "EUR"}``.

    (``value`` is what a touchpoint is worth, e.g. a deal; what an ad cost is not its value.)"""
    props = tp.properties
    cost = None if props is None else props.get("cost")
    if not isinstance(cost, dict):
        return None
    micros = to_micros(cost.get("amount"))
    currency = cost.get("currency")
    if micros is None or not isinstance(currency, str) or not _CURRENCY.match(currency):
        return None
    return micros, currency


@dataclass(frozen=True)
class CostRow:
    day: date
    tenant_id: str
    channel: str
    campaign: str
    cost_micros: int
    currency: str
    line: int


def parse_cost_feed(text: str, source: str = "<costs>") -> list[CostRow]:
    """A cost feed: CSV with the header ``date,tenant_id,channel,campaign,cost,currency``.

    ``date`` is the day the money was spent (YYYY-MM-DD, UTC), ``cost`` a non-negative decimal in
    major units, ``currency`` an ISO 4217 code. Rows for the same (date, tenant, channel,
    campaign, currency) add up. Any bad line raises :class:`CostFeedError` naming the line: a
    feed is loaded whole or not at all, so a half-loaded day never looks like a cheap one."""
    reader = csv.reader(io.StringIO(text, newline=""), skipinitialspace=True)
    rows: list[CostRow] = []
    header: list[str] | None = None
    try:
        for record in reader:
            line = reader.line_num
            row = _cost_row(record, line, source, header)
            if row is None:
                continue
            if isinstance(row, list):
                header = row
            else:
                rows.append(row)
    except csv.Error as exc:
        raise CostFeedError(source, max(1, reader.line_num), f"not CSV: {exc}") from None
    if header is None:
        raise CostFeedError(source, 1, f"empty feed: expected the header {','.join(FEED_COLUMNS)}")
    return rows


def _cost_row(record: list[str], line: int, source: str, header: list[str] | None) -> CostRow | list[str] | None:
    """One CSV record: None (blank or comment), the header (a list), or a cost row."""
    if not record or all(not c.strip() for c in record) or record[0].lstrip().startswith("#"):
        return None
    cells = [c.strip() for c in record]
    if header is None:
        names = [c.lower() for c in cells]
        if tuple(names) != FEED_COLUMNS:
            raise CostFeedError(source, line, f"the header must be {','.join(FEED_COLUMNS)}, got {','.join(cells)}")
        return names
    if len(cells) != len(FEED_COLUMNS):
        raise CostFeedError(source, line, f"expected {len(FEED_COLUMNS)} columns, got {len(cells)}")
    day_text, tenant, channel, campaign, cost_text, currency = cells
    try:
        day = date.fromisoformat(day_text)
    except ValueError:
        raise CostFeedError(source, line, f"date {day_text!r} is not YYYY-MM-DD") from None
    if not tenant or len(tenant) > 128 or "|" in tenant:
        raise CostFeedError(source, line, "tenant_id must be 1..128 characters without '|'")
    if channel not in CHANNELS:
        raise CostFeedError(source, line, f"unknown channel {channel!r} (known: {', '.join(sorted(CHANNELS))})")
    if not campaign:
        raise CostFeedError(source, line, "campaign is empty")
    micros = to_micros(cost_text)
    if micros is None:
        raise CostFeedError(source, line, f"cost {cost_text!r} is not a non-negative amount")
    if not _CURRENCY.match(currency):
        raise CostFeedError(source, line, f"currency {currency!r} is not an ISO 4217 code such as EUR")
    return CostRow(day, tenant, channel, campaign, micros, currency, line)


def conversion_chain(persons_by_stage: Mapping[str, int], stages: Sequence[str] = STAGES) -> list[dict[str, Any]]:
    """Persons who reached each stage, and the rate from the previous stage (None at the first or
    after an empty one). ``persons_by_stage``: persons whose furthest stage is at least that one."""
    out: list[dict[str, Any]] = []
    prev: int | None = None
    for stage in stages:
        n = int(persons_by_stage.get(stage, 0))
        out.append({"stage": stage, "persons": n, "rate": None if not prev else n / prev})
        prev = n
    return out


def chain_product(chain: Sequence[Mapping[str, Any]]) -> float | None:
    """Product of the stage rates from the first stage with persons: deals / entrants."""
    first = next((c["persons"] for c in chain if c["persons"]), 0)
    return None if not first else chain[-1]["persons"] / first


def roi(revenue: float, cost: float) -> dict[str, float | None]:
    """ROAS and ROI from major-unit totals (None where cost is 0: no ratio to a free campaign)."""
    if cost <= 0:
        return {"revenue": revenue, "cost": cost, "roas": None, "roi": None}
    return {"revenue": revenue, "cost": cost, "roas": revenue / cost, "roi": (revenue - cost) / cost}
