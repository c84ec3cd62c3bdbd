"""Faust's consumer offsets, patched (streams/app/offsets.py): commits never pass a hole, seeks hold."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any

import faust
import pytest
from faust.types import TP as TopicPartition
from hypothesis import given
from hypothesis import strategies as st

from streams.app.offsets import ReadOffsets, patch_consumer, seek

RAW = TopicPartition("t.touchpoints.raw", 0)


def drain(read: Any, tp: Any, fetched: list[int]) -> list[int]:
    """The filter of Faust's fetch loop (``Consumer._drain_messages``), message by message."""
    delivered = []
    for offset in fetched:
        r_offset = read[tp]
        if r_offset is None or offset >= r_offset:
            delivered.append(offset)
            read[tp] = offset
    return delivered


def test_a_seek_back_survives_the_messages_fetched_before_it() -> None:
    """The CI livelock: 449 sought, 700..800 still in hand; plain Faust then drops 449..800 for good."""
    in_hand, refetched = list(range(701, 801)), list(range(449, 900))
    plain: dict[Any, int | None] = {RAW: 700}
    plain[RAW] = 449  # Faust's own seek
    assert drain(plain, RAW, in_hand + refetched)[100:] == list(range(800, 900))  # 449..799 lost to the loop

    read = ReadOffsets()
    read[RAW] = 700
    read.rewind(RAW, 449)
    assert read.rewinding(RAW) == 449
    out = drain(read, RAW, in_hand + refetched)
    assert out[:100] == in_hand  # handed on (the in-order filter drops them) without moving the read offset
    assert out[100:] == refetched and read.rewinding(RAW) is None and read[RAW] == 899


@given(target=st.integers(0, 500), ahead=st.lists(st.integers(1, 300), max_size=40),
       back=st.integers(0, 50), extra=st.integers(0, 100))
def test_after_a_rewind_every_offset_from_the_target_on_gets_through(target: int, ahead: list[int], back: int,
                                                                     extra: int) -> None:
    read = ReadOffsets()
    read[RAW] = target + max(ahead, default=0)
    read.rewind(RAW, target)
    in_hand = sorted({target + a for a in ahead})
    start = max(0, target - back)  # Faust's perform_seek may move the position back to the commit
    refetched = list(range(start, target + extra + 1))
    out = drain(read, RAW, in_hand + refetched)
    assert out[len(in_hand):] == list(range(target, target + extra + 1))


def test_faust_seeking_to_a_later_commit_cancels_the_rewind() -> None:
    read = ReadOffsets()
    read.rewind(RAW, 0)  # in-order filter: offset unknown yet, read from the log start
    read.update({RAW: 1180})  # perform_seek lands: the position is the group's commit
    assert read.rewinding(RAW) is None and read[RAW] == 1180
    read.rewind(RAW, 40)
    read.update({RAW: 12})  # an earlier commit: our target is still ahead of it, keep holding
    assert read.rewinding(RAW) == 40 and read[RAW] == 40


def test_revocation_forgets_a_rewind() -> None:
    read = ReadOffsets()
    read.rewind(RAW, 7)
    assert read.pop(RAW, None) == 7 and read.rewinding(RAW) is None and read[RAW] is None
    read.rewind(RAW, 7)
    del read[RAW]
    assert read.rewinding(RAW) is None and read.get(RAW) is None


def test_every_consumer_keeps_its_read_offsets_in_the_seek_aware_map() -> None:
    patch_consumer()
    app = faust.App("offsets-test", broker="kafka://127.0.0.1:1")
    assert isinstance(app.consumer._read_offset, ReadOffsets)


def test_seek_holds_the_read_offset_and_runs_on_the_consumer_thread() -> None:
    calls: list[tuple[Any, int]] = []

    async def call_thread(fun: Any, *args: Any) -> Any:
        return fun(*args)

    aiokafka = SimpleNamespace(seek=lambda tp, offset: calls.append((tp, offset)))
    consumer = SimpleNamespace(_read_offset=ReadOffsets(),
                               _thread=SimpleNamespace(call_thread=call_thread, _ensure_consumer=lambda: aiokafka))
    asyncio.run(seek(consumer, RAW, 33))
    assert calls == [(RAW, 33)] and consumer._read_offset.rewinding(RAW) == 33

    def revoked(tp: Any, offset: int) -> None:
        raise RuntimeError("No current assignment for partition")

    aiokafka.seek = revoked
    with pytest.raises(RuntimeError):
        asyncio.run(seek(consumer, RAW, 34))
    assert consumer._read_offset.rewinding(RAW) is None  # nothing in flight to hold for


def test_guarded_commit_never_passes_a_hole_at_the_head() -> None:
    from collections import defaultdict

    from faust.transport.consumer import Consumer
    from intervaltree import IntervalTree

    patch_consumer()
    patch_consumer()  # idempotent: patched once

    def stub(acked: list[int], committed: int | None) -> Any:
        return SimpleNamespace(_acked={RAW: list(acked)}, _committed_offset={RAW: committed},
                               _gap=defaultdict(IntervalTree), _acked_index={RAW: set(acked)})

    assert Consumer._new_offset(stub([11, 12], 10), RAW) is None  # offset 10 never acked: hold
    assert Consumer._new_offset(stub([10, 11, 13], 10), RAW) == 12  # up to the first hole
    assert Consumer._new_offset(stub([1, 2], 0), RAW) is None  # committed 0 is a real offset too
    assert Consumer._new_offset(stub([5, 6], None), RAW) == 7  # nothing committed yet: Faust's own rule
