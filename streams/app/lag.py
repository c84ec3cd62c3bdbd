"""Timer: consumer lag per assigned partition → ``touchstream_consumer_lag_messages``.

Why in the worker and not only from an exporter: each worker knows its own assignment and
its committed offsets without a group-wide admin query, so the gauge is cheap (no I/O: the
consumer already tracks the high watermark per partition from its fetches) and
Prometheus' alert rule can sum it across workers. Partitions that move away are removed
from the gauge, so a rebalance does not leave stale series behind.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from streams import metrics

if TYPE_CHECKING:
    from streams.app.runtime import Runtime

INTERVAL_S = 5.0


def lag_by_partition(consumer: Any, prefix: str) -> dict[tuple[str, int], int]:
    """end offset − committed offset for every assigned partition of our topics (not Faust's internals)."""
    out: dict[tuple[str, int], int] = {}
    committed = consumer._committed_offset  # Faust keeps it per TP (None until the first commit)
    for tp in consumer.assignment():
        if not tp.topic.startswith(prefix) or tp.topic.endswith("-changelog") or "__assignor" in tp.topic:
            continue
        high = consumer.highwater(tp)
        if high is None:
            continue
        done = committed.get(tp)
        out[(tp.topic, tp.partition)] = max(0, int(high) - int(done or 0))
    return out


def register(rt: Runtime) -> None:
    shown: set[tuple[str, str]] = set()
    prefix = rt.settings.topic_prefix

    @rt.app.timer(INTERVAL_S, name="consumer_lag")
    async def report_lag() -> None:
        current = {(t, str(p)): lag for (t, p), lag in lag_by_partition(rt.app.consumer, prefix).items()}
        for labels in shown - current.keys():
            metrics.CONSUMER_LAG.remove(*labels)
        for labels, lag in current.items():
            metrics.CONSUMER_LAG.labels(*labels).set(lag)
        shown.clear()
        shown.update(current)
