"""The worker's HTTP endpoints on aiohttp: metrics, liveness, readiness, the live board.

``/metrics`` and ``/health`` are always open (scrapers and orchestrators); everything else may
require ``Authorization: Bearer $TOUCHSTREAM_WEB_TOKEN`` when that variable is set. The board
(``/board`` and its ``/api/*`` JSON endpoints) lives in :mod:`streams.web.board`.

``/ready`` is 200 only when the worker can do its work: the broker answers (a probe, not a
guess from the stages, which retry quietly through an outage), every stage has joined its
group and the process stage has restored the state of every partition it owns, and, for roles
that write ClickHouse, ClickHouse answers. Otherwise 503, with the same body saying which part
is missing.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import orjson
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from streams.web import board

if TYPE_CHECKING:
    from streams.app.worker import Worker


class PortInUse(OSError):
    """The web port is taken (the message says which variable moves it)."""


def json_response(body: Any, status: int = 200, headers: Mapping[str, str] | None = None) -> web.Response:
    return web.Response(body=orjson.dumps(body), status=status, content_type="application/json",
                        headers=dict(headers or {}))


def application(w: Worker) -> web.Application:
    app = web.Application()

    async def metrics_page(request: web.Request) -> web.Response:
        return web.Response(body=generate_latest(), headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def health(request: web.Request) -> web.Response:
        return json_response({"status": "ok"})

    async def ready(request: web.Request) -> web.Response:
        if not board.authorized(request.headers, w.settings.web_token):
            return json_response({"error": "unauthorized"}, status=401)
        ch_ok: bool | None = None  # a process-only worker does not touch ClickHouse
        if w.settings.role != "process":
            try:
                await w.clickhouse.run(w.clickhouse.query, "SELECT 1")
                ch_ok = True
            except Exception:  # readiness reports it; it must not raise
                ch_ok = False
        process = w.process
        body = {
            "role": w.settings.role,
            "kafka": w.probe.reachable,
            "stages": {st.name: st.ready for st in w.stages},
            "state_recovered": process is None or process.ready,
            "assigned_partitions": sorted(process.assigned) if process is not None else [],
            "clickhouse": ch_ok,
        }
        ok = w.ready and ch_ok is not False
        return json_response(body, status=200 if ok else 503)

    app.router.add_get("/metrics", metrics_page)
    app.router.add_get("/health", health)
    app.router.add_get("/ready", ready)
    for path, handler in board.routes(w):
        app.router.add_get(path, handler)
    return app


async def start(w: Worker) -> web.AppRunner:
    """Serve on ``TOUCHSTREAM_WEB_HOST:TOUCHSTREAM_WEB_PORT``; the caller cleans the runner up."""
    runner = web.AppRunner(application(w), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, w.settings.web_host, w.settings.web_port)
    try:
        await site.start()
    except OSError as exc:
        await runner.cleanup()
        raise PortInUse(
            f"cannot serve on {w.settings.web_host}:{w.settings.web_port} ({exc.strerror}); "
            f"set TOUCHSTREAM_WEB_PORT to a free port"
        ) from exc
    return runner
