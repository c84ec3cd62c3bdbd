"""In-order, gap-free delivery per partition (streams/app/inorder.py) on a stand-in consumer."""

from __future__ import annotations

import asyncio
import inspect
from types import SimpleNamespace
from typing import Any

from faust.types import TP

from streams.app.inorder import InOrder

A, B = TP("raw", 0), TP("raw", 1)


class FakeApp:
    def __init__(self, committed: dict[Any, int]) -> None:
        self.seeks: list[tuple[Any, int]] = []
        self.revoke_handlers: list[Any] = []
        app = self

        async def seek_from_the_event_loop(tp: Any, offset: int) -> None:
            raise AssertionError("Faust's Consumer.seek races the fetcher: seek on the consumer thread")

        async def call_thread(fun: Any, *args: Any) -> Any:
            app.thread_calls += 1
            res = fun(*args)
            return await res if inspect.isawaitable(res) else res

        async def earliest_offsets(*tps: Any) -> dict[Any, int]:
            return {tp: 0 for tp in tps}

        self.thread_calls = 0
        aiokafka_consumer = SimpleNamespace(seek=lambda tp, offset: app.seeks.append((tp, offset)))
        thread = SimpleNamespace(call_thread=call_thread, _ensure_consumer=lambda: aiokafka_consumer)
        self.consumer = SimpleNamespace(_committed_offset=dict(committed), seek=seek_from_the_event_loop,
                                        earliest_offsets=earliest_offsets, _thread=thread, _read_offset={})
        self.on_partitions_revoked = SimpleNamespace(connect=self.revoke_handlers.append)
        self.rebalancing = False


def ev(tp: Any, offset: int) -> Any:
    return SimpleNamespace(message=SimpleNamespace(tp=tp, offset=offset, acked=False))


def offsets(events: list[Any]) -> list[tuple[int, int]]:
    return [(e.message.tp.partition, e.message.offset) for e in events]


def test_takes_from_the_committed_offset_and_stops_a_partition_at_a_hole() -> None:
    app = FakeApp({A: 10, B: 5})
    order = InOrder(app, "t")
    batch = [ev(A, 10), ev(B, 5), ev(A, 11), ev(A, 13), ev(B, 6), ev(A, 14)]
    kept = asyncio.run(order.take(batch))
    assert offsets(kept) == [(0, 10), (1, 5), (0, 11), (1, 6)]
    assert app.seeks == [(A, 12)]  # 12 never came: read again from there
    assert app.thread_calls == 1 and app.consumer._read_offset == {A: 12}
    assert [e.message.acked for e in batch] == [False, False, False, True, False, True]  # released, not acked
    again = [ev(A, 11), ev(A, 12), ev(A, 13)]  # after the seek (11: a re-delivery of a processed one)
    assert offsets(asyncio.run(order.take(again))) == [(0, 12), (0, 13)]
    assert [e.message.acked for e in again] == [False] * 3  # 11 processed before: left to the batch's ack


def test_a_stall_repair_re_read_below_the_expected_offset_is_acked_so_the_commit_moves_on() -> None:
    app = FakeApp({A: 983})
    order = InOrder(app, "t")
    first = [ev(A, o) for o in range(983, 1040)]
    assert len(asyncio.run(order.take(first))) == 57
    reread = [ev(A, o) for o in range(983, 1045)]  # the repair forgot the acks and seeks to the commit
    kept = asyncio.run(order.take(reread))
    assert offsets(kept) == [(0, o) for o in range(1040, 1045)]
    assert not any(e.message.acked for e in reread)  # none released unacked: the batch acks all of them


def test_a_head_hole_after_assignment_is_found_against_the_committed_offset() -> None:
    app = FakeApp({A: 100})
    order = InOrder(app, "t")
    assert asyncio.run(order.take([ev(A, 173), ev(A, 174)])) == []
    assert app.seeks == [(A, 100)]


def test_revocation_forgets_what_was_expected() -> None:
    app = FakeApp({A: 0})
    order = InOrder(app, "t")
    asyncio.run(order.take([ev(A, 0), ev(A, 1)]))
    app.consumer._committed_offset[A] = 50  # another worker went on meanwhile
    asyncio.run(app.revoke_handlers[0](app, {A}))
    assert offsets(asyncio.run(order.take([ev(A, 50)]))) == [(0, 50)] and app.seeks == []


def test_a_partition_never_committed_starts_at_the_log_start() -> None:
    app = FakeApp({})
    order = InOrder(app, "t")
    assert asyncio.run(order.take([ev(A, 3)])) == [] and app.seeks == [(A, 0)]
    assert offsets(asyncio.run(order.take([ev(A, 0), ev(A, 1)]))) == [(0, 0), (0, 1)]


def test_one_seek_per_hole_while_the_messages_fetched_before_it_drain(monkeypatch: Any) -> None:
    from streams.app import inorder

    clock = [1000.0]
    monkeypatch.setattr(inorder.time, "monotonic", lambda: clock[0])
    app = FakeApp({A: 449})
    order = InOrder(app, "t")
    for start in (670, 689, 790):  # fetched before the seek to 449 took effect
        assert asyncio.run(order.take([ev(A, start), ev(A, start + 1)])) == []
    assert app.seeks == [(A, 449)]
    clock[0] += inorder.RESEEK_AFTER_S  # 449 never came: the seek may have been undone, seek again
    assert asyncio.run(order.take([ev(A, 800)])) == [] and app.seeks == [(A, 449), (A, 449)]
    assert offsets(asyncio.run(order.take([ev(A, 449), ev(A, 450)]))) == [(0, 449), (0, 450)]
    assert asyncio.run(order.take([ev(A, 460)])) == [] and app.seeks[-1] == (A, 451)  # a new hole: a new seek


def test_the_re_fetch_right_behind_the_stale_messages_closes_the_hole_in_the_same_batch() -> None:
    """CI: raw:3 sought to 1056; [1133.., 1056..] came in one batch and the re-fetch was dropped with the rest."""
    app = FakeApp({A: 1056})
    order = InOrder(app, "t")
    stale, refetched = [ev(A, o) for o in range(1133, 1140)], [ev(A, o) for o in range(1056, 1070)]
    kept = asyncio.run(order.take(stale + refetched))
    assert offsets(kept) == [(0, o) for o in range(1056, 1070)] and app.seeks == []
    assert all(e.message.acked for e in stale)  # released unacked: read again in order later
    assert offsets(asyncio.run(order.take([ev(A, o) for o in range(1070, 1134)])))[-1] == (0, 1133)


def test_before_faust_knows_the_commit_of_a_new_assignment_messages_wait_for_it() -> None:
    app = FakeApp({})
    app.rebalancing = True  # recovery's seek to the commit has not landed yet
    order = InOrder(app, "t")
    batch = [ev(A, 889), ev(A, 890)]
    assert asyncio.run(order.take(batch)) == [] and app.seeks == []  # no guess, no seek to the log start
    assert all(e.message.acked for e in batch)  # released unacked: fetched again from the commit
    app.rebalancing = False
    app.consumer._committed_offset[A] = 889
    assert offsets(asyncio.run(order.take([ev(A, 889)]))) == [(0, 889)]
