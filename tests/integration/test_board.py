"""The live board in a real browser: worker on the real broker → /board → headless Chromium.

Produces a small funnel and three customer conversations (one past its 2 s first-reply target,
one within its target, one waiting for a next reply), waits until the JSON endpoints show them,
then lets Chromium load the page with the token in the URL, run its JavaScript (which calls the
API with the token as a header) and dumps the DOM and a screenshot. The assertions read the
rendered DOM, so they fail if the page's fetches, auth or rendering break.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import time
import urllib.error
import urllib.request
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import orjson
import pytest

from tests.conftest import WorkerProc, start_worker, wait_until
from tests.kafka_util import produce

pytestmark = [pytest.mark.integration]

TOKEN = "board-test-token"
FUNNEL = {  # stage: (events, persons) for tenant acme, from the events below
    "impression": (6, 6), "click": (4, 4), "visit": (4, 3), "interaction": (6, 5), "lead": (1, 1),
    "opportunity": (0, 0), "deal": (0, 0),
}


def chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        found = shutil.which(name)
        if found:
            return found
    pytest.fail("headless Chromium not found (binary `chromium`): install it with `apt-get install -y chromium`; "
                "`make test` does that before running the tests")


def iso(ms: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ms / 1000)) + f".{ms % 1000:03d}Z"


def events(now_ms: int) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []

    def add(etype: str, at: int, ident: dict[str, str], channel: str = "web", tenant: str = "acme",
            conv: dict[str, str] | None = None) -> None:
        ev: dict[str, Any] = {"event_id": f"b{len(out)}", "tenant_id": tenant, "occurred_at": iso(at),
                              "channel": channel, "type": etype, "identities": ident}
        if conv is not None:
            ev["conversation"] = conv
        out.append(ev)

    t = now_ms - 20_000
    for i in range(6):
        add("ad_impression", t + i, {"anonymous_id": f"p{i}"}, channel="ads")
    for i in range(4):
        add("ad_click", t + 100 + i, {"anonymous_id": f"p{i}"}, channel="ads")
    for i, who in enumerate(("p0", "p1", "p2", "p0")):
        add("page_view", t + 200 + i, {"anonymous_id": who})
    for i in range(2):
        add("form_submit", t + 300 + i, {"anonymous_id": f"p{i}"})
    add("lead", t + 400, {"anonymous_id": "p0"})
    add("ad_impression", t + 500, {"anonymous_id": "g1"}, channel="ads", tenant="globex")

    def chat(etype: str, at: int, conv: str, channel: str, team: str, priority: str) -> None:
        add(etype, at, {"email": f"{conv}@example.com"}, channel=channel,
            conv={"id": conv, "team": team, "priority": priority})

    chat("message_in", now_ms - 10_000, "c-late", "live_chat", "support", "high")  # 2 s target: overdue
    chat("message_in", now_ms - 8_000, "c-next", "live_chat", "support", "normal")
    chat("message_out", now_ms - 7_000, "c-next", "live_chat", "support", "normal")
    chat("message_in", now_ms - 6_000, "c-next", "live_chat", "support", "normal")  # next_reply: 600 s
    chat("message_in", now_ms - 5_000, "c-new", "whatsapp", "sales", "normal")  # default 300 s
    return out


def get(port: str, path: str, token: str | None = TOKEN) -> tuple[int, Any, dict[str, str]]:
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}")
    if token:
        req.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            body = resp.read()
            ctype = resp.headers.get("Content-Type", "")
            return resp.status, orjson.loads(body) if "json" in ctype else body.decode(), dict(resp.headers)
    except urllib.error.HTTPError as err:
        return err.code, err.read().decode(errors="replace"), dict(err.headers)
    except OSError as err:  # the web server is not listening yet (it starts after the topics exist)
        return 0, str(err), {}


class Rows(HTMLParser):
    """Table rows of the rendered board: (tenant section, row attributes, cell texts)."""

    def __init__(self) -> None:
        super().__init__()
        self.rows: list[tuple[str | None, dict[str, str], list[str]]] = []
        self.tenant: str | None = None
        self._cells: list[str] | None = None
        self._in_cell = False
        self.body_attrs: dict[str, str] = {}
        self.status = ""
        self._in_status = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: v or "" for k, v in attrs}
        if tag == "body":
            self.body_attrs = a
        if tag == "div" and "data-tenant" in a:
            self.tenant = a["data-tenant"]
        if tag == "tr":
            self.rows.append((self.tenant, a, []))
            self._cells = self.rows[-1][2]
        if tag in ("td", "th") and self._cells is not None:
            self._cells.append("")
            self._in_cell = True
        if tag == "span" and a.get("id") == "status":
            self._in_status = True

    def handle_endtag(self, tag: str) -> None:
        if tag in ("td", "th"):
            self._in_cell = False
        if tag == "span":
            self._in_status = False

    def handle_data(self, data: str) -> None:
        if self._in_cell and self._cells:
            self._cells[-1] += data
        if self._in_status:
            self.status += data


def run_chromium(args: list[str], url: str, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    cmd = [chromium(), "--headless=new", "--no-sandbox", "--disable-gpu", "--window-size=1400,1000",
           "--virtual-time-budget=8000", f"--user-data-dir={tmp_path / 'chromium-profile'}", "--no-first-run",
           "--no-default-browser-check", "--disable-extensions", "--disable-background-networking",
           "--hide-scrollbars", *args, url]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120)


def test_board_renders_funnel_and_open_waits_in_a_browser(pipeline_env: dict[str, str], tmp_path: Path,
                                                          workers: list[WorkerProc]) -> None:
    chromium()  # fail first, with the install hint, not after a minute of Kafka set-up
    policies = tmp_path / "policies.json"
    policies.write_text(orjson.dumps({"policies": [{"name": "fast_chat", "match": {"channel": "live_chat"},
                                                    "first_reply_s": 2, "next_reply_s": 600}]}).decode())
    env = dict(pipeline_env, TOUCHSTREAM_WEB_TOKEN=TOKEN, TOUCHSTREAM_SLA_POLICIES=str(policies))
    prefix, bootstrap = env["TOUCHSTREAM_TOPIC_PREFIX"], env["KAFKA_BOOTSTRAP_SERVERS"]
    port = env["TOUCHSTREAM_WEB_PORT"]
    started = time.monotonic()
    w = start_worker(env, tmp_path / "worker.log", workers)
    evs = events(int(time.time() * 1000))
    produce(bootstrap, prefix + "touchpoints.raw", [(e["tenant_id"].encode(), orjson.dumps(e)) for e in evs])

    def api(path: str) -> Any:
        status, body, _ = get(port, path)
        return body if status == 200 else None

    def funnel_ready() -> Any:
        body = api("/api/funnel?since=1h")
        acme = next((t for t in (body or {}).get("tenants", []) if t["tenant_id"] == "acme"), None)
        got = acme and {s["stage"]: (s["events"], s["persons"]) for s in acme["stages"]}
        return got == FUNNEL and body

    funnel = wait_until(funnel_ready, 90, what="funnel of acme in /api/funnel",
                        explain=lambda: f"{api('/api/funnel?since=1h')}")
    assert funnel["source"] == "clickhouse" and funnel["role"] == "all"
    assert {t["tenant_id"] for t in funnel["tenants"]} == {"acme", "globex"}
    waits = wait_until(lambda: (b := api("/api/sla/open")) and b["count"] == 3 and b["overdue"] == 1 and b, 30,
                       what="three open waits, one overdue", explain=lambda: f"{api('/api/sla/open')}")
    assert [x["conversation_id"] for x in waits["waits"]] == ["c-late", "c-next", "c-new"]
    assert [x["kind"] for x in waits["waits"]] == ["first_reply", "next_reply", "first_reply"]
    breaches = wait_until(
        lambda: (b := api("/api/sla/breaches?since=1h")) and any(t["team"] == "support" and t["breaches"] == 1
                                                                for t in b["teams"]) and b,
        30, what="the support breach in ClickHouse", explain=lambda: f"{api('/api/sla/breaches?since=1h')}")
    assert breaches["source"] == "clickhouse"
    assert api("/api/anomalies/open")["anomalies"] == []  # a few events cannot open an incident
    print(f"\nAPI ready {time.monotonic() - started:.1f}s after the worker start")

    # auth: /board and /api need the token, /health and /metrics do not; only /board takes ?token=
    assert get(port, "/api/funnel", token=None)[0] == 401
    assert get(port, "/api/sla/open", token="wrong")[0] == 401
    assert get(port, f"/api/sla/open?token={TOKEN}", token=None)[0] == 401
    assert get(port, "/board", token=None)[0] == 401
    assert get(port, "/health", token=None)[0] == 200
    assert get(port, "/metrics", token=None)[0] == 200
    assert get(port, "/api/funnel?since=1y")[0] == 400
    status, page, headers = get(port, f"/board?token={TOKEN}", token=None)
    assert status == 200 and "<title>touchstream" in page
    assert "default-src 'none'" in headers["Content-Security-Policy"]

    url = f"http://127.0.0.1:{port}/board?token={TOKEN}"
    t0 = time.monotonic()
    dom = run_chromium(["--dump-dom"], url, tmp_path)
    dump_s = time.monotonic() - t0
    assert dom.returncode == 0, dom.stderr[-3000:]
    (tmp_path / "board.dom.html").write_text(dom.stdout)
    parsed = Rows()
    parsed.feed(dom.stdout)
    assert parsed.body_attrs.get("data-loaded") == "true", f"page never loaded its data: {parsed.status!r}"
    assert parsed.status.startswith("updated "), parsed.status

    stages = {a["data-stage"]: (a, cells) for tenant, a, cells in parsed.rows if tenant == "acme" and "data-stage" in a}
    assert list(stages) == list(FUNNEL)
    for stage, (events_n, persons) in FUNNEL.items():
        attrs, cells = stages[stage]
        assert (int(attrs["data-events"]), int(attrs["data-persons"])) == (events_n, persons), stage
        assert cells[:3] == [stage, str(events_n), str(persons)], cells  # the numbers as text, not just data
    assert stages["click"][1][3] == "→ 66.7 %" and stages["impression"][1][3] == ""

    wait_rows = [(a, cells) for _, a, cells in parsed.rows if "data-conversation" in a]
    assert [a["data-conversation"] for a, _ in wait_rows] == ["c-late", "c-next", "c-new"]
    late, nxt, new = (cells for _, cells in wait_rows)
    assert late[:5] == ["c-late", "live_chat", "support", "high", "first_reply"] and late[6].startswith("overdue ")
    assert nxt[4] == "next_reply" and nxt[6].startswith("in ")
    assert new[:3] == ["c-new", "whatsapp", "sales"] and re.fullmatch(r"in [1-4]m \d\ds", new[6]), new
    assert wait_rows[0][0]["data-overdue"] == "true" and "overdue" in wait_rows[0][0]["class"]
    teams = {a["data-team"]: cells for _, a, cells in parsed.rows if "data-team" in a}
    assert teams["support"][2:] == ["1", "1"]  # 1 breach in the last hour, 1 overdue now

    shot = tmp_path / "board.png"
    t0 = time.monotonic()
    res = run_chromium([f"--screenshot={shot}"], url, tmp_path)
    shot_s = time.monotonic() - t0
    assert res.returncode == 0 and shot.exists() and shot.stat().st_size > 10_000, res.stderr[-3000:]
    print(f"board screenshot: {shot} (dump-dom {dump_s:.1f}s, screenshot {shot_s:.1f}s)")
    assert w.stop() == 0, w.tail()
