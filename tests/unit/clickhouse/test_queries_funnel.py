"""The funnel queries on the real embedded engine (chdb): the cohort SQL is the core's rule
(property test against streams.core.conversion on random touchpoints), Grafana runs that same
SQL, and the per-minute series, dimensions and incident history the board charts."""

from __future__ import annotations

import json
from collections import defaultdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from streams.clickhouse import queries
from streams.clickhouse.client import ClickHouse
from streams.clickhouse.rows import SPECS
from streams.core.conversion import cohort_flow
from streams.core.stages import STAGE_INDEX, STAGES

SPEC = {s.table: s for s in SPECS}
W = 60_000
NOW = 1_796_000_000_000 - 1_796_000_000_000 % W + 17_000  # a fixed "now", inside a window
DASHBOARD = Path(__file__).resolve().parents[3] / "deploy" / "grafana" / "dashboards" / "touchstream-business.json"


def touch(i: int, tenant: str, person: str, stage: str, at: int, channel: str = "web",
          campaign: str | None = None) -> dict[str, Any]:
    iso = datetime.fromtimestamp(at / 1000, UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"
    rec: dict[str, Any] = {
        "event_id": f"e{i}", "tenant_id": tenant, "occurred_at": iso, "channel": channel, "type": "x",
        "identities": {"anonymous_id": person}, "person_id": person, "session_id": "s", "session_seq": 1,
        "stage": stage, "source": {"topic": "touchpoints.raw", "partition": 0, "offset": i},
    }
    if campaign:
        rec["campaign"] = {"name": campaign}
    return rec


def insert(ch: ClickHouse, table: str, records: list[dict[str, Any]]) -> None:
    spec = SPEC[table]
    ch.insert(table, [spec.to_row(r) for r in records], spec.columns)


Event = tuple[str, str, str, int, str, str | None]  # tenant, person, stage, at, channel, campaign


def reference(events: list[Event], since_s: int, by: str | None = None, channel: str | None = None,
              campaign: str | None = None) -> list[dict[str, Any]]:
    """streams.core.conversion over the events, shaped like queries.funnel's rows."""
    lo, hi = NOW - since_s * 1000, NOW
    anywhere: dict[tuple[str, str], dict[int, set[int]]] = defaultdict(lambda: defaultdict(set))
    cohorts: dict[tuple[str, str], dict[str, dict[int, set[int]]]] = defaultdict(
        lambda: defaultdict(lambda: defaultdict(set)))
    n_events: dict[tuple[str, str, str], int] = defaultdict(int)
    for tenant, person, stage, at, chan, camp in events:
        anywhere[(tenant, person)][STAGE_INDEX[stage]].add(at // W)
        if not lo <= at <= hi or (channel is not None and chan != channel) or (
                campaign is not None and camp != campaign):
            continue
        d = {"channel": chan, "campaign": camp or "", None: ""}[by]
        cohorts[(tenant, d)][person][STAGE_INDEX[stage]].add(at // W)
        n_events[(tenant, d, stage)] += 1
    out = []
    for (tenant, d), persons in sorted(cohorts.items()):
        for f in cohort_flow(((m, anywhere[(tenant, p)]) for p, m in persons.items()), 1):
            row = f.as_dict()
            del row["next_stage"], row["stage"]
            out.append({"tenant_id": tenant, **({by: d} if by else {}), "stage": f.stage,
                        "events": n_events[(tenant, d, f.stage)], **row})
    return out


events_st = st.lists(
    st.tuples(
        st.sampled_from(["t1", "t2"]),
        st.sampled_from(["p0", "p1", "p2", "p3", "p4"]),
        st.sampled_from(STAGES[:5]),
        st.integers(-75 * W, 2 * W),  # relative to NOW: some before the period, some in the padding
        st.sampled_from(["web", "ads"]),
        st.sampled_from([None, "c1"]),
    ),
    min_size=1, max_size=40,
)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(events_st, st.sampled_from([None, "channel", "campaign"]), st.sampled_from([None, "ads"]))
def test_cohort_sql_is_the_core_rule(ch: ClickHouse, raw: list[Event], by: str | None, channel: str | None) -> None:
    ch.command(f"TRUNCATE TABLE {ch.db}.touchpoints")
    events = [(t, p, s, NOW + off, chan, camp) for t, p, s, off, chan, camp in raw
              if NOW + off <= NOW]  # nothing after "now": the query reads up to it
    insert(ch, "touchpoints", [touch(i, *e[:4], channel=e[4], campaign=e[5]) for i, e in enumerate(events)])
    got = queries.funnel(ch, None, 3600, by, channel=channel, now_ms=NOW)
    assert got == reference(events, 3600, by, channel)
    for row in got:
        assert row["conversion"] is None or 0 <= row["conversion"] <= 1
    one = queries.funnel(ch, "t1", 3600, now_ms=NOW)
    assert one == [r for r in reference(events, 3600) if r["tenant_id"] == "t1"]


def test_funnel_rows_for_the_cli(ch: ClickHouse) -> None:
    """The shape `touchstream query funnel` prints: every stage, zeros included, in funnel order."""
    t = NOW - 10 * W
    insert(ch, "touchpoints", [
        *(touch(i, "acme", f"p{i}", "click", t + i, "ads", "spring") for i in range(10)),
        *(touch(100 + i, "acme", f"p{i}", "visit", t + 1000) for i in range(4)),
        touch(200, "acme", "p0", "visit", t + 2000),  # the same person twice: once
        *(touch(300 + i, "acme", f"d{i}", "visit", t + 2000) for i in range(30)),  # direct visits
    ])
    rows = queries.funnel(ch, "acme", 3600, now_ms=NOW)
    assert [r["stage"] for r in rows] == list(STAGES)
    by = {r["stage"]: r for r in rows}
    assert by["click"] == {"tenant_id": "acme", "stage": "click", "events": 10, "persons": 10, "converted": 4,
                           "conversion": 0.4, "from_previous": 0, "skipped_previous": 10}
    assert (by["visit"]["persons"], by["visit"]["events"], by["visit"]["from_previous"],
            by["visit"]["skipped_previous"]) == (34, 35, 4, 30)  # not "340 %" of the clicks
    assert by["impression"]["from_previous"] is None and by["deal"]["converted"] is None
    by_campaign = queries.funnel(ch, "acme", 3600, by="campaign", now_ms=NOW)
    assert {r["campaign"] for r in by_campaign} == {"", "spring"}
    assert queries.funnel(ch, "nobody", 3600, now_ms=NOW) == []


def test_series_dimensions_and_incident_history(ch: ClickHouse) -> None:
    start = NOW - NOW % (2 * W) - 10 * W  # on a 2-minute bucket boundary
    rows = []
    for k in range(6):
        ws = start + k * W
        for channel, persons, converted in ((None, 100, 40 if k < 3 else 10), ("ads", 60, 30)):
            rows.append({"tenant_id": "acme", "window_start": ws, "window_end": ws + W, "channel": channel,
                         "campaign": None, "stage": "click", "events": persons, "persons": persons,
                         "converted": converted})
    rows.append({"tenant_id": "other", "window_start": start, "window_end": start + W, "channel": None,
                 "campaign": None, "stage": "click", "events": 5, "persons": 5, "converted": None})
    insert(ch, "funnel_minute", rows)
    series = queries.funnel_series(ch, None, 3600, bucket_s=120, now_ms=NOW)
    first = next(r for r in series if r["t"] == start)
    # two tenants add up; the row without `converted` adds to the volume, not to the cohort
    assert first == {"t": start, "stage": "click", "persons": 205, "cohort": 200, "converted": 80}
    ads = queries.funnel_series(ch, "acme", 3600, channel="ads", now_ms=NOW)
    assert [(r["persons"], r["converted"]) for r in ads] == [(60, 30)] * 6
    assert queries.funnel_dimensions(ch, "acme", 3600, now_ms=NOW) == [{"channel": "ads", "campaign": None,
                                                           "person_minutes": 360}]

    def rec(status: str, detected: int) -> dict[str, Any]:
        return {"anomaly_id": "a1", "tenant_id": "acme", "dimension": {"channel": "ads", "campaign": None},
                "stage_from": "click", "stage_to": "visit", "kind": "conversion_drop", "status": status,
                "window_start": start, "detected_at": detected, "observed": 0.2, "expected": 0.5, "score": -7.0,
                "est_lost_conversions": 4.5 if status != "open" else 1.0, "total_observed": 0.2,
                "total_expected": 0.5}

    insert(ch, "anomalies", [rec("open", start + 3 * W), rec("update", start + 4 * W)])
    # the sink's anomalies table is judged against the wall clock: detected_at must be recent
    (inc,) = [i for i in queries.anomaly_incidents(ch, "acme", 400 * 86_400) if i["anomaly_id"] == "a1"]
    assert inc == {"anomaly_id": "a1", "tenant_id": "acme", "dimension": {"channel": "ads", "campaign": None},
                   "stage_from": "click", "stage_to": "visit", "kind": "conversion_drop", "status": "update",
                   "window_start": start, "last_detected_at": start + 4 * W, "observed": 0.2, "expected": 0.5,
                   "score": -7.0, "est_lost_conversions": 4.5}
    insert(ch, "anomalies", [rec("resolved", start + 6 * W)])
    assert queries.anomaly_incidents(ch, "acme", 400 * 86_400, open_only=True) == []
    (cli,) = queries.anomalies(ch, "acme", 400 * 86_400, open_only=False)
    assert cli["status"] == "resolved" and cli["channel"] == "ads"


def _panel_sql(title_prefix: str) -> str:
    dash = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    (panel,) = [p for p in dash["panels"] if p["title"].startswith(title_prefix)]
    return str(panel["targets"][0]["rawSql"])


def test_grafana_runs_the_same_cohort_sql_and_never_an_empty_tenant_list() -> None:
    """The business dashboard's funnel panels are built by queries.cohort_funnel_sql (so Grafana,
    the board and `query funnel` cannot drift), and "All" tenants is a value, not an empty list."""
    tenants = queries.GRAFANA_TENANT_FILTER
    assert _panel_sql("Funnel: cohort conversion per stage") == queries.cohort_funnel_sql(
        "touchstream", period_from="$__fromTime", period_to="$__toTime", tenant_filter=tenants, per_tenant=False)
    assert queries.cohort_funnel_sql("touchstream", period_from="$__fromTime", period_to="$__toTime",
                                     tenant_filter=tenants, dim="channel", per_tenant=False) in _panel_sql(
        "Cohort conversion by channel")
    dash = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    (var,) = dash["templating"]["list"]
    assert var["allValue"] == "'__all__'" and "touchpoints" in var["query"]
    for p in dash["panels"]:
        for t in p.get("targets", []):
            sql = t.get("rawSql", "")
            assert "${tenant" not in sql.replace(tenants, ""), f"{p['title']}: tenant filter without the All case"


def test_grafana_all_tenants_reads_every_tenant(ch: ClickHouse) -> None:
    """Grafana substitutes a custom "All" value unformatted: the filter must then match every row."""
    insert(ch, "touchpoints", [touch(1, "a", "p", "click", NOW - W), touch(2, "b", "q", "click", NOW - W)])
    for value, expected in (("'__all__'", 2), ("'a'", 1), ("'a','b'", 2)):
        where = queries.GRAFANA_TENANT_FILTER.replace("${tenant:singlequote}", value)
        assert ch.query(f"SELECT count() FROM {ch.db}.touchpoints WHERE {where}")[0][0] == expected
