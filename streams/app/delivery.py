"""Faust's per-message hand-off, without four asyncio tasks per message.

Why: faust-streaming's fetch loop hands every fetched message to the streams with
``await self.wait_first(callback(message), self.suspend_flow.wait())``. mode's ``wait_first``
wraps the callback, the suspend event and the service's stopped and crashed events in four
tasks, waits for the first, then cancels three: about a fifth of the worker's CPU at full
load (py-spy), for a callback that in steady state never suspends (it only appends to
stream queues that have room). The escape it provides is real, though: when flow is suspended
for a rebalance, or the queues are full, the callback blocks, and the loop must give up on
it when the rebalance starts or the service stops.

``first_then_wait`` keeps that escape and drops the cost: it runs the callback's first step
inline. If that completes it, the message is delivered and no task was made. If the callback
suspends, the remainder is handed, as one coroutine, to the original ``wait_first`` with the
same companions, so every path that can block still races the suspend/stop/crash events
exactly as before.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any


async def resume(coro: Coroutine[Any, Any, Any], yielded: Any) -> Any:
    """Finish a coroutine that was stepped by hand and yielded ``yielded``.

    This does what an asyncio Task's step does: wait for the future the coroutine yielded
    (a bare ``None`` means "reschedule me"), then resume the coroutine, which reads the
    future's outcome itself. A cancellation of the waiting task is thrown into the coroutine,
    so its cleanup (``finally``, ``async with``) runs as it would in a task.
    """
    while True:
        try:
            if yielded is None:
                await asyncio.sleep(0)
            else:
                await _wait_done(yielded)
        except asyncio.CancelledError as exc:
            try:
                yielded = coro.throw(exc)
            except StopIteration as stop:
                return stop.value
            continue
        try:
            yielded = coro.send(None)
        except StopIteration as stop:
            return stop.value


async def _wait_done(fut: asyncio.Future[Any]) -> None:
    """Wait for ``fut`` without taking on its outcome: the stepped coroutine reads that.

    Only this task's own cancellation propagates (it is thrown into the coroutine)."""
    if fut.done():
        return
    fut._asyncio_future_blocking = False  # the coroutine's yield set it; a task's step clears it, so must we
    try:
        await fut
    except asyncio.CancelledError:
        if fut.cancelled() and not _current_cancelling():
            return  # the future itself was cancelled (not this task): the coroutine sees that
        raise
    except BaseException:
        if not fut.done():
            raise
        return  # the future failed: its outcome is the stepped coroutine's to read


def _current_cancelling() -> bool:
    task = asyncio.current_task()
    return bool(task is not None and task.cancelling())


async def first_then_wait(service: Any, wait_first: Any, *coros: Any, timeout: Any = None) -> Any:
    """``service.wait_first(*coros)`` with the first coroutine's first step run inline.

    ``wait_first`` is mode's original (unbound). Completed inline: the companions are closed
    unstarted and the result is what ``wait_first`` would have returned for a first winner.
    Suspended: the rest of it races the companions in the original ``wait_first``."""
    from mode.services import WaitResults

    first = coros[0] if coros else None
    if not asyncio.iscoroutine(first) or service._stopped.is_set() or service._crashed.is_set():
        return await wait_first(service, *coros, timeout=timeout)
    try:
        yielded = first.send(None)
    except StopIteration as stop:
        _close(coros[1:])
        return WaitResults([first], [stop.value], False)
    except BaseException:
        _close(coros[1:])
        raise
    rest = asyncio.ensure_future(resume(first, yielded))
    rest.add_done_callback(lambda task: first.close())  # cancelled before its first step: clean up the callback
    return await wait_first(service, rest, *coros[1:], timeout=timeout)


def _close(coros: tuple[Any, ...]) -> None:
    for coro in coros:
        if asyncio.iscoroutine(coro):
            coro.close()  # never started: close it, or Python warns it was never awaited


def patch_delivery() -> None:
    """Give Faust's consumer the inline first step (applied once, before the app is built)."""
    from faust.transport.consumer import Consumer

    if getattr(Consumer, "_touchstream_fast_delivery", False):
        return
    wait_first = Consumer.wait_first

    async def patched(self: Any, *coros: Any, timeout: Any = None) -> Any:
        return await first_then_wait(self, wait_first, *coros, timeout=timeout)

    Consumer.wait_first = patched  # type: ignore[method-assign]
    Consumer._touchstream_fast_delivery = True  # type: ignore[attr-defined]
