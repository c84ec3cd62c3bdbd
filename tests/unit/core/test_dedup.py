from __future__ import annotations

import copy

import orjson
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
    assert f"t|{events[1].occurred_at}|9999" not in restored.stores["dedup"]  # expired at the reload
    for e in events[2:]:  # validate re-publishes from an old commit
        restored.process(e)
    again = restored.drain()
    assert again.enriched == [] and again.sessions == [] and again.duplicates == 8


# --- the dedup floor: ids are held for every event time an event is still applied at --------

FLOOR = 5 * MIN + 15 * MIN  # allowed lateness + dedup window (the defaults)


def test_window_covers_exactly_from_the_floor_and_expiry_keeps_everything_it_covers() -> None:
    d = DedupWindow(MemoryStore(), window_ms=15 * MIN)
    for at in range(0, 120 * MIN, 7_000):
        d.seen("t", f"e{at}", at)
    wm = 100 * MIN
    d.expire("t", wm)
    assert d.covers(wm, wm - 15 * MIN) and not d.covers(wm, wm - 15 * MIN - 1)
    for at in range(0, 120 * MIN, 7_000):
        if d.covers(wm, at):
            assert d.seen("t", f"e{at}", at), at  # every id the floor vouches for is still held


def test_an_event_older_than_the_floor_is_dead_lettered_too_late_and_changes_nothing() -> None:
    p = Pipeline()
    p.process(tp(1, 60 * MIN, 1))
    p.process(tp(2, 60 * MIN - FLOOR, 2))  # exactly at the floor: applied
    before = {ns: dict(s.items()) for ns, s in p.stores.items()}
    p.process(tp(3, 60 * MIN - FLOOR - 1, 3))  # one ms older: refused
    out = p.drain()
    assert [e["event_id"] for e in out.enriched] == ["e1", "e2"]
    (letter,) = out.dead_letters
    assert letter["reason"] == "too_late" and letter["source"] == {"topic": "raw", "partition": 0, "offset": 3}
    assert orjson.loads(letter["original"])["event_id"] == "e3" and "source" not in orjson.loads(letter["original"])
    assert {ns: dict(s.items()) for ns, s in p.stores.items()} == before  # no state touched
    # a re-delivery (its raw offset was applied) that old is a duplicate, not a letter
    p.process(tp(2, 60 * MIN - FLOOR, 2))
    p.process(tp(1, 60 * MIN, 1))
    again = p.drain()
    assert again.enriched == [] and again.dead_letters == [] and again.duplicates == 2


def test_the_floor_follows_event_time_not_the_idle_fallback() -> None:
    """Live, an idle tenant's watermark follows the wall clock; expiring ids with it would forget
    ids the floor (event time) still accepts events for: a repeat would then be applied twice."""
    p = Pipeline()
    wall = 60 * MIN + 1_000
    p.process(tp(1, 60 * MIN, 1), wall_ms=wall)
    p.tick(wall + 3 * 3_600_000, wall=True)  # idle for 3 h of wall time: sessions close
    p.process(tp(1, 60 * MIN, 7), wall_ms=wall + 3 * 3_600_000)  # the producer re-sends it
    out = p.drain()
    assert [e["event_id"] for e in out.enriched] == ["e1"] and out.duplicates == 1
    assert len(out.sessions) == 1 and out.dead_letters == []


def run_offline(lines: list[bytes]) -> dict[str, list[dict]]:
    import tempfile
    from pathlib import Path

    from streams.offline import OUTPUT_FILES, run

    with tempfile.TemporaryDirectory() as tmp:
        run(lines, Path(tmp), source="feed")
        return {name: [orjson.loads(x) for x in (Path(tmp) / name).read_bytes().splitlines()]
                for name in [n for _, n in OUTPUT_FILES] + ["dlq.jsonl"]}


def event_line(i: int, at: int, person: int, tenant: str = "t") -> bytes:
    from streams.core.contract import format_timestamp

    etype = ("ad_click", "page_view", "form_submit")[i % 3]
    return orjson.dumps({"event_id": f"e{i}", "tenant_id": tenant, "occurred_at": format_timestamp(at),
                         "channel": "ads" if etype == "ad_click" else "web", "type": etype,
                         "identities": {"anonymous_id": f"a{person}"}, "campaign": {"name": "c"}})


def without_source(records: list[dict]) -> list[dict]:
    return [{k: v for k, v in r.items() if k != "source"} for r in records]


BASE = 1_767_225_600_000


@settings(max_examples=40, deadline=None)
@given(
    gaps=st.lists(st.sampled_from([1_000, 20_000, 3 * MIN, 25 * MIN]), min_size=4, max_size=40),
    data=st.data(),
)
def test_resent_events_count_once_however_late_they_come(gaps: list[int], data: st.DataObject) -> None:
    """A shuffled feed, and copies of some of its events re-sent later in the file (seconds to
    hours of event time after their original): each event is enriched at most once, in one
    session, counted once in the funnel; the outputs are exactly those of the feed without the
    copies, which only add duplicates or ``too_late`` letters."""
    at, events = BASE, []
    for i, gap in enumerate(gaps):
        at += gap
        events.append((i, at, data.draw(st.integers(0, 3), label="person")))
    order = data.draw(st.permutations(events), label="arrival order") if data.draw(st.booleans()) else events
    feed = [event_line(*e) for e in order]
    resent = feed[:]
    for _ in range(data.draw(st.integers(1, 10), label="copies")):
        i = data.draw(st.integers(0, len(feed) - 1))
        resent.insert(data.draw(st.integers(resent.index(feed[i]) + 1, len(resent))), feed[i])
    plain, noisy = run_offline(feed), run_offline(resent)

    enriched_ids = [e["event_id"] for e in noisy["enriched.jsonl"]]
    assert len(enriched_ids) == len(set(enriched_ids))
    assert sum(s["touchpoints"] for s in noisy["sessions.jsonl"]) == len(enriched_ids)
    for name in ("enriched.jsonl", "sessions.jsonl", "funnel.jsonl", "merges.jsonl", "anomalies.jsonl"):
        assert without_source(noisy[name]) == without_source(plain[name]), name
    extra = noisy["dlq.jsonl"][len(plain["dlq.jsonl"]):]
    assert all(letter["reason"] == "too_late" for letter in noisy["dlq.jsonl"])
    assert len(noisy["dlq.jsonl"]) >= len(plain["dlq.jsonl"]) and all(
        orjson.loads(x["original"])["event_id"] in {f"e{i}" for i, _, _ in events} for x in extra
    )
    # an event is either applied once or refused (every copy of it) for being older than the floor
    refused = {orjson.loads(x["original"])["event_id"] for x in plain["dlq.jsonl"]}
    assert refused.isdisjoint(enriched_ids) and len(refused) + len(enriched_ids) == len(events)
