"""The one conversion rule (streams.core.conversion): examples a growth analyst would check by
hand, the edges of the attribution window, and that a funnel row's ``converted`` is this rule
applied to the row's window (property test against the real FunnelAggregator)."""

from __future__ import annotations

from collections import defaultdict

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from streams.core.conversion import StageFlow, attributed, cohort_flow, pool, rate
from streams.core.funnel import FunnelAggregator, FunnelConfig, dim_key
from streams.core.stages import STAGE_INDEX, STAGES
from streams.core.state import MemoryStore

W = 60_000
T0 = 1_767_225_600_000  # a window boundary
IMP, CLICK, VISIT, INTER, LEAD = (STAGE_INDEX[s] for s in ("impression", "click", "visit", "interaction", "lead"))


def flows(persons: dict[str, tuple[dict[int, set[int]], dict[int, set[int]]]], lookahead: int = 1) -> dict:
    return {f.stage: f for f in cohort_flow(persons.values(), lookahead)}


def same(marks: dict[int, set[int]]) -> tuple[dict[int, set[int]], dict[int, set[int]]]:
    """A person whose cohort marks are all their marks (the total dimension)."""
    return marks, marks


def test_rate_is_a_share_and_undefined_without_a_cohort() -> None:
    assert rate(3, 4) == 0.75
    assert rate(0, 4) == 0.0
    assert rate(None, 4) is None and rate(0, 0) is None
    assert rate(9, 4) == 1.0  # never above 100 %, whatever the caller passes


def test_the_attribution_window_is_the_same_or_the_next_windows() -> None:
    assert attributed(10, 10, 1) and attributed(10, 11, 1)
    assert not attributed(10, 12, 1) and not attributed(10, 9, 1)
    assert attributed(10, 12, 2) and attributed(10, 10, 0) and not attributed(10, 11, 0)


def test_direct_visits_are_entries_not_conversions() -> None:
    """4 clickers, 3 land; 5 visitors came directly: click→visit is 75 %, not 8/4 = 200 %."""
    persons = {f"p{i}": same({IMP: {0}, CLICK: {0}, VISIT: {0}} if i < 3 else {IMP: {0}, CLICK: {0}})
               for i in range(4)}
    persons |= {f"d{i}": same({VISIT: {0}}) for i in range(5)}
    f = flows(persons)
    assert (f["click"].persons, f["click"].converted, f["click"].conversion) == (4, 3, 0.75)
    assert (f["visit"].persons, f["visit"].from_previous, f["visit"].skipped_previous) == (8, 3, 5)
    assert f["impression"].from_previous is None and f["impression"].skipped_previous is None
    assert f["deal"].converted is None and f["deal"].conversion is None and f["deal"].next_stage is None
    assert f["click"].as_dict() == {"stage": "click", "persons": 4, "next_stage": "visit", "converted": 3,
                                    "conversion": 0.75, "from_previous": 4, "skipped_previous": 0}


def test_the_next_stage_counts_anywhere_in_the_tenant_the_cohort_only_in_its_dimension() -> None:
    """An ads click that lands on the web site converted for the ads channel."""
    ads_click = ({CLICK: {5}}, {CLICK: {5}, VISIT: {5}})  # cohort: its ads marks; anywhere: + the web visit
    f = flows({"p": ads_click})
    assert (f["click"].persons, f["click"].converted) == (1, 1)
    assert f["visit"].persons == 0  # the visit is not in the ads cohort


def test_window_edges_late_conversions_and_a_previous_stage_just_before() -> None:
    persons = {
        "next-window": same({CLICK: {3}, VISIT: {4}}),
        "too-late": same({CLICK: {3}, VISIT: {5}}),
        "visit-first": same({CLICK: {3}, VISIT: {3}}),  # order inside a window is not checked
        "visit-before": same({CLICK: {3}, VISIT: {2}}),  # a visit a window before the click: no conversion
    }
    f = flows(persons)
    assert (f["click"].persons, f["click"].converted) == (4, 2)
    assert (f["visit"].persons, f["visit"].from_previous) == (4, 2)
    assert flows(persons, lookahead=2)["click"].converted == 3


def test_a_person_counts_once_however_many_events() -> None:
    f = flows({"p": same({VISIT: {0, 1, 2, 7}, INTER: {8}})})
    assert (f["visit"].persons, f["visit"].converted) == (1, 1)  # the visit at window 7 led to it
    assert (f["interaction"].persons, f["interaction"].from_previous) == (1, 1)


def test_pooled_conversion_weights_windows_by_their_cohort() -> None:
    assert pool([(100, 50), (10, 0)]) == (110, 50)  # 45 %, not the 25 % mean of the two rates
    assert pool([(7, None), (3, 1)]) == (3, 1)  # a window that did not measure it does not dilute it
    assert pool([(7, None)]) == (0, None) and pool([]) == (0, None)
    assert pool([(2, 5)]) == (2, 2)  # capped, as rate() is


def test_negative_lookahead_is_refused() -> None:
    with pytest.raises(ValueError):
        cohort_flow([], lookahead=-1)


marks_st = st.dictionaries(st.integers(0, len(STAGES) - 1), st.sets(st.integers(0, 6), min_size=1, max_size=3),
                           max_size=5)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(marks_st, marks_st), max_size=12), st.integers(0, 3))
def test_shares_stay_proportions_and_grow_with_the_window(raw: list[tuple[dict, dict]], lookahead: int) -> None:
    persons = []
    for cohort, extra in raw:
        anywhere = {s: set(cohort.get(s, set())) | extra.get(s, set()) for s in set(cohort) | set(extra)}
        persons.append((cohort, anywhere))
    narrow = cohort_flow(persons, lookahead)
    wide = cohort_flow(persons, lookahead + 1)
    for a, b in zip(narrow, wide, strict=True):
        assert a.persons == sum(1 for c, _ in persons if c.get(STAGE_INDEX[a.stage]))
        assert a.converted is None or 0 <= a.converted <= a.persons
        assert a.conversion is None or 0 <= a.conversion <= 1
        assert a.from_previous is None or 0 <= a.from_previous <= a.persons
        assert a.skipped_previous is None or a.skipped_previous >= 0
        assert (a.converted or 0) <= (b.converted or 0) and (a.from_previous or 0) <= (b.from_previous or 0)


events_st = st.lists(
    st.tuples(
        st.integers(0, 5),  # person
        st.sampled_from(STAGES),
        st.sampled_from(["web", "ads"]),
        st.sampled_from([None, "c1"]),
        st.integers(0, 4 * W - 1),  # time offset
    ),
    max_size=50,
)


@settings(max_examples=200, deadline=None)
@given(events_st)
def test_funnel_rows_converted_is_the_rule_applied_to_one_window(events: list[tuple]) -> None:
    """Every row the funnel emits (each dimension, each window) equals cohort_flow over that
    window's cohort, the next stage looked up in the whole tenant."""
    f = FunnelAggregator(MemoryStore(), FunnelConfig(window_ms=W))
    anywhere: dict[str, dict[int, set[int]]] = defaultdict(lambda: defaultdict(set))
    cohorts: dict[tuple, dict[str, dict[int, set[int]]]] = defaultdict(lambda: defaultdict(lambda: defaultdict(set)))
    for person, stage, channel, campaign, offset in sorted(events, key=lambda e: e[4]):
        at = T0 + offset
        assert f.observe("t", f"p{person}", stage, channel, campaign, at)
        win = at // W
        anywhere[f"p{person}"][STAGE_INDEX[stage]].add(win)
        dims = [(None, None), (channel, None)] + ([(None, campaign), (channel, campaign)] if campaign else [])
        for dim in dims:
            cohorts[(win, dim_key(*dim))][f"p{person}"][STAGE_INDEX[stage]].add(win)
    rows = f.close_all()
    assert rows or not events
    for r in rows:
        cohort = cohorts[(r["window_start"] // W, dim_key(r["channel"], r["campaign"]))]
        expected = {fl.stage: fl for fl in cohort_flow(((m, anywhere[p]) for p, m in cohort.items()),
                                                       f.config.conversion_lookahead_windows)}
        flow: StageFlow = expected[r["stage"]]
        assert (r["persons"], r["converted"]) == (flow.persons, flow.converted), r
