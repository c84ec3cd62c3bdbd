"""Per-tenant funnel counts in event-time tumbling windows (1 minute by default).

Why these counts: the anomaly detector needs, per window, how many *distinct persons* reached
each stage, per dimension (total, channel, campaign, channel × campaign), and how many of them
went on to the next stage. Each row carries, for its dimension, window and stage k:

* ``events``: events mapped to stage k;
* ``persons``: distinct persons who reached stage k in the window (the stage's volume);
* ``converted``: how many of those ``persons`` also reached stage k+1 — anywhere in the tenant,
  in the same window or the next ``conversion_lookahead_windows`` (default 1) windows
  (``None`` for the last stage).

Conversion k→k+1 of a dimension and window is ``converted / persons`` of stage k: the share of
the window's stage-k cohort that advanced. This is :mod:`streams.core.conversion`'s rule applied
to one window (tested there); the board, ``query funnel`` and Grafana apply it to longer
periods. The numerator is a subset of the denominator, so it is a proportion and a binomial test
applies. Why not "persons at k+1 / persons at k": visits include people who never clicked
(organic search, direct, returning visitors), so at the total level that ratio is ~4 for
click→visit, not a proportion, and it moves with organic traffic; and stage k+1 is often tracked
on another channel than stage k (clicks on ``ads``, the landing page view on ``web``), so per
channel it was 0 or undefined. Stage k+1 is therefore looked up tenant-wide: an ``ads`` clicker
who lands on ``web`` converted for the ``ads`` channel.

Time between stages: a person at stage k at time t counts as converted if stage k+1 follows by
the end of the next window, i.e. within 1-2 windows of t (so a click at 12:00:59 whose page view
is logged at 12:01:01 counts, as does one at 12:00:01 followed at 12:01:50). The order inside
that span is not checked (a page view just before the click in the same window counts). Slower
transitions (visit → lead, lead → opportunity: minutes to days) mostly fall outside it, so those
conversions are low and thin; the detector watches them only where the counts make them
informative, and every stage's own volume regardless. The lookahead windows are still open when
a window closes (they close later, in order), so no extra state is needed: with the default
5-minute lateness and 1-minute windows the next window is complete except for events more than
~4 minutes out of order. ``converted`` is therefore as deterministic as the rest of the row
(a function of the input order, like lateness); ClickHouse ``funnel_minute`` stores it
(schemas/clickhouse/0005_funnel_converted.sql).

Windows close when the caller's per-tenant watermark passes their end (this stage is keyed by
tenant, so there is a single writer per tenant). An event whose window has already closed is
*late*: it is not added (a closed window's rows were already published and must not change) and
``observe`` returns False so the shell can count it.

State (all JSON-able, through the Store), written as append-only segments, like the dedup window:

* ``{tenant}|w|{window_start}|{seq}`` → what one batch added to the window: ``{"c": [campaign
  names it admitted], "d": {dim: {stage: [events added, [persons new to the window]]}}}`` with
  ``dim`` = ``json.dumps([channel, campaign])``.
* ``{tenant}|c`` → the tenant's closed-up-to boundary (every window starting before it closed).

Why segments: a window of a busy tenant holds every distinct person of a minute per dimension
and stage (megabytes at a few thousand events/s). Rewriting it whole after every batch made the
changelog traffic grow with the window, most of the worker's produced bytes. A segment holds only
its batch's increments; :meth:`FunnelAggregator.seal` (after each batch) starts new ones. Merging
segments is commutative (events add, person sets unite), so recovery needs no order, and a window
written whole by an earlier version (``{tenant}|w|{window_start}``, same shape) merges the same way.
The merged windows live in memory only, with sets, rebuilt from the segments on recovery.

Memory is bounded per window by ``max_campaigns_per_tenant_window``: campaign names beyond it
fold into ``"__other__"``, so a tenant with thousands of campaigns cannot blow up state.
"""

from __future__ import annotations

import bisect
import json
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from streams.core.stages import STAGE_INDEX, STAGES
from streams.core.state import Store

OTHER_CAMPAIGN = "__other__"

Dim = tuple[str | None, str | None]


@dataclass(frozen=True, slots=True)
class FunnelConfig:
    window_ms: int = 60_000
    # Overflow goes to campaign "__other__", so a tenant with thousands of campaigns cannot blow memory.
    max_campaigns_per_tenant_window: int = 500
    #: A stage-k person of window w converted if they reach stage k+1 in w or the next this many windows.
    conversion_lookahead_windows: int = 1

    def __post_init__(self) -> None:
        if self.window_ms <= 0 or self.conversion_lookahead_windows < 0:
            raise ValueError("window_ms must be positive and conversion_lookahead_windows ≥ 0")


@lru_cache(maxsize=65_536)
def dim_key(channel: str | None, campaign: str | None) -> str:
    """Canonical string of a dimension; JSON so arbitrary names (with '|' or quotes) stay unambiguous."""
    return json.dumps([channel, campaign], separators=(",", ":"), ensure_ascii=False)


@lru_cache(maxsize=65_536)
def parse_dim_key(key: str) -> Dim:
    channel, campaign = json.loads(key)
    return channel, campaign


def dim_sort_key(dim: Dim) -> tuple[int, str, str]:
    """Total first, then channels, campaigns, channel × campaign; by name inside each level."""
    channel, campaign = dim
    level = (0 if channel is None else 1) + (0 if campaign is None else 2)
    return level, channel or "", campaign or ""


Window = dict[str, Any]  # {"c": sorted admitted campaigns, "d": {dim: {stage: [events, set of persons]}}}


class FunnelAggregator:
    __slots__ = ("_fill", "_open", "_segments", "_seq", "_store", "_windows", "config")

    def __init__(self, store: Store, config: FunnelConfig | None = None) -> None:
        self._store = store
        self.config = config or FunnelConfig()
        # Indexes over the store, rebuilt from it:
        self._open: dict[str, list[int]] = {}  # tenant -> sorted open window starts
        self._windows: dict[tuple[str, int], Window] = {}  # (tenant, start) -> merged window
        self._segments: dict[tuple[str, int], list[str]] = {}  # (tenant, start) -> its segment keys
        # (tenant, start) -> key and value of the segment this batch fills
        self._fill: dict[tuple[str, int], tuple[str, dict[str, Any]]] = {}
        self._seq = 0
        self.rebuild()

    # --- recovery ---
    def rebuild(self) -> None:
        """Re-derive the merged windows after the store was reloaded from a changelog.

        A segment of a window the tenant already closed is a leftover (a previous owner wrote it
        after this state was read, while losing the partition); it is dropped, not reopened, so
        a closed window is never published twice.
        """
        self._open.clear()
        self._windows.clear()
        self._segments.clear()
        self._fill.clear()
        stale: list[str] = []
        for key, seg in self._store.items():
            tenant, tag, rest = [*key.split("|", 2), "", ""][:3]
            if tag != "w":
                continue
            start_s, _, seq_s = rest.partition("|")
            start = int(start_s)
            if seq_s:
                self._seq = max(self._seq, int(seq_s) + 1)
            closed = self._store.get(f"{tenant}|c")
            if closed is not None and start < closed:
                stale.append(key)
                continue
            win = self._window(tenant, start)
            self._segments[(tenant, start)].append(key)
            _merge(win, seg)
        for key in stale:
            self._store.delete(key)

    def _window(self, tenant_id: str, start: int) -> Window:
        win = self._windows.get((tenant_id, start))
        if win is None:
            win = self._windows[(tenant_id, start)] = {"c": [], "d": {}}
            self._segments[(tenant_id, start)] = []
            bisect.insort(self._open.setdefault(tenant_id, []), start)
        return win

    def seal(self) -> None:
        """End of a batch (its state persisted): later increments go to new segments."""
        self._fill.clear()

    # --- event path ---
    def observe(
        self, tenant_id: str, person_id: str, stage: str, channel: str, campaign: str | None, at_ms: int
    ) -> bool:
        """Count one funnel step; False when its window already closed (late, not counted)."""
        if stage not in STAGE_INDEX:
            raise ValueError(f"unknown funnel stage {stage!r}")
        w = self.config.window_ms
        start = at_ms - at_ms % w
        closed = self._store.get(f"{tenant_id}|c")
        if closed is not None and start < closed:
            return False
        win = self._window(tenant_id, start)
        filling = self._fill.get((tenant_id, start))
        if filling is None:
            seg_key = f"{tenant_id}|w|{start}|{self._seq}"
            self._seq += 1
            self._segments[(tenant_id, start)].append(seg_key)
            filling = self._fill[(tenant_id, start)] = (seg_key, {"c": [], "d": {}})
        seg_key, seg = filling
        campaign = self._admit_campaign(win, seg, campaign or None)
        dims: list[Dim] = [(None, None), (channel, None)]
        if campaign is not None:
            dims += [(None, campaign), (channel, campaign)]
        d, sd = win["d"], seg["d"]
        for dim in dims:
            dk = dim_key(*dim)
            cell = d.setdefault(dk, {}).get(stage)
            if cell is None:
                cell = d[dk][stage] = [0, set()]
            scell = sd.setdefault(dk, {}).setdefault(stage, [0, []])
            cell[0] += 1
            scell[0] += 1
            persons = cell[1]
            if person_id not in persons:
                persons.add(person_id)
                scell[1].append(person_id)
        self._store.put(seg_key, seg)
        return True

    def _admit_campaign(self, win: Window, seg: dict[str, Any], campaign: str | None) -> str | None:
        if campaign is None:
            return None
        names: list[str] = win["c"]
        i = bisect.bisect_left(names, campaign)
        if i < len(names) and names[i] == campaign:
            return campaign
        if len(names) >= self.config.max_campaigns_per_tenant_window:
            return OTHER_CAMPAIGN
        names.insert(i, campaign)
        seg["c"].append(campaign)
        return campaign

    # --- time path ---
    def advance(self, tenant_id: str, watermark_ms: int) -> list[dict[str, Any]]:
        """Close this tenant's windows whose end is at or before the watermark; their rows, in order."""
        w = self.config.window_ms
        boundary = watermark_ms - watermark_ms % w  # every window starting before it has ended
        closed_key = f"{tenant_id}|c"
        closed = self._store.get(closed_key)
        if closed is None or boundary > closed:
            # Written only when the boundary moves (once per window), not on every tick.
            self._store.put(closed_key, boundary)
        starts = self._open.get(tenant_id)
        if not starts:
            return []
        rows: list[dict[str, Any]] = []
        while starts and starts[0] < boundary:
            rows.extend(self._close(tenant_id, starts.pop(0)))
        if not starts:
            del self._open[tenant_id]
        return rows

    def close_all(self) -> list[dict[str, Any]]:
        """End of input: close every open window of every tenant (tenants in sorted order)."""
        rows: list[dict[str, Any]] = []
        for tenant in sorted(self._open):
            starts = self._open[tenant]
            end = starts[-1] + self.config.window_ms
            for start in starts:
                rows.extend(self._close(tenant, start))
            closed = self._store.get(f"{tenant}|c")
            if closed is None or end > closed:
                self._store.put(f"{tenant}|c", end)
        self._open.clear()
        return rows

    def _close(self, tenant_id: str, start: int) -> list[dict[str, Any]]:
        win = self._windows.pop((tenant_id, start), None)
        for seg_key in self._segments.pop((tenant_id, start), ()):
            self._store.delete(seg_key)
        self._fill.pop((tenant_id, start), None)
        if win is None:
            return []
        w = self.config.window_ms
        end = start + w
        reached = self._reached(tenant_id, start, win)
        rows: list[dict[str, Any]] = []
        cells = sorted(
            ((parse_dim_key(k), v) for k, v in win["d"].items()), key=lambda kv: dim_sort_key(kv[0])
        )
        last = len(STAGES) - 1
        for (channel, campaign), stages in cells:
            for i, stage in enumerate(STAGES):
                cell = stages.get(stage)
                if cell is None or cell[0] <= 0:
                    continue
                nxt = reached[i + 1] if i < last else None
                rows.append(
                    {
                        "tenant_id": tenant_id,
                        "window_start": start,
                        "window_end": end,
                        "channel": channel,
                        "campaign": campaign,
                        "stage": stage,
                        "events": cell[0],
                        "persons": len(cell[1]),
                        "converted": None if nxt is None else sum(1 for p in cell[1] if p in nxt),
                    }
                )
        return rows

    def _reached(self, tenant_id: str, start: int, win: Window) -> list[set[str]]:
        """Per stage: persons of the tenant who reached it in this window or the lookahead windows
        (the total dimension holds every person; lookahead windows are still open)."""
        total = dim_key(None, None)
        w = self.config.window_ms
        wins = [win]
        for k in range(1, self.config.conversion_lookahead_windows + 1):
            nxt = self._windows.get((tenant_id, start + k * w))
            if nxt is not None:
                wins.append(nxt)
        out: list[set[str]] = [set()]  # (nobody converts *into* the first stage)
        for stage in STAGES[1:]:
            persons: set[str] = set()
            for one in wins:
                cell = one["d"].get(total, {}).get(stage)
                if cell is not None:
                    persons.update(cell[1])
            out.append(persons)
        return out

    def open_windows(self, tenant_id: str) -> list[int]:
        return list(self._open.get(tenant_id, ()))


def _merge(win: Window, seg: dict[str, Any]) -> None:
    """Add one persisted segment (or a whole window of the earlier layout) to a merged window."""
    names: list[str] = win["c"]
    for campaign in seg.get("c") or ():
        i = bisect.bisect_left(names, campaign)
        if i == len(names) or names[i] != campaign:
            names.insert(i, campaign)
    d = win["d"]
    for dk, stages in (seg.get("d") or {}).items():
        cells = d.setdefault(dk, {})
        for stage, (events, persons) in stages.items():
            cell = cells.get(stage)
            if cell is None:
                cell = cells[stage] = [0, set()]
            cell[0] += int(events)
            cell[1].update(persons)
