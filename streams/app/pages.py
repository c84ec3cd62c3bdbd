"""Stage: ``sla.pages`` → notifiers (PagerDuty, Alertmanager, Slack, signed webhook).

The pages were decided by the pure :class:`streams.core.paging.Pager` inside the process stage
and persisted with its state, so this stage only delivers. It runs with the sink (delivery is
I/O, like inserts) as its own consumer group (``<app id>-pages``), and commits a batch after
every page in it was delivered or given up on (each notifier retries with jittered backoff
first): at-least-once, and the receiving side de-duplicates by ``dedup_key`` (PagerDuty and
Alertmanager do so natively). Processing never waits for it. Without configured notifiers the
stage does not run and pages stay on the topic for other consumers.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from typing import Any

import orjson

from streams import metrics
from streams.app import topics
from streams.app.deadletters import UNREADABLE_PAGE, queue_dead_letter
from streams.core.paging import Page
from streams.runtime.backlog import now_ms
from streams.runtime.producer import BatchSender, KafkaOut
from streams.runtime.stage import Stage
from streams.settings import Settings

log = logging.getLogger(__name__)

BATCH = 100
WITHIN_S = 0.2


class PagesStage(Stage):
    """The delivery stage plus its notifiers' clients, closed when it stops."""

    def __init__(self, settings: Settings, out: KafkaOut, notifiers: dict[str, Any]) -> None:
        self.notifiers = notifiers
        self.sender = BatchSender(out)
        super().__init__(settings, "pages", [settings.topic(topics.PAGES)],
                         topics.consumer_group(settings.app_id, topics.PAGES), self.deliver, BATCH, WITHIN_S)

    async def deliver(self, records: list[Any], keep_trying: Callable[[], bool]) -> bool:
        for rec in records:
            try:
                page = _page(orjson.loads(rec.value))
            except (ValueError, TypeError) as exc:
                queue_dead_letter(self.sender, self.settings, UNREADABLE_PAGE, repr(exc), rec, now_ms())
                log.error("unreadable page at %s:%s@%s: %r", rec.topic, rec.partition, rec.offset, exc)
                continue
            notifier = self.notifiers.get(page.notifier)
            if notifier is None:
                metrics.PAGES.labels("unroutable").inc()
                log.error("page %s names unknown notifier %s", page.dedup_key, page.notifier)
                continue
            ok = await notifier.send(page)
            metrics.PAGES.labels("sent" if ok else "failed").inc()
        if self.sender.pending:
            await self.sender.send()
        return True

    async def stop(self) -> None:
        await super().stop()
        for n in self.notifiers.values():
            await n.aclose()


def stage(settings: Settings, out: KafkaOut) -> PagesStage | None:
    """The delivery stage, or None when no notifier is configured."""
    from streams.notify import build_notifiers, missing_notifiers, notifier_urls, paging_config

    urls = notifier_urls(os.environ)
    if not urls:
        return None
    notifiers = build_notifiers(urls)
    missing = missing_notifiers(paging_config(os.environ), notifiers)
    if missing:
        raise SystemExit(f"paging routes name notifiers that are not configured: {', '.join(missing)}")
    return PagesStage(settings, out, notifiers)


def _page(d: dict[str, Any]) -> Page:
    return Page(**{k: d.get(k) for k in Page.__dataclass_fields__})  # type: ignore[arg-type]
