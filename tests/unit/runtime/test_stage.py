"""A stateless stage's batch bookkeeping: what it commits, re-reads and drops on a rebalance.

The consumer here is a stand-in that records calls (the stage's Kafka behaviour end to end is
covered on the real broker by the rebalance, kill -9, outage and hostile-input tests); what is
tested is the stage's own logic: which offsets a finished batch commits, where an abandoned one
is re-read from, and that records fetched under a revoked assignment are never handled.
"""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any

from aiokafka.errors import CommitFailedError
from aiokafka.structs import TopicPartition

from streams.runtime.stage import Stage, _Listener
from streams.settings import Settings

T = "p.touchpoints.raw"


def rec(partition: int, offset: int) -> Any:
    return SimpleNamespace(topic=T, partition=partition, offset=offset, value=b"{}", key=None, timestamp=0)


class FakeConsumer:
    def __init__(self, owned: set[TopicPartition], highwater: dict[TopicPartition, int] | None = None) -> None:
        self.owned = owned
        self.commits: list[dict[TopicPartition, int]] = []
        self.seeks: list[tuple[TopicPartition, int]] = []
        self.fail_commit = False
        self.ends = highwater or {}
        self.batches: list[dict[TopicPartition, list[Any]]] = []
        self.on_fetch: Any = None

    def assignment(self) -> set[TopicPartition]:
        return set(self.owned)

    def highwater(self, tp: TopicPartition) -> int | None:
        return self.ends.get(tp)

    def seek(self, tp: TopicPartition, offset: int) -> None:
        self.seeks.append((tp, offset))

    async def commit(self, offsets: dict[TopicPartition, int]) -> None:
        if self.fail_commit:
            raise CommitFailedError("rebalanced")
        self.commits.append(dict(offsets))

    async def committed(self, tp: TopicPartition) -> int | None:
        return 7

    async def getmany(self, timeout_ms: int, max_records: int) -> dict[TopicPartition, list[Any]]:
        if self.on_fetch is not None:
            await self.on_fetch()
        if self.batches:
            return self.batches.pop(0)
        await asyncio.sleep(0.001)
        return {}


def make(handled: list[list[Any]], result: bool = True, max_records: int = 100) -> Stage:
    async def handle(records: list[Any], keep_trying: Any) -> bool:
        handled.append(records)
        return result

    return Stage(Settings.from_env({}), "validate", [T], "g-validate", handle, max_records, 0.01)


def tp(p: int) -> TopicPartition:
    return TopicPartition(T, p)


def test_a_finished_batch_commits_the_next_offset_of_each_owned_partition() -> None:
    handled: list[list[Any]] = []
    stage = make(handled)
    stage.consumer = c = FakeConsumer({tp(0), tp(1)})  # type: ignore[assignment]
    stage._pending = [rec(0, 5), rec(1, 9), rec(0, 6), rec(2, 3)]  # partition 2 moved away meanwhile
    asyncio.run(stage._flush())
    assert [r.offset for r in handled[0]] == [5, 9, 6, 3]  # in fetch order, per partition ascending
    assert c.commits == [{tp(0): 7, tp(1): 10}]
    assert stage.committed == {tp(0): 7, tp(1): 10}
    assert stage._pending == []


def test_an_abandoned_batch_commits_nothing_and_is_read_again_from_its_first_offsets() -> None:
    handled: list[list[Any]] = []
    stage = make(handled, result=False)
    stage.consumer = c = FakeConsumer({tp(0), tp(1)})  # type: ignore[assignment]
    stage._pending = [rec(0, 5), rec(1, 9), rec(0, 6)]
    asyncio.run(stage._flush())
    assert c.commits == []
    assert sorted(c.seeks) == [(tp(0), 5), (tp(1), 9)]


def test_a_refused_commit_leaves_the_committed_offsets_as_they_were() -> None:
    stage = make([])
    stage.consumer = c = FakeConsumer({tp(0)})  # type: ignore[assignment]
    c.fail_commit = True
    stage.committed = {tp(0): 3}
    stage._pending = [rec(0, 3), rec(0, 4)]
    asyncio.run(stage._flush())
    assert stage.committed == {tp(0): 3}


def test_records_fetched_before_a_revocation_are_never_handled() -> None:
    """The fetch returns while the listener holds the lock; the loop must see the new generation."""
    handled: list[list[Any]] = []
    stage = make(handled, max_records=2)
    c = FakeConsumer({tp(0)})
    stage.consumer = c  # type: ignore[assignment]
    listener = _Listener(stage)
    stale = {tp(0): [rec(0, 10), rec(0, 11)]}
    fresh = {tp(0): [rec(0, 10), rec(0, 11)]}  # re-read from the commit after the new assignment

    async def main() -> None:
        calls = 0

        async def on_fetch() -> None:
            nonlocal calls
            calls += 1
            if calls == 1:  # a rebalance starts while this fetch is out
                await listener.on_partitions_revoked([tp(0)])
                c.batches.append(fresh)  # this fetch still returns the stale batch; the next one the re-read
            if calls == 3:
                stage._stopping = True

        c.on_fetch = on_fetch
        c.batches = [stale]
        await stage._loop(c)  # type: ignore[arg-type]

    asyncio.run(main())
    assert len(handled) == 1 and [r.offset for r in handled[0]] == [10, 11]
    assert c.commits == [{tp(0): 12}]


def test_revocation_drops_what_was_fetched_but_not_handled() -> None:
    stage = make([])
    stage.consumer = FakeConsumer({tp(0), tp(1)})  # type: ignore[assignment]
    stage._pending = [rec(0, 1)]
    stage.committed = {tp(0): 1, tp(1): 4}
    asyncio.run(_Listener(stage).on_partitions_revoked([tp(0)]))
    assert stage._pending == []
    assert stage.committed == {tp(1): 4}
    assert stage.keep_trying()


def test_lag_is_the_end_minus_the_commit_of_owned_partitions() -> None:
    stage = make([])
    stage.consumer = FakeConsumer({tp(0), tp(1), tp(2)}, {tp(0): 10, tp(1): 4})  # type: ignore[assignment]
    stage.committed = {tp(0): 7}
    assert stage.lags() == {(T, 0): 3, (T, 1): 4}  # nothing committed on 1 yet; 2 not fetched yet
    asyncio.run(_Listener(stage).on_partitions_assigned([tp(1)]))
    assert stage.lags() == {(T, 0): 3, (T, 1): 0}  # the fake's committed offset (7) > end (4): clamped
