from __future__ import annotations

import copy

from hypothesis import given, settings
from hypothesis import strategies as st

from streams.core.dedup import DedupWindow, SourceOffsets
from streams.core.model import Touchpoint
from streams.core.pipeline import Pipeline
from streams.core.state import MemoryStore


def test_duplicates_within_window_are_seen() -> None:
    d = DedupWindow(MemoryStore(), window_ms=60_000)
    assert not d.seen("t", "e1", 1_000)
    assert d.seen("t", "e1", 1_000)
    assert d.seen("t", "e1", 50_000)  # same id, other time: still a duplicate
    assert not d.seen("u", "e1", 1_000)  # ids are per tenant


def test_expiry_forgets_old_ids_only_for_that_tenant() -> None:
    d = DedupWindow(MemoryStore(), window_ms=60_000)
    d.seen("t", "old", 0)
    d.seen("u", "other", 0)
    d.seen("t", "new", 200_000)
    removed = d.expire("t", 200_000)
    assert removed == 1
    assert not d.seen("t", "old", 0)  # forgotten: would now count as new
    assert d.seen("u", "other", 0)
    assert d.seen("t", "new", 200_000)


def test_segments_are_written_once_per_batch_and_rebuild_restores() -> None:
    store = MemoryStore()
    d = DedupWindow(store, window_ms=60_000)
    for i in range(5):
        d.seen("t", f"e{i}", 1_000)
    dirty = store.drain_dirty()
    assert len(dirty) == 1 and dirty[0][1] == [f"e{i}" for i in range(5)]
    d.seal()
    d.seen("t", "e9", 1_000)
    dirty = store.drain_dirty()
    assert len(dirty) == 1 and dirty[0][1] == ["e9"]  # a new segment, the sealed one untouched
    copy = MemoryStore()
    for k, v in store.items():
        copy.load(k, v)
    d2 = DedupWindow(copy, window_ms=60_000)
    assert all(d2.seen("t", f"e{i}", 1_000) for i in (0, 1, 2, 3, 4, 9))
    assert not d2.seen("t", "e10", 1_000)


# --- re-deliveries by source position -------------------------------------------------------

MIN = 60_000


def test_source_offsets_track_the_highest_applied_per_tenant_and_partition() -> None:
    s = SourceOffsets(MemoryStore())
    assert not s.replayed("t", ("raw", 0, 5))
    s.applied("t", ("raw", 0, 5))
    assert s.replayed("t", ("raw", 0, 5)) and s.replayed("t", ("raw", 0, 3))
    assert not s.replayed("t", ("raw", 0, 6)) and not s.replayed("t", ("raw", 1, 0))
    assert not s.replayed("u", ("raw", 0, 1))
    s.applied("t", ("raw", 0, 2))  # never moves back
    assert not s.replayed("t", ("raw", 0, 6))
    assert not s.replayed("t", ("file", -1, -1))  # no source position: nothing to say


def tp(i: int, at: int, offset: int, person: str = "p") -> Touchpoint:
    return Touchpoint(event_id=f"e{i}", tenant_id="t", occurred_at=at, channel="web", type="page_view",
                      identities={"anonymous_id": person}, source=("raw", 0, offset))


def test_a_redelivery_older_than_the_id_window_is_not_applied_twice() -> None:
    p = Pipeline()
    events = [tp(i, i * 20 * MIN, i) for i in range(10)]  # 20 min apart: past the 15 min id window
    for e in events:
        p.process(e)
        p.tick(e.occurred_at, wall=False)
    first = p.drain()
    for e in events[2:]:  # validate re-publishes from an old commit
        p.process(e)
    again = p.drain()
    assert len(first.enriched) == 10 and again.enriched == [] and again.duplicates == 8


def test_a_restarted_raw_partition_with_new_events_is_not_mistaken_for_a_replay() -> None:
    p = Pipeline()
    for i in range(5):
        p.process(tp(i, i * 1000, 100 + i))
    p.process(tp(99, 6000, 0))  # offset below the high mark, but a new id inside the window
    assert len(p.drain().enriched) == 6


@settings(max_examples=60, deadline=None)
@given(st.lists(st.sampled_from([1000, 60_000, 20 * MIN, 40 * MIN]), min_size=5, max_size=40),
       st.data())
def test_crash_and_redelivery_from_any_earlier_point_changes_nothing(gaps: list[int], data: st.DataObject) -> None:
    """Process all; or process a prefix, keep the state of an earlier batch end (the last
    persisted one), and re-deliver from an even earlier offset (the last commit of validate):
    the union of what was emitted is the same events and sessions."""
    at, events = 0, []
    for i, gap in enumerate(gaps):
        at += gap
        events.append(tp(i, at, i, person=f"p{i % 3}"))
    n = len(events)

    def run(p: Pipeline, evs: list[Touchpoint]) -> tuple[set[str], set[str]]:
        for e in evs:
            p.process(e)
            p.tick(e.occurred_at, wall=False)
            p.end_batch()
        out = p.drain()
        return {e["event_id"] for e in out.enriched}, {s["session_id"] for s in out.sessions}

    whole = Pipeline()
    want_events, want_sessions = run(whole, events)
    persisted = data.draw(st.integers(0, n), label="state persisted after event")
    crashed = data.draw(st.integers(persisted, n), label="crash after event")
    replay_from = data.draw(st.integers(0, persisted), label="validate re-publishes from")
    p1 = Pipeline()
    got_events, got_sessions = run(p1, events[:persisted])
    stores = {ns: copy.deepcopy(st_) for ns, st_ in p1.stores.items()}
    more_events, more_sessions = run(p1, events[persisted:crashed])  # emitted, state lost with the crash
    p2 = Pipeline(stores=stores)
    p2.rebuild()
    last_events, last_sessions = run(p2, events[replay_from:])
    assert got_events | more_events | last_events == want_events == {e.event_id for e in events}
    assert got_sessions | more_sessions | last_sessions == want_sessions
    assert len(want_events) == n


def test_a_stale_segment_left_by_a_previous_owner_does_not_extend_the_window() -> None:
    """A segment from long ago survives in the changelog (written by the previous owner after
    its successor read the state, so nobody expired it). After a reload it must not make the
    window claim to remember everything since: re-deliveries from the hours in between are
    still recognised by their source offsets."""
    p = Pipeline()
    events = [tp(i, i * 20 * MIN, i) for i in range(10)]
    for e in events:
        p.process(e)
        p.tick(e.occurred_at, wall=False)
        p.end_batch()
    p.drain()
    stores = {ns: copy.deepcopy(st_) for ns, st_ in p.stores.items()}
    stores["dedup"].put(f"t|{events[1].occurred_at}|9999", ["zombie"])  # the stale segment
    restored = Pipeline(stores=stores)
    restored.rebuild()
    assert not restored.dedup.remembers("t", events[2].occurred_at)
    for e in events[2:]:  # validate re-publishes from an old commit
        restored.process(e)
    again = restored.drain()
    assert again.enriched == [] and again.sessions == [] and again.duplicates == 8
