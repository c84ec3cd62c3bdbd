"""Every record of every sink topic survives in ClickHouse once: ``count() FINAL`` equals the
number of distinct records, and a re-delivery (the same record again, or another version of it)
changes nothing. On the real embedded engine, for every table of ``rows.SPECS``.

Why both tests: the first (property) checks that each table's key collapses exactly what its
``TableSpec.identity`` calls one record, with records built to collide on every field; the
second checks that the identities are right, i.e. that the core never emits two distinct
records with one identity, on a feed with a catch-up over silent windows (the case that lost
30 of 42 anomaly records).
"""

from __future__ import annotations

import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import orjson
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from streams.clickhouse.client import ClickHouse
from streams.clickhouse.rows import SPECS, TableSpec
from streams.core.contract import format_timestamp, parse_timestamp
from streams.devtools import simulate
from streams.offline import run

FILES = {spec.table: name for spec, name in zip(
    SPECS, ("enriched.jsonl", "sessions.jsonl", "merges.jsonl", "sla.jsonl", "response_times.jsonl",
            "funnel.jsonl", "anomalies.jsonl", "profiles.jsonl", "attribution.jsonl"), strict=True)}
#: Tables that keep the latest version of each identity (all records of one person are one row).
LATEST_PER_IDENTITY = {"person_profiles"}
HOUR = 3_600_000


def _offline_records(work: Path, rate: float, duration_s: float, silent: tuple[int, int] | None = None,
                     seed: int = 3) -> tuple[dict[str, list[dict[str, Any]]], int]:
    """Each table's records from an offline run of a simulated feed ending an hour ago (recent
    rows: the touchpoints TTL never removes them), with one tenant silent in ``silent`` (ms
    after the start). Returns the records and the start."""
    start = (time.time_ns() // 1_000_000) // HOUR * HOUR - int(duration_s * 1000) - HOUR
    cfg = simulate.SimConfig(rate=rate, duration_s=duration_s, seed=seed, start_ms=start, incidents=())
    events = list(simulate.generate(cfg))
    if silent is not None:
        quiet = sorted({e["tenant_id"] for e in events})[0]
        events = [e for e in events if not (
            e["tenant_id"] == quiet and start + silent[0] <= parse_timestamp(e["occurred_at"]) < start + silent[1])]
    run((orjson.dumps(e) for e in events), work, source="feed")
    return {t: [orjson.loads(x) for x in (work / f).read_bytes().splitlines()] for t, f in FILES.items()}, start


_POOL: dict[str, list[dict[str, Any]]] = {}


def pool() -> dict[str, list[dict[str, Any]]]:
    """Real records of every table (a short feed with its anomalies), built once per process."""
    if not _POOL:
        import tempfile

        with tempfile.TemporaryDirectory() as tmp:
            records, _ = _offline_records(Path(tmp), rate=6, duration_s=6000, silent=(60 * 60_000, 90 * 60_000))
        assert all(records.values()), {t: len(r) for t, r in records.items()}
        _POOL.update(records)
    return _POOL


def _variant(field: str, value: Any) -> Any:
    """Another value of the same type, so that every field, identity or not, can differ."""
    if isinstance(value, bool) or value is None or isinstance(value, dict | list):
        return value
    if isinstance(value, int | float):
        return value + 1
    if field == "occurred_at":
        return format_timestamp(parse_timestamp(value) + 1)
    return value + "~b"


@st.composite
def colliding_records(draw: st.DrawFn, spec: TableSpec) -> list[dict[str, Any]]:
    """Records whose every field takes one of two or three values (from real records, plus a
    variant): they collide on any subset of fields, identity fields included."""
    real = pool()[spec.table]
    bases = [real[i] for i in draw(st.lists(st.integers(0, len(real) - 1), min_size=1, max_size=2))]
    palette = {f: [b[f] for b in bases if f in b] for f in {f for b in bases for f in b}}
    for f, values in palette.items():
        values.append(_variant(f, values[0]))
    n = draw(st.integers(1, 20))
    return [{f: draw(st.sampled_from(values)) for f, values in palette.items()} for _ in range(n)]


def insert(ch: ClickHouse, spec: TableSpec, records: list[dict[str, Any]]) -> None:
    ch.insert(spec.table, [spec.to_row(r) for r in records], spec.columns, uuid.uuid4().hex)  # as the sink: a token


def count_final(ch: ClickHouse, table: str) -> int:
    return ch.count(table, final=True)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                 HealthCheck.too_slow])
@given(data=st.data())
def test_each_table_keeps_every_distinct_record_once_and_collapses_only_redeliveries(
    ch: ClickHouse, data: st.DataObject
) -> None:
    for spec in SPECS:
        ch.command(f"TRUNCATE TABLE {ch.db}.{spec.table}")
        records = data.draw(colliding_records(spec), label=spec.table)
        distinct = {spec.identity(r) for r in records}
        insert(ch, spec, records)
        assert count_final(ch, spec.table) == len(distinct), spec.table
        insert(ch, spec, records)  # re-delivered as they were
        assert count_final(ch, spec.table) == len(distinct), spec.table
        # re-delivered as another version: same identity, any other field different
        others = data.draw(st.permutations(records))
        versions = [{**o, **{f: r[f] for f in spec.identity_fields if f in r}} for r, o in zip(records, others,
                                                                                             strict=True)]
        insert(ch, spec, versions)
        assert count_final(ch, spec.table) == len(distinct), spec.table


def test_a_feed_with_a_catch_up_lands_whole_in_every_table(ch: ClickHouse, tmp_path: Path) -> None:
    """Topic count = ``count() FINAL`` for every sink table, on the offline outputs of a feed
    where one tenant is silent for 30 minutes: when it resumes, one detector call evaluates the
    silent windows, and its open/update records used to share ``detected_at`` (and collapse)."""
    silent = (60 * 60_000, 90 * 60_000)
    records, start = _offline_records(tmp_path, rate=6, duration_s=6000, silent=silent)
    in_gap = Counter(a["anomaly_id"] for a in records["anomalies"]
                     if start + silent[0] < a["detected_at"] <= start + silent[1])
    assert in_gap and max(in_gap.values()) >= 2  # the catch-up happened and raised several records
    for spec in SPECS:
        recs = records[spec.table]
        assert recs, spec.table
        distinct = {spec.identity(r) for r in recs}
        if spec.table not in LATEST_PER_IDENTITY:
            assert len(distinct) == len(recs), f"{spec.table}: two records, one identity"
        insert(ch, spec, recs)
        insert(ch, spec, recs[: len(recs) // 2])  # a re-cut re-delivery
        assert count_final(ch, spec.table) == len(distinct), spec.table
    latest: dict[tuple[Any, ...], int] = {}
    for r in records["person_profiles"]:
        key = (r["tenant_id"], r["person_id"])
        latest[key] = max(latest.get(key, 0), r["version"])
    got = ch.query(f"SELECT tenant_id, person_id, version FROM {ch.db}.person_profiles FINAL")
    assert {(t, p): v for t, p, v in got} == latest  # the newest profile of each person, once
