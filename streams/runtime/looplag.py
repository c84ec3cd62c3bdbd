"""The event loop's own lateness, as a metric: every stall delays every event behind it.

One asyncio loop runs every stage of a worker, so a long batch, a clock tick, an insert that
holds the GIL or a garbage-collector pause shows up as end-to-end latency for unrelated events.
A 50 ms sleep that wakes late measures exactly that, whatever the cause; the per-stage batch and
clock-tick histograms then say which one it was.
"""

from __future__ import annotations

import asyncio
import logging
import time

from streams import metrics

log = logging.getLogger(__name__)

PROBE_S = 0.05
#: a stall this long is logged as well: it is long enough to cost the worker its group sessions
#: (TOUCHSTREAM_GROUP_SESSION_TIMEOUT_S), and the metric alone would not say when it happened
STALL_LOG_S = 2.0


async def probe_loop_lag() -> None:
    observe = metrics.LOOP_LAG.observe
    while True:
        t0 = time.perf_counter()
        await asyncio.sleep(PROBE_S)
        late = max(0.0, time.perf_counter() - t0 - PROBE_S)
        observe(late)
        if late >= STALL_LOG_S:
            log.warning("event loop stalled for %.1f s: consumers may have missed their heartbeats", late)
