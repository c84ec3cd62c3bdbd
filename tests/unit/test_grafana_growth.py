"""The business dashboard's growth row (lifecycle counts, ROI per campaign) gives the numbers
`touchstream query` gives, on the embedded engine with the core's records of a known journey."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest

from streams.clickhouse import queries
from streams.clickhouse.client import ClickHouse
from tests.unit.clickhouse.test_profiles_attribution import journey
from tests.unit.clickhouse.test_queries_growth import load
from tests.unit.test_deploy_files import DASHBOARD_DIR, expand_grafana_sql

DASH = json.loads((DASHBOARD_DIR / "touchstream-business.json").read_text(encoding="utf-8"))


def panel(title_start: str, ch: ClickHouse) -> list[tuple[Any, ...]]:
    (p,) = [p for p in DASH["panels"] if p.get("title", "").startswith(title_start)]
    now = int(time.time())
    return ch.query(expand_grafana_sql(p["targets"][0]["rawSql"], ch.db, DASH, now - 86400, now))


def test_growth_row_matches_the_queries(ch: ClickHouse) -> None:
    load(ch, journey())  # the dashboard's tenant variable expands to 'acme' (expand_grafana_sql)
    assert panel("Persons by lifecycle stage", ch) == [("acme", 1, 0, 0, 0, 1, 2)]
    rows = {r[1]: r for r in panel("ROI per campaign", ch)}
    want = {r["campaign"] or "(no campaign)": r for r in queries.campaign_roi(ch, "acme")}
    assert set(rows) == set(want) == {"spring", "summer", "(no campaign)"}
    for name, r in want.items():
        _, _, currency, revenue, cost, roi, roas, deals, per_entrant = rows[name]
        assert (currency, revenue, deals) == (r["currency"], float(r["revenue"]), r["deals"])
        assert cost == pytest.approx(float(r["cost"]))
        assert (roi is None) == (r["roi"] is None) and (roas is None) == (r["roas"] is None)
        if roi is not None:
            assert round(roi, 4) == r["roi"] and round(roas, 4) == r["roas"]
        assert per_entrant == r["chain_product"]
    assert rows["spring"][3:5] == (100.0, pytest.approx(1.0065))  # linear: a third of EUR 300.00
