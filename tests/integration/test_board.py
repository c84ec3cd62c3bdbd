"""The live board in a real browser: worker on the real broker → /board → headless Chromium.

What a person sees is asserted, not what the API returns: Chromium loads the page with the token
in the URL, runs its JavaScript (which calls the API with the token as a header) and the tests
read the rendered DOM and its layout (bounding boxes at 1,400 and 1,920 px) over the DevTools
protocol, and save a screenshot of each view at each width (paths printed).

The run: live raw events (a small exact funnel for ``acme``, 1,000 open customer waits for
``globex``, a good part of them overdue), plus 3 hours of funnel history and two detector
incidents produced to the output topics the sink loads — exactly what a process worker would
have written, so the growth charts have history and incidents to mark (the detector itself needs
hours of warm-up; its incidents are tested in tests/unit/core).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import shutil
import subprocess
import time
import urllib.error
import urllib.request
import uuid
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest

from streams.app import topics
from streams.web.board import PRIORITY_RANK
from tests.conftest import ROOT, WorkerProc, free_port, wait_until
from tests.kafka_util import produce, topic_counts

pytestmark = [pytest.mark.integration]

TOKEN = "board-test-token"
MINUTE = 60_000
WAITS = 1000
VIEWPORTS = ((1400, 900), (1920, 1080))
#: acme's funnel from the live events below, over the last hour (streams.core.conversion's rule)
FUNNEL = {  # stage: (events, persons, converted, from_previous)
    "impression": (10, 10, 4, None), "click": (4, 4, 3, 4), "visit": (9, 8, 2, 3), "interaction": (2, 2, 1, 2),
    "lead": (1, 1, 0, 1), "opportunity": (0, 0, 0, 0), "deal": (0, 0, None, 0),
}
INCIDENT_RESOLVED = "a-spring-click-visit"  # conversion drop on campaign spring, T-70 → T-38 min
INCIDENT_OPEN = "a-ads-impressions"  # volume drop on channel ads since T-20 min, still open


def chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        found = shutil.which(name)
        if found:
            return found
    pytest.fail("headless Chromium not found (binary `chromium`): install it with `apt-get install -y chromium`; "
                "`make test` does that before running the tests")


def iso(ms: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ms / 1000)) + f".{ms % 1000:03d}Z"


# --------------------------------------------------------------------------- what the run produces


def live_events(now_ms: int) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []

    def add(etype: str, at: int, who: str, channel: str, tenant: str = "acme", campaign: str | None = None,
            conv: dict[str, str] | None = None) -> None:
        ev: dict[str, Any] = {"event_id": f"b{len(out)}", "tenant_id": tenant, "occurred_at": iso(at),
                              "channel": channel, "type": etype, "identities": {"anonymous_id": who}}
        if campaign:
            ev["campaign"] = {"name": campaign, "source": "google", "medium": "cpc"}
        if conv is not None:
            ev["conversation"] = conv
            ev["identities"] = {"email": f"{who}@example.com"}
        out.append(ev)

    # all in one funnel window, two minutes ago: p0-p3 click, p0-p2 land, d0-d4 come directly
    t0 = now_ms - now_ms % MINUTE - 2 * MINUTE + 1000
    for i in range(10):
        add("ad_impression", t0 + i, f"p{i}", "ads", campaign="spring")
    for i in range(4):
        add("ad_click", t0 + 1000 + i, f"p{i}", "ads", campaign="spring")
    for i, who in enumerate(("p0", "p1", "p2", "p0")):
        add("page_view", t0 + 20_000 + i * 3000, who, "web")
    for i in range(5):
        add("page_view", t0 + 25_000 + i, f"d{i}", "web")
    add("form_submit", t0 + 40_000, "p0", "web")
    add("form_submit", t0 + 41_000, "d0", "web")
    add("lead", t0 + 50_000, "p0", "web")
    add("ad_impression", t0, "g1", "ads", tenant="globex")

    # 1,000 customers waiting for globex's first reply, over the last 15 minutes
    channels = ("live_chat", "whatsapp", "email", "messenger")
    teams = ("support", "sales", "billing", None)
    priorities = ("normal", "normal", "high", "urgent", "low")
    for i in range(WAITS):
        conv = {"id": f"c{i:04d}", "priority": priorities[i % 5]}
        team = teams[(i // 4) % 4]
        if team is not None:
            conv["team"] = team
        add("message_in", now_ms - 15 * MINUTE + i * 880, f"cust{i}", channels[i % 4], tenant="globex", conv=conv)
    return out


POLICIES = {"policies": [
    {"name": "chat", "match": {"channel": "live_chat"}, "first_reply_s": 240, "next_reply_s": 600},
    {"name": "messaging", "match": {"channel": "whatsapp"}, "first_reply_s": 420, "next_reply_s": 900},
    {"name": "mail", "match": {"channel": "email"}, "first_reply_s": 86_400, "next_reply_s": 86_400},
]}


def history(now_ms: int) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """3 hours of acme's funnel rows (until 12 minutes ago) and two incidents, as a process worker
    writes them: click→visit of campaign spring falls from 85 % to 35 % between T-70 and T-40
    minutes (resolved), and channel ads' impressions fall by 40 % from T-20 (still open)."""
    end = now_ms - now_ms % MINUTE - 12 * MINUTE
    rows: list[dict[str, Any]] = []
    for k in range(180):
        ws = end - (180 - k) * MINUTE
        ago = (end - ws) // MINUTE + 12
        impressions = 120 if ago <= 20 else 200
        clicks = impressions // 5
        visits_from_click = int(clicks * (0.35 if 40 <= ago <= 70 else 0.85))

        def row(channel: str | None, campaign: str | None, stage: str, persons: int, converted: int | None,
                events: int | None = None, window_start: int = ws) -> None:
            rows.append({"tenant_id": "acme", "window_start": window_start, "window_end": window_start + MINUTE,
                         "channel": channel, "campaign": campaign, "stage": stage, "events": events or persons,
                         "persons": persons, "converted": converted})

        for ch, camp in ((None, None), ("ads", None), (None, "spring"), ("ads", "spring")):
            row(ch, camp, "impression", impressions, clicks)
            row(ch, camp, "click", clicks, visits_from_click)
        for ch in (None, "web"):
            row(ch, None, "visit", visits_from_click + 30, 8, events=(visits_from_click + 30) * 3)
            row(ch, None, "interaction", 8, 2)
            row(ch, None, "lead", 2, 0)

    def incident(aid: str, dim: tuple[str | None, str | None], stage_from: str, stage_to: str, kind: str,
                 start_ago: int, records: list[tuple[str, int]], observed: float, expected: float,
                 lost: float) -> list[dict[str, Any]]:
        start = end + 12 * MINUTE - start_ago * MINUTE
        return [{"anomaly_id": aid, "tenant_id": "acme", "dimension": {"channel": dim[0], "campaign": dim[1]},
                 "stage_from": stage_from, "stage_to": stage_to, "kind": kind, "status": status,
                 "window_start": start, "detected_at": end + 12 * MINUTE - ago * MINUTE, "observed": observed,
                 "expected": expected, "score": -8.0, "est_lost_conversions": lost, "total_observed": observed,
                 "total_expected": expected} for status, ago in records]

    anomalies = [
        *incident(INCIDENT_RESOLVED, (None, "spring"), "click", "visit", "conversion_drop", 70,
                  [("open", 67), ("update", 55), ("resolved", 38)], 0.35, 0.85, 3.2),
        *incident(INCIDENT_OPEN, ("ads", None), "impression", "impression", "volume_drop", 20,
                  [("open", 17), ("update", 13)], 120.0, 200.0, 12.5),
    ]
    return rows, anomalies


# --------------------------------------------------------------------------- Chromium over DevTools


class Browser:
    """Headless Chromium driven over the DevTools protocol (aiohttp's websocket client): set the
    viewport, load, wait for the page's own "loaded" mark, read the DOM and layout, screenshot."""

    def __init__(self, profile: Path) -> None:
        self.profile = profile
        self.errors: list[str] = []
        self._id = 0

    async def __aenter__(self) -> Browser:
        self.proc = subprocess.Popen(
            [chromium(), "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
             "--disable-component-update", "--disable-sync", "--no-first-run", "--no-default-browser-check",
             "--disable-extensions", "--hide-scrollbars", "--mute-audio", f"--user-data-dir={self.profile}",
             "--remote-debugging-port=0", "about:blank"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        port_file = self.profile / "DevToolsActivePort"
        deadline = time.monotonic() + 30
        while not (port_file.exists() and port_file.read_text().strip()):
            if time.monotonic() > deadline or self.proc.poll() is not None:
                raise RuntimeError("Chromium did not open its DevTools port")
            await asyncio.sleep(0.1)
        port = int(port_file.read_text().split()[0])
        self.http = aiohttp.ClientSession()
        async with self.http.get(f"http://127.0.0.1:{port}/json/list") as r:
            page = next(t for t in await r.json() if t["type"] == "page")
        self.ws = await self.http.ws_connect(page["webSocketDebuggerUrl"], max_msg_size=0)
        await self.send("Runtime.enable")
        await self.send("Page.enable")
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.ws.close()
        await self.http.close()
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, 15)
        try:
            self.proc.wait(15)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, 9)
            self.proc.wait(5)

    async def send(self, method: str, **params: Any) -> dict[str, Any]:
        self._id += 1
        me = self._id
        await self.ws.send_json({"id": me, "method": method, "params": params})
        while True:
            msg = await self.ws.receive_json(timeout=60)
            if msg.get("method") == "Runtime.exceptionThrown":
                self.errors.append(json.dumps(msg["params"]["exceptionDetails"])[:500])
            if msg.get("id") == me:
                if "error" in msg:
                    raise RuntimeError(f"{method}: {msg['error']}")
                return dict(msg.get("result", {}))

    async def eval(self, expr: str) -> Any:
        r = await self.send("Runtime.evaluate", expression=expr, returnByValue=True, awaitPromise=True)
        if "exceptionDetails" in r:
            raise RuntimeError(f"{expr[:80]}…: {r['exceptionDetails']}")
        return r["result"].get("value")

    async def open(self, url: str, width: int, height: int) -> None:
        await self.send("Emulation.setDeviceMetricsOverride", width=width, height=height, deviceScaleFactor=1,
                        mobile=False)
        await self.send("Page.navigate", url=url)

    async def wait_for(self, expr: str, timeout: float = 30.0) -> Any:
        deadline = time.monotonic() + timeout
        last = None
        while time.monotonic() < deadline:
            with contextlib.suppress(RuntimeError):  # the page may still be navigating
                last = await self.eval(expr)
                if last:
                    return last
            await asyncio.sleep(0.2)
        status = await self.eval("document.getElementById('status') && document.getElementById('status').textContent")
        raise AssertionError(f"timed out waiting for {expr!r} (last {last!r}; status {status!r}; {self.errors})")

    async def screenshot(self, path: Path) -> None:
        r = await self.send("Page.captureScreenshot", format="png")
        path.write_bytes(base64.b64decode(r["data"]))

    async def pixel(self, x: float, y: float) -> tuple[int, int, int]:
        """The colour a person sees at page point (x, y): a 3 × 3 px capture, its centre pixel."""
        r = await self.send("Page.captureScreenshot", format="png",
                            clip={"x": x - 1, "y": y - 1, "width": 3, "height": 3, "scale": 1})
        return png_pixel(base64.b64decode(r["data"]), 1, 1)


def png_pixel(data: bytes, x: int, y: int) -> tuple[int, int, int]:
    """RGB of one pixel of an 8-bit, non-interlaced RGB(A) PNG (what Chromium captures)."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    pos, idat, width, ctype = 8, b"", 0, 0
    while pos < len(data):
        n = int.from_bytes(data[pos:pos + 4], "big")
        kind, body = data[pos + 4:pos + 8], data[pos + 8:pos + 8 + n]
        if kind == b"IHDR":
            width, depth, ctype, interlace = int.from_bytes(body[:4], "big"), body[8], body[9], body[12]
            assert depth == 8 and ctype in (2, 6) and interlace == 0, (depth, ctype, interlace)
        elif kind == b"IDAT":
            idat += body
        pos += 12 + n
    bpp = 4 if ctype == 6 else 3
    raw, stride = zlib.decompress(idat), width * bpp
    prev = bytearray(stride)
    for row in range(y + 1):
        f, line = raw[row * (stride + 1)], bytearray(raw[row * (stride + 1) + 1:(row + 1) * (stride + 1)])
        for i in range(stride):
            a = line[i - bpp] if i >= bpp else 0
            b, c = prev[i], prev[i - bpp] if i >= bpp else 0
            pred = (0, a, b, (a + b) // 2, _paeth(a, b, c))[f]
            line[i] = (line[i] + pred) & 0xFF
        prev = line
    px = prev[x * bpp:x * bpp + 3]
    return px[0], px[1], px[2]


def _paeth(a: int, b: int, c: int) -> int:
    p = a + b - c
    pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
    return a if pa <= pb and pa <= pc else b if pb <= pc else c


def reddish(rgb: tuple[int, int, int]) -> bool:
    r, g, b = rgb
    return r - max(g, b) >= 20


def in_browser(coro: Any) -> Any:
    return asyncio.run(coro)


# --------------------------------------------------------------------------- the run (once per module)


def get(port: str, path: str, token: str | None = TOKEN) -> tuple[int, Any, dict[str, str]]:
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}")
    if token:
        req.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            body = resp.read()
            ctype = resp.headers.get("Content-Type", "")
            return resp.status, orjson.loads(body) if "json" in ctype else body.decode(), dict(resp.headers)
    except urllib.error.HTTPError as err:
        return err.code, err.read().decode(errors="replace"), dict(err.headers)
    except OSError as err:  # the web server is not listening yet (it starts after the topics exist)
        return 0, str(err), {}


def api(port: str, path: str) -> Any:
    status, body, _ = get(port, path)
    return body if status == 200 else None


@pytest.fixture(scope="module")
def board_run(kafka_bootstrap: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    chromium()  # fail first, with the install hint, not after a minute of Kafka set-up
    tmp = tmp_path_factory.mktemp("board")
    run_id = uuid.uuid4().hex[:8]
    policies = tmp / "policies.json"
    policies.write_text(json.dumps(POLICIES))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TOUCHSTREAM_", "CLICKHOUSE_"))}
    env.update(KAFKA_BOOTSTRAP_SERVERS=kafka_bootstrap, TOUCHSTREAM_DATA_DIR=str(tmp / "data"),
               TOUCHSTREAM_TOPIC_PREFIX=f"t{run_id}.", TOUCHSTREAM_APP_ID=f"ts-{run_id}", TOUCHSTREAM_PARTITIONS="2",
               TOUCHSTREAM_SINK_FLUSH_S="0.3", TOUCHSTREAM_WEB_PORT=str(free_port()), TOUCHSTREAM_LOG_LEVEL="warn",
               TOUCHSTREAM_WEB_TOKEN=TOKEN, TOUCHSTREAM_SLA_POLICIES=str(policies), PYTHONPATH=str(ROOT))
    prefix, port = env["TOUCHSTREAM_TOPIC_PREFIX"], env["TOUCHSTREAM_WEB_PORT"]
    w = WorkerProc(env, tmp / "worker.log").start()
    try:
        wait_until(lambda: prefix + topics.RAW in topic_counts(kafka_bootstrap, prefix=prefix)["topics"], 90,
                   what="worker to create topics", explain=w.tail)
        now = int(time.time() * 1000)
        rows, incidents = history(now)
        produce(kafka_bootstrap, prefix + topics.FUNNEL, [(r["tenant_id"].encode(), orjson.dumps(r)) for r in rows])
        produce(kafka_bootstrap, prefix + topics.ANOMALIES,
                [(a["anomaly_id"].encode(), orjson.dumps(a)) for a in incidents])
        evs = live_events(now)
        produce(kafka_bootstrap, prefix + topics.RAW, [(e["tenant_id"].encode(), orjson.dumps(e)) for e in evs])

        def acme_funnel() -> Any:
            body = api(port, "/api/funnel?tenant=acme&since=1h")
            got = body and body["tenants"] and {
                s["stage"]: (s["events"], s["persons"], s["converted"], s["from_previous"])
                for s in body["tenants"][0]["stages"]}
            return got == FUNNEL and body

        wait_until(acme_funnel, 120, what="acme's funnel in /api/funnel",
                   explain=lambda: f"{api(port, '/api/funnel?tenant=acme&since=1h')}\n{w.tail()}")
        wait_until(lambda: (b := api(port, "/api/sla/open?limit=1")) and b["count"] == WAITS, 60,
                   what=f"{WAITS} open waits", explain=lambda: f"{api(port, '/api/sla/open?limit=1')}\n{w.tail()}")
        wait_until(lambda: (b := api(port, "/api/funnel/series?tenant=acme&since=3h&campaign=spring"))
                   and [i["anomaly_id"] for i in b["incidents"]] == [INCIDENT_RESOLVED]
                   and any(x["anomaly_id"] == INCIDENT_OPEN for x in api(port, "/api/anomalies/open")["anomalies"]),
                   60, what="the history's incidents in ClickHouse", explain=w.tail)
        overdue = wait_until(lambda: (b := api(port, "/api/sla/open?limit=1")) and b["overdue"] > 200 and b, 60,
                             what="overdue waits", explain=w.tail)
        wait_until(lambda: (b := api(port, "/api/sla/breaches?since=1h"))
                   and sum(t["breaches"] or 0 for t in b["teams"]) >= overdue["overdue"] * 0.9, 60,
                   what="the breaches in ClickHouse", explain=w.tail)
        yield {"env": env, "port": port, "now": now, "worker": w, "tmp": tmp}
    finally:
        print(f"\n----- worker log tail -----\n{w.tail(3000)}")
        w.stop()


# --------------------------------------------------------------------------- API contract


def test_api_answers_cohort_conversion_and_urgency(board_run: dict[str, Any]) -> None:
    port = board_run["port"]
    body = api(port, "/api/funnel?tenant=acme&since=1h")
    assert body["source"] == "clickhouse" and body["role"] == "all"
    stages = {s["stage"]: s for s in body["tenants"][0]["stages"]}
    assert stages["click"]["conversion"] == 0.75 and stages["visit"]["skipped_previous"] == 5
    assert all(s["conversion"] is None or 0 <= s["conversion"] <= 1 for s in stages.values())
    assert stages["impression"]["anomalies"] == []  # the open incident is on channel ads, not the total
    assert body["tenants"][0]["other_anomalies"] == 1
    ads = api(port, "/api/funnel?tenant=acme&since=1h&channel=ads")["tenants"][0]["stages"]
    assert ads[0]["persons"] == 10 and [a["anomaly_id"] for a in ads[0]["anomalies"]] == [INCIDENT_OPEN]
    assert ads[1]["conversion"] == 0.75  # an ads click that lands on web converted for ads

    series = api(port, "/api/funnel/series?tenant=acme&since=3h&campaign=spring")
    assert series["bucket_ms"] == MINUTE and series["dimension"] == {"channel": None, "campaign": "spring"}
    click = next(s for s in series["stages"] if s["stage"] == "click")
    dipped = [c for t, c in zip(series["buckets"], click["conversion"], strict=True)
              if c is not None and board_run["now"] - 65 * MINUTE <= t <= board_run["now"] - 45 * MINUTE]
    assert dipped and all(c == 0.35 for c in dipped)
    assert {i["anomaly_id"]: i["end"] is None for i in series["incidents"]} == {INCIDENT_RESOLVED: False}

    waits = api(port, "/api/sla/open?limit=5000")
    assert waits["count"] == WAITS and not waits["truncated"]
    assert sum(t["open"] for t in waits["by_team"]) == WAITS == sum(c["open"] for c in waits["by_channel"])
    rows = waits["waits"]
    flags = [r["overdue"] for r in rows]
    assert flags == sorted(flags, reverse=True)  # every overdue wait before every other
    overdue = [r for r in rows if r["overdue"]]
    assert [PRIORITY_RANK[r["priority"]] for r in overdue] == sorted(PRIORITY_RANK[r["priority"]] for r in overdue)
    later = [r["due_in_s"] // 60 for r in rows if not r["overdue"]]
    assert later == sorted(later)
    support = api(port, "/api/sla/open?team=support&channel=live_chat&limit=10")
    assert support["count"] == WAITS and all(w["team"] == "support" and w["channel"] == "live_chat"
                                             for w in support["waits"])

    anomalies = api(port, "/api/anomalies/open")["anomalies"]
    assert [a["anomaly_id"] for a in anomalies] == [INCIDENT_OPEN]  # the resolved one is not open
    assert anomalies[0]["est_lost_conversions"] == 12.5 and anomalies[0]["source"] == "clickhouse"

    # auth: /board and /api need the token, /health and /metrics do not; only /board takes ?token=
    assert get(port, "/api/funnel", token=None)[0] == 401
    assert get(port, "/api/sla/open", token="wrong")[0] == 401
    assert get(port, f"/api/sla/open?token={TOKEN}", token=None)[0] == 401
    assert get(port, "/board", token=None)[0] == 401
    assert get(port, "/health", token=None)[0] == 200
    assert get(port, "/metrics", token=None)[0] == 200
    assert get(port, "/api/funnel?since=1y")[0] == 400
    assert get(port, "/api/funnel/series?channel=fax")[0] == 400
    status, page, headers = get(port, f"/board?token={TOKEN}", token=None)
    assert status == 200 and "<title>touchstream" in page
    assert "default-src 'none'" in headers["Content-Security-Policy"]


# --------------------------------------------------------------------------- what a support lead sees

SUPPORT_LAYOUT = """(() => {
  const box = (el) => { const r = el.getBoundingClientRect();
                        return {top: r.top, bottom: r.bottom, left: r.left, right: r.right}; };
  const q = (s) => document.querySelector(s);
  const scroller = document.getElementById('waits-scroll');
  const dueHead = [...document.querySelectorAll('table.waits th')].find(th => th.textContent === 'due');
  const firstDue = q('table.waits td.due');
  return {
    viewport: {w: innerWidth, h: innerHeight},
    pageScrolls: document.scrollingElement.scrollHeight > innerHeight + 1,
    breaches: box(document.getElementById('breaches-section')),
    teams: box(document.getElementById('teams-section')),
    channels: box(document.getElementById('channels-section')),
    waits: box(document.getElementById('waits-section')),
    dueHead: box(dueHead), firstDue: box(firstDue), scroller: box(scroller),
    listScrolls: scroller.scrollHeight > scroller.clientHeight,
    kpis: [...document.querySelectorAll('.kpi')].map(k => [k.querySelector('.l').textContent,
                                                          k.querySelector('.v').textContent]),
    rows: [...document.querySelectorAll('tr.wait')].map(r => [r.dataset.overdue === 'true', r.dataset.priority,
             Number(r.dataset.dueIn), r.querySelector('td.due').textContent]),
    teamRows: [...document.querySelectorAll('#teams tr.team')].map(r => [r.dataset.team, Number(r.dataset.open)]),
    breachRows: [...document.querySelectorAll('#breaches tr.team')].map(r => [r.dataset.team, r.dataset.breaches]),
    source: document.getElementById('waits-src').textContent,
  };
})()"""


@pytest.mark.parametrize(("width", "height"), VIEWPORTS)
def test_support_view_with_1000_waits(board_run: dict[str, Any], width: int, height: int) -> None:
    port, tmp = board_run["port"], board_run["tmp"]
    shot = tmp / f"board-support-{width}.png"

    async def go() -> dict[str, Any]:
        async with Browser(tmp / f"chromium-support-{width}") as b:
            await b.open(f"http://127.0.0.1:{port}/board?token={TOKEN}#support", width, height)
            await b.wait_for("document.body.dataset.loadedSupport === 'true' && "
                             "document.querySelectorAll('tr.wait').length > 0")
            layout = await b.eval(SUPPORT_LAYOUT)
            await b.screenshot(shot)
            first = layout["firstDue"]
            layout["overdueColour"] = await b.pixel(first["left"] + 100, (first["top"] + first["bottom"]) / 2)
            # a lead drills into one team: the list narrows, the overview stays
            await b.eval("document.querySelector('#teams tr.team[data-team=\"billing\"]').click()")
            await b.wait_for("[...document.querySelectorAll('tr.wait')].length > 0 && "
                             "document.getElementById('wait-filters').textContent.includes('billing')")
            await asyncio.sleep(0.3)
            layout["filtered"] = await b.eval(
                "[...document.querySelectorAll('tr.wait')].map(r => r.children[4].textContent)")
            layout["filteredTeams"] = await b.eval("document.querySelectorAll('#teams tr.team').length")
            assert not b.errors, b.errors
            return dict(layout)

    layout = in_browser(go())
    print(f"support view at {width}px: {shot}")
    vw, vh = layout["viewport"]["w"], layout["viewport"]["h"]
    kpis = dict(layout["kpis"])
    assert kpis["open waits"] == "1,000"
    # above the fold: the counts per team and channel, the breaches by team, the top of the list
    for part in ("teams", "channels", "breaches"):
        assert layout[part]["bottom"] <= vh, (part, layout[part], vh)
    assert layout["waits"]["top"] < vh * 0.6 and layout["waits"]["bottom"] <= vh + 1
    assert not layout["pageScrolls"] and layout["listScrolls"]  # 1,000 waits scroll inside their panel
    # nothing clipped: the due column is the first one and fully inside the viewport and its panel
    assert layout["dueHead"]["left"] >= 0 and layout["firstDue"]["right"] <= min(vw, layout["scroller"]["right"])
    assert "showing the 500 most urgent" in layout["source"]
    rows = layout["rows"]
    assert len(rows) == 500
    overdue_flags = [r[0] for r in rows]
    assert overdue_flags == sorted(overdue_flags, reverse=True) and overdue_flags[0]
    first_overdue = [PRIORITY_RANK[r[1]] for r in rows if r[0]]
    assert first_overdue == sorted(first_overdue)
    assert rows[0][3].startswith("overdue ") and rows[-1][3].startswith(("in ", "overdue "))
    assert {t for t, _ in layout["teamRows"]} == {"support", "sales", "billing", ""}
    assert sum(n for _, n in layout["teamRows"]) == WAITS
    assert layout["breachRows"] and all(b != "null" for _, b in layout["breachRows"])
    assert reddish(tuple(layout["overdueColour"])), layout["overdueColour"]  # an overdue row is red on screen
    assert layout["filtered"] and set(layout["filtered"]) == {"billing"} and layout["filteredTeams"] == 4


# --------------------------------------------------------------------------- what a growth team sees

GROWTH_LAYOUT = """(() => {
  const box = (el) => { const r = el.getBoundingClientRect();
                        return {top: r.top, bottom: r.bottom, left: r.left, right: r.right}; };
  const cell = (tr, i) => tr.children[i].textContent;
  const funnel = [...document.querySelectorAll('tr.fstage')].map(tr => ({stage: tr.dataset.stage,
      persons: cell(tr, 1), direct: cell(tr, 3), conversion: cell(tr, 4), anomalies: Number(tr.dataset.anomalies)}));
  const bands = [...document.querySelectorAll('svg[data-chart] g.incident')].map(g => {
      const svg = g.closest('svg');
      return {chart: svg.dataset.chart, id: g.dataset.anomaly, x0: Number(g.dataset.x0), x1: Number(g.dataset.x1),
              left: Number(svg.dataset.plotLeft), width: Number(svg.dataset.plotWidth),
              from: Number(svg.dataset.from), to: Number(svg.dataset.to), open: !!g.querySelector('.band-open')};
  });
  return {
    viewport: {w: innerWidth, h: innerHeight},
    funnel: funnel, bands: bands,
    charts: [...document.querySelectorAll('svg[data-chart]')].map(s => [s.dataset.chart,
             Number(s.querySelector('path.vol, path.cnv').dataset.points)]),
    anomalies: [...document.querySelectorAll('#anomalies tr.anomaly')].map(tr => [tr.dataset.anomaly,
             tr.querySelector('td.lost').textContent]),
    anomaliesBox: box(document.getElementById('anomalies-section')),
    funnelBox: box(document.getElementById('funnel-section')),
    firstChart: box(document.querySelector('#stage-charts .chart')),
    chartsOverflow: [...document.querySelectorAll('#stage-charts .chart')].some(c => c.scrollWidth > c.clientWidth + 1),
    tabCount: document.getElementById('anomaly-count').textContent,
    dim: document.getElementById('series-dim').textContent,
    lifecycle: [...document.querySelectorAll('#lifecycle tr.lifecycle')].map(tr => tr.dataset.stage),
    lifecycleText: document.getElementById('lifecycle').textContent,
    roiText: document.getElementById('roi').textContent,
    roiSrc: document.getElementById('roi-src').textContent,
  };
})()"""


BAND_POINTS = """(() => {
  const g = document.querySelector('g.incident[data-anomaly="ID"]');
  const svg = g.closest('svg').getBoundingClientRect(), r = g.querySelector('rect').getBoundingClientRect();
  const y = r.top + r.height * 0.55;  // between expected and observed, below the data line
  return [[r.left + r.width / 2, y], [svg.left + Number(g.closest('svg').dataset.plotLeft) + 3, y]];
})()"""


def _band_at(band: dict[str, Any], start: int, end: int | None) -> None:
    """The band covers [start, end] on the chart's time axis (to the right edge while open)."""
    def x(t: int) -> float:
        return band["left"] + band["width"] * (t - band["from"]) / (band["to"] - band["from"])

    assert abs(band["x0"] - x(start)) <= 1.5, (band, x(start))
    assert abs(band["x1"] - (x(end) if end is not None else band["left"] + band["width"])) <= 1.5, band


@pytest.mark.parametrize(("width", "height"), VIEWPORTS)
def test_growth_view_charts_incidents_and_cohort_funnel(board_run: dict[str, Any], width: int, height: int) -> None:
    port, tmp, now = board_run["port"], board_run["tmp"], board_run["now"]
    incidents = {a["anomaly_id"]: a for a in history(now)[1]}
    resolved = [a for a in history(now)[1] if a["anomaly_id"] == INCIDENT_RESOLVED]
    start_resolved, end_resolved = resolved[0]["window_start"], resolved[-1]["detected_at"]
    shots = {k: tmp / f"board-growth-{k}-{width}.png" for k in ("acme", "spring", "ads")}

    async def go() -> dict[str, Any]:
        async with Browser(tmp / f"chromium-growth-{width}") as b:
            out: dict[str, Any] = {}
            for key, query in (("acme", "tenant=acme"), ("spring", "tenant=acme&campaign=spring"),
                               ("ads", "tenant=acme&channel=ads")):
                await b.open(f"http://127.0.0.1:{port}/board?token={TOKEN}&since=1h&{query}#growth", width, height)
                await b.wait_for("document.body.dataset.loadedGrowth === 'true' && "
                                 "document.querySelectorAll('svg[data-chart]').length > 0")
                out[key] = await b.eval(GROWTH_LAYOUT)
                await b.screenshot(shots[key])
                out[key]["colours"] = {}
                for band in out[key]["bands"]:  # what the eye sees inside the band and left of it
                    inside, outside = await b.eval(BAND_POINTS.replace("ID", band["id"]))
                    out[key]["colours"][band["id"]] = (await b.pixel(*inside), await b.pixel(*outside))
                if key == "acme":  # the open anomaly's row takes the charts to its dimension
                    await b.eval("document.querySelector('#anomalies tr.anomaly').click()")
                    await b.wait_for("document.getElementById('series-dim').textContent.startsWith('ads')")
                    out["clicked"] = await b.eval("document.getElementById('dim-channel').value")
            assert not b.errors, b.errors
            return out

    seen = in_browser(go())
    print(f"growth view at {width}px: {', '.join(str(p) for p in shots.values())}")
    acme = seen["acme"]
    vh = acme["viewport"]["h"]
    funnel = {f["stage"]: f for f in acme["funnel"]}
    assert list(funnel) == list(FUNNEL)
    assert [funnel[s]["persons"] for s in ("impression", "click", "visit")] == ["10", "4", "8"]
    assert funnel["click"]["conversion"] == "75.0 % → visit"  # of 4 clickers, 3 landed
    assert funnel["visit"]["direct"] == "5 direct" and funnel["impression"]["direct"] == "entry"
    assert funnel["impression"]["conversion"] == "40.0 % → click"
    assert acme["anomalies"] == [[INCIDENT_OPEN, "12.5"]] and acme["tabCount"] == "1"
    # above the fold: the funnel, the open anomalies with their lost conversions, the first charts
    assert acme["funnelBox"]["bottom"] <= vh and acme["anomaliesBox"]["bottom"] <= vh
    assert acme["firstChart"]["top"] < vh * 0.75 and not acme["chartsOverflow"]
    charts = dict(acme["charts"])
    assert {"vol-impression", "cnv-impression", "vol-click", "cnv-click", "vol-visit", "cnv-visit"} <= set(charts)
    assert charts["vol-impression"] >= 150 and charts["cnv-click"] >= 150  # three hours of minutes drawn
    assert acme["bands"] == []  # the total has no incident of its own
    # the lifecycle and ROI panels (below the charts) answered from ClickHouse: the stages once the
    # sink has written acme's profiles, until then the empty note; never an error
    assert acme["lifecycle"] in (["anonymous", "known", "lead", "opportunity", "customer"], []), acme["lifecycle"]
    assert acme["lifecycle"] or acme["lifecycleText"] == "no profiles yet"
    assert "did not answer" not in acme["lifecycleText"] + acme["roiText"], acme["roiSrc"]
    assert acme["roiSrc"].startswith("source: clickhouse"), acme["roiSrc"]

    spring = seen["spring"]
    (band,) = [b for b in spring["bands"] if b["id"] == INCIDENT_RESOLVED]
    assert band["chart"] == "cnv-click" and not band["open"]
    _band_at(band, start_resolved, end_resolved)
    inside, outside = spring["colours"][INCIDENT_RESOLVED]
    assert reddish(tuple(inside)) and not reddish(tuple(outside)), (inside, outside)
    assert spring["dim"].startswith("spring")

    ads = seen["ads"]
    (band,) = [b for b in ads["bands"] if b["id"] == INCIDENT_OPEN]
    assert band["chart"] == "vol-impression" and band["open"]
    _band_at(band, incidents[INCIDENT_OPEN]["window_start"], None)
    inside, outside = ads["colours"][INCIDENT_OPEN]
    assert reddish(tuple(inside)) and not reddish(tuple(outside)), (inside, outside)
    assert seen["clicked"] == "ads"
