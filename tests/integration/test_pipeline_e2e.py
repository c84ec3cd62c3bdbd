"""End to end on the real broker: raw → validate → process → enriched/DLQ → ClickHouse (embedded)."""

from __future__ import annotations

import itertools
import urllib.request
from pathlib import Path

import orjson
import pytest

from tests.conftest import WorkerProc, ch_query, start_worker, wait_until
from tests.kafka_util import message_count, produce, read_all, stage_lag

pytestmark = pytest.mark.integration

BAD: list[tuple[bytes, str]] = [
    (b"not json at all", "not_json"),
    (b"[1, 2, 3]", "not_object"),
    (b'{"a": "\xff\xfe"}', "invalid_utf8"),
    (b'{"event_id": "x"}', "missing_field"),
    (orjson.dumps({"event_id": "b1", "tenant_id": "t0", "occurred_at": "2026-01-01T00:00:00Z", "channel": "fax",
                   "type": "page_view", "identities": {"anonymous_id": "a"}}), "unknown_channel"),
    (orjson.dumps({"event_id": "b2", "tenant_id": "t0", "occurred_at": "2031-01-01T00:00:00Z", "channel": "web",
                   "type": "page_view", "identities": {"anonymous_id": "a"}}), "future_timestamp"),
    (orjson.dumps({"event_id": "b3", "tenant_id": "t0", "occurred_at": "2026-01-01T00:00:00Z", "channel": "web",
                   "type": "message_in", "identities": {"anonymous_id": "a"}}), "missing_conversation"),
    (orjson.dumps({"event_id": "b4", "tenant_id": "t0", "occurred_at": "2026-01-01T00:00:00Z", "channel": "web",
                   "type": "page_view", "identities": {}}), "no_identity"),
]


def metric(text: str, name: str) -> float:
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[-1])
    raise AssertionError(f"metric {name} not exposed")


def valid_events(n: int, start_ms: int) -> list[dict]:
    types = itertools.cycle(["ad_impression", "ad_click", "page_view", "page_view", "form_submit"])
    out = []
    for i in range(n):
        t = next(types)
        ts = start_ms + i * 1000
        out.append({
            "event_id": f"ev-{i}",
            "tenant_id": f"tenant-{i % 3}",
            "occurred_at": f"2026-01-01T{ts // 3_600_000 % 24:02d}:{ts // 60_000 % 60:02d}:{ts // 1000 % 60:02d}Z",
            "channel": "web" if t != "ad_impression" else "ads",
            "type": t,
            "identities": {"anonymous_id": f"anon-{i % 40}"},
            "campaign": {"source": "google", "medium": "cpc", "name": f"camp-{i % 2}"},
        })
    return out


def test_valid_to_clickhouse_invalid_to_dlq(pipeline_env: dict[str, str], tmp_path: Path,
                                            workers: list[WorkerProc]) -> None:
    env = pipeline_env
    prefix, bootstrap = env["TOUCHSTREAM_TOPIC_PREFIX"], env["KAFKA_BOOTSTRAP_SERVERS"]
    group = env["TOUCHSTREAM_APP_ID"]
    w = start_worker(env, tmp_path / "worker.log", workers)

    n_valid = 300
    events = valid_events(n_valid, start_ms=8 * 3_600_000)
    msgs = [(e["tenant_id"].encode(), orjson.dumps(e)) for e in events]
    msgs += [(None, raw) for raw, _ in BAD]
    msgs += [(e["tenant_id"].encode(), orjson.dumps(e)) for e in events[:10]]  # duplicates: dropped
    produce(bootstrap, prefix + "touchpoints.raw", msgs)

    wait_until(lambda: message_count(bootstrap, prefix + "touchpoints.enriched") >= n_valid, 90,
               what="enriched messages")
    wait_until(lambda: message_count(bootstrap, prefix + "touchpoints.dlq") >= len(BAD), 30, what="DLQ")
    wait_until(lambda: stage_lag(bootstrap, group, prefix, "touchpoints.enriched") == 0, 60,
               what="sink to commit enriched offsets")
    assert w.alive(), w.tail()
    port = env["TOUCHSTREAM_WEB_PORT"]
    metrics = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    assert metric(metrics, 'touchstream_events_in_total{topic="touchpoints.raw"}') == len(msgs)
    assert metric(metrics, 'touchstream_dlq_total{reason="not_json"}') == 1
    assert metric(metrics, "touchstream_duplicates_total") == 10
    assert metric(metrics, 'touchstream_sink_rows_total{table="touchpoints"}') == n_valid

    def raw_lag_series() -> list[float]:
        text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
        series = [line for line in text.splitlines() if line.startswith("touchstream_consumer_lag_messages{")
                  and f'topic="{prefix}touchpoints.raw"' in line]
        values = [float(line.rsplit(" ", 1)[1]) for line in series]
        return values if len(values) == 4 and not any(values) else []

    assert wait_until(raw_lag_series, 20, what="lag gauge: 4 raw partitions, all caught up")
    ready = orjson.loads(urllib.request.urlopen(f"http://127.0.0.1:{port}/ready", timeout=5).read())
    assert ready["state_recovered"] and ready["clickhouse"] and ready["assigned_partitions"] == [0, 1, 2, 3]
    assert w.stop() == 0, w.tail()

    enriched = [orjson.loads(v) for _, v, _ in read_all(bootstrap, prefix + "touchpoints.enriched")]
    assert len(enriched) == n_valid
    assert sorted(e["event_id"] for e in enriched) == sorted(e["event_id"] for e in events)
    assert all(e["person_id"].startswith("p_") and e["session_id"].startswith("s_") for e in enriched)
    dlq = [orjson.loads(v) for _, v, _ in read_all(bootstrap, prefix + "touchpoints.dlq")]
    assert sorted(d["reason"] for d in dlq) == sorted(r for _, r in BAD)
    assert all(d["source"]["topic"] == prefix + "touchpoints.raw" and d["original_b64"] for d in dlq)

    assert ch_query(env, "SELECT count() FROM {db}.touchpoints FINAL") == [[n_valid]]
    # no crash happened, so not even pre-merge duplicates exist
    assert ch_query(env, "SELECT count() FROM {db}.touchpoints") == [[n_valid]]
    ids = {r[0] for r in ch_query(env, "SELECT event_id FROM {db}.touchpoints")}
    assert ids == {e["event_id"] for e in events}
