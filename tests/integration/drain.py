"""Wait until a live run is completely done: processed, its clock outputs out, and all of it sunk.

Why more than "lag 0": the process stage commits its input right after each batch, but sessions
and funnel windows are closed by its clock tick (every 0.25 s), after the batch that moved the
watermark. So input lag 0 can be seen while the last closed sessions are still to be produced,
and the sink groups' lag 0 right then says nothing about them. The outputs of the clock are
therefore awaited by count (against the offline truth) or until they stop changing.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from streams.app import topics
from tests.conftest import wait_until
from tests.kafka_util import stage_lag, topic_counts

CLOCK_TOPICS = (topics.SESSIONS, topics.FUNNEL, topics.ANOMALIES, topics.SLA_EVENTS)


def wait_drained(env: dict[str, str], expected: dict[str, int] | None = None, timeout: float = 300,
                 explain: Callable[[], str] | None = None, settle_s: float = 1.5) -> None:
    """``expected``: least message count per output topic (logical name) the run must reach, e.g.
    the offline truth's closed sessions; topics not named must stop changing for ``settle_s``."""
    prefix, bootstrap = env["TOUCHSTREAM_TOPIC_PREFIX"], env["KAFKA_BOOTSTRAP_SERVERS"]
    app_id = env["TOUCHSTREAM_APP_ID"]
    for topic in (topics.RAW, topics.VALID):
        wait_until(lambda t=topic: stage_lag(bootstrap, app_id, prefix, t) == 0, timeout,
                   what=f"processing of {topic}", explain=explain)

    def counts() -> dict[str, int]:
        info = topic_counts(bootstrap, prefix=prefix)["topics"]
        return {t: int(info.get(prefix + t, {}).get("messages", 0)) for t in topics.SINK_TOPICS}

    for topic, least in (expected or {}).items():
        wait_until(lambda t=topic, n=least: counts()[t] >= n, timeout, what=f"{least} records on {topic}",
                   explain=lambda: str(counts()))
    last, since = counts(), time.monotonic()
    deadline = time.monotonic() + timeout
    while time.monotonic() - since < settle_s:  # the clock's last outputs: nothing new for a while
        if time.monotonic() > deadline:
            raise AssertionError(f"outputs kept changing for {timeout}s: {last}")
        time.sleep(0.3)
        now = counts()
        if now != last:
            last, since = now, time.monotonic()
    for topic, n in last.items():
        if n:
            wait_until(lambda t=topic: stage_lag(bootstrap, app_id, prefix, t) == 0, timeout,
                       what=f"sink of {topic}", explain=explain)
