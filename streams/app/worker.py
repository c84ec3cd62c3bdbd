"""The worker: which stages run for ``TOUCHSTREAM_ROLE``, wired once, and their lifecycle.

One function builds the worker so the CLI, the tests and the benchmark start the exact same
thing. Roles:

| role | stages |
|---|---|
| ``all`` | validate, process, one ClickHouse sink stage per table, page delivery |
| ``process`` | validate, process (no ClickHouse: the embedded engine belongs to one process) |
| ``sink`` | the ClickHouse sink stages, page delivery |

Every stage is a consumer group of its own on one asyncio loop
(:mod:`streams.runtime.stage`, :mod:`streams.runtime.stateful`); they share one producer
(:class:`~streams.runtime.producer.KafkaOut`). SIGTERM/SIGINT stop the stages gracefully (each
finishes its batch, commits and leaves its group), then the producer and the web server.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
from collections.abc import Awaitable, Callable
from pathlib import Path

import orjson

from streams.app import pages, process, validate
from streams.app import sink as sink_mod
from streams.clickhouse.client import ClickHouse
from streams.core.attribution import AttributionConfig
from streams.core.pipeline import PipelineConfig
from streams.core.profiles import ProfileConfig
from streams.core.sla import PolicySet
from streams.core.tagrules import RuleError, parse_rules
from streams.runtime.health import BrokerProbe
from streams.runtime.lag import LagReporter
from streams.runtime.looplag import probe_loop_lag
from streams.runtime.producer import KafkaOut
from streams.runtime.stage import Stage
from streams.runtime.stateful import StatefulStage
from streams.settings import Settings

log = logging.getLogger(__name__)

ExtraTask = Callable[["Worker"], Awaitable[None]]


class ConfigError(ValueError):
    """A configuration file or value the worker cannot start with (names the file or variable)."""


def pipeline_config(settings: Settings) -> PipelineConfig:
    policies = None
    if settings.sla_policies_path:
        path = Path(settings.sla_policies_path)
        try:
            policies = PolicySet.from_dict(orjson.loads(path.read_bytes()))
        except OSError as exc:
            raise ConfigError(f"TOUCHSTREAM_SLA_POLICIES={path}: cannot read it ({exc.strerror})") from exc
        except (ValueError, TypeError) as exc:
            raise ConfigError(f"TOUCHSTREAM_SLA_POLICIES={path}: {exc}") from exc
    from streams.notify import paging_config

    try:
        attribution = AttributionConfig(lookback_ms=settings.attribution_lookback_ms)
    except ValueError as exc:
        raise ConfigError(f"TOUCHSTREAM_ATTRIBUTION_LOOKBACK_DAYS: {exc}") from exc
    return PipelineConfig(
        paging=paging_config(os.environ),
        dedup_window_ms=settings.dedup_window_ms,
        max_future_ms=settings.max_future_ms,
        session_gap_ms=settings.session_gap_ms,
        allowed_lateness_ms=settings.allowed_lateness_ms,
        idle_advance_ms=settings.idle_advance_ms,
        funnel_window_ms=settings.funnel_window_ms,
        policies=policies,
        pseudonyms=settings.pseudonymiser(),
        profiles=profile_config(settings.rules_dir),
        attribution=attribution,
    )


def profile_config(rules_dir: str | None) -> ProfileConfig:
    """Each tenant's rule file ``<dir>/<tenant_id>.rules``, parsed at start-up so a mistake stops
    the worker with the file and line (a marketer's typo must not surface as wrong tags later).
    ``default.rules`` replaces the built-in rules for tenants without a file of their own."""
    if not rules_dir:
        return ProfileConfig()
    root = Path(rules_dir)
    if not root.is_dir():
        raise ConfigError(f"TOUCHSTREAM_RULES_DIR={root}: not a directory")
    rules = {}
    for path in sorted(root.glob("*.rules")):
        try:
            rules[path.stem] = parse_rules(path.read_text(encoding="utf-8"), str(path))
        except OSError as exc:
            raise ConfigError(f"{path}: cannot read it ({exc.strerror})") from exc
        except (RuleError, UnicodeDecodeError) as exc:
            raise ConfigError(str(exc)) from exc
    default = rules.pop("default", None)
    return ProfileConfig(rules=rules) if default is None else ProfileConfig(rules=rules, default_rules=default)


class Worker:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.out = KafkaOut(settings)
        self.clickhouse = ClickHouse(settings.clickhouse_url, settings.clickhouse_database)  # connects lazily
        self.stats: dict[str, int] = {}
        self.stages: list[Stage | StatefulStage] = []
        self.process: StatefulStage | None = None
        self.probe = BrokerProbe(settings)
        processing = settings.role in ("all", "process")
        if processing:
            self.stages.append(validate.stage(settings, self.out, self.stats))
            self.process = process.stage(settings, pipeline_config(settings), self.out, self.stats)
            self.stages.append(self.process)
        if settings.role in ("all", "sink"):
            self.stages.extend(sink_mod.stages(self))
            delivery = pages.stage(settings, self.out)
            if delivery is not None:
                self.stages.append(delivery)
        self.lag = LagReporter((st.group, st.lags) for st in self.stages)
        self._stop = asyncio.Event()
        self._spare_lock = asyncio.Lock()

    @property
    def lock(self) -> asyncio.Lock:
        """The process stage's lock (readers of its state take it); a plain lock on a sink worker."""
        if self.process is not None:
            return self.process.lock
        return self._spare_lock

    @property
    def ready(self) -> bool:
        return self.probe.reachable and all(st.ready for st in self.stages)

    def request_stop(self) -> None:
        self._stop.set()

    async def main(self, extra: list[ExtraTask] | None = None, web: bool = True) -> int:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.request_stop)
        runner = None
        if web:
            from streams.web.server import start

            runner = await start(self)
        helpers = [asyncio.create_task(coro, name=name) for name, coro in (
            ("broker-probe", self.probe.run()), ("consumer-lag", self.lag.run()), ("loop-lag", probe_loop_lag()),
            *((f"upstream-{st.name}", st.upstream.run()) for st in self.stages
              if isinstance(st, StatefulStage) and st.upstream is not None),
        )]
        stage_tasks = [asyncio.create_task(st.run(), name=f"stage-{st.name}") for st in self.stages]
        extra_tasks = [asyncio.create_task(_logged(fn(self), getattr(fn, "__name__", "task"))) for fn in extra or []]
        log.info("worker %s (role %s) started %d stages: %s", self.settings.app_id, self.settings.role,
                 len(self.stages), ", ".join(st.name for st in self.stages))
        try:
            await self._stop.wait()
        finally:
            log.info("worker stopping")
            for t in extra_tasks:
                t.cancel()
            await asyncio.gather(*(st.stop() for st in self.stages))  # batches in flight still produce
            for t in stage_tasks:
                if not t.done():
                    t.cancel()
            await asyncio.gather(*stage_tasks, return_exceptions=True)
            for t in helpers:
                t.cancel()
            await asyncio.gather(*helpers, *extra_tasks, return_exceptions=True)
            await self.out.stop()
            if runner is not None:
                await runner.cleanup()
            self.clickhouse.close()
            for sig in (signal.SIGTERM, signal.SIGINT):
                with contextlib.suppress(Exception):
                    loop.remove_signal_handler(sig)
        return 0


async def _logged(work: Awaitable[None], name: str) -> None:
    try:
        await work
    except asyncio.CancelledError:
        raise
    except Exception:
        log.exception("task %s failed", name)


def run(settings: Settings, extra: list[ExtraTask] | None = None, web: bool = True) -> int:
    """Build the worker and run it until SIGTERM/SIGINT (or an extra task asks it to stop)."""
    async def go() -> int:
        worker = Worker(settings)
        return await worker.main(extra, web=web)

    return asyncio.run(go())


def build(settings: Settings) -> Worker:
    """The worker for ``settings`` without starting it (tests and tools that inspect the wiring)."""
    return Worker(settings)

