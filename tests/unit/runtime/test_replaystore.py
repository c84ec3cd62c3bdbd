"""The state table's memory store: offsets it reports to Faust, partitions it keeps and drops."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any

import faust
from faust.types import TP

from streams.app import replaystore
from streams.app.replaystore import ReplayStore, table_store_url


def make_store(app_id: str = "rs") -> tuple[ReplayStore, str]:
    replaystore.register()
    app = faust.App(app_id, store=table_store_url("memory://"))
    table = app.Table("state", key_type=bytes, value_type=bytes, partitions=2)
    store = table.data
    assert isinstance(store, ReplayStore)  # memory:// is this store
    return store, table.changelog_topic.get_topic_name()


class Recording(ReplayStore):
    """Records what a rebalance asks to be read (the read itself is tested on the real broker)."""

    asked: list[list[TP]]

    async def replay(self, tps: list[TP]) -> None:
        self.asked.append(tps)
        for tp in tps:
            self._offsets[tp] = 0


def hold(store: ReplayStore, topic: str, *partitions: int) -> None:
    """The assignment a rebalance gives the store (no settings: nothing is read)."""
    tps = {TP(topic, p) for p in partitions}
    asyncio.run(store.on_rebalance(tps, set(), tps))


def change(topic: str, partition: int, offset: int, key: bytes, value: bytes | None) -> Any:
    message = SimpleNamespace(tp=TP(topic, partition), partition=partition, offset=offset, value=value)
    return SimpleNamespace(key=key, value=value, message=message)


def test_other_store_urls_go_to_faust_unchanged() -> None:
    assert table_store_url("rocksdb://") == "rocksdb://"
    assert table_store_url("memory://") == f"{replaystore.SCHEME}://"


def test_offsets_only_move_forward_and_cover_faust_batches_and_own_writes() -> None:
    store, topic = make_store()
    hold(store, topic, 0, 1)
    tp0, tp1 = TP(topic, 0), TP(topic, 1)
    assert store.persisted_offset(tp0) is None  # nothing read: Faust reads from the start
    store.apply_changelog_batch([change(topic, 0, 4, b"a", b"1"), change(topic, 0, 5, b"b", b"2"),
                                 change(topic, 1, 9, b"c", b"3")], lambda k: k, lambda v: v)
    assert (store.persisted_offset(tp0), store.persisted_offset(tp1)) == (5, 9)
    store.set_persisted_offset(tp0, 12)  # our own write acknowledged at 12
    store.set_persisted_offset(tp0, 7)  # an older report never moves it back
    assert store.persisted_offset(tp0) == 12
    store.apply_changelog_batch([change(topic, 0, 13, b"a", None)], lambda k: k, lambda v: v)  # a tombstone
    assert b"a" not in store.data and store.persisted_offset(tp0) == 13


def test_items_by_partition_and_a_revoked_partition_is_dropped_whole() -> None:
    store, topic = make_store()
    hold(store, topic, 0, 1)
    store.put(0, b"x", b"1")
    store.put(1, b"y", b"2")
    store.put(1, b"z", b"3")
    store.put(1, b"z", None)  # our own delete
    store.set_persisted_offset(TP(topic, 0), 3)
    store.set_persisted_offset(TP(topic, 1), 8)
    assert store.items_in({1}) == [(b"y", b"2")]
    assert sorted(store.items_in({0, 1})) == [(b"x", b"1"), (b"y", b"2")]
    store.drop({1})
    assert dict(store.data) == {b"x": b"1"} and store.persisted_offset(TP(topic, 1)) is None
    assert store.persisted_offset(TP(topic, 0)) == 3


def test_rebalance_reads_only_partitions_without_an_offset_and_drops_revoked_ones() -> None:
    store, topic = make_store("rs2")
    store.__class__ = Recording
    store.asked = []
    tp0, tp1 = TP(topic, 0), TP(topic, 1)
    other = TP("rs2.touchpoints.valid", 0)
    asyncio.run(store.on_rebalance({tp0, tp1, other}, set(), {tp0, tp1, other}))
    assert store.asked == [[tp0, tp1]]  # changelog partitions only
    store.put(0, b"k0", b"v")
    store.put(1, b"k1", b"v")
    asyncio.run(store.on_rebalance({tp0}, {tp1}, set()))  # p1 moved away: kept partitions are not read again
    assert store.asked == [[tp0, tp1]]
    assert dict(store.data) == {b"k0": b"v"} and store.persisted_offset(tp1) is None
    asyncio.run(store.on_rebalance({tp0, tp1}, set(), {tp1}))  # p1 back: read whole
    assert store.asked == [[tp0, tp1], [tp1]]


def test_recovery_end_keeps_actives_and_standbys_and_drops_the_rest() -> None:
    store, topic = make_store("rs3")
    hold(store, topic, 0, 1)
    for p in range(2):
        store.put(p, f"k{p}".encode(), b"v")
    asyncio.run(store.on_recovery_completed({TP(topic, 0)}, {TP(topic, 1)}))
    assert len(store.data) == 2  # Faust's memory store would drop the standby's keys
    asyncio.run(store.on_recovery_completed({TP(topic, 0)}, set()))
    assert dict(store.data) == {b"k0": b"v"}


def test_a_write_that_outlived_its_partition_is_not_kept() -> None:
    """Kept, it would make the partition look read up to its offset when it comes back, hiding
    what the next owner wrote before it."""
    store, topic = make_store("rs4")
    hold(store, topic, 0, 1)
    store.put(1, b"k1", b"v")
    store.set_persisted_offset(TP(topic, 1), 4)
    asyncio.run(store.on_rebalance({TP(topic, 0)}, {TP(topic, 1)}, set()))  # p1 moved away
    store.put(1, b"late", b"v")  # a late write of p1 after the revocation
    store.set_persisted_offset(TP(topic, 1), 9)
    assert b"late" not in store.data and store.persisted_offset(TP(topic, 1)) is None
    store.put(0, b"k0", b"v")  # partitions still held are written as usual
    assert store.items_in({0}) == [(b"k0", b"v")]
