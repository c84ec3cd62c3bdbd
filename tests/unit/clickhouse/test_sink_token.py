"""The ClickHouse insert deduplication token of a sink batch."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

from streams.app.sink import batch_token


def batch(*offsets: tuple[str, int, int]) -> list[Any]:
    return [SimpleNamespace(topic=t, partition=p, offset=o) for t, p, o in offsets]


def test_same_records_in_any_order_give_the_same_token() -> None:
    a = batch(("e", 0, 5), ("e", 0, 6), ("e", 1, 9))
    b = batch(("e", 1, 9), ("e", 0, 6), ("e", 0, 5))
    assert batch_token("touchpoints", a) == batch_token("touchpoints", b)
    assert batch_token("touchpoints", a) != batch_token("sessions", a)


def test_a_batch_with_a_hole_and_its_complete_reread_differ() -> None:
    holed = batch(("e", 0, 100), ("e", 0, 101), ("e", 0, 103))
    whole = batch(("e", 0, 100), ("e", 0, 101), ("e", 0, 102), ("e", 0, 103))
    other_hole = batch(("e", 0, 100), ("e", 0, 102), ("e", 0, 103))
    tokens = {batch_token("touchpoints", b) for b in (holed, whole, other_hole)}
    assert len(tokens) == 3  # same span, same count for two of them: still three different record sets


def test_the_sink_topics_are_those_of_the_table_specs() -> None:
    """``topics.SINK_TOPICS`` (which names the sink's consumer groups) mirrors ``rows.SPECS``."""
    from streams.app.topics import SINK_TOPICS
    from streams.clickhouse.rows import SPECS

    assert sorted(SINK_TOPICS) == sorted(spec.topic for spec in SPECS)
