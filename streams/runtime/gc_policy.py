"""Keep Python's cyclic garbage collector from stopping the event loop for a second.

A worker holds millions of long-lived objects (the core's state of every task). CPython's
full (generation 2) collection walks all of them: ~0.5 s for the state of 100k open conversations
alone, ~1-1.5 s in the worker, every ~10 s under load - it showed up as the whole p99 of SLA
breach lateness (breaches fired within ~10 ms otherwise). The state is plain dicts and lists that
reference counting frees; cycles are rare (asyncio tasks and exceptions). So:

- after a state reload and then every ``FREEZE_EVERY_S`` the tracked objects are moved to the
  permanent generation (``gc.freeze()``, a list splice): later collections only walk what was
  allocated since. Every second, not every minute: after a freeze CPython's generation-2
  trigger (pending > 25 % of the survivors of the last full collection) fires almost at once,
  so each gen-2 pass walked up to a minute of new state - 7 % of the worker's CPU in the
  throughput benchmark (``touchstream_gc_seconds``);
- every ``FULL_EVERY_S`` they are unfrozen and collected once, so cyclic garbage that got frozen
  is not leaked for longer than that (one pause per interval, logged with its duration);
- the young generation is collected every ``GEN0_THRESHOLD`` net allocations instead of
  CPython's 700 (:func:`tune_collector`, also used by ``touchstream process``): a batch allocates
  hundreds of thousands of short-lived dicts that reference counting frees anyway, and each
  young collection walked the survivors. Measured on the offline core (352k simulated events,
  this 2-core machine, loaded): 3,272 → 6,580 events/s with the threshold alone, 5,961 with the
  periodic freeze alone.
"""

from __future__ import annotations

import gc
import logging
import time
from collections.abc import Callable

from streams import metrics

log = logging.getLogger(__name__)

FREEZE_EVERY_S = 1.0
FULL_EVERY_S = 600.0
GEN0_THRESHOLD = 50_000


def tune_collector() -> None:
    """Young collections every ``GEN0_THRESHOLD`` net allocations, the middle one every 50 of
    those, the full one every 100 of those (process-wide: call once, from a worker or an
    offline run)."""
    gc.set_threshold(GEN0_THRESHOLD, 50, 100)


_GC_SECONDS = [metrics.GC_SECONDS.labels(str(g)) for g in range(3)]
_gc_started = [0.0]


def _time_collections(phase: str, info: dict[str, int]) -> None:
    """Time per collection into ``touchstream_gc_seconds{generation}``: the collector's share of
    the worker's CPU is otherwise invisible (profilers charge it to whatever code allocated)."""
    if phase == "start":
        _gc_started[0] = time.perf_counter()
    else:
        _GC_SECONDS[info["generation"]].inc(time.perf_counter() - _gc_started[0])


class GcPolicy:
    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        tune_collector()
        self._clock = clock
        now = self._clock()
        self._last_freeze = now
        self._last_full = now
        if _time_collections not in gc.callbacks:
            gc.callbacks.append(_time_collections)

    def freeze(self) -> None:
        gc.freeze()
        self._last_freeze = self._clock()

    def maybe_run(self) -> None:
        """Called from the worker's regular tick."""
        now = self._clock()
        if now - self._last_full >= FULL_EVERY_S:
            t = time.perf_counter()
            gc.unfreeze()
            found = gc.collect()
            gc.freeze()
            took = time.perf_counter() - t
            metrics.GC_FULL_SECONDS.observe(took)
            log.info("full garbage collection: %d unreachable objects, %.2f s", found, took)
            self._last_full = self._last_freeze = now
        elif now - self._last_freeze >= FREEZE_EVERY_S:
            self.freeze()
