"""Parking and reuse of stream tasks across rebalances (aiokafka revokes everything each time)."""

from __future__ import annotations

from typing import Any

from streams.core.state import MemoryStore
from streams.runtime.changelog import ChangelogWriter
from streams.runtime.task import StreamTask, TaskSet


def task(p: int, changelog_end: int) -> StreamTask:
    stores = {"a": MemoryStore("a")}
    processor: Any = object()
    return StreamTask(p, processor, ChangelogWriter("cl", p, stores), position=10, changelog_end=changelog_end)


def test_a_parked_task_comes_back_only_if_nobody_wrote_its_changelog_meanwhile() -> None:
    tasks = TaskSet()
    t0, t1 = task(0, 100), task(1, 200)
    tasks.activate(t0)
    tasks.activate(t1)
    tasks.park([0, 1])
    assert len(tasks) == 0 and set(tasks.parked) == {0, 1}
    assert tasks.reusable(0, 100) is t0  # untouched: same state, no restore
    assert tasks.reusable(1, 201) is None  # another owner wrote partition 1: restore it
    assert tasks.parked == {}  # either way it is no longer parked


def test_parked_tasks_not_assigned_back_are_dropped() -> None:
    tasks = TaskSet()
    for p in range(4):
        tasks.activate(task(p, 0))
    tasks.park([0, 1, 2, 3])
    assert sorted(tasks.drop_parked({1, 3})) == [0, 2]
    assert set(tasks.parked) == {1, 3}


def test_only_active_tasks_are_iterated() -> None:
    tasks = TaskSet()
    for p in range(3):
        tasks.activate(task(p, 0))
    tasks.park([1])
    assert [t.partition for t in tasks] == [0, 2] and tasks.get(1) is None
