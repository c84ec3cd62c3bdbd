"""StateBridge: once-per-key writes, partition choice, and completing a half-written batch."""

from __future__ import annotations

import tracemalloc
from types import SimpleNamespace
from typing import Any

import orjson
from aiokafka.partitioner import DefaultPartitioner

from streams.app.statestore import SEP, WAL, StateBridge, partition_for, right_sized
from streams.core.state import MemoryStore


class ChangelogTable:
    """Stands in for a Faust table (a data dict) and for the sender that records its changelog, in send order."""

    def __init__(self) -> None:
        self.data: dict[bytes, Any] = {}
        self.log: list[tuple[int, bytes, bytes | None]] = []
        self.changelog_topic = SimpleNamespace(get_topic_name=lambda: "app-state-changelog")

    def add(self, topic: str, key: bytes, value: bytes | None, partition: int | None = None) -> None:
        assert topic == "app-state-changelog" and partition is not None
        self.log.append((partition, key, value))

    def replay(self, upto: int) -> dict[bytes, Any]:
        """What Faust recovery rebuilds from the first `upto` changelog messages."""
        out: dict[bytes, Any] = {}
        for _, key, value in self.log[:upto]:
            if value is None:
                out.pop(key, None)
            else:
                out[key] = value
        return out


def stores() -> dict[str, MemoryStore]:
    return {"a": MemoryStore("a"), "b": MemoryStore("b")}


def test_partition_matches_the_kafka_default_partitioner() -> None:
    part = DefaultPartitioner()
    for tenant in ("acme", "globex-travel", "t1", "ü"):
        assert partition_for(tenant, 8) == part(tenant.encode(), list(range(8)), list(range(8)))


def test_each_changed_key_written_once_per_flush_after_one_delta_record() -> None:
    table, st = ChangelogTable(), stores()
    bridge = StateBridge(table, st, partitions=4)
    for i in range(3):
        st["a"].put("acme|x", i)  # three changes, one key
    st["b"].put("acme|y", {"v": 1})
    assert bridge.flush(table) == 2
    p = partition_for("acme", 4)
    assert [k for _, k, _ in table.log] == [f"{WAL}{SEP}{p}{SEP}0".encode(), f"a{SEP}acme|x".encode(),
                                             f"b{SEP}acme|y".encode()]
    assert {part for part, _, _ in table.log} == {p}
    assert bridge.flush(table) == 0  # nothing dirty, nothing written


def test_reload_completes_a_batch_cut_in_half_by_a_crash() -> None:
    table, st = ChangelogTable(), stores()
    bridge = StateBridge(table, st, partitions=1)
    st["a"].put("acme|x", 1)
    st["b"].put("acme|y", 1)
    bridge.flush(table)
    st["a"].put("acme|x", 2)
    st["b"].put("acme|y", 2)
    bridge.flush(table)
    # crash after the second delta record and its first key: the last key never reached Kafka
    recovered = ChangelogTable()
    recovered.data = table.replay(len(table.log) - 1)
    assert orjson.loads(recovered.data[f"b{SEP}acme|y".encode()]) == 1  # stale without the delta
    fresh = stores()
    StateBridge(recovered, fresh, partitions=1).reload([0])
    assert fresh["a"].get("acme|x") == 2 and fresh["b"].get("acme|y") == 2
    assert fresh["a"].drain_dirty() == [] and fresh["b"].drain_dirty() == []


def test_reload_keeps_only_owned_partitions() -> None:
    table, st = ChangelogTable(), stores()
    bridge = StateBridge(table, st, partitions=8)
    tenants = [f"t{i}" for i in range(20)]
    for t in tenants:
        st["a"].put(f"{t}|k", t)
    bridge.flush(table)
    table.data = table.replay(len(table.log))
    owned = {partition_for("t3", 8)}
    fresh = stores()
    StateBridge(table, fresh, partitions=8).reload(owned)
    assert {k for k, _ in fresh["a"].items()} == {f"{t}|k" for t in tenants if partition_for(t, 8) in owned}


def test_large_batches_split_the_delta_and_an_incomplete_delta_is_ignored(monkeypatch: Any) -> None:
    import streams.app.statestore as ss

    monkeypatch.setattr(ss, "WAL_PART_BYTES", 200)
    table, st = ChangelogTable(), stores()
    bridge = StateBridge(table, st, partitions=1)
    for i in range(20):
        st["a"].put(f"acme|k{i}", "v1")
    bridge.flush(table)
    for i in range(20):
        st["a"].put(f"acme|k{i}", "v2")
    bridge.flush(table)
    second = [i for i, (_, k, _) in enumerate(table.log) if k.startswith(WAL.encode())][-1]  # last part of batch 2
    parts = [k for _, k, _ in table.log if k.startswith(WAL.encode())]
    assert len(parts) > 2  # both batches needed several parts
    # 1) crash after all parts of batch 2 and one key: recovery completes batch 2
    whole = ChangelogTable()
    whole.data = table.replay(second + 2)
    fresh = stores()
    StateBridge(whole, fresh, partitions=1).reload([0])
    assert {v for _, v in fresh["a"].items()} == {"v2"}
    # 2) crash in the middle of batch 2's parts: no key of batch 2 was written; batch 1 stands
    first_part_of_2 = next(i for i, (_, k, v) in enumerate(table.log)
                           if k.startswith(WAL.encode()) and orjson.loads(v)["seq"] == 2)
    cut = ChangelogTable()
    cut.data = table.replay(first_part_of_2 + 1)
    fresh = stores()
    StateBridge(cut, fresh, partitions=1).reload([0])
    assert {v for _, v in fresh["a"].items()} == {"v1"}


def test_values_the_table_keeps_cost_their_size_not_the_serializers_buffer() -> None:
    """orjson hands back its whole write buffer (~4 KB for a 300-byte value); the table keeps one
    value per state key for the worker's lifetime, so each is kept as a right-sized copy."""
    table, st = ChangelogTable(), stores()
    bridge = StateBridge(table, st, partitions=4)
    for i in range(2000):
        st["a"].put(f"acme|k{i}", {"text": "x" * 200, "i": i})
    tracemalloc.start()
    try:
        bridge.flush(table)
        table.data = table.replay(len(table.log))  # what a memory store holds: the values as flushed
        kept, _ = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    payload = sum(len(v) for _, _, v in table.log if v is not None)  # delta record + key records
    assert kept < 2 * payload, (kept, payload)
    assert right_sized(b'{"a":1}') == b'{"a":1}'
