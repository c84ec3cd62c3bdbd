"""Consumer lag of every group the worker runs, as one gauge.

Topics carry their physical names (with ``TOUCHSTREAM_TOPIC_PREFIX``): several environments
may share a cluster and a dashboard.

Why in the worker and not only from an exporter: each stage knows its own assignment and
committed offsets, and its consumer tracks the high watermark of every partition it fetches,
so the gauge costs no I/O, and Prometheus' alert rule can sum it across workers. Partitions
that move away are removed from the gauge, so a rebalance leaves no stale series behind.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable

from streams import metrics

INTERVAL_S = 5.0

#: a stage's group name and its lags: (topic, partition) → end offset − committed offset
LagSource = tuple[str, Callable[[], dict[tuple[str, int], int]]]


class LagReporter:
    def __init__(self, sources: Iterable[LagSource]) -> None:
        self.sources = list(sources)
        self._shown: set[tuple[str, str, str]] = set()

    def report(self) -> dict[str, dict[str, int]]:
        """Set the gauge; returns lag per group and topic (summed over partitions)."""
        current: dict[tuple[str, str, str], int] = {}
        for group, lags in self.sources:
            for (topic, partition), lag in lags().items():
                current[(group, topic, str(partition))] = lag
        for labels in self._shown - current.keys():
            metrics.CONSUMER_LAG.remove(*labels)
        for labels, lag in current.items():
            metrics.CONSUMER_LAG.labels(*labels).set(lag)
        self._shown = set(current)
        out: dict[str, dict[str, int]] = {}
        for (group, topic, _), lag in current.items():
            out.setdefault(group, {})[topic] = out.get(group, {}).get(topic, 0) + lag
        return out

    async def run(self) -> None:
        while True:
            self.report()
            await asyncio.sleep(INTERVAL_S)
