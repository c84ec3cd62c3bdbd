"""Per-tenant funnel counts in event-time tumbling windows (1 minute by default).

Why these counts: the anomaly detector needs, per window, how many *distinct persons* reached
each stage, per dimension (total, channel, campaign, channel × campaign). Conversion k→k+1 of
a window is defined as

    distinct persons reaching stage k+1 in the window / distinct persons reaching stage k in it

a same-window rate ratio. The time between a person's stages is not tracked: for the fast
upper stages (impression → click → visit) most transitions happen inside a minute, so the
ratio is the live signal; for the slow lower stages the ratio is systematically low (the lead
arrives hours after the visit), and the detector's baseline, learned from the same ratio's own
history, absorbs that lag. The ratio may exceed 1 (organic visits without a click); the
detector copes with that.

Windows close when the caller's per-tenant watermark passes their end (this stage is keyed by
tenant, so there is a single writer per tenant). An event whose window has already closed is
*late*: it is not added (a closed window's rows were already published and must not change) and
``observe`` returns False so the shell can count it.

State (all JSON-able, through the Store):

* ``{tenant}|w|{window_start}`` → ``{"c": [sorted campaign names admitted], "d": {dim: {stage:
  [events, [sorted person ids]]}}}`` with ``dim`` = ``json.dumps([channel, campaign])``. Sorted
  lists (not sets) keep the value JSON-able and its serialisation deterministic.
* ``{tenant}|c`` → the tenant's closed-up-to boundary (every window starting before it closed).

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


class FunnelAggregator:
    __slots__ = ("_open", "_store", "config")

    def __init__(self, store: Store, config: FunnelConfig | None = None) -> None:
        self._store = store
        self.config = config or FunnelConfig()
        # tenant -> sorted open window starts; an index over the store, rebuilt from it.
        self._open: dict[str, list[int]] = {}
        self.rebuild()

    # --- recovery ---
    def rebuild(self) -> None:
        """Re-derive the open-window index after the store was reloaded from a changelog."""
        self._open.clear()
        for key, _ in self._store.items():
            tenant, tag, rest = [*key.split("|", 2), "", ""][:3]
            if tag == "w":
                bisect.insort(self._open.setdefault(tenant, []), int(rest))

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
        key = f"{tenant_id}|w|{start}"
        win = self._store.get(key)
        if win is None:
            win = {"c": [], "d": {}}
            bisect.insort(self._open.setdefault(tenant_id, []), start)
        campaign = self._admit_campaign(win, campaign or None)
        dims: list[Dim] = [(None, None), (channel, None)]
        if campaign is not None:
            dims += [(None, campaign), (channel, campaign)]
        d = win["d"]
        for dim in dims:
            cell = d.setdefault(dim_key(*dim), {}).setdefault(stage, [0, []])
            cell[0] += 1
            persons = cell[1]
            i = bisect.bisect_left(persons, person_id)
            if i == len(persons) or persons[i] != person_id:
                persons.insert(i, person_id)
        self._store.put(key, win)
        return True

    def _admit_campaign(self, win: dict[str, Any], campaign: str | None) -> str | None:
        if campaign is None:
            return None
        names: list[str] = win["c"]
        i = bisect.bisect_left(names, campaign)
        if i < len(names) and names[i] == campaign:
            return campaign
        if len(names) >= self.config.max_campaigns_per_tenant_window:
            return OTHER_CAMPAIGN
        names.insert(i, campaign)
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
        key = f"{tenant_id}|w|{start}"
        win = self._store.get(key)
        self._store.delete(key)
        if win is None:
            return []
        end = start + self.config.window_ms
        rows: list[dict[str, Any]] = []
        cells = sorted(
            ((parse_dim_key(k), v) for k, v in win["d"].items()), key=lambda kv: dim_sort_key(kv[0])
        )
        for (channel, campaign), stages in cells:
            for stage in STAGES:
                cell = stages.get(stage)
                if cell is None or cell[0] <= 0:
                    continue
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
                    }
                )
        return rows

    def open_windows(self, tenant_id: str) -> list[int]:
        return list(self._open.get(tenant_id, ()))
