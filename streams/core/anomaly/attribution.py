"""Which dimension carries an alert, and which series an incident touches (attribution).

Why: one cause (a campaign's landing page dies) moves many series (the campaign, its channel, its
cells, the tenant total, the downstream stages). Paging on each would be an alert storm; paging
on the wrong one sends people to the wrong place. After all series of a window are updated, open
incidents of the same series kind and direction are mapped to one culprit dimension
(:class:`Attribution`), the least specific dimension that describes the cause: a total or channel
whose recent deficit is ≥ 70 % one child's defers to that child; a channel × campaign defers to
its campaign when the campaign's drop is broad across its channels (or the cell is the whole
campaign), and to its channel when the channel is down across its campaigns; a campaign that is
part of a channel-wide drop defers to the channel; everything defers to a broad total. A child
carrying ≥ 90 % of its parent's traffic is the parent when the rest of the parent moved with it or
is too thin to tell (no more specific name is gained), but is named when the rest evidently did
not move (a landing page that dies for the campaign with 93 % of a tenant's clicks, while the other
campaigns' clickers still land); a campaign is preferred to a channel that carries only it.

Series ids: ``"v:<stage>"`` (a stage's volume) and ``"c:<stage_from>"`` (the conversion from it
to the next stage). Dimensions: ``(channel, campaign)``, ``None`` = all.
"""

from __future__ import annotations

import math
from typing import Any

from streams.core.funnel import dim_sort_key, parse_dim_key
from streams.core.stages import STAGE_INDEX, STAGES

EQUIVALENT_SHARE = 0.9  # a child with ≥ 90 % of its parent's expected count may be "the same" series
_REST_MOVED_NATS = 2.0  # evidence that the rest of a parent moved with such a child

Dim = tuple[str | None, str | None]


def sid_parts(sid: str) -> tuple[bool, str, str]:
    """Series id "v:stage" / "c:stage_from" → (is_conversion, stage_from, stage_to)."""
    conv = sid[0] == "c"
    stage = sid[2:]
    return conv, stage, STAGES[STAGE_INDEX[stage] + 1] if conv else stage


def series_order(sid: str) -> tuple[int, int]:
    return STAGE_INDEX[sid[2:]], 0 if sid[0] == "v" else 1


def kind_name(conv: bool, dr: str) -> str:
    return ("conversion_" if conv else "volume_") + ("drop" if dr == "d" else "surge")


def deficit(s: dict[str, Any], dr: str) -> float:
    """Recent (decayed) shortfall in persons, signed so that the incident direction is positive."""
    rec = s["rec"]
    return rec[1] - rec[0] if dr == "d" else rec[0] - rec[1]


def same_series(parent: Dim, child: Dim, p: dict[str, Any], c: dict[str, Any]) -> bool:
    """Is ``child`` (nearly all of ``parent``'s traffic) indistinguishable from the parent in its
    recent shift? See :meth:`Attribution._equivalent`."""
    if c["rec"][1] < EQUIVALENT_SHARE * p["rec"][1]:
        return False
    if parent[0] is None and parent[1] is not None:
        return True  # campaign → its cell: the campaign is the reporting unit
    return _rest_moved(p, c)


def _rest_moved(p: dict[str, Any], c: dict[str, Any]) -> bool:
    """Did the parent's traffic outside the child shift like the child did?

    Recent (decayed) observed vs expected counts of the rest = parent − child; log-likelihood
    ratio (Poisson) of "the rest moved by the child's ratio" against "the rest is as expected";
    moved when it exceeds ``_REST_MOVED_NATS``. A rest too thin to ever give that much evidence
    (the child is all of the parent, or nearly) cannot be told apart: it counts as moved, and the
    parent, the simpler name, is reported."""
    rest_obs = max(0.0, p["rec"][0] - c["rec"][0])
    rest_exp = p["rec"][1] - c["rec"][1]
    if rest_exp <= _REST_MOVED_NATS or c["rec"][1] <= 0:
        return True
    q = min(10.0, max(1e-3, c["rec"][0] / c["rec"][1]))
    return rest_obs * math.log(q) - rest_exp * (q - 1.0) > _REST_MOVED_NATS


def is_child(parent: Dim, child: Dim) -> bool:
    pc, pm = parent
    cc, cm = child
    if pc is None and pm is None:
        return (cc is None) != (cm is None)
    if pm is None:
        return cc == pc and cm is not None
    if pc is None:
        return cm == pm and cc is not None
    return False


def overlaps(a: Dim, b: Dim) -> bool:
    """Do two dimensions share traffic (some channel × campaign cell is in both)?"""
    return (a[0] is None or b[0] is None or a[0] == b[0]) and (a[1] is None or b[1] is None or a[1] == b[1])


def affected(sid: str) -> list[str]:
    """Series whose values contain an incident of ``sid``: itself and the downstream volumes."""
    conv, _, stage_to = sid_parts(sid)
    out = ["v:" + stage for stage in STAGES[STAGE_INDEX[stage_to]:]]
    return [sid, *out] if conv else out


def _is_ancestor(parent: Dim, child: Dim) -> bool:
    if parent == child:
        return False
    if parent == (None, None):
        return True
    return is_child(parent, child)


class Attribution:
    """Maps an open incident's dimension to the one dimension that should carry the alert."""

    __slots__ = ("dr", "group", "peers", "share")

    def __init__(
        self, group: dict[Dim, tuple[str, dict[str, Any]]], dr: str, share: float,
        peers: dict[Dim, dict[str, Any]] | None = None,
    ) -> None:
        self.group = group  # open incidents of this series kind and direction
        self.dr = dr
        self.share = share
        self.peers = peers or {}  # the same series in every loaded dimension, open or not

    def _cell_explains(self, channel: str, dim: Dim) -> bool:
        """Is the (channel, campaign) cell ≥ share of ``dim``'s deficit (open incident or not)?"""
        cell = self.peers.get((channel, dim[1] if dim[1] is not None else None))
        return cell is not None and deficit(cell, self.dr) >= self.share * self._d(dim) > 0

    def _d(self, dim: Dim) -> float:
        return deficit(self.group[dim][1], self.dr)

    def _explaining(self, parent: Dim) -> list[Dim]:
        """Children in the group whose deficit alone is ≥ share of the parent's."""
        if parent not in self.group or self._d(parent) <= 0:
            return []
        need = self.share * self._d(parent)
        kids = sorted((c for c in self.group if is_child(parent, c) and self._d(c) >= need),
                      key=lambda c: (-self._d(c), dim_sort_key(c)))
        if len(kids) > 1 and kids[0][1] is None:
            # A channel and a campaign explaining (nearly) the same deficit are usually the same
            # traffic; the campaign names it better, and a channel-wide cause is still found below.
            top = self._d(kids[0])
            for i, c in enumerate(kids):
                if c[0] is None and self._d(c) >= 0.99 * top:
                    kids.insert(0, kids.pop(i))
                    break
        return kids

    def _best_child(self, parent: Dim) -> Dim | None:
        """The most explaining child that is not just the parent again (an equivalent child, with
        ≥ 90 % of the parent's traffic, would name the same series more specifically: no gain)."""
        for child in self._explaining(parent):
            if not self._equivalent(child, parent):
                return child
        return None

    def covered_by_visible(self, dim: Dim) -> bool:
        """An already emitted incident covers this one: a broader one containing it, or a more
        specific one that explains it. Avoids a second alert for the same cause."""
        for other, (_, s) in self.group.items():
            if other == dim or not s["inc"]["vis"]:
                continue
            if _is_ancestor(other, dim):
                return True
            earlier = s["inc"]["start"] <= self.group[dim][1]["inc"]["start"]
            if _is_ancestor(dim, other) and (earlier or self._d(other) >= self.share * self._d(dim)):
                # A more specific incident explains it, or was already open when this one began: a
                # parent drifting while a child's incident holds its baseline is most likely that
                # incident (if it is not, it reopens on its own once the child has resolved).
                return True
            campaign_vs_channel = dim[0] is None and dim[1] is not None and other[1] is None and other[0]
            if campaign_vs_channel and self._cell_explains(other[0], dim):  # part of a visible channel's drop
                return True
            if dim[1] is None and dim[0] is not None and other[0] is None and other[1] is not None:
                cell = self.peers.get((dim[0], other[1]))  # this channel's drop is a visible campaign's
                if cell is not None and deficit(cell, self.dr) >= self.share * self._d(dim) > 0:
                    return True
        return False

    def _equivalent(self, child: Dim, parent: Dim) -> bool:
        """The child is (almost) all of the parent's traffic *and* cannot be told apart from it.

        A campaign's channel × campaign cell that is the whole campaign is the campaign (the
        reporting unit). Otherwise a child with ≥ 90 % of its parent's traffic is still the
        better name when the rest of the parent (the other 10 %) has evidently not moved with
        it: a landing page that dies for the campaign carrying 93 % of a tenant's clicks is that
        campaign's incident, not the tenant's; if the rest dropped too, it is the parent's."""
        c, p = self.group[child][1], self.group[parent][1]
        return same_series(parent, child, p, c)

    def _sole_campaign(self, channel: str) -> str | None:
        """An open campaign that is (nearly) all of this channel's traffic: the better name for it."""
        expected = self.group[(channel, None)][1]["rec"][1]
        for dim in sorted(self.group, key=dim_sort_key):
            cell = self.peers.get((channel, dim[1])) if dim[0] is None and dim[1] is not None else None
            if cell is not None and cell["rec"][1] >= EQUIVALENT_SHARE * expected:
                return dim[1]
        return None

    def _broad(self, dim: Dim) -> bool:
        """In the group and not explained by a single (non-equivalent) child: the culprit level."""
        if dim not in self.group:
            return False
        if dim[0] is not None and dim[1] is not None:
            return True
        if dim[1] is None and dim[0] is not None and self._sole_campaign(dim[0]) is not None:
            return False
        return self._best_child(dim) is None

    def culprit(self, dim: Dim) -> Dim:
        """Least specific dimension that fully describes the incident this dimension is part of."""
        total: Dim = (None, None)
        channel, campaign = dim
        if self._broad(total):
            return total
        if dim == total:
            child = self._best_child(total)
            return dim if child is None else self.culprit(child)
        if campaign is None:  # channel
            sole = self._sole_campaign(channel) if channel is not None else None
            if sole is not None:
                return self.culprit((None, sole))
            child = self._best_child(dim)
            return dim if child is None else self.culprit(child)
        if channel is None:  # campaign
            for ch in sorted({c[0] for c in self.group if c[1] is None and c[0] is not None}):
                if self._broad((ch, None)) and self._cell_explains(ch, dim):
                    return ch, None  # this campaign's drop is part of a channel-wide one
            child = self._best_child(dim)
            return dim if child is None else self.culprit(child)
        # channel × campaign
        if self._broad((channel, None)):
            return channel, None
        if self._broad((None, campaign)):
            return self.culprit((None, campaign))
        return dim


# --- over one tenant's loaded dimensions (dimension key -> state) ---------------------------


def peers(dims: dict[str, dict[str, Any]], sid: str) -> dict[Dim, dict[str, Any]]:
    """The same series in every loaded dimension (open incident or not)."""
    grp, stage = sid[0], sid[2:]
    out: dict[Dim, dict[str, Any]] = {}
    for dk, st in dims.items():
        s = st[grp].get(stage)
        if s is not None:
            out[parse_dim_key(dk)] = s
    return out

def hold_overlapping(dims: dict[str, dict[str, Any]]) -> set[str]:
    """Stop learning wherever an open incident's values are mixed in.

    A campaign's drop is also in the total, its channels and its cells, and a conversion drop
    shows in the downstream volumes. Those series may not move enough to open an incident of
    their own; if they learned meanwhile, the campaign's recovery would look like a surge of
    the total. So every overlapping dimension holds the affected series (windows since the
    incident's start are not learned) until the incident is over. Returns the dimensions whose
    states changed.
    """
    holds: dict[tuple[str, str], int] = {}
    for dk, st in dims.items():
        dim = parse_dim_key(dk)
        for grp in ("v", "c"):
            for stage, s in st[grp].items():
                inc = s["inc"]
                if inc is None:
                    continue
                for odk in dims:
                    if not overlaps(dim, parse_dim_key(odk)):
                        continue
                    for osid in affected(f"{grp}:{stage}"):
                        key = (odk, osid)
                        holds[key] = min(holds.get(key, inc["start"]), inc["start"])
    touched: set[str] = set()
    for dk, st in dims.items():
        for grp in ("v", "c"):
            for stage, s in st[grp].items():
                hold = holds.get((dk, f"{grp}:{stage}"))
                if s.get("hold") != hold:
                    s["hold"] = hold
                    touched.add(dk)
    return touched

def launch_explained(
    dims: dict[str, dict[str, Any]], dim: Dim, sid: str, dr: str, s: dict[str, Any], share: float, young_age: int,
) -> bool:
    """Do children still in warm-up (new campaigns / channels) account for the shift?

    Removing their counts from the parent's recent observed (and, for conversions, their
    share of the expected), what is left of the deficit must be ≤ 1 − share of it.
    """
    total_def = deficit(s, dr)
    if total_def <= 0 or (dim[0] is not None and dim[1] is not None):
        return False
    po, pe, pn = s["rec"]
    conv = sid[0] == "c"
    same = peers(dims, sid)
    kinds = ("channel", "campaign") if dim == (None, None) else ("cell",)
    for kind in kinds:
        yo = yn = 0.0
        for child, cs in same.items():
            # young = still in warm-up, and appeared after the parent was established
            if not is_child(dim, child) or cs["age"] >= young_age or s["age"] - cs["age"] < young_age:
                continue
            if child[0 if kind == "campaign" else 1] is not None:  # only this kind of child
                continue
            yo += cs["seen"][0]
            yn += cs["seen"][1]
        if yo <= 0 and yn <= 0:
            continue
        exp_left = pe * max(0.0, pn - yn) / pn if conv and pn > 0 else pe
        left = (exp_left - (po - yo)) if dr == "d" else ((po - yo) - exp_left)
        if left <= (1.0 - share) * total_def:
            return True
    return False

def stage_hidden(dims: dict[str, dict[str, Any]], dk: str, sid: str, dr: str) -> bool:
    """A consequence of an incident upstream in the same dimension is not a separate incident."""
    st = dims[dk]
    conv, stage_from, _ = sid_parts(sid)
    k = STAGE_INDEX[stage_from]
    if conv:
        up = st["v"].get(stage_from)
        return up is not None and up["inc"] is not None and up["inc"]["dir"] != dr
    for stage, s in st["v"].items():
        if STAGE_INDEX[stage] < k and s["inc"] is not None and s["inc"]["dir"] == dr:
            return True
    for stage, s in st["c"].items():
        if STAGE_INDEX[stage] + 1 <= k and s["inc"] is not None and s["inc"]["dir"] == dr:
            return True
    return False

def building(dims: dict[str, dict[str, Any]], dim: Dim, sid: str, dr: str, s: dict[str, Any], share: float) -> bool:
    """Is a related series (not yet open) accumulating evidence that would take this alert over?

    A total or channel waits for a child whose deficit would explain it; a channel × campaign
    waits for its campaign when it makes up most of the campaign's deficit (the campaign is
    the reporting unit). The related series usually has fewer counts, so it is a little slower.
    """
    grp, stage = sid[0], sid[2:]
    mine = deficit(s, dr)
    if mine <= 0:
        return False
    for dk, st in dims.items():
        other = parse_dim_key(dk)
        os_ = st[grp].get(stage)
        if os_ is None or os_["inc"] is not None or os_["c" + dr] <= 0:
            continue
        if (
            dim[1] is None and is_child(dim, other) and deficit(os_, dr) >= share * mine
            and not same_series(dim, other, s, os_)
        ):
            return True
        if (
            dim[0] is not None and dim[1] is not None and other == (None, dim[1])
            and s["rec"][1] >= EQUIVALENT_SHARE * os_["rec"][1]
        ):
            return True
    return False
