"""Funnel conversion: the one definition behind the board, ``touchstream query funnel``, Grafana
and the anomaly detector (docs/funnel.md explains how to read it).

**Definition.** Conversion k→k+1 of a cohort is ``converted / persons``: of the ``persons`` who
reached stage k (in the cohort's dimension and period), the share that reached stage k+1 — on any
channel or campaign of the tenant — within the *attribution window*: the funnel window of their
stage-k event or one of the next ``lookahead`` windows (window-aligned, as
:class:`streams.core.funnel.FunnelConfig` has it: 1-minute windows, 1 window of lookahead, so
between 1 and 2 minutes). ``converted`` is a subset of ``persons``, so a conversion is a
proportion: never above 1, and binomial statistics apply (the detector relies on that).

Why not "persons at stage k+1 / persons at stage k" (what the board, ``query`` and Grafana showed
before): stage k+1 has entrants that never passed stage k (a direct or organic visit never
clicked an ad, a lead can come without an interaction), so that ratio read 468 % for
click→visit and moved with organic traffic. Those entrants are not hidden: each stage reports
``from_previous`` (persons who reached it from stage k−1 within the attribution window, the
same rule seen from the other side) and ``skipped_previous`` (the rest: a direct visit).

**One rule, three grains.** The rule is per person (:func:`attributed`). A funnel row of one
window (``streams.core.funnel``, ClickHouse ``funnel_minute.converted``) applies it to that
window's cohort; the detector watches those per-window rates. A period (the board's "last hour",
``query funnel --since``, a Grafana range) applies it to the period's cohort, each person once
(:func:`cohort_flow`; the SQL twin is :func:`streams.clickhouse.queries.cohort_funnel_sql`, tested
equal to this module). A chart bucket of several windows pools the window cohorts
(:func:`pool`: Σconverted / Σpersons — the count-weighted mean of the windows' rates, what the
detector's baseline estimates); ClickHouse's ``funnel_hourly.converted_person_minutes /
person_minutes`` is the same pooling.

Right-censoring: a cohort's last ``lookahead + 1`` windows are still converting while the data
is read, so the newest minutes of a live chart read low until the next window closes.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass

from streams.core.stages import STAGES

#: Stage index → window indexes (``at_ms // window_ms``) at which a person had an event of that stage.
Marks = Mapping[int, Collection[int]]


def rate(converted: int | None, persons: int) -> float | None:
    """``converted / persons``, the conversion of a cohort; None when it is undefined (an empty
    cohort, or the last stage, which has no next stage).

    ``converted`` larger than ``persons`` cannot come from this code (it is a subset); such an
    input is capped at 1 rather than shown as a rate above 100 %, as the detector does.
    """
    if converted is None or persons <= 0:
        return None
    return min(max(converted, 0), persons) / persons


def attributed(earlier_window: int, later_window: int, lookahead: int) -> bool:
    """Whether a stage-k+1 event in ``later_window`` follows a stage-k event in ``earlier_window``
    within the attribution window (window indexes; the order inside one window is not checked,
    as in the funnel rows: events of one minute arrive in any order)."""
    return 0 <= later_window - earlier_window <= lookahead


@dataclass(frozen=True, slots=True)
class StageFlow:
    """One stage of a cohort funnel. ``converted``/``conversion`` look forward (to the next
    stage, None for the last); ``from_previous``/``skipped_previous`` look back (None for the
    first stage, which everyone enters directly)."""

    stage: str
    persons: int
    converted: int | None
    from_previous: int | None

    @property
    def next_stage(self) -> str | None:
        i = STAGES.index(self.stage)
        return STAGES[i + 1] if i + 1 < len(STAGES) else None

    @property
    def conversion(self) -> float | None:
        return rate(self.converted, self.persons)

    @property
    def skipped_previous(self) -> int | None:
        """Persons who reached this stage without the previous one in the attribution window."""
        return None if self.from_previous is None else self.persons - self.from_previous

    def as_dict(self, digits: int = 4) -> dict[str, object]:
        conv = self.conversion
        return {
            "stage": self.stage, "persons": self.persons, "next_stage": self.next_stage,
            "converted": self.converted, "conversion": None if conv is None else round(conv, digits),
            "from_previous": self.from_previous, "skipped_previous": self.skipped_previous,
        }


def _linked(cohort: Collection[int], other: Collection[int], lookahead: int, forward: bool) -> bool:
    """Some cohort window has an ``other`` window in its attribution window (after it when
    ``forward``, before it otherwise)."""
    if not cohort or not other:
        return False
    if forward:
        return any(attributed(w, v, lookahead) for w in cohort for v in other)
    return any(attributed(v, w, lookahead) for w in cohort for v in other)


def cohort_flow(persons: Iterable[tuple[Marks, Marks]], lookahead: int = 1) -> list[StageFlow]:
    """Every stage of the funnel of a cohort, each person counted once.

    ``persons`` yields, per person, ``(cohort, anywhere)``: ``cohort`` holds the marks that put
    the person in the cohort (their events in the dimension and period looked at), ``anywhere``
    every mark of the person in the tenant around it (any dimension, and the attribution window
    before and after the period), which is where the next or previous stage is looked up.
    """
    if lookahead < 0:
        raise ValueError("lookahead must be ≥ 0")
    n = len(STAGES)
    reached = [0] * n
    converted = [0] * n
    from_prev = [0] * n
    for cohort, anywhere in persons:
        for i in range(n):
            wins = cohort.get(i)
            if not wins:
                continue
            reached[i] += 1
            if i + 1 < n and _linked(wins, anywhere.get(i + 1, ()), lookahead, forward=True):
                converted[i] += 1
            if i > 0 and _linked(wins, anywhere.get(i - 1, ()), lookahead, forward=False):
                from_prev[i] += 1
    return [
        StageFlow(stage, reached[i], converted[i] if i + 1 < n else None, from_prev[i] if i > 0 else None)
        for i, stage in enumerate(STAGES)
    ]


def pool(windows: Iterable[tuple[int, int | None]]) -> tuple[int, int | None]:
    """Several windows' ``(persons, converted)`` of one stage → the pooled cohort
    ``(Σpersons, Σconverted)``, whose :func:`rate` is the pooled conversion (each window's cohort
    weighted by its size).

    Windows that did not measure ``converted`` (None: the last stage, rows written before the
    column existed) are left out of both sums, so they cannot dilute the rate; ``converted`` is
    None when no window measured it. The stage's *volume* is the sum of all windows' persons,
    which the caller adds separately.
    """
    persons = 0
    converted: int | None = None
    for p, c in windows:
        if c is None:
            continue
        persons += p
        converted = (converted or 0) + min(max(c, 0), p)
    return persons, converted
