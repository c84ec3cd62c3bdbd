"""Funnel windows: counts per dimension, lateness, overflow, ordering, persistence (+ a property test)."""

from __future__ import annotations

import json
from collections import defaultdict
from itertools import pairwise

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from streams.core.funnel import OTHER_CAMPAIGN, FunnelAggregator, FunnelConfig
from streams.core.stages import STAGE_INDEX, STAGES
from streams.core.state import MemoryStore

W = 60_000
T0 = 1_767_225_600_000  # 2026-01-01T00:00:00Z, a window boundary


def table(rows: list[dict]) -> dict[tuple, tuple[int, int]]:
    return {(r["window_start"], r["channel"], r["campaign"], r["stage"]): (r["events"], r["persons"])
            for r in rows}


def test_counts_events_and_distinct_persons_for_every_dimension() -> None:
    f = FunnelAggregator(MemoryStore())
    assert f.observe("t", "p1", "click", "ads", "spring", T0 + 1)
    assert f.observe("t", "p1", "click", "ads", "spring", T0 + 2)  # same person: 2 events, 1 person
    assert f.observe("t", "p2", "click", "web", "spring", T0 + 3)
    assert f.observe("t", "p3", "visit", "web", None, T0 + 4)
    rows = f.advance("t", T0 + W)
    assert set(rows[0]) == {
        "tenant_id", "window_start", "window_end", "channel", "campaign", "stage", "events", "persons",
        "converted",
    }
    assert all(r["tenant_id"] == "t" and r["window_end"] == T0 + W for r in rows)
    assert table(rows) == {
        (T0, None, None, "click"): (3, 2),
        (T0, None, None, "visit"): (1, 1),
        (T0, "ads", None, "click"): (2, 1),
        (T0, "web", None, "click"): (1, 1),
        (T0, "web", None, "visit"): (1, 1),
        (T0, None, "spring", "click"): (3, 2),
        (T0, "ads", "spring", "click"): (2, 1),
        (T0, "web", "spring", "click"): (1, 1),
    }  # no campaign → only total and channel; no row with events == 0


def test_rows_are_ordered_total_channel_campaign_cell_then_stage() -> None:
    f = FunnelAggregator(MemoryStore())
    f.observe("t", "p", "lead", "web", "b", T0)
    f.observe("t", "p", "click", "ads", "a", T0)
    f.observe("t", "p", "impression", "web", "a", T0 + W)
    rows = f.advance("t", T0 + 2 * W)
    keys = [(r["window_start"], r["channel"], r["campaign"], r["stage"]) for r in rows]
    assert keys == [
        (T0, None, None, "click"), (T0, None, None, "lead"),
        (T0, "ads", None, "click"), (T0, "web", None, "lead"),
        (T0, None, "a", "click"), (T0, None, "b", "lead"),
        (T0, "ads", "a", "click"), (T0, "web", "b", "lead"),
        (T0 + W, None, None, "impression"), (T0 + W, "web", None, "impression"),
        (T0 + W, None, "a", "impression"), (T0 + W, "web", "a", "impression"),
    ]


def test_window_closes_when_watermark_passes_its_end_and_late_events_are_refused() -> None:
    f = FunnelAggregator(MemoryStore())
    f.observe("t", "p1", "click", "ads", None, T0 + 10)
    assert f.advance("t", T0 + W - 1) == []  # not yet passed
    assert len(f.advance("t", T0 + W)) == 2  # end reached: closed (total + channel)
    assert not f.observe("t", "p2", "click", "ads", None, T0 + 59_999)  # late: not counted
    assert f.observe("t", "p2", "click", "ads", None, T0 + W)  # next window still open
    assert f.advance("t", T0 + W) == []  # idempotent
    assert table(f.advance("t", T0 + 2 * W))[(T0 + W, None, None, "click")] == (1, 1)


def test_tenants_have_their_own_watermark() -> None:
    f = FunnelAggregator(MemoryStore())
    f.observe("a", "p", "click", "web", None, T0)
    f.observe("b", "p", "click", "web", None, T0)
    assert {r["tenant_id"] for r in f.advance("a", T0 + 10 * W)} == {"a"}
    assert f.observe("b", "q", "click", "web", None, T0 + 1)  # b's window is still open
    assert not f.observe("a", "q", "click", "web", None, T0 + 1)


def test_campaign_overflow_folds_into_other_per_window() -> None:
    f = FunnelAggregator(MemoryStore(), FunnelConfig(max_campaigns_per_tenant_window=2))
    for i, name in enumerate(["c1", "c2", "c3", "c4", "c1"]):
        f.observe("t", f"p{i}", "click", "web", name, T0)
    f.observe("t", "px", "click", "web", "c3", T0 + W)  # a new window admits new names again
    rows = table(f.advance("t", T0 + 2 * W))
    assert rows[(T0, None, "c1", "click")] == (2, 2)
    assert rows[(T0, None, OTHER_CAMPAIGN, "click")] == (2, 2)
    assert rows[(T0, "web", OTHER_CAMPAIGN, "click")] == (2, 2)
    assert (T0, None, "c3", "click") not in rows
    assert rows[(T0 + W, None, "c3", "click")] == (1, 1)


def persisted_copy(store: MemoryStore) -> MemoryStore:
    """What a successor reads from the changelog (values through JSON, as persisted)."""
    copy = MemoryStore()
    for k, v in store.items():
        copy.load(k, json.loads(json.dumps(v)))
    return copy


def restored_copy(store: MemoryStore) -> FunnelAggregator:
    return FunnelAggregator(persisted_copy(store))


def test_state_is_json_persisted_as_one_segment_per_window_and_batch_and_rebuild_restores_it() -> None:
    store = MemoryStore()
    f = FunnelAggregator(store)
    for i in range(5):
        f.observe("tx", f"p{i % 3}", "visit", "web", "spring", T0 + i)
    f.observe("tx", "p9", "lead", "web", "spring", T0 + W)
    dirty = dict(store.drain_dirty())
    assert set(dirty) == {f"tx|w|{T0}|0", f"tx|w|{T0 + W}|1"}  # one segment per open window
    total = dirty[f"tx|w|{T0}|0"]["d"]['[null,null]']["visit"]
    assert total == [5, ["p0", "p1", "p2"]]
    f.seal()
    f.observe("tx", "p1", "visit", "web", "spring", T0 + 9)  # next batch: a new segment, increments only
    dirty = dict(store.drain_dirty())
    assert set(dirty) == {f"tx|w|{T0}|2"}
    assert dirty[f"tx|w|{T0}|2"]["d"]['[null,null]']["visit"] == [1, []]
    assert dirty[f"tx|w|{T0}|2"]["c"] == []
    restored = restored_copy(store)
    assert restored.open_windows("tx") == [T0, T0 + W]
    assert restored.advance("tx", T0 + 5 * W) == f.advance("tx", T0 + 5 * W)
    assert not any("|w|" in k for k, _ in store.items())  # closed windows are deleted, every segment


def test_a_batch_writes_what_it_added_not_the_whole_window() -> None:
    """The changelog cost of a batch must not grow with the window (it once rewrote all of it)."""
    store = MemoryStore()
    f = FunnelAggregator(store)
    for i in range(20_000):
        f.observe("t", f"p{i:06d}", "visit", "web", "spring", T0 + i % W)
    store.drain_dirty()
    f.seal()
    f.observe("t", "p999999", "visit", "web", "spring", T0 + 5)
    ((_, value),) = store.drain_dirty()
    assert len(json.dumps(value)) < 300


def test_a_window_of_the_earlier_whole_window_layout_merges_with_new_segments() -> None:
    store = MemoryStore()
    store.load(f"t|w|{T0}", {"c": ["spring"], "d": {'[null,null]': {"visit": [2, ["a", "b"]]},
                                                     '[null,"spring"]': {"visit": [2, ["a", "b"]]}}})
    f = FunnelAggregator(store)
    f.observe("t", "b", "visit", "web", "spring", T0 + 1)
    f.observe("t", "c", "visit", "web", "spring", T0 + 2)
    rows = table(f.advance("t", T0 + W))
    assert rows[(T0, None, None, "visit")] == (4, 3)
    assert rows[(T0, None, "spring", "visit")] == (4, 3)
    assert rows[(T0, "web", "spring", "visit")] == (2, 2)
    assert not any("|w|" in k for k, _ in store.items())


def test_a_leftover_segment_of_a_closed_window_is_dropped_not_published_again() -> None:
    store = MemoryStore()
    f = FunnelAggregator(store)
    f.observe("t", "a", "visit", "web", None, T0 + 1)
    assert f.advance("t", T0 + W)
    # a previous owner finished a batch into the closed window after our state was read
    store.load(f"t|w|{T0}|99", {"c": [], "d": {'[null,null]': {"visit": [1, ["z"]]}}})
    restored = FunnelAggregator(store)
    assert restored.open_windows("t") == []
    assert restored.advance("t", T0 + 3 * W) == []
    assert f"t|w|{T0}|99" not in store
    assert restored.observe("t", "b", "visit", "web", None, T0 + 3 * W + 1)  # and its seq is not reused
    assert any(k.endswith("|100") for k, _ in store.items())


def test_close_all_closes_every_tenant_and_later_events_are_late() -> None:
    f = FunnelAggregator(MemoryStore())
    f.observe("b", "p", "click", "web", None, T0 + W)
    f.observe("a", "p", "click", "web", None, T0)
    rows = f.close_all()
    assert [r["tenant_id"] for r in rows] == ["a", "a", "b", "b"]
    assert not f.observe("a", "p", "click", "web", None, T0 + 1)
    assert f.close_all() == []


def test_unknown_stage_is_rejected() -> None:
    with pytest.raises(ValueError):
        FunnelAggregator(MemoryStore()).observe("t", "p", "purchase", "web", None, T0)


events_st = st.lists(
    st.tuples(
        st.integers(0, 5),  # person
        st.sampled_from(STAGES),
        st.sampled_from(["web", "ads"]),
        st.sampled_from([None, "c1", "c2", "c3"]),
        st.integers(0, 5 * W - 1),  # offset
        st.integers(0, 3),  # 0 = advance the watermark to this event's time minus lateness, else observe
    ),
    max_size=60,
)


@settings(max_examples=150, deadline=None)
@given(events_st)
def test_matches_a_naive_model_with_lateness_and_overflow(events: list[tuple]) -> None:
    """Whatever the interleaving of events and watermarks, rows equal a brute-force recount."""
    f = FunnelAggregator(MemoryStore(), FunnelConfig(max_campaigns_per_tenant_window=2))
    closed_before = None
    counted: list[tuple] = []
    rows: list[dict] = []
    for person, stage, channel, campaign, offset, op in events:
        at = T0 + offset
        if op == 0:
            wm = at - 90_000
            rows += f.advance("t", wm)
            boundary = wm - wm % W
            closed_before = boundary if closed_before is None else max(closed_before, boundary)
            continue
        accepted = f.observe("t", f"p{person}", stage, channel, campaign, at)
        start = at - at % W
        assert accepted == (closed_before is None or start >= closed_before)
        if accepted:
            counted.append((f"p{person}", stage, channel, campaign, start))
    rows += f.close_all()
    # Reference: admit campaigns per window in arrival order, fold the rest into __other__.
    admitted: dict[int, list[str]] = defaultdict(list)
    ev: dict[tuple, int] = defaultdict(int)
    ps: dict[tuple, set[str]] = defaultdict(set)
    for person, stage, channel, campaign, start in counted:
        if campaign is not None and campaign not in admitted[start]:
            if len(admitted[start]) < 2:
                admitted[start].append(campaign)
            else:
                campaign = OTHER_CAMPAIGN
        dims = [(None, None), (channel, None)]
        if campaign is not None:
            dims += [(None, campaign), (channel, campaign)]
        for ch, cm in dims:
            ev[(start, ch, cm, stage)] += 1
            ps[(start, ch, cm, stage)].add(person)
    assert table(rows) == {k: (ev[k], len(ps[k])) for k in ev}
    starts = [r["window_start"] for r in rows]
    assert starts == sorted(starts)
    for a, b in pairwise(rows):
        if all(a[k] == b[k] for k in ("window_start", "channel", "campaign")):
            assert STAGE_INDEX[a["stage"]] < STAGE_INDEX[b["stage"]]


@settings(max_examples=150, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.integers(0, 3 * W),  # event time offset
            st.sampled_from(["p1", "p2", "p3", "p4"]),
            st.sampled_from(list(STAGES)),
            st.sampled_from(["web", "ads"]),
            st.sampled_from([None, "c1", "c2", "c3"]),
            st.sampled_from(["event", "seal", "restore", "advance"]),
        ),
        max_size=60,
    )
)
def test_sealing_and_restoring_anywhere_gives_the_rows_of_an_uninterrupted_run(ops: list[tuple]) -> None:
    """Segments merged after a restart (at any batch boundary) equal the state that never stopped."""
    config = FunnelConfig(max_campaigns_per_tenant_window=2)
    plain = FunnelAggregator(MemoryStore(), config)
    store = MemoryStore()
    live = FunnelAggregator(store, config)
    rows_plain: list[dict] = []
    rows_live: list[dict] = []
    for offset, person, stage, channel, campaign, op in ops:
        if op == "event":
            assert plain.observe("t", person, stage, channel, campaign, T0 + offset) == \
                live.observe("t", person, stage, channel, campaign, T0 + offset)
        elif op == "seal":
            live.seal()
        elif op == "restore":
            live.seal()  # a restart happens after a persisted batch
            store = persisted_copy(store)
            live = FunnelAggregator(store, config)
        else:
            rows_plain += plain.advance("t", T0 + offset)
            rows_live += live.advance("t", T0 + offset)
    rows_plain += plain.close_all()
    rows_live += live.close_all()
    assert rows_live == rows_plain
