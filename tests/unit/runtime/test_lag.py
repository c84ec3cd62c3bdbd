"""The consumer watchdogs' detection, on a stand-in with the Faust consumer attributes they read."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

from faust.types import TP as TopicPartition

from streams.app.lag import stalled_partitions, unfetched_partitions
from streams.app.offsets import ReadOffsets


def consumer(assigned: set[Any], active: set[Any], paused: set[Any] = frozenset(),  # type: ignore[assignment]
             buffered: set[Any] = frozenset(), acked: dict[Any, list[int]] | None = None,  # type: ignore[assignment]
             committed: dict[Any, int] | None = None, read: ReadOffsets | None = None,
             in_flight: list[Any] = (), high: dict[Any, int] | None = None) -> Any:  # type: ignore[assignment]
    return SimpleNamespace(
        assignment=lambda: set(assigned), _get_active_partitions=lambda: set(active),
        _paused_partitions=set(paused), _buffered_partitions=set(buffered),
        _acked=acked or {}, _committed_offset=committed or {}, _read_offset=read if read is not None else ReadOffsets(),
        _unacked_messages=list(in_flight), highwater=lambda tp: (high or {}).get(tp),
    )


RAW = TopicPartition("t.touchpoints.raw", 0)
RAW1 = TopicPartition("t.touchpoints.raw", 1)
CHANGELOG = TopicPartition("t.ts-state-changelog", 0)
OTHER = TopicPartition("someone-else", 0)


def test_partitions_left_out_of_fetching_are_found_with_the_reason() -> None:
    c = consumer({RAW, RAW1, CHANGELOG, OTHER, TopicPartition("t.touchpoints.valid", 0)}, active={RAW},
                 paused={RAW1}, buffered={TopicPartition("t.touchpoints.valid", 0)})
    assert unfetched_partitions(c, "t.") == {RAW1: "paused", TopicPartition("t.touchpoints.valid", 0): "buffered"}


def test_an_assigned_partition_neither_active_nor_paused_is_inactive() -> None:
    assert unfetched_partitions(consumer({RAW, RAW1}, active={RAW}), "t.") == {RAW1: "inactive"}
    assert unfetched_partitions(consumer({RAW, RAW1}, active={RAW, RAW1}), "t.") == {}


def test_commit_stall_is_a_gap_at_the_head_of_the_acked_offsets() -> None:
    c = consumer({RAW, RAW1}, {RAW, RAW1}, acked={RAW: [11, 12], RAW1: [10, 11]}, committed={RAW: 10, RAW1: 10})
    assert stalled_partitions(c) == {RAW: (10, "first acked 11")}  # committed = next to read: RAW1 goes on


def test_commit_stall_is_a_partition_read_past_its_commit_with_nothing_in_flight() -> None:
    """CI: valid:2 committed 331, the fetch loop at 1333, no message in flight or acked — for 5 minutes."""
    read = ReadOffsets()
    read.update({RAW: 331, RAW1: 500})  # positioned at the commits (perform_seek)
    assert stalled_partitions(consumer({RAW, RAW1}, {RAW, RAW1}, committed={RAW: 331, RAW1: 500}, read=read)) == {}
    for offset in range(331, 1334):
        read[RAW] = offset  # handled by the fetch loop, then lost (delivery abandoned mid-rebalance)
    c = consumer({RAW, RAW1}, {RAW, RAW1}, committed={RAW: 331, RAW1: 500}, read=read)
    assert stalled_partitions(c) == {RAW: (331, "read up to 1333, none in flight")}
    busy = SimpleNamespace(tp=RAW, acked=False)  # e.g. the sink retrying a batch during an outage
    c = consumer({RAW}, {RAW}, committed={RAW: 331}, read=read, in_flight=[busy])
    assert stalled_partitions(c) == {}
    released = SimpleNamespace(tp=RAW, acked=True)  # let go by the in-order filter, not yet collected
    assert stalled_partitions(consumer({RAW}, {RAW}, committed={RAW: 331}, read=read, in_flight=[released])) != {}
    read.rewind(RAW, 331)  # a seek back starts a new reading
    assert stalled_partitions(consumer({RAW}, {RAW}, committed={RAW: 331}, read=read)) == {}
    read[RAW] = 331
    read[RAW] = 332  # processed and committed: nothing left to move on
    assert stalled_partitions(consumer({RAW}, {RAW}, committed={RAW: 333}, read=read)) == {}


def test_commit_stall_is_a_positioned_partition_that_reads_nothing_while_its_log_goes_on() -> None:
    """A restart: raw at its commit (29) with 30 messages behind it, nothing fetched for minutes."""
    read = ReadOffsets()
    read.update({RAW: 29, RAW1: 40})
    c = consumer({RAW, RAW1}, {RAW, RAW1}, committed={RAW: 29, RAW1: 40}, read=read, high={RAW: 59, RAW1: 40})
    assert stalled_partitions(c) == {RAW: (29, "nothing read since it was positioned, end 59")}  # RAW1: at its end
    c = consumer({RAW}, set(), committed={RAW: 29}, read=read, high={RAW: 59}, buffered={RAW})
    assert stalled_partitions(c) == {}  # left out of fetching on purpose: the fetch repair's case
    c = consumer({RAW}, {RAW}, committed={RAW: 29}, read=read, high={RAW: None})  # type: ignore[dict-item]
    assert stalled_partitions(c) == {}  # end unknown yet: no verdict
