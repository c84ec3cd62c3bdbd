"""ClickHouse refuses every write for a while; the pipeline holds its ground and recovers exactly.

Why this outage mechanism: there is no ClickHouse server on the test machine and ``chdb`` has no
server mode, so the HTTP path cannot be backed by a real ClickHouse after the outage. Instead the
worker's own embedded engine is made to fail for real: the data directories of the sink's tables
get the immutable attribute (``chattr +i``; ``chmod`` does not stop root, the immutable flag does),
so every INSERT fails inside ClickHouse with ``filesystem error: Operation not permitted`` while
reads keep working - the same shape as a server whose disk went read-only. Removing the flag
"restores" ClickHouse without touching the worker.

What is asserted, against the offline replay of the same feed (``tests/integration/exactness.py``),
in two variants: the same worker rides out the outage, or it is stopped (SIGTERM) and restarted in
the middle of it:
- during the outage the sink reports failed and retried inserts (``/metrics``), the sink's committed
  offsets do not move past the last rows that reached ClickHouse (not even through the graceful stop,
  which must also finish promptly), and the worker's RSS stays flat while it retries;
- after the outage every count in ClickHouse equals the ground truth exactly: touchpoints, closed
  sessions, identity merges, funnel minutes and the FINAL rollup views ``funnel_hourly`` / ``funnel_daily``.

The restart variant covers a worker that *starts* with a sink backlog; the committed offsets
checked here are the sink groups' (one plain consumer group per table, ``streams/runtime/stage.py``).
"""

from __future__ import annotations

import shutil
import subprocess
import time
import urllib.request
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest

from streams.app.topics import consumer_group
from streams.clickhouse.rows import SPECS
from tests.conftest import WorkerProc, ch_query, start_worker, wait_until, worker_ready
from tests.integration.drain import wait_drained
from tests.integration.exactness import assert_clickhouse_exact, ground_truth, make_events
from tests.kafka_util import committed_offsets, message_count, produce, topic_counts

pytestmark = [pytest.mark.integration, pytest.mark.faults]

SINK_TOPICS = ("touchpoints.enriched", "sessions.closed", "funnel.live")  # the topics this feed fills
FIRST_SLICE = 600  # sunk before the outage, so "offsets do not move" is checked against non-zero offsets
RSS_GROWTH_BUDGET_KB = 64 * 1024  # while retrying; a leak per retry (client per reset) would exceed it



# ------------------------------------------------------------------ the outage
def _chattr(flag: str, paths: list[Path]) -> None:
    subprocess.run(["chattr", flag, *map(str, paths)], check=True, capture_output=True)


def _can_freeze(probe: Path) -> bool:
    """True when ``chattr +i`` really stops this process creating entries (ext4 etc., CAP_LINUX_IMMUTABLE)."""
    if shutil.which("chattr") is None:
        return False
    probe.mkdir()
    try:
        _chattr("+i", [probe])
    except subprocess.CalledProcessError:
        return False
    try:
        (probe / "x").mkdir()
    except OSError:
        return True
    finally:
        _chattr("-i", [probe])
    return False


class WriteOutage:
    """Makes the sink tables' data directories immutable: ClickHouse INSERTs fail, SELECTs still work."""

    def __init__(self) -> None:
        self.frozen: list[Path] = []

    def start(self, env: dict[str, str]) -> list[Path]:
        db = Path(env["TOUCHSTREAM_DATA_DIR"]) / "clickhouse" / "data" / "touchstream"
        # data/<db>/<table> is a symlink to the table's directory in store/ (Atomic database)
        dirs = [(db / spec.table).resolve() for spec in SPECS]
        assert all(d.is_dir() for d in dirs), f"table directories not found under {db}"
        _chattr("+i", dirs)
        self.frozen = dirs
        return dirs

    def stop(self) -> None:
        if self.frozen:
            _chattr("-i", self.frozen)
            self.frozen = []


@pytest.fixture
def outage(tmp_path: Path) -> Iterator[WriteOutage]:
    if not _can_freeze(tmp_path / "freeze-probe"):
        pytest.skip("chattr +i cannot make a directory unwritable here (filesystem or capability)")
    o = WriteOutage()
    yield o
    o.stop()  # always thaw, or tmp_path could not be removed


# ------------------------------------------------------------------ observations
def group_offsets(bootstrap: str, app_id: str) -> dict[tuple[str, int], int]:
    """The sink stages' committed offset per (topic, partition) (one consumer group per table)."""
    return committed_offsets(bootstrap, [consumer_group(app_id, topic) for topic in SINK_TOPICS])


def committed(bootstrap: str, group: str, topics: list[str]) -> dict[str, int]:
    """Sum of the sink's committed offsets per topic (0 when none): rows the sink has acked."""
    out = dict.fromkeys(topics, 0)
    for (topic, _), off in group_offsets(bootstrap, group).items():
        if topic in out and off >= 0:
            out[topic] += off
    return out


def offsets_report(bootstrap: str, group: str, topics: list[str]) -> str:
    """Per partition ``committed/end`` of the sink topics, for a failure message."""
    acked = group_offsets(bootstrap, group)
    out = []
    for t in topics:
        for p, end in topic_counts(bootstrap, prefix=t)["topics"].get(t, {}).get("end_offsets", {}).items():
            out.append(f"{t.split('.', 1)[1]}[{p}] {acked.get((t, int(p)), '-')}/{end}")
    return "; ".join(out)


def scrape(env: dict[str, str]) -> str:
    """The worker's /metrics text; empty while its web server is not up (yet)."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{env['TOUCHSTREAM_WEB_PORT']}/metrics", timeout=5) as r:
            return r.read().decode()
    except OSError:
        return ""


def table_metric(text: str, name: str, table: str) -> float:
    """A per-table counter, 0 when the label set has not been touched yet."""
    prefix = f'{name}{{table="{table}"}} '
    for line in text.splitlines():
        if line.startswith(prefix):
            return float(line.split()[-1])
    return 0.0


def rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError(f"no VmRSS for {pid}")


# ------------------------------------------------------------------ the test
@pytest.mark.parametrize("restart", [pytest.param(False, id="same-worker"),
                                     pytest.param(True, id="restart-mid-outage")])
def test_clickhouse_write_outage_then_exact_recovery(pipeline_env: dict[str, str], tmp_path: Path,
                                                     workers: list[WorkerProc], outage: WriteOutage,
                                                     restart: bool) -> None:
    env = dict(pipeline_env, TOUCHSTREAM_IDLE_ADVANCE_S="100000",  # event time only: comparable to offline
               TOUCHSTREAM_SINK_BATCH_ROWS="500")  # several batches held back, not one
    prefix, bootstrap = env["TOUCHSTREAM_TOPIC_PREFIX"], env["KAFKA_BOOTSTRAP_SERVERS"]
    group = env["TOUCHSTREAM_APP_ID"]
    topics = [prefix + t for t in SINK_TOPICS]

    # ground truth: the offline core over the same feed (writes tmp_path/offline/*.jsonl)
    events = make_events(2000, seed=23)
    truth = ground_truth(events, tmp_path)
    expected_merges = len((tmp_path / "offline" / "merges.jsonl").read_bytes().splitlines())
    assert len(truth.windows) > 500

    def produce_events(part: list[dict]) -> None:
        produce(bootstrap, prefix + "touchpoints.raw", [(e["tenant_id"].encode(), orjson.dumps(e)) for e in part])

    def sunk() -> bool:
        """Every message of the sink topics acked by the sink, i.e. in ClickHouse."""
        acked = committed(bootstrap, group, topics)
        return all(acked[t] == message_count(bootstrap, t) for t in topics)

    # 1. ClickHouse healthy: the first slice lands and its offsets are committed
    w = start_worker(env, tmp_path / "worker.log", workers)
    wait_until(lambda: worker_ready(env), 90, what="worker ready")
    produce_events(events[:FIRST_SLICE])
    wait_until(lambda: message_count(bootstrap, topics[0]) == FIRST_SLICE, 90, what="first slice processed")
    # sessions and funnel windows come from the process stage's clock tick, after the batch that
    # moved the watermark: wait for them too, or "sunk" can hold while they are still to come
    wait_until(lambda: all(message_count(bootstrap, t) > 0 for t in topics), 90,
               what="the first slice's closed sessions and funnel windows")
    wait_until(sunk, 90, what="first slice in ClickHouse")
    before = committed(bootstrap, group, topics)
    assert all(before[t] > 0 for t in topics), before

    # 2. outage: every INSERT fails; the rest of the feed (and the flush events) arrives meanwhile
    t_outage = time.monotonic()
    outage.start(env)
    produce_events(events[FIRST_SLICE:])
    wait_until(lambda: message_count(bootstrap, topics[0]) == len(events), 120, what="rest processed (enriched)")

    def retried(text: str, at_least: int) -> bool:
        return all(table_metric(text, "touchstream_sink_errors_total", spec.table) >= at_least
                   and table_metric(text, "touchstream_sink_retries_total", spec.table) >= at_least
                   for spec in SPECS if spec.topic in SINK_TOPICS)

    rss: list[int] = []

    def retrying(at_least: int) -> bool:
        rss.append(rss_kb(w.proc.pid))  # type: ignore[union-attr]
        return retried(scrape(env), at_least)

    wait_until(lambda: retrying(1), 60, what="failed inserts on every sink table")
    rss_at_failure = rss[-1]
    # hold the outage through several more backoff rounds (0.2 s doubling: 5 retries ≈ 6 s)
    wait_until(lambda: retrying(5), 60, what="sink retrying with backoff")
    assert w.alive(), w.tail()
    assert max(rss) - rss_at_failure < RSS_GROWTH_BUDGET_KB, (rss_at_failure, max(rss))
    held = committed(bootstrap, group, topics)
    assert held == before, f"offsets moved past rows that are not in ClickHouse: {before} → {held}"
    ends = {t: message_count(bootstrap, t) for t in topics}
    assert all(ends[t] > held[t] for t in topics), (ends, held)  # there really is unsaved data behind them
    metrics_1 = scrape(env)

    # 3. (restart) a graceful stop while ClickHouse still refuses writes must not ack the unsaved batches
    stop_s = 0.0
    if restart:
        t_stop = time.monotonic()
        assert w.stop() == 0, w.tail()  # conftest SIGKILLs after 60 s: -9 here means the shutdown hung
        stop_s = time.monotonic() - t_stop
        held = committed(bootstrap, group, topics)
        assert held == before, f"shutdown committed offsets of unsaved rows: {before} → {held}"
        w = start_worker(env, tmp_path / "worker2.log", workers)
        wait_until(lambda: retried(scrape(env), 1), 90, what="restarted worker failing inserts too")
        assert committed(bootstrap, group, topics) == before
    outage_s = time.monotonic() - t_outage

    # 4. restore: everything drains and the offsets catch up
    t_restore = time.monotonic()
    outage.stop()
    wait_until(sunk, 120, what="sink to drain after the outage",
               explain=lambda: offsets_report(bootstrap, group, topics))
    recovery_s = time.monotonic() - t_restore
    wait_drained(env, explain=lambda: offsets_report(bootstrap, group, topics))  # every other sink topic too
    metrics_2 = scrape(env)
    assert w.stop() == 0, w.tail()

    # 5. exact counts against the offline truth
    assert_clickhouse_exact(env, truth)
    assert ch_query(env, "SELECT count() FROM {db}.identity_merges FINAL") == [[expected_merges]]
    for view, bucket, width_ms in (("funnel_hourly", "toDateTime(hour, 'UTC')", 3_600_000),
                                   ("funnel_daily", "toDateTime(day, 'UTC')", 86_400_000)):
        want: Counter[tuple] = Counter()
        for tenant, start, channel, campaign, stage, ev, persons, converted in truth.windows:
            key = (tenant, start // width_ms * width_ms, channel, campaign, stage)
            want[(*key, "events")] += ev
            want[(*key, "person_minutes")] += persons
            want[(*key, "converted_person_minutes")] += converted or 0
        got: dict[tuple, int] = {}
        for r in ch_query(env, f"SELECT tenant_id, toUnixTimestamp({bucket}) * 1000, channel, campaign, stage, "
                               f"events, person_minutes, converted_person_minutes FROM {{db}}.{view}"):
            key = (r[0], int(r[1]), r[2], r[3], r[4])
            got[(*key, "events")], got[(*key, "person_minutes")] = int(r[5]), int(r[6])
            got[(*key, "converted_person_minutes")] = int(r[7] or 0)
        assert got == dict(want), view

    errors = [table_metric(m, "touchstream_sink_errors_total", "touchpoints") for m in (metrics_1, metrics_2)]
    print(f"\n[{'restart' if restart else 'same worker'}] outage {outage_s:.1f}s"
          f"{f' (incl. a {stop_s:.1f}s graceful stop + restart)' if restart else ''}, recovery {recovery_s:.1f}s; "
          f"RSS {rss_at_failure // 1024}→{max(rss) // 1024} MiB while retrying; "
          f"failed touchpoints inserts: {errors[0]:.0f} before the restore, {errors[1]:.0f} at the end")
