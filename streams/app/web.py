"""The worker's HTTP endpoints on Faust's web server: metrics, liveness, readiness, live board.

``/metrics`` and ``/health`` are always open (scrapers and orchestrators); everything else may
require ``Authorization: Bearer $TOUCHSTREAM_WEB_TOKEN`` when that variable is set. The board
(``/board`` and its ``/api/*`` JSON endpoints) lives in :mod:`streams.app.board`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from streams.app import board

if TYPE_CHECKING:
    from streams.app.runtime import Runtime


def register(rt: Runtime) -> None:
    """Attach the endpoints to the worker's own web server: one port per worker to scrape and probe."""
    app = rt.app

    @app.page("/metrics")
    async def metrics_page(web: Any, request: Any) -> Any:
        return web.bytes(generate_latest(), content_type=CONTENT_TYPE_LATEST.split(";")[0])

    @app.page("/health")
    async def health(web: Any, request: Any) -> Any:
        return web.json({"status": "ok"})

    @app.page("/ready")
    async def ready(web: Any, request: Any) -> Any:
        if not board.authorized(request.headers, rt.settings.web_token):
            return web.json({"error": "unauthorized"}, status=401)
        assigned = sorted(tp.partition for tp in app.assignor.assigned_actives()
                          if tp.topic == rt.settings.topic("touchpoints.valid"))
        ch_ok: bool | None = None  # a process-only worker does not touch ClickHouse
        if rt.settings.role != "process":
            try:
                await rt.clickhouse.run(rt.clickhouse.query, "SELECT 1")
                ch_ok = True
            except Exception:  # readiness reports it; it must not raise
                ch_ok = False
        recovered = rt.ready or rt.settings.role == "sink"
        body = {"role": rt.settings.role, "state_recovered": recovered, "assigned_partitions": assigned,
                "clickhouse": ch_ok}
        ok = recovered and ch_ok is not False
        return web.json(body, status=200 if ok else 503)

    board.register(rt)
