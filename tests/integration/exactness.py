"""Ground truth for the exactness tests: the offline replay of the same input, and the check of
ClickHouse against it after crashes, restarts and rebalances.

The offline core is the same code as the live one, so after any fault the live ClickHouse tables
must equal what the offline run wrote — every touchpoint once, every closed session once, every
funnel window row once. And every sink table, whatever its topic, holds each distinct record of
the topic exactly once (issue 18: ``funnel.anomalies`` kept 12 of 42): ``count() FINAL`` equals
the number of distinct record identities (``TableSpec.identity``) read back from the topic, so
re-deliveries after a crash count once and no two distinct records collapse.
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass
from pathlib import Path

import orjson

from streams.clickhouse.rows import SPECS
from streams.core.contract import parse_timestamp
from streams.offline import process_file
from tests.conftest import ch_query
from tests.kafka_util import read_all, stage_lag


def make_events(n: int, seed: int) -> list[dict]:
    """A few tenants, people browsing in sessions (gaps > 30 min split them), some converting."""
    rng = random.Random(seed)
    base = 1_767_225_600_000  # 2026-01-01T00:00:00Z
    events, t = [], base
    for i in range(n):
        t += rng.choice([1000, 2000, 5000, 60_000, 35 * 60_000 if rng.random() < 0.02 else 3000])
        tenant = f"tenant-{i % 3}"
        etype = rng.choice(["ad_impression"] * 6 + ["ad_click"] * 3 + ["page_view"] * 4 + ["form_submit", "lead"])
        person = f"anon-{rng.randrange(150)}"
        ids = {"anonymous_id": person}
        if etype in ("form_submit", "lead"):
            ids["email"] = f"{person}@example.com"
        events.append({
            "event_id": f"f-{i}", "tenant_id": tenant,
            "occurred_at": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t / 1000)) + f".{t % 1000:03d}Z",
            "channel": "ads" if etype.startswith("ad_") else "web", "type": etype, "identities": ids,
            "campaign": {"source": "google", "medium": "cpc", "name": rng.choice(["spring", "summer"])},
        })
    # One late-but-final event per tenant, 3 h later: its watermark closes every earlier session/window.
    for k in range(3):
        t2 = t + 3 * 3_600_000
        events.append({
            "event_id": f"flush-{k}", "tenant_id": f"tenant-{k}",
            "occurred_at": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t2 / 1000)) + ".000Z",
            "channel": "web", "type": "identify", "identities": {"anonymous_id": f"flush-{k}"},
        })
    return events


@dataclass(frozen=True)
class Truth:
    events: int
    sessions: set[str]
    windows: set[tuple]


def ground_truth(events: list[dict], work: Path) -> Truth:
    feed = work / "feed.jsonl"
    feed.write_bytes(b"".join(orjson.dumps(e) + b"\n" for e in events))
    summary = process_file(feed, work / "offline")
    offline_sessions = [orjson.loads(x) for x in (work / "offline" / "sessions.jsonl").read_bytes().splitlines()]
    offline_funnel = [orjson.loads(x) for x in (work / "offline" / "funnel.jsonl").read_bytes().splitlines()]
    # sessions of the flush events are still open live (nothing comes after them): compare the rest
    flush_persons = set()
    for line in (work / "offline" / "enriched.jsonl").read_bytes().splitlines():
        e = orjson.loads(line)
        if e["event_id"].startswith("flush-"):
            flush_persons.add(e["person_id"])
    first_flush = min(parse_timestamp(e["occurred_at"]) for e in events if e["event_id"].startswith("flush-"))
    truth = Truth(
        events=summary.valid,
        sessions={s["session_id"] for s in offline_sessions if s["person_id"] not in flush_persons},
        windows={(f["tenant_id"], f["window_start"], f["channel"] or "", f["campaign"] or "", f["stage"],
                  f["events"], f["persons"], f["converted"])
                 for f in offline_funnel if f["window_start"] < first_flush},
    )
    assert truth.events == len(events) and len(truth.sessions) > 100
    return truth


def assert_clickhouse_exact(env: dict[str, str], truth: Truth) -> None:
    """Call with every worker stopped (the embedded engine is one process at a time)."""
    touchpoints = ch_query(env, "SELECT count(), uniqExact(event_id) FROM {db}.touchpoints FINAL")
    assert touchpoints == [[truth.events] * 2], f"touchpoints (rows, distinct ids) {touchpoints}, want {truth.events}"
    live_sessions = {r[0] for r in ch_query(env, "SELECT session_id FROM {db}.sessions FINAL")}
    assert live_sessions == truth.sessions, (f"sessions: {len(live_sessions - truth.sessions)} unexpected, "
                                             f"{len(truth.sessions - live_sessions)} missing of {len(truth.sessions)}")
    assert ch_query(env, "SELECT count() FROM {db}.sessions FINAL") == [[len(truth.sessions)]]
    live_windows = {
        (r[0], int(r[1]), r[2], r[3], r[4], int(r[5]), int(r[6]), None if r[7] is None else int(r[7]))
        for r in ch_query(env, "SELECT tenant_id, toUnixTimestamp64Milli(window_start), channel, campaign, stage, "
                               "events, persons, converted FROM {db}.funnel_minute FINAL")
    }
    assert live_windows == truth.windows, (f"funnel rows: {len(live_windows - truth.windows)} unexpected, "
                                           f"{len(truth.windows - live_windows)} missing of {len(truth.windows)}")
    assert_every_table_holds_its_topic(env)


def assert_every_table_holds_its_topic(env: dict[str, str]) -> None:
    """For every sink table: ``count() FINAL`` = distinct records in its topic. Needs the sink
    drained (lag 0 on every sink topic) before the workers stopped; the lag is in the message."""
    bootstrap, prefix = env["KAFKA_BOOTSTRAP_SERVERS"], env["TOUCHSTREAM_TOPIC_PREFIX"]
    problems = []
    for spec in SPECS:
        records = [orjson.loads(v) for _, v, _ in read_all(bootstrap, prefix + spec.topic, timeout=60.0)]
        distinct = len({spec.identity(r) for r in records})
        (got,), = ch_query(env, f"SELECT count() FROM {{db}}.{spec.table} FINAL")
        if got != distinct:
            lag = stage_lag(bootstrap, env["TOUCHSTREAM_APP_ID"], prefix, spec.topic)
            problems.append(f"{spec.table}: {got} rows FINAL, {distinct} distinct records of {len(records)} in "
                            f"{spec.topic} (sink lag {lag})")
    assert not problems, "; ".join(problems)
