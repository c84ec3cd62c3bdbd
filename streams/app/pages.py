"""Agent: ``sla.pages`` → notifiers (PagerDuty, Alertmanager, Slack, signed webhook).

The pages were decided by the pure :class:`streams.core.paging.Pager` inside the processing
stage and committed with its state, so this agent only delivers. It runs with the sink
(delivery is I/O, like inserts) and acks a batch after every page in it was delivered or given
up on (each notifier retries with jittered backoff first): at-least-once, and the receiving
side de-duplicates by ``dedup_key`` (PagerDuty and Alertmanager do so natively). Processing
never waits for it. Without configured notifiers pages stay on the topic for other consumers.
"""

from __future__ import annotations

import logging
import os
from typing import TYPE_CHECKING, Any

import orjson

from streams import metrics
from streams.app import topics
from streams.core.paging import Page

if TYPE_CHECKING:
    from streams.app.runtime import Runtime

log = logging.getLogger(__name__)


def register(rt: Runtime) -> None:
    from streams.notify import build_notifiers, missing_notifiers, notifier_urls, paging_config

    urls = notifier_urls(os.environ)
    if not urls:
        return
    notifiers = build_notifiers(urls)
    missing = missing_notifiers(paging_config(os.environ), notifiers)
    if missing:
        raise SystemExit(f"paging routes name notifiers that are not configured: {', '.join(missing)}")

    @rt.app.agent(rt.topics[topics.PAGES], name="pages")
    async def deliver(stream):  # type: ignore[no-untyped-def]
        async for events in stream.take_events(100, within=0.2):
            for ev in events:
                page = _page(orjson.loads(ev.value))
                notifier = notifiers.get(page.notifier)
                if notifier is None:
                    metrics.PAGES.labels("unroutable").inc()
                    log.error("page %s names unknown notifier %s", page.dedup_key, page.notifier)
                    continue
                ok = await notifier.send(page)
                metrics.PAGES.labels("sent" if ok else "failed").inc()

    @rt.app.on_before_shutdown.connect
    async def close(app: Any, **_: Any) -> None:
        for n in notifiers.values():
            await n.aclose()


def _page(d: dict[str, Any]) -> Page:
    return Page(**{k: d.get(k) for k in Page.__dataclass_fields__})  # type: ignore[arg-type]
