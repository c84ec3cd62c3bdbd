"""Migrations, row mappings and queries on the real embedded ClickHouse engine (chdb)."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from streams.clickhouse import queries
from streams.clickhouse.client import ClickHouse, database_of, redact
from streams.clickhouse.migrate import load, migrate, statements
from streams.clickhouse.rows import SPECS

SPECS_BY_TABLE = {s.table: s for s in SPECS}


def now_ms() -> int:
    return int(datetime.now(UTC).timestamp() * 1000)


def test_migrations_are_idempotent(ch: ClickHouse) -> None:
    assert migrate(ch) == []  # the fixture applied them already
    applied = ch.query(f"SELECT version FROM {ch.db}.schema_migrations ORDER BY version")
    assert [r[0] for r in applied] == [m.version for m in load()]
    assert {"touchpoints", "sessions", "sla_events", "response_times", "funnel_minute", "anomalies"} <= set(
        ch.tables()
    )


def test_every_table_status_lists_can_be_counted(ch: ClickHouse) -> None:
    """``touchstream status`` counts each table FINAL: the list holds every sink table and the
    cost feed, never a materialized view's hidden inner table (``person_rfm`` keeps one, whose
    name ``.inner_id.<uuid>`` broke the count's SQL)."""
    ch.command(f"SYSTEM REFRESH VIEW {ch.db}.person_rfm")
    inner = ch.query("SELECT count() FROM system.tables WHERE database = {db:String} AND startsWith(name, '.inner')",
                     {"db": ch.db})
    assert inner[0][0] >= 1  # the case exists on this engine
    # what a refresh builds beside it: a plain MergeTree, for the length of the refresh
    for hidden in (".tmp.inner_id.0000", "_tmp_replace_0000"):
        ch.command(f"CREATE TABLE {ch.db}.`{hidden}` (x UInt8) ENGINE = MergeTree ORDER BY x")
    try:
        tables = ch.tables()
        assert {spec.table for spec in SPECS} | {"campaign_costs"} <= set(tables)
        assert not [t for t in tables if t.startswith((".", "_tmp"))], tables
        assert all(ch.count(t) >= 0 for t in tables)
        assert ch.count("_tmp_replace_0000") == 0  # FINAL only where the engine has it
    finally:
        for hidden in (".tmp.inner_id.0000", "_tmp_replace_0000"):
            ch.command(f"DROP TABLE {ch.db}.`{hidden}`")


def test_upgrade_adds_cohort_conversion_without_touching_old_rows(chdb_path: Path, tmp_path: Path) -> None:
    """A database at 0004 (rows written) upgrades in place: old rows read converted = NULL
    (not measured), new rows carry it, the hourly view sums it next to person_minutes."""
    import shutil
    import uuid

    from streams.clickhouse.migrate import SCHEMA_DIR

    old_dir = tmp_path / "schemas"
    old_dir.mkdir()
    for f in sorted(SCHEMA_DIR.glob("*.sql"))[:4]:
        shutil.copy(f, old_dir / f.name)
    client = ClickHouse(f"chdb://{chdb_path}", database=f"t_{uuid.uuid4().hex[:10]}")
    try:
        assert migrate(client, old_dir) == ["0001", "0002", "0003", "0004"]
        t = now_ms() // 3_600_000 * 3_600_000
        row = {"tenant_id": "acme", "window_start": t, "window_end": t + 60_000, "channel": None,
               "campaign": None, "stage": "click", "events": 12, "persons": 10}
        client.insert("funnel_minute", [SPECS_BY_TABLE["funnel_minute"].to_row(row)[:-1]],
                      SPECS_BY_TABLE["funnel_minute"].columns[:-1])
        assert migrate(client) == [m.version for m in load()[4:]] and migrate(client) == []
        insert(client, "funnel_minute", [dict(row, window_start=t + 60_000, window_end=t + 120_000, converted=7)])
        got = client.query(f"SELECT converted FROM {client.db}.funnel_minute ORDER BY window_start")
        assert [r[0] for r in got] == [None, 7]
        hourly = client.query(f"SELECT person_minutes, converted_person_minutes FROM {client.db}.funnel_hourly")
        assert [list(r) for r in hourly] == [[20, 7]]
    finally:
        client.command(f"DROP DATABASE IF EXISTS {client.db}")


def test_upgrade_to_record_keys_keeps_old_rows_and_separates_distinct_new_ones(chdb_path: Path, tmp_path: Path) -> None:
    """0006 on a database with rows: old rows stay (record_key 0), the keyed tables' sorting keys
    end with record_key, and two waits that share a wait id (a conversation reopened after its
    retention) no longer overwrite each other, while a re-delivery still collapses."""
    import shutil
    import uuid

    from streams.clickhouse.migrate import SCHEMA_DIR

    old_dir = tmp_path / "schemas"
    old_dir.mkdir()
    for f in sorted(SCHEMA_DIR.glob("*.sql"))[:5]:
        shutil.copy(f, old_dir / f.name)
    client = ClickHouse(f"chdb://{chdb_path}", database=f"t_{uuid.uuid4().hex[:10]}")
    try:
        migrate(client, old_dir)
        spec = SPECS_BY_TABLE["sla_events"]
        t = now_ms() - 3_600_000
        wait = {"tenant_id": "acme", "wait_id": "acme:c1:1", "event": "breach", "conversation_id": "c1",
                "channel": "live_chat", "team": "support", "kind": "first_reply", "started_at": t,
                "due_at": t + 60_000, "fired_at": t + 60_000, "response_s": None}
        client.insert("sla_events", [spec.row(wait)], spec.columns[:-1])
        assert "0006" in migrate(client)
        keys = dict(client.query("SELECT name, sorting_key FROM system.tables WHERE database = {db:String}",
                                 {"db": client.db}))
        for s in SPECS:
            assert keys[s.table].endswith("record_key") == s.keyed, (s.table, keys[s.table])
        reopened = {**wait, "started_at": t + 40 * 86_400_000, "due_at": t + 40 * 86_400_000 + 60_000}
        insert(client, "sla_events", [wait, reopened])
        insert(client, "sla_events", [{**wait, "fired_at": t + 61_000}, reopened])  # re-deliveries
        assert client.count("sla_events") == 3  # the row from before the upgrade, and the two waits
    finally:
        client.command(f"DROP DATABASE IF EXISTS {client.db}")


def test_statement_splitter_ignores_comments() -> None:
    assert statements("-- a;\nCREATE X (a);\n\nCREATE Y\n(b);\n") == ["CREATE X (a)", "CREATE Y\n(b)"]


def test_url_helpers() -> None:
    assert redact("http://u:secret@h:8123/db") == "http://u:***@h:8123/db"
    assert redact("chdb:///tmp/x") == "chdb:///tmp/x"
    assert database_of("http://u:p@h:8123/analytics", "touchstream") == "analytics"
    assert database_of("chdb:///tmp/x", "touchstream") == "touchstream"


def enriched(i: int, stage: str, etype: str, person: str, ts: int) -> dict:
    iso = datetime.fromtimestamp(ts / 1000, UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"
    return {
        "event_id": f"e{i}", "tenant_id": "acme", "occurred_at": iso, "channel": "web", "type": etype,
        "identities": {"anonymous_id": person}, "campaign": {"name": "spring"}, "person_id": person,
        "session_id": "s_1", "session_seq": 1, "stage": stage,
        "source": {"topic": "touchpoints.raw", "partition": 0, "offset": i},
    }


def insert(ch: ClickHouse, table: str, records: list[dict], token: str | None = None) -> None:
    spec = SPECS_BY_TABLE[table]
    ch.insert(table, [spec.to_row(r) for r in records], spec.columns, token)


def test_duplicates_collapse_and_tokens_drop_identical_batches(ch: ClickHouse) -> None:
    t = now_ms()
    batch = [enriched(i, "visit", "page_view", f"p_{i}", t) for i in range(10)]
    insert(ch, "touchpoints", batch, token="tok-a")
    insert(ch, "touchpoints", batch, token="tok-a")  # same batch re-sent: dropped by the token
    assert ch.count("touchpoints", final=False) == 10
    insert(ch, "touchpoints", batch[:5], token="tok-b")  # a re-cut replay: new token, same rows
    assert ch.count("touchpoints", final=False) == 15
    assert ch.count("touchpoints", final=True) == 10  # FINAL: exact regardless of merges


def test_sla_sessions_anomalies_queries(ch: ClickHouse) -> None:
    t = now_ms() - 120_000
    base = {"tenant_id": "acme", "conversation_id": "c1", "channel": "live_chat", "team": "support",
            "agent_id": "a1", "priority": "normal", "policy": "default", "kind": "first_reply", "started_at": t}
    insert(ch, "response_times", [
        {**base, "wait_id": "acme:c1:1", "replied_at": t + 30_000, "response_s": 30.0, "response_wall_s": 30.0,
         "target_s": 60.0, "breached": False},
        {**base, "wait_id": "acme:c1:2", "replied_at": t + 90_000, "response_s": 90.0, "response_wall_s": 90.0,
         "target_s": 60.0, "breached": True},
    ])
    insert(ch, "sla_events", [{**base, "wait_id": "acme:c1:2", "event": "breach", "due_at": t + 60_000,
                               "fired_at": t + 60_000, "response_s": None}])
    (row,) = queries.sla(ch, "acme", 3600)
    assert row["replies"] == 2 and row["attainment"] == 0.5 and row["breaches_fired"] == 1
    insert(ch, "sessions", [{
        "tenant_id": "acme", "session_id": "s_1", "person_id": "p_1", "started_at": t, "ended_at": t + 60_000,
        "touchpoints": 3, "channels": ["web"], "first_touch": {"channel": "web"}, "last_touch": {"channel": "web"},
        "max_stage": "lead", "converted": True, "merged_session_ids": [], "late_events": 0,
    }])
    (srow,) = queries.sessions(ch, "acme", 3600)
    assert srow["sessions"] == 1 and srow["conversion_rate"] == 1.0 and srow["avg_duration_s"] == 60.0
    anomaly = {"anomaly_id": "a1", "tenant_id": "acme", "dimension": {"campaign": "spring"},
               "stage_from": "click", "stage_to": "visit", "kind": "conversion_drop", "window_start": t,
               "observed": 0.2, "expected": 0.5, "score": 9.0, "est_lost_conversions": 3.0}
    insert(ch, "anomalies", [{**anomaly, "status": "open", "detected_at": t + 60_000}])
    assert [a["anomaly_id"] for a in queries.anomalies(ch, "acme", 3600)] == ["a1"]
    insert(ch, "anomalies", [{**anomaly, "status": "resolved", "detected_at": t + 120_000}])
    assert queries.anomalies(ch, "acme", 3600) == []
    assert queries.anomalies(ch, "acme", 3600, open_only=False)[0]["status"] == "resolved"


@pytest.mark.parametrize("text,seconds", [("90s", 90), ("15m", 900), ("1h", 3600), ("7d", 604800)])
def test_parse_since(text: str, seconds: int) -> None:
    assert queries.parse_since(text) == seconds


def test_cluster_ddl_covers_every_table_with_replicated_and_distributed_forms() -> None:
    from streams.clickhouse.cluster import cluster_ddl

    ddl = cluster_ddl("prod", "analytics")
    for table in ("touchpoints", "sessions", "identity_merges", "sla_events", "response_times", "funnel_minute",
                  "anomalies"):
        assert f"analytics.{table}_local ON CLUSTER 'prod'" in ddl
        assert f"'/clickhouse/tables/{{shard}}/analytics/{table}', '{{replica}}'" in ddl
        assert f"Distributed('prod', 'analytics', '{table}_local', cityHash64(tenant_id))" in ddl
    assert "{db}" not in ddl and "non_replicated" not in ddl
    # a sorting-key change applies to the replicated table; its Distributed front only gets the column
    assert "ALTER TABLE analytics.touchpoints_local ON CLUSTER 'prod' ADD COLUMN IF NOT EXISTS record_key UInt64,\n" \
        "    MODIFY ORDER BY (tenant_id, toStartOfHour(occurred_at), event_id, record_key);" in ddl
    assert "ALTER TABLE analytics.touchpoints ON CLUSTER 'prod' ADD COLUMN IF NOT EXISTS record_key UInt64;" in ddl
    assert all("_local ON CLUSTER" in stmt for stmt in ddl.split(";") if "MODIFY ORDER BY" in stmt)
    assert "CREATE VIEW IF NOT EXISTS analytics.funnel_hourly ON CLUSTER 'prod'" in ddl
    # a column added later reaches the replicated table and its Distributed front; views are replaced
    for table in ("funnel_minute_local", "funnel_minute"):
        assert f"ALTER TABLE analytics.{table} ON CLUSTER 'prod' ADD COLUMN IF NOT EXISTS converted" in ddl
    assert "CREATE OR REPLACE VIEW analytics.funnel_daily ON CLUSTER 'prod'" in ddl
