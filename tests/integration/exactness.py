"""Ground truth for the exactness tests: the offline replay of the same input, and the check of
ClickHouse against it after crashes, restarts and rebalances.

The offline core is the same code as the live one, so after any fault the live ClickHouse tables
must equal what the offline run wrote — every touchpoint once, every closed session once, every
funnel window row once. And every sink table, whatever its topic, holds each distinct record of
the topic exactly once (issue 18: ``funnel.anomalies`` kept 12 of 42): ``count() FINAL`` equals
the number of distinct record identities (``TableSpec.identity``) read back from the topic, so
re-deliveries after a crash count once and no two distinct records collapse.

Attribution (issue 21) is held to the same bar: the final credit of every (deal, model, touch) in
ClickHouse, i.e. the sum over the deal's revisions, equals the offline run's, every model's total
equals the deals' revenue to the cent, and every person's latest profile equals the offline one.
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
        etype = rng.choice(["ad_impression"] * 6 + ["ad_click"] * 3 + ["page_view"] * 4 + ["form_submit", "lead"]
                           ) if i % 40 else "deal_won"
        person = f"anon-{rng.randrange(150)}"
        ids = {"anonymous_id": person}
        if etype in ("form_submit", "lead", "deal_won"):
            ids["email"] = f"{person}@example.com"
        event = {
            "event_id": f"f-{i}", "tenant_id": tenant,
            "occurred_at": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t / 1000)) + f".{t % 1000:03d}Z",
            "channel": "ads" if etype.startswith("ad_") else "web", "type": etype, "identities": ids,
            "campaign": {"source": "google", "medium": "cpc", "name": rng.choice(["spring", "summer"])},
        }
        if etype == "deal_won":  # amounts that do not split evenly: a lost or doubled cent shows
            event["channel"] = "phone"  # closed by sales
            event["value"] = {"amount": rng.choice([100.0, 333.33, 1999.99, 70.01]), "currency": "EUR"}
            event["properties"] = {"deal_id": f"deal-{i}"}
        events.append(event)
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
    #: (tenant, deal, model, touch index) -> final credit in minor units (sum over revisions)
    credits: dict[tuple, int]
    #: model -> sum of final credits; every model must equal the deals' revenue
    revenue_minor: int
    #: (tenant, person) -> (version, lifecycle stage, events, deals won, revenue) of the latest profile
    profiles: dict[tuple, tuple]


def final_credits(records: list[dict]) -> dict[tuple, int]:
    """What a deal's credits add up to after all its revisions (a revision retracts the last)."""
    out: dict[tuple, int] = {}
    for r in records:
        key = (r["tenant_id"], r["deal_id"], r["model"], r.get("touch_index"))
        out[key] = out.get(key, 0) + int(r["credit_minor"])
    return {k: v for k, v in out.items() if v}


def latest_profiles(records: list[dict]) -> dict[tuple, tuple]:
    latest: dict[tuple, dict] = {}
    for r in records:
        key = (r["tenant_id"], r["person_id"])
        if key not in latest or r["version"] > latest[key]["version"]:
            latest[key] = r
    return {k: _profile_facts(r["version"], r.get("lifecycle_stage"), r.get("events"), r.get("deals_won"),
                              sum((r.get("revenue_minor") or {}).values())) for k, r in latest.items()}


def _profile_facts(version: int, stage: str | None, events: int | None, deals: int | None, revenue: int) -> tuple:
    return int(version), stage or "", int(events or 0), int(deals or 0), int(revenue)


def ground_truth(events: list[dict], work: Path) -> Truth:
    feed = work / "feed.jsonl"
    feed.write_bytes(b"".join(orjson.dumps(e) + b"\n" for e in events))
    summary = process_file(feed, work / "offline")
    offline_sessions = [orjson.loads(x) for x in (work / "offline" / "sessions.jsonl").read_bytes().splitlines()]
    offline_funnel = [orjson.loads(x) for x in (work / "offline" / "funnel.jsonl").read_bytes().splitlines()]
    credits = [orjson.loads(x) for x in (work / "offline" / "attribution.jsonl").read_bytes().splitlines()]
    profiles = [orjson.loads(x) for x in (work / "offline" / "profiles.jsonl").read_bytes().splitlines()]
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
        credits=final_credits(credits),
        revenue_minor=round(100 * sum(e["value"]["amount"] for e in events if e["type"] == "deal_won")),
        profiles=latest_profiles(profiles),
    )
    assert truth.events == len(events) and len(truth.sessions) > 100
    per_model: dict[str, int] = {}
    for (_, _, model, _), minor in truth.credits.items():
        per_model[model] = per_model.get(model, 0) + minor
    assert per_model and set(per_model.values()) == {truth.revenue_minor}, (per_model, truth.revenue_minor)
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
    live_credits = {
        (r[0], r[1], r[2], None if r[3] is None else int(r[3])): int(r[4])
        for r in ch_query(env, "SELECT tenant_id, deal_id, model, touch_index, sum(credit_minor) AS c "
                               "FROM {db}.attribution_credits FINAL GROUP BY tenant_id, deal_id, model, touch_index "
                               "HAVING c != 0")
    }
    assert live_credits == truth.credits, (f"attribution: {len(set(live_credits.items()) - set(truth.credits.items()))}"
                                           f" unexpected, {len(set(truth.credits.items()) - set(live_credits.items()))}"
                                           f" missing of {len(truth.credits)}")
    live_profiles = {
        (r[0], r[1]): _profile_facts(int(r[2]), r[3], int(r[4]), int(r[5]), int(r[6]))
        for r in ch_query(env, "SELECT tenant_id, person_id, version, lifecycle_stage, events, deals_won, "
                               "revenue_total_minor FROM {db}.person_profiles FINAL")
    }
    differ = {k for k in truth.profiles.keys() | live_profiles.keys() if truth.profiles.get(k) != live_profiles.get(k)}
    assert not differ, f"profiles: {len(differ)} of {len(truth.profiles)} differ, e.g. " + "; ".join(
        f"{k}: live {live_profiles.get(k)} offline {truth.profiles.get(k)}" for k in sorted(differ)[:3])
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
