"""The consumer watchdogs' detection, on a stand-in with the Faust consumer attributes they read."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

from faust.types import TP as TopicPartition

from streams.app.lag import stalled_partitions, unfetched_partitions


def consumer(assigned: set[Any], active: set[Any], paused: set[Any] = frozenset(),  # type: ignore[assignment]
             buffered: set[Any] = frozenset(), acked: dict[Any, list[int]] | None = None,  # type: ignore[assignment]
             committed: dict[Any, int] | None = None) -> Any:
    return SimpleNamespace(
        assignment=lambda: set(assigned), _get_active_partitions=lambda: set(active),
        _paused_partitions=set(paused), _buffered_partitions=set(buffered),
        _acked=acked or {}, _committed_offset=committed or {},
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
    assert stalled_partitions(c) == {RAW: (10, 11)}  # committed = next to read: RAW1 goes on from it
