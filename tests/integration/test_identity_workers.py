"""Identity across partitions with two processing workers, one of them killed mid-stream.

Each person's identifiers are spread over different raw partitions (anonymous cookie on one,
the email on another, WhatsApp on a third). Two ``process`` workers share the load and a
``sink`` worker writes the embedded ClickHouse. One processing worker is kill -9'd mid-stream
and restarted. Afterwards: one person per real person (following identity.merges), every
event in exactly one closed session, and ClickHouse holds each session once.
"""

from __future__ import annotations

import random
import time
from pathlib import Path

import orjson
import pytest
from aiokafka import AIOKafkaProducer

from streams.app.topics import consumer_group
from tests.conftest import WorkerProc, ch_query, free_port, start_worker
from tests.integration.drain import wait_drained
from tests.kafka_util import partition_report, read_all

pytestmark = [pytest.mark.integration, pytest.mark.faults]

BASE_MS = 1_767_225_600_000  # 2026-01-01T00:00:00Z


def iso(ms: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ms / 1000)) + f".{ms % 1000:03d}Z"


def people_events(n_people: int, seed: int) -> list[tuple[int, dict]]:
    """(raw partition, event): person k's identifiers deliberately land on different partitions."""
    rng = random.Random(seed)
    out: list[tuple[int, dict]] = []
    for k in range(n_people):
        tenant = f"tenant-{k % 2}"
        t = BASE_MS + rng.randrange(0, 600_000)
        anon, email, phone = f"anon-{k}", f"person{k}@example.com", f"+49151{k:06d}"
        steps = [
            ({"anonymous_id": anon}, "ad_click", "ads"),
            ({"anonymous_id": anon}, "page_view", "web"),
            ({"anonymous_id": anon, "email": email}, "form_submit", "web"),
            ({"email": email, "whatsapp_id": phone}, "message_in", "whatsapp"),
            ({"whatsapp_id": phone}, "page_view", "web"),
        ]
        for j, (ids, etype, channel) in enumerate(steps):
            t += rng.randrange(1_000, 60_000)
            ev = {"event_id": f"p{k}-{j}", "tenant_id": tenant, "occurred_at": iso(t), "channel": channel,
                  "type": etype, "identities": ids}
            if etype == "message_in":
                ev["conversation"] = {"id": f"conv-{k}", "team": "support"}
            out.append(((k + j) % 4, ev))
    out.sort(key=lambda pe: pe[1]["occurred_at"])
    end = BASE_MS + 4 * 3_600_000  # closes every session: > 30 min gap + lateness
    for k in range(2):
        out.append((0, {"event_id": f"flush-{k}", "tenant_id": f"tenant-{k}", "occurred_at": iso(end),
                        "channel": "web", "type": "identify", "identities": {"anonymous_id": f"flush-{k}"}}))
    return out


def produce_to_partitions(bootstrap: str, topic: str, items: list[tuple[int, dict]]) -> None:
    import asyncio

    async def go() -> None:
        p = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", enable_idempotence=True, linger_ms=5)
        await p.start()
        try:
            for part, ev in items:
                await p.send(topic, value=orjson.dumps(ev), key=ev["tenant_id"].encode(), partition=part)
            await p.flush()
        finally:
            await p.stop()

    asyncio.run(go())


def final_person(pid: str, merged_into: dict[str, str]) -> str:
    seen = set()
    while pid in merged_into and pid not in seen:
        seen.add(pid)
        pid = merged_into[pid]
    return pid


def test_two_workers_one_killed(pipeline_env: dict[str, str], tmp_path: Path, workers: list[WorkerProc]) -> None:
    env = dict(pipeline_env, TOUCHSTREAM_IDLE_ADVANCE_S="100000")
    prefix, bootstrap = env["TOUCHSTREAM_TOPIC_PREFIX"], env["KAFKA_BOOTSTRAP_SERVERS"]
    group = env["TOUCHSTREAM_APP_ID"]
    p1 = start_worker(dict(env, TOUCHSTREAM_ROLE="process"), tmp_path / "p1.log", workers)
    p2 = WorkerProc(dict(env, TOUCHSTREAM_ROLE="process", TOUCHSTREAM_WEB_PORT=str(free_port()),
                         TOUCHSTREAM_DATA_DIR=str(tmp_path / "p2")), tmp_path / "p2.log").start()
    sink = WorkerProc(dict(env, TOUCHSTREAM_ROLE="sink", TOUCHSTREAM_WEB_PORT=str(free_port())),
                      tmp_path / "sink.log").start()
    workers.extend([p2, sink])

    items = people_events(120, seed=3)
    people, flush = items[:-2], items[-2:]
    half = len(people) // 2
    produce_to_partitions(bootstrap, prefix + "touchpoints.raw", people[:half])
    time.sleep(1.5)
    p2.kill9()  # mid-stream
    produce_to_partitions(bootstrap, prefix + "touchpoints.raw", people[half:])
    p2 = WorkerProc(p2.env, tmp_path / "p2b.log").start()
    workers.append(p2)

    valid = prefix + "touchpoints.valid"
    explain = lambda: partition_report(bootstrap, consumer_group(group, "touchpoints.valid"), valid)  # noqa: E731
    wait_drained(env, {"touchpoints.enriched": len(people)}, explain=explain)
    # the events 4 h later that close every session, once the rest is in: sent with the rest, the
    # one on partition 0 could be read before the others' last events, which would then be hours
    # behind their tenant and refused as too late (docs/data-integrity.md, the dedup floor)
    produce_to_partitions(bootstrap, prefix + "touchpoints.raw", flush)
    wait_drained(env, {"touchpoints.enriched": len(items)}, explain=explain)

    merges = [orjson.loads(v) for _, v, _ in read_all(bootstrap, prefix + "identity.merges")]
    merged_into = {m["from_person_id"]: m["into_person_id"] for m in merges if m["status"] == "merged"}
    enriched: dict[str, dict] = {}
    for _, v, _ in read_all(bootstrap, prefix + "touchpoints.enriched"):
        e = orjson.loads(v)
        enriched[e["event_id"]] = e  # at-least-once: a replayed record is identical
    assert set(enriched) == {ev["event_id"] for _, ev in items}
    persons_of_k: dict[str, set[str]] = {}
    for eid, e in enriched.items():
        if eid.startswith("p"):
            persons_of_k.setdefault(eid.split("-")[0], set()).add(final_person(e["person_id"], merged_into))
    assert len(persons_of_k) == 120
    assert all(len(p) == 1 for p in persons_of_k.values()), "a real person was split"
    assert len({next(iter(p)) for p in persons_of_k.values()}) == 120, "two real people were glued together"

    for w in (p1, p2, sink):
        assert w.stop() == 0, w.tail()
    # every non-flush event in exactly one closed session, each session stored once
    rows = ch_query(env, "SELECT count(), sum(touchpoints), uniqExact(session_id) FROM {db}.sessions FINAL "
                         "WHERE person_id NOT IN (SELECT person_id FROM {db}.touchpoints FINAL "
                         "WHERE event_id LIKE 'flush-%')")
    n_sessions, touchpoints, distinct = rows[0]
    assert n_sessions == distinct
    assert touchpoints == sum(1 for _, ev in items if not ev["event_id"].startswith("flush"))
