"""The memory store's bulk changelog read, on the real broker: last value wins, deletes hold,
offsets tell Faust where to resume, and a partition that comes back is read whole."""

from __future__ import annotations

import asyncio
import uuid

import faust
import pytest
from aiokafka import AIOKafkaProducer
from faust.types import TP

from streams.app import replaystore
from streams.app.replaystore import ReplayStore, table_store_url
from streams.kafka_admin import ensure_topics
from streams.settings import Settings

pytestmark = [pytest.mark.integration]


async def produce(bootstrap: str, topic: str, records: list[tuple[int, bytes, bytes | None]]) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
    await producer.start()
    try:
        for partition, key, value in records:
            await producer.send_and_wait(topic, value, key=key, partition=partition)
    finally:
        await producer.stop()


def test_bulk_read_restores_the_last_values_and_reports_where_faust_resumes(kafka_bootstrap: str) -> None:
    async def run() -> None:
        app_id = f"rpl{uuid.uuid4().hex[:6]}"
        replaystore.register()
        app = faust.App(app_id, store=table_store_url("memory://"))
        table = app.Table("state", key_type=bytes, value_type=bytes, partitions=2)
        store = table.data
        assert isinstance(store, ReplayStore)
        store.settings = Settings.from_env({"KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap})
        topic = table.changelog_topic.get_topic_name()
        await ensure_topics(kafka_bootstrap, [topic], 2, 1, None)
        await produce(kafka_bootstrap, topic, [
            (0, b"a", b"1"), (0, b"b", b"2"), (0, b"a", b"3"), (0, b"b", None),  # overwrite, then delete
            (1, b"c", b"4"),
        ])
        tp0, tp1, empty = TP(topic, 0), TP(topic, 1), TP(topic, 2)
        await store.on_rebalance({tp0, tp1}, set(), {tp0, tp1})
        assert dict(store.data) == {b"a": b"3", b"c": b"4"}
        assert (store.persisted_offset(tp0), store.persisted_offset(tp1)) == (3, 0)  # the last offset read
        assert store.items_in({1}) == [(b"c", b"4")]

        # p0 moves away; meanwhile its next owner deletes "a" and writes "d"
        await store.on_rebalance({tp1}, {tp0}, set())
        assert dict(store.data) == {b"c": b"4"}
        await produce(kafka_bootstrap, topic, [(0, b"a", None), (0, b"d", b"5"), (1, b"c", b"6")])
        await store.on_rebalance({tp0, tp1}, set(), {tp0})  # p0 is read whole; p1 was kept
        assert dict(store.data) == {b"c": b"4", b"d": b"5"}  # p1's new write is Faust's tail read
        assert (store.persisted_offset(tp0), store.persisted_offset(tp1)) == (5, 0)
        assert store.replayed == 5 + 6
        assert store.persisted_offset(empty) is None

    asyncio.run(run())
