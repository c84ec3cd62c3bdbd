"""``touchstream evaluate``: detector quality against the simulator's injected incidents.

Matching rules (documented so the figures can be argued with):
- an incident is *detected* when an ``open`` anomaly of the same tenant names its campaign
  (any channel), the right kind (landing_page_outage → conversion_drop on its stage pair;
  tracking_broken → volume_drop of its stage) and opens between 2 windows before the start
  and the end of the incident; the detection delay is ``detected_at − start`` in windows;
- an ``open`` anomaly that matches no incident (with 15 minutes of slack after the end, for
  the recovery tail) is a *false alarm*;
- recall counts only incidents that meet the product target's bar: a drop of ≥ 30 %, lasting
  ≥ 10 min, on a series with ≥ 200 persons/min at the upper stage (measured from funnel.jsonl
  when given, else every incident counts);
- false alarms are normalised per series-day, series = distinct (tenant, dimension, stage
  pair or stage) seen in funnel.jsonl × the input's duration.
"""

from __future__ import annotations

import statistics
from pathlib import Path
from typing import Any

import orjson

from streams.core.stages import STAGES

SLACK_AFTER_MS = 15 * 60_000


def _jsonl(path: Path) -> list[dict[str, Any]]:
    return [orjson.loads(line) for line in path.read_bytes().splitlines() if line.strip()]


def _expected_kind(incident: dict[str, Any]) -> tuple[str, str | None, str | None] | None:
    if incident["kind"] == "landing_page_outage":
        return "conversion_drop", incident.get("stage_from") or "click", incident.get("stage_to") or "visit"
    if incident["kind"] == "tracking_broken":
        stage = incident.get("stage_to") or "impression"
        return "volume_drop", stage, stage
    return None  # team_silent is an SLA incident, not a funnel one


def _upper_rate(funnel: list[dict[str, Any]], inc: dict[str, Any], stage: str) -> float:
    """Mean persons/min at the upper stage for the incident's campaign before it started."""
    before = [r["persons"] for r in funnel if r["tenant_id"] == inc["tenant_id"] and r.get("campaign") ==
              inc.get("campaign") and r.get("channel") is None and r["stage"] == stage and
              inc["start_ms"] - 3_600_000 <= r["window_start"] < inc["start_ms"]]
    return statistics.fmean(before) if before else 0.0


def evaluate(truth: dict[str, Any], anomalies: list[dict[str, Any]],
             funnel: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    window_ms = int(truth.get("config", {}).get("window_ms", 60_000))
    incidents = [i for i in truth["incidents"] if _expected_kind(i)]
    opens = [a for a in anomalies if a["status"] == "open"]
    used: set[int] = set()
    per_incident = []
    for inc in incidents:
        kind, s_from, s_to = _expected_kind(inc)  # type: ignore[misc]
        hit = None
        for idx, a in enumerate(opens):
            dim = a.get("dimension") or {}
            if (a["tenant_id"] == inc["tenant_id"] and dim.get("campaign") == inc.get("campaign")
                    and a["kind"] == kind and a["stage_from"] == s_from and a["stage_to"] == s_to
                    and inc["start_ms"] - 2 * window_ms <= a["detected_at"] <= inc["end_ms"] + window_ms):
                hit = (idx, a)
                break
        drop = 1 - float(inc.get("factor", 0.0))
        minutes = (inc["end_ms"] - inc["start_ms"]) / 60_000
        upper = _upper_rate(funnel, inc, s_from or "") if funnel else None
        eligible = drop >= 0.3 and minutes >= 10 and (upper is None or upper >= 200)
        rec: dict[str, Any] = {"kind": inc["kind"], "tenant_id": inc["tenant_id"], "campaign": inc.get("campaign"),
                               "drop": round(drop, 3), "minutes": round(minutes, 1),
                               "upper_persons_per_min": None if upper is None else round(upper, 1),
                               "eligible": eligible, "detected": hit is not None}
        if hit is not None:
            used.add(hit[0])
            rec["delay_windows"] = round((hit[1]["detected_at"] - inc["start_ms"]) / window_ms, 2)
            rec["anomaly_id"] = hit[1]["anomaly_id"]
        per_incident.append(rec)

    def explained(a: dict[str, Any]) -> bool:
        return any(a["tenant_id"] == i["tenant_id"] and i["start_ms"] - 2 * window_ms <= a["detected_at"]
                   <= i["end_ms"] + SLACK_AFTER_MS for i in truth["incidents"])

    false_alarms = [a for idx, a in enumerate(opens) if idx not in used and not explained(a)]
    secondary = [a for idx, a in enumerate(opens) if idx not in used and explained(a)]
    eligible = [r for r in per_incident if r["eligible"]]
    delays = [r["delay_windows"] for r in eligible if r["detected"]]
    cfg = truth.get("config", {})
    days = float(cfg.get("duration_s", 0)) / 86400 or None
    series = None
    if funnel:
        keys = {(r["tenant_id"], r.get("channel"), r.get("campaign")) for r in funnel}
        series = len(keys) * (2 * len(STAGES) - 1)  # stage volumes + stage transitions per dimension
    series_days = series * days if series and days else None
    return {
        "incidents": per_incident,
        "eligible_incidents": len(eligible),
        "recall": round(sum(r["detected"] for r in eligible) / len(eligible), 4) if eligible else None,
        "open_anomalies": len(opens),
        "false_alarms": len(false_alarms),
        "secondary_alarms_during_incidents": len(secondary),
        "series": series,
        "series_days": None if series_days is None else round(series_days, 2),
        "false_alarms_per_100_series_days": (round(100 * len(false_alarms) / series_days, 3)
                                             if series_days else None),
        "median_delay_windows": statistics.median(delays) if delays else None,
        "false_alarm_examples": false_alarms[:5],
    }


def main(truth_path: str, anomalies_path: str, funnel_path: str | None) -> dict[str, Any]:
    truth = orjson.loads(Path(truth_path).read_bytes())
    funnel = _jsonl(Path(funnel_path)) if funnel_path else None
    return evaluate(truth, _jsonl(Path(anomalies_path)), funnel)
