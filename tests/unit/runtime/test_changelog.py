"""The changelog: once-per-key writes, the batch record and the position, and restore after a cut.

The property that matters: wherever a crash cuts the changelog, the restored state is exactly
the state after some batch *k*, and the restored position is batch *k*'s position (state and
input position restore together); *k* is the last batch whose record was complete.
"""

from __future__ import annotations

from typing import Any

import orjson
from hypothesis import given, settings
from hypothesis import strategies as st

import streams.runtime.changelog as cl
from streams.core.state import MemoryStore
from streams.runtime.changelog import POS, SEP, WAL, ChangelogWriter, apply_changelog

TOPIC = "app-state-changelog"


class Log:
    """Stands in for the sender: records what would reach the changelog partition, in order."""

    def __init__(self) -> None:
        self.records: list[tuple[bytes, bytes | None]] = []
        self.pending = 0

    def add(self, topic: str, key: bytes, value: bytes | None, partition: int | None = None,
            timestamp_ms: int | None = None) -> None:
        assert topic == TOPIC and partition == 3
        self.records.append((key, value))

    def latest(self, upto: int | None = None) -> dict[bytes, bytes | None]:
        """What a compacting reader keeps of the first ``upto`` records: the last value per key."""
        out: dict[bytes, bytes | None] = {}
        for key, value in self.records[:upto]:
            out[key] = value
        return out


def stores() -> dict[str, MemoryStore]:
    return {"a": MemoryStore("a"), "b": MemoryStore("b")}


def snapshot(s: dict[str, MemoryStore]) -> dict[str, dict[str, Any]]:
    return {ns: dict(store.items()) for ns, store in s.items()}


def test_each_changed_key_once_after_the_batch_record_and_the_position_last() -> None:
    log, s = Log(), stores()
    writer = ChangelogWriter(TOPIC, 3, s)
    for i in range(3):
        s["a"].put("acme|x", i)  # three changes, one key
    s["b"].put("acme|y", {"v": 1})
    assert writer.queue(log, position=42) == 2  # type: ignore[arg-type]
    keys = [k for k, _ in log.records]
    assert keys == [f"{WAL}{SEP}3{SEP}1{SEP}0".encode(), f"a{SEP}acme|x".encode(), f"b{SEP}acme|y".encode(),
                    f"{POS}{SEP}3".encode()]
    batch = orjson.loads(log.records[0][1])
    assert batch["seq"] == 1 and batch["pos"] == 42 and batch["parts"] == 1
    assert orjson.loads(log.records[-1][1]) == {"seq": 1, "pos": 42}
    log.records.clear()
    assert writer.queue(log, position=50) == 0  # nothing changed: only the position moves
    assert [k for k, _ in log.records] == [f"{POS}{SEP}3".encode()]


def test_restore_gives_state_and_position_together_and_completes_a_cut_batch() -> None:
    log, s = Log(), stores()
    writer = ChangelogWriter(TOPIC, 3, s)
    s["a"].put("acme|x", 1)
    s["b"].put("acme|y", 1)
    writer.queue(log, 10)  # type: ignore[arg-type]
    s["a"].put("acme|x", 2)
    s["b"].put("acme|y", 2)
    writer.queue(log, 20)  # type: ignore[arg-type]
    # crash after batch 2's record and its first key: the second key and the position never landed
    fresh = stores()
    restored = apply_changelog(log.latest(len(log.records) - 2), 3, fresh)
    assert fresh["a"].get("acme|x") == 2 and fresh["b"].get("acme|y") == 2
    assert restored.position == 20 and restored.seq == 2
    # the cut batch's keys are written again by the next checkpoint, so the log heals
    assert fresh["a"].drain_dirty() == [("acme|x", 2)] and fresh["b"].drain_dirty() == [("acme|y", 2)]
    whole = stores()
    apply_changelog(log.latest(), 3, whole)  # a batch that reached its position record: not a change
    assert whole["a"].drain_dirty() == [] and whole["b"].drain_dirty() == []


def test_an_older_batch_record_is_never_re_applied_over_newer_keys() -> None:
    """A batch that changed nothing writes no batch record: the slot still holds an older one,
    and re-applying it would put back values that later batches changed."""
    log, s = Log(), stores()
    writer = ChangelogWriter(TOPIC, 3, s)
    s["a"].put("acme|x", "old")
    writer.queue(log, 5)  # type: ignore[arg-type]
    writer.queue(log, 6)  # type: ignore[arg-type]  # no change, position only
    fresh = stores()
    assert apply_changelog(log.latest(), 3, fresh).position == 6
    assert fresh["a"].get("acme|x") == "old"


def test_other_partitions_batch_records_are_ignored_and_unknown_namespaces_skipped() -> None:
    latest = {
        f"{WAL}{SEP}1{SEP}0".encode(): b'{"seq":9,"part":0,"parts":1,"pos":99,"changes":[["a","k",1]]}',
        f"gone{SEP}acme|k".encode(): b"1",
        f"a{SEP}acme|z".encode(): b'"v"',
        f"a{SEP}acme|deleted".encode(): None,
    }
    fresh = stores()
    restored = apply_changelog(latest, 3, fresh)
    assert restored.position is None and restored.seq == 0 and restored.keys == 1
    assert snapshot(fresh) == {"a": {"acme|z": "v"}, "b": {}}


def test_a_changelog_written_before_positions_existed_restores_without_one() -> None:
    """Changelogs of the earlier worker have batch records without ``pos`` and no position record:
    the state loads and the caller falls back to the group's committed offset."""
    latest = {
        f"{WAL}{SEP}3{SEP}0".encode(): b'{"seq":4,"part":0,"parts":1,"changes":[["a","acme|x",7]]}',
        f"a{SEP}acme|x".encode(): b"6",
    }
    fresh = stores()
    restored = apply_changelog(latest, 3, fresh)
    assert restored.position is None and restored.seq == 4 and fresh["a"].get("acme|x") == 7


BATCHES = st.lists(
    st.lists(st.tuples(st.sampled_from(["a", "b"]), st.sampled_from([f"t|k{i}" for i in range(6)]),
                       st.one_of(st.none(), st.integers(0, 9), st.text(max_size=40))), max_size=8),
    min_size=1, max_size=6,
)


@settings(max_examples=300, deadline=None)
@given(batches=BATCHES, part_bytes=st.sampled_from([40, 120, 512 * 1024]), data=st.data())
def test_any_cut_restores_the_state_and_position_of_one_whole_batch(
        batches: list[list[tuple[str, str, Any]]], part_bytes: int, data: st.DataObject) -> None:
    old = cl.WAL_PART_BYTES
    cl.WAL_PART_BYTES = part_bytes  # small parts: batch records split, so cuts fall between parts
    try:
        log, s = Log(), stores()
        writer = ChangelogWriter(TOPIC, 3, s)
        after: list[tuple[dict[str, dict[str, Any]], int | None]] = [(snapshot(s), None)]  # state, position per seq
        for i, batch in enumerate(batches):
            for ns, key, value in batch:
                if value is None:
                    s[ns].delete(key)
                else:
                    s[ns].put(key, value)
            writer.queue(log, 100 + i)  # type: ignore[arg-type]
            after.append((snapshot(s), 100 + i))
        cut = data.draw(st.integers(0, len(log.records)))
        fresh = stores()
        restored = apply_changelog(log.latest(cut), 3, fresh)
        state, position = after[restored.seq]
        assert snapshot(fresh) == state
        assert restored.position == position
        if cut == len(log.records):
            assert restored.seq == len(batches)
        # restart on the restored state, write more batches after the cut, crash again: the cut
        # batch's leftover parts must never be taken for the new batches' parts
        log.records = log.records[:cut]
        writer = ChangelogWriter(TOPIC, 3, fresh, seq=restored.last_seq)
        history = {restored.last_seq: (snapshot(fresh), restored.position)}
        for i, batch in enumerate(data.draw(BATCHES)):
            for ns, key, value in batch:
                if value is None:
                    fresh[ns].delete(key)
                else:
                    fresh[ns].put(key, value)
            writer.queue(log, 500 + i)  # type: ignore[arg-type]
            history[writer.seq] = (snapshot(fresh), 500 + i)
        cut2 = data.draw(st.integers(cut, len(log.records)))
        again = stores()
        restored2 = apply_changelog(log.latest(cut2), 3, again)
        expected = history.get(restored2.seq, after[restored2.seq] if restored2.seq < len(after) else None)
        assert expected is not None
        assert (snapshot(again), restored2.position) == expected
    finally:
        cl.WAL_PART_BYTES = old
