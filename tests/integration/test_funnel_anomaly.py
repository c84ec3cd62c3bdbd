"""A landing page dies for one campaign: the live worker opens an anomaly for that campaign and
stage on ``funnel.anomalies`` and in ClickHouse within the target delay, and resolves it after.

The feed is the simulator's (seeded, three tenants, realistic mix) in event time — 100 minutes of
it, so the detector has its first hour of history before the outage — produced as fast as the
broker takes it; ``TOUCHSTREAM_IDLE_ADVANCE_S`` is large so watermarks follow event time only.
"""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest

from streams.devtools.simulate import Incident, SimConfig, generate
from tests.conftest import WorkerProc, ch_query, start_worker, wait_until
from tests.kafka_util import produce, read_all, stage_lag

pytestmark = [pytest.mark.integration]

START = 1_767_225_600_000  # 2026-01-01T00:00:00Z
WINDOW = 60_000
OUTAGE_START = START + 65 * 60_000
OUTAGE_END = OUTAGE_START + 15 * 60_000
TARGET_DELAY_WINDOWS = 3


def test_landing_page_outage_opens_and_resolves_one_anomaly(pipeline_env: dict[str, str], tmp_path: Path,
                                                           workers: list[WorkerProc]) -> None:
    env = dict(pipeline_env, TOUCHSTREAM_IDLE_ADVANCE_S="1000000", TOUCHSTREAM_MAX_FUTURE_S="100000000")
    prefix, bootstrap = env["TOUCHSTREAM_TOPIC_PREFIX"], env["KAFKA_BOOTSTRAP_SERVERS"]
    outage = Incident("landing_page_outage", "acme-shop", OUTAGE_START, OUTAGE_END, campaign="winter-sale-search",
                      channel="ads", stage_from="click", stage_to="visit", factor=0.0)
    cfg = SimConfig(rate=20, duration_s=100 * 60, seed=3, start_ms=START, incidents=(outage,))
    start_worker(env, tmp_path / "worker.log", workers)
    n = produce(bootstrap, prefix + "touchpoints.raw",
                ((ev["tenant_id"].encode(), orjson.dumps(ev)) for ev in generate(cfg)))
    assert n > 90_000

    def ours() -> list[dict]:
        found = [orjson.loads(v) for _, v, _ in read_all(bootstrap, prefix + "funnel.anomalies")]
        return [a for a in found if a["tenant_id"] == "acme-shop" and a["dimension"].get("campaign")
                == "winter-sale-search" and (a["stage_from"], a["stage_to"]) == ("click", "visit")
                and a["kind"] == "conversion_drop"]

    wait_until(lambda: any(a["status"] == "resolved" for a in ours()), 300, interval=2.0,
               what="the outage anomaly to open and resolve", explain=lambda: f"so far: {ours()}")
    records = ours()
    opened = [a for a in records if a["status"] == "open"]
    assert len(opened) == 1, records  # one incident, not a storm
    first = opened[0]
    assert OUTAGE_START <= first["window_start"] <= OUTAGE_START + TARGET_DELAY_WINDOWS * WINDOW
    assert first["detected_at"] - OUTAGE_START <= (TARGET_DELAY_WINDOWS + 1) * WINDOW  # stream time of raising
    assert first["observed"] < 0.2 * first["expected"] and first["est_lost_conversions"] >= 0
    resolved = [a for a in records if a["status"] == "resolved"]
    assert len(resolved) == 1 and resolved[0]["anomaly_id"] == first["anomaly_id"]
    assert resolved[0]["detected_at"] >= OUTAGE_END  # not before the landing page is back
    # no parent/sibling storm: the tenant-wide click→visit series does not open its own drop
    all_records = [orjson.loads(v) for _, v, _ in read_all(bootstrap, prefix + "funnel.anomalies")]
    assert not [a for a in all_records if a["tenant_id"] == "acme-shop" and a["kind"] == "conversion_drop"
                and a["status"] == "open" and a["anomaly_id"] != first["anomaly_id"]
                and OUTAGE_START <= a["window_start"] < OUTAGE_END]

    # the embedded engine belongs to the worker while it runs: let the sink commit, stop, then look
    wait_until(lambda: stage_lag(bootstrap, env["TOUCHSTREAM_APP_ID"], prefix, "funnel.anomalies") == 0, 60,
               what="sink to commit the anomalies")
    assert workers[-1].stop() == 0, workers[-1].tail()
    rows = ch_query(env, "SELECT status, count(), any(kind), any(campaign), any(stage_from), any(stage_to) "
                         f"FROM {{db}}.anomalies FINAL WHERE anomaly_id = '{first['anomaly_id']}' "
                         "AND status IN ('open', 'resolved') GROUP BY status ORDER BY status")
    assert rows == [["open", 1, "conversion_drop", "winter-sale-search", "click", "visit"],
                    ["resolved", 1, "conversion_drop", "winter-sale-search", "click", "visit"]]
