"""Is the broker reachable? A cheap periodic probe, for ``/ready`` and a gauge.

Why a probe of its own: a consumer or producer that cannot reach the cluster retries quietly
(that is what lets a worker ride out a broker restart), so nothing in the stages raises while
the broker is away, and a readiness check that only looked at the stages would stay green
through an outage. One metadata request every ``interval_s``, with a timeout, says it directly.
"""

from __future__ import annotations

import asyncio
import logging
import time

from aiokafka.admin import AIOKafkaAdminClient

from streams import metrics
from streams.kafka_admin import client_kwargs
from streams.settings import Settings

log = logging.getLogger(__name__)


class BrokerProbe:
    def __init__(self, settings: Settings, interval_s: float = 2.0, timeout_s: float = 3.0) -> None:
        self.settings, self.interval_s, self.timeout_s = settings, interval_s, timeout_s
        self.reachable = False
        self.since = time.monotonic()  # when ``reachable`` last changed
        self._admin: AIOKafkaAdminClient | None = None

    async def check(self) -> bool:
        try:
            if self._admin is None:
                admin = AIOKafkaAdminClient(bootstrap_servers=self.settings.bootstrap,
                                            request_timeout_ms=int(self.timeout_s * 1000),
                                            **client_kwargs(self.settings))
                await asyncio.wait_for(admin.start(), self.timeout_s)
                self._admin = admin
            await asyncio.wait_for(self._admin.describe_cluster(), self.timeout_s)
            ok = True
        except Exception:  # any failure means: not reachable right now
            ok = False
            await self.close()
        if ok != self.reachable:
            self.reachable, self.since = ok, time.monotonic()
            (log.info if ok else log.warning)("Kafka %s %s", self.settings.bootstrap,
                                              "reachable" if ok else "unreachable")
        metrics.BROKER_REACHABLE.set(1 if ok else 0)
        return ok

    async def run(self) -> None:
        try:
            while True:
                await self.check()
                await asyncio.sleep(self.interval_s)
        finally:
            await self.close()

    async def close(self) -> None:
        admin, self._admin = self._admin, None
        if admin is not None:
            try:
                await asyncio.wait_for(admin.close(), self.timeout_s)
            except Exception as exc:  # closing a broken client must not end the probe
                log.debug("closing the probe's admin client failed (%r)", exc)
