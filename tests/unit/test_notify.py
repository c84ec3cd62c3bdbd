from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import logging
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from streams.core.paging import Page, PagingConfig
from streams.notify import (
    SIGNATURE_HEADER,
    AlertmanagerNotifier,
    Dispatcher,
    NotifierError,
    PagerDutyNotifier,
    SlackNotifier,
    WebhookNotifier,
    build_notifiers,
    missing_notifiers,
    notifier_from_url,
    notifier_urls,
    paging_config,
)

ROOT = Path(__file__).resolve().parents[2]
T0 = 1_773_000_000_000
PD_KEY = "R0UTINGKEY0123456789abcdef012345"
SECRET = "s3cr3t-webhook-key"
SLACK_PATH = "/services/T0000/B0000/XXXXslackXXXX"


def page(action: str = "trigger", key: str = "t:c1:1", *, severity: str = "critical", notifier: str = "n",
         at: int = T0) -> Page:
    details: dict[str, Any] = {
        "kind": "sla_breach", "tenant_id": "t", "team": "vip", "count": 1, "channels": ["live_chat"],
        "waits": [{"wait_id": "t:c1:1", "conversation_id": "c1", "channel": "live_chat", "priority": "high",
                   "started_at": T0 - 120_000, "due_at": T0 - 60_000}],
        "not_listed": 0, "triggered_at": T0 - 5000 if action == "resolve" else at,
    }
    return Page(action=action, dedup_key=key, notifier=notifier, tenant_id="t", team="vip", channel="live_chat",
                severity=severity, summary=f"SLA breach [t] team vip: {key}", details=details, at=at)


class Recorder:
    """A local HTTP endpoint that records requests and answers from a script of statuses."""

    def __init__(self) -> None:
        self.requests: list[dict[str, Any]] = []
        self.statuses: list[int] = []  # consumed per request; then 202
        self.gate: asyncio.Event | None = None  # requests wait for it when set
        self.delay_s = 0.0
        self.echo = False  # echo the request body in the response (to test redaction)
        self.url = ""

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        self.requests.append({"path": request.path, "query": dict(request.query), "headers": dict(request.headers),
                              "body": body})
        if self.gate is not None:
            await self.gate.wait()
        if self.delay_s:
            await asyncio.sleep(self.delay_s)
        status = self.statuses.pop(0) if self.statuses else 202
        headers = {"Retry-After": "0"} if status == 429 else {}
        return web.Response(status=status, body=body if self.echo else b"{}", headers=headers)

    def json(self, i: int = -1) -> Any:
        return json.loads(self.requests[i]["body"])


@asynccontextmanager
async def serve() -> AsyncIterator[Recorder]:
    rec = Recorder()
    app = web.Application()
    app.router.add_route("POST", "/{tail:.*}", rec.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    rec.url = f"http://127.0.0.1:{port}"
    try:
        yield rec
    finally:
        if rec.gate is not None:
            rec.gate.set()
        await runner.cleanup()


def run(fn: Callable[[], Awaitable[None]]) -> None:
    asyncio.run(asyncio.wait_for(fn(), 8))


FAST = {"base_delay_s": 0.001, "max_delay_s": 0.01}


# --- request shapes -------------------------------------------------------------------------------

def test_pagerduty_body_shape() -> None:
    async def main() -> None:
        async with serve() as srv:
            n = notifier_from_url("pd", f"pagerduty+{srv.url}/v2/enqueue?routing_key={PD_KEY}", **FAST)
            assert isinstance(n, PagerDutyNotifier)
            assert await n.send(page())
            assert await n.send(page("resolve"))
            await n.aclose()
        trig, res = srv.json(0), srv.json(1)
        assert srv.requests[0]["path"] == "/v2/enqueue" and srv.requests[0]["query"] == {}  # key not in the URL
        assert srv.requests[0]["headers"]["Content-Type"] == "application/json"
        assert trig["routing_key"] == PD_KEY and trig["event_action"] == "trigger" and trig["dedup_key"] == "t:c1:1"
        payload = trig["payload"]
        assert payload["summary"].startswith("SLA breach") and payload["severity"] == "critical"
        assert payload["source"] == "touchstream/t" and payload["custom_details"]["count"] == 1
        assert payload["timestamp"] == "2026-03-08T20:00:00.000Z"
        assert (payload["group"], payload["component"], payload["class"]) == ("vip", "live_chat", "sla_breach")
        assert res == {"routing_key": PD_KEY, "event_action": "resolve", "dedup_key": "t:c1:1"}

    run(main)


def test_alertmanager_shape() -> None:
    async def main() -> None:
        async with serve() as srv:
            n = notifier_from_url("am", f"alertmanager+{srv.url}/api/v2/alerts", **FAST)
            assert isinstance(n, AlertmanagerNotifier)
            assert await n.send(page(at=T0))
            assert await n.send(page("resolve", at=T0 + 60_000))
            await n.aclose()
        (firing,), (resolved,) = srv.json(0), srv.json(1)
        assert srv.requests[0]["path"] == "/api/v2/alerts"
        assert firing["labels"] == resolved["labels"]  # Alertmanager identifies alerts by label set
        labels = firing["labels"]
        assert labels["alertname"] == "TouchstreamSlaBreach" and labels["dedup_key"] == "t:c1:1"
        assert (labels["severity"], labels["team"], labels["channel"], labels["tenant_id"]) == (
            "critical", "vip", "live_chat", "t")
        assert firing["annotations"]["summary"].startswith("SLA breach")
        assert json.loads(firing["annotations"]["details"])["count"] == 1
        assert firing["startsAt"] == "2026-03-08T20:00:00.000Z" and firing["endsAt"] > firing["startsAt"]
        assert resolved["startsAt"] == "2026-03-08T19:59:55.000Z"  # the trigger's time
        assert resolved["endsAt"] == "2026-03-08T20:01:00.000Z"

    run(main)


def test_slack_shape() -> None:
    async def main() -> None:
        async with serve() as srv:
            n = notifier_from_url("sl", f"slack+{srv.url}{SLACK_PATH}", **FAST)
            assert isinstance(n, SlackNotifier)
            assert await n.send(page())
            assert await n.send(page("resolve"))
            await n.aclose()
        trig, res = srv.json(0), srv.json(1)
        assert set(trig) == {"text"} and set(res) == {"text"}
        assert "[CRITICAL] SLA breach [t] team vip" in trig["text"] and "c1 (live_chat, high)" in trig["text"]
        assert res["text"].startswith(":white_check_mark: RESOLVED SLA breach")
        assert srv.requests[0]["path"] == SLACK_PATH

    run(main)


def test_webhook_signature_verifies() -> None:
    async def main() -> None:
        async with serve() as srv:
            n = notifier_from_url("wh", f"webhook+{srv.url}/hook?x=1&secret={SECRET}", **FAST)
            assert isinstance(n, WebhookNotifier)
            assert await n.send(page())
            await n.aclose()
        req = srv.requests[0]
        assert req["query"] == {"x": "1"}  # the secret is not sent in the URL
        sig = req["headers"][SIGNATURE_HEADER]
        expected = "sha256=" + hmac.new(SECRET.encode(), req["body"], hashlib.sha256).hexdigest()
        assert hmac.compare_digest(sig, expected)
        assert json.loads(req["body"]) == json.loads(json.dumps(page().to_dict()))
        bad = "sha256=" + hmac.new(b"other", req["body"], hashlib.sha256).hexdigest()
        assert not hmac.compare_digest(sig, bad)

    run(main)


# --- retries --------------------------------------------------------------------------------------

def test_retry_on_500_then_success_with_growing_backoff() -> None:
    delays: list[float] = []

    async def fake_sleep(d: float) -> None:
        delays.append(d)

    async def main() -> None:
        async with serve() as srv:
            srv.statuses = [500, 503, 202]
            n = notifier_from_url("wh", f"webhook+{srv.url}/h", attempts=5, base_delay_s=1.0, max_delay_s=60,
                                  sleep=fake_sleep)
            assert await n.send(page())
            await n.aclose()
            assert len(srv.requests) == 3
            assert n.counters == {"sent": 1, "failed": 0, "retried": 2}
            assert srv.requests[0]["body"] == srv.requests[2]["body"]  # same page, same dedup key

    run(main)
    assert len(delays) == 2
    assert 0.5 <= delays[0] <= 1.0 and 1.0 <= delays[1] <= 2.0  # equal jitter around 1 s, 2 s


def test_no_retry_on_400_but_on_429() -> None:
    async def main() -> None:
        async with serve() as srv:
            srv.statuses = [400]
            n = notifier_from_url("wh", f"webhook+{srv.url}/h", **FAST)
            assert not await n.send(page())
            assert len(srv.requests) == 1 and n.counters["failed"] == 1 and n.counters["retried"] == 0
            srv.statuses = [429, 202]
            assert await n.send(page())
            assert len(srv.requests) == 3
            await n.aclose()

    run(main)


def test_gives_up_after_attempts_on_connection_errors_and_timeouts() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        dead_port = s.getsockname()[1]  # closed when the block ends: connection refused

    async def main() -> None:
        n = notifier_from_url("wh", f"webhook+http://127.0.0.1:{dead_port}/h", attempts=3, **FAST)
        assert not await n.send(page())
        assert n.counters == {"sent": 0, "failed": 1, "retried": 2}
        await n.aclose()
        async with serve() as srv:
            srv.delay_s = 0.5
            slow = notifier_from_url("wh", f"webhook+{srv.url}/h", attempts=2, timeout_s=0.05, **FAST)
            assert not await slow.send(page())
            assert len(srv.requests) == 2 and slow.counters["retried"] == 1
            await slow.aclose()

    run(main)


# --- secrets ----------------------------------------------------------------------------------------

def test_secrets_redacted_in_repr_and_logs(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="streams.notify")

    async def main() -> None:
        async with serve() as srv:
            srv.echo = True  # the error body repeats the request, routing key included
            ns = build_notifiers({
                "pd": f"pagerduty+{srv.url}/v2/enqueue?routing_key={PD_KEY}",
                "wh": f"webhook+http://user:pa55word@127.0.0.1:{srv.url.rsplit(':', 1)[1]}/h?secret={SECRET}",
                "sl": f"slack+{srv.url}{SLACK_PATH}",
            }, attempts=2, **FAST)
            for n in ns.values():
                srv.statuses = [500, 400]
                assert not await n.send(page())
                await n.aclose()
            text = repr(ns) + repr(Dispatcher(ns)) + caplog.text + str([str(n) for n in ns.values()])
            assert "retrying" in caplog.text and "rejected" in caplog.text
            for secret in (PD_KEY, SECRET, "pa55word", "XXXXslackXXXX"):
                assert secret not in text
            assert "***" in repr(ns["pd"]) and "127.0.0.1" in repr(ns["sl"])

    run(main)


# --- dispatcher -------------------------------------------------------------------------------------

def test_dispatcher_never_blocks_and_flushes_on_stop() -> None:
    async def main() -> None:
        async with serve() as srv:
            srv.gate = asyncio.Event()  # the endpoint hangs until released
            d = Dispatcher({"n": notifier_from_url("n", f"webhook+{srv.url}/h", timeout_s=5, **FAST),
                            "m": notifier_from_url("m", f"slack+{srv.url}/s", timeout_s=5, **FAST)})
            await d.start()
            t = time.perf_counter()
            for i in range(200):
                assert d.submit(page(key=f"k{i}", notifier="n" if i % 2 else "m"))
            assert time.perf_counter() - t < 0.1  # submit does no I/O
            await asyncio.sleep(0.05)
            assert 1 <= len(srv.requests) <= 2  # one in flight per notifier, the rest queued
            srv.gate.set()
            await d.stop(timeout_s=5)
            assert len(srv.requests) == 200 and d.queued() == 0
            assert d.counters["sent"] == 200 and d.counters["failed"] == 0 and d.counters["abandoned"] == 0

    run(main)


def test_dispatcher_stop_times_out_on_a_hung_endpoint() -> None:
    async def main() -> None:
        async with serve() as srv:
            srv.gate = asyncio.Event()
            d = Dispatcher({"n": notifier_from_url("n", f"webhook+{srv.url}/h", timeout_s=30, **FAST)})
            await d.start()
            d.submit_many([page(key=f"k{i}", notifier="n") for i in range(5)])
            await asyncio.sleep(0.02)
            t = time.perf_counter()
            await d.stop(timeout_s=0.2)
            assert time.perf_counter() - t < 1.0
            assert d.counters["abandoned"] == 5 and not d.submit(page(key="late", notifier="n"))

    run(main)


def test_dispatcher_full_queue_drops_oldest_warning_first() -> None:
    d = Dispatcher({"n": WebhookNotifier("n", "http://127.0.0.1:9/h")}, maxsize=3)
    for key, sev in [("c1", "critical"), ("w1", "warning"), ("c2", "critical"), ("w2", "warning"),
                     ("c3", "critical"), ("c4", "critical")]:
        assert d.submit(page(key=key, severity=sev, notifier="n"))
    assert [p.dedup_key for p in d._queues["n"]] == ["c2", "c3", "c4"]
    assert d.counters["dropped"] == 3 and d.counters["dropped_warning"] == 2
    assert d.submit(page(key="w1", severity="warning", notifier="n"))  # a dropped page may be resubmitted


def test_dispatcher_dedups_and_counts() -> None:
    async def main() -> None:
        async with serve() as srv:
            d = Dispatcher({"n": notifier_from_url("n", f"webhook+{srv.url}/h", attempts=2, **FAST)})
            await d.start()
            assert d.submit(page(notifier="n"))
            assert not d.submit(page(notifier="n"))  # identical (dedup_key, action)
            assert d.submit(page("resolve", notifier="n"))
            assert not d.submit(page(notifier="nobody"))
            await d.stop()
            assert len(srv.requests) == 2
            # a send that finally failed is forgotten: resubmitting delivers it
            srv.statuses = [500, 500, 202]
            d2 = Dispatcher({"n": notifier_from_url("n", f"webhook+{srv.url}/h", attempts=2, **FAST)})
            await d2.start()
            d2.submit(page(key="x", notifier="n"))
            await asyncio.sleep(0.2)
            assert d2.submit(page(key="x", notifier="n"))
            await d2.stop()
        assert d.counters["deduplicated"] == 1 and d.counters["unroutable"] == 1 and d.counters["sent"] == 2
        assert d2.counters["failed"] == 1 and d2.counters["sent"] == 1 and d2.counters["retried"] == 1

    run(main)


# --- configuration ----------------------------------------------------------------------------------

def test_urls_from_file_and_env(tmp_path: Path) -> None:
    f = tmp_path / "n.json"
    f.write_text(json.dumps({"notifiers": {"_c": "x", "pd": "pagerduty+https://e/v2?routing_key=${PD}",
                                           "am": "alertmanager+http://am:9093/api/v2/alerts"}}))
    env = {"TOUCHSTREAM_NOTIFIERS_FILE": str(f), "PD": "k1",
           "TOUCHSTREAM_NOTIFIERS": json.dumps({"am": "slack+https://hooks/x"})}
    assert notifier_urls(env) == {"pd": "pagerduty+https://e/v2?routing_key=k1", "am": "slack+https://hooks/x"}
    with pytest.raises(NotifierError, match="PD is not set"):
        notifier_urls({"TOUCHSTREAM_NOTIFIERS_FILE": str(f)})
    with pytest.raises(NotifierError, match="not valid JSON"):
        notifier_urls({"TOUCHSTREAM_NOTIFIERS": "{"})
    with pytest.raises(NotifierError, match="must start with"):
        notifier_from_url("x", "https://example.com")
    with pytest.raises(NotifierError, match="routing_key"):
        notifier_from_url("x", "pagerduty+https://events.pagerduty.com/v2/enqueue")


def test_example_file_builds() -> None:
    path = ROOT / "deploy" / "notifiers.example.json"
    env = {"PAGERDUTY_ROUTING_KEY": "a", "PAGERDUTY_MANAGERS_KEY": "b", "SLACK_SUPPORT_HOOK": "T/B/C",
           "TOUCHSTREAM_WEBHOOK_SECRET": "s"}
    notifiers = build_notifiers(notifier_urls(env, path))
    cfg = paging_config({}, path)
    assert isinstance(cfg, PagingConfig) and cfg.route("vip").escalate_to == "pagerduty-managers"
    assert cfg.route("support-emea").notifier == "slack-support"
    assert missing_notifiers(cfg, notifiers) == []
    assert missing_notifiers(cfg, {}) == sorted(cfg.notifier_names())
