from __future__ import annotations

from streams.core.dedup import DedupWindow
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
