"""The inline first step of Faust's per-message hand-off behaves as mode's ``wait_first``."""

from __future__ import annotations

import asyncio
import warnings
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from mode import Service

from streams.app.delivery import first_then_wait, resume

ORIGINAL = Service.wait_first


class Svc(Service):
    pass


def run(coro: Any) -> Any:
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)  # "coroutine ... was never awaited" fails the test
        return asyncio.run(coro)


def test_a_callback_that_never_suspends_makes_no_task() -> None:
    async def main() -> Any:
        svc = Svc()
        suspended = asyncio.Event()
        calls = []

        async def callback() -> str:
            calls.append(1)
            return "delivered"

        created = []
        loop = asyncio.get_running_loop()
        factory = loop.get_task_factory()
        loop.set_task_factory(lambda lp, coro, **kw: created.append(coro) or asyncio.Task(coro, loop=lp, **kw))
        try:
            res = await first_then_wait(svc, ORIGINAL, callback(), suspended.wait())
        finally:
            loop.set_task_factory(factory)
        return res, calls, created

    res, calls, created = run(main())
    assert res.results == ["delivered"] and not res.stopped
    assert calls == [1]
    assert created == []


def test_a_suspending_callback_finishes_in_the_original_race() -> None:
    async def main() -> Any:
        svc = Svc()
        suspended = asyncio.Event()
        gate: asyncio.Future[int] = asyncio.get_running_loop().create_future()

        async def callback() -> int:
            await asyncio.sleep(0)  # a bare yield
            value = await gate
            await asyncio.sleep(0.001)
            return value * 2

        asyncio.get_running_loop().call_later(0.01, gate.set_result, 21)
        return await first_then_wait(svc, ORIGINAL, callback(), suspended.wait())

    res = run(main())
    assert res.results == [42] and not res.stopped


def test_the_suspend_event_abandons_a_blocked_callback_and_its_cleanup_runs() -> None:
    async def main() -> Any:
        svc = Svc()
        suspended = asyncio.Event()
        queue: asyncio.Queue[int] = asyncio.Queue(maxsize=1)
        queue.put_nowait(0)  # full: the callback blocks, as on a full stream buffer
        seen: list[str] = []

        async def callback() -> None:
            try:
                await queue.put(1)
                seen.append("put")
            except asyncio.CancelledError:
                seen.append("cancelled")
                raise
            finally:
                seen.append("cleanup")

        asyncio.get_running_loop().call_later(0.01, suspended.set)
        res = await first_then_wait(svc, ORIGINAL, callback(), suspended.wait())
        await asyncio.sleep(0.01)
        return res, seen, queue.qsize()

    res, seen, size = run(main())
    assert res.results == [True] and not res.stopped  # the suspend event won (Event.wait returns True)
    assert seen == ["cancelled", "cleanup"]
    assert size == 1  # nothing was put


@pytest.mark.parametrize("outcome", ["exception", "cancelled"])
def test_a_failed_future_is_seen_by_the_callback(outcome: str) -> None:
    async def main() -> Any:
        svc = Svc()
        suspended = asyncio.Event()
        fut: asyncio.Future[int] = asyncio.get_running_loop().create_future()

        async def callback() -> str:
            try:
                await fut
            except ValueError:
                return "value error"
            except asyncio.CancelledError:
                return "future cancelled"
            return "no error"

        if outcome == "exception":
            asyncio.get_running_loop().call_later(0.005, fut.set_exception, ValueError("x"))
        else:
            asyncio.get_running_loop().call_later(0.005, fut.cancel)
        return await first_then_wait(svc, ORIGINAL, callback(), suspended.wait())

    res = run(main())
    assert res.results == ["value error" if outcome == "exception" else "future cancelled"]


def test_an_error_in_the_first_step_propagates_and_closes_the_companions() -> None:
    async def main() -> None:
        svc = Svc()
        suspended = asyncio.Event()

        async def callback() -> None:
            raise KeyError("no channel")

        await first_then_wait(svc, ORIGINAL, callback(), suspended.wait())

    with pytest.raises(KeyError):
        run(main())


def test_a_stopped_service_takes_the_original_path() -> None:
    async def main() -> Any:
        svc = Svc()
        svc._stopped.set()

        async def callback() -> int:
            return 1

        return await first_then_wait(svc, ORIGINAL, callback(), asyncio.Event().wait())

    assert run(main()).stopped


@settings(max_examples=60, deadline=None)
@given(st.lists(st.sampled_from(["sleep0", "sleep", "future", "gather", "raise_caught"]), max_size=8))
def test_resume_gives_what_a_task_gives(steps: list[str]) -> None:
    """Any mix of awaits: a coroutine stepped by hand and resumed returns what it returns in a task."""

    async def body() -> list[str]:
        trace = []
        loop = asyncio.get_running_loop()
        for step in steps:
            if step == "sleep0":
                await asyncio.sleep(0)
            elif step == "sleep":
                await asyncio.sleep(0.0005)
            elif step == "future":
                fut: asyncio.Future[str] = loop.create_future()
                loop.call_soon(fut.set_result, "f")
                trace.append(await fut)
            elif step == "gather":
                trace.extend(await asyncio.gather(asyncio.sleep(0, "a"), asyncio.sleep(0, "b")))
            else:
                fut2: asyncio.Future[str] = loop.create_future()
                loop.call_soon(fut2.set_exception, ValueError("v"))
                try:
                    await fut2
                except ValueError as exc:
                    trace.append(str(exc))
            trace.append(step)
        return trace

    async def main() -> tuple[list[str], list[str]]:
        in_task = await asyncio.ensure_future(body())
        coro = body()
        try:
            yielded = coro.send(None)
        except StopIteration as stop:
            return in_task, stop.value
        return in_task, await resume(coro, yielded)

    in_task, stepped = run(main())
    assert stepped == in_task
