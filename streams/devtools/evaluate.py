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
  pair or stage) seen in funnel.jsonl × the input's duration. Most of those series are too thin
  to ever alarm (the detector watches a volume from 10 persons/window, a conversion from 20
  upper-stage persons/window), so the rate per *watched* series-day (series whose mean over the
  run reaches those floors) is reported too: the stricter figure.

``python -m streams.devtools.evaluate SEEDS HOURS [RATE] [KEEP_DIR]`` runs simulate → process → evaluate
for many seeds in one process (:func:`simulate_and_evaluate`, :func:`incident_plan`): enough
series-days for a false-alarm rate of ~1 per 100 series-days to be measurable at all.
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


def _watched_series(funnel: list[dict[str, Any]], duration_s: float, window_ms: int) -> int:
    """Series whose run-average reaches the detector's watch floors (its defaults): volumes with
    ≥ ``min_volume_count`` persons per window, conversions with ≥ ``min_upper_count`` persons
    per window at the upper stage and some conversions."""
    from streams.core.anomaly import DetectorConfig

    cfg = DetectorConfig()
    windows = max(1.0, duration_s * 1000 / window_ms)
    persons: dict[tuple[Any, ...], float] = {}
    converted: dict[tuple[Any, ...], float] = {}
    for r in funnel:
        key = (r["tenant_id"], r.get("channel"), r.get("campaign"), r["stage"])
        persons[key] = persons.get(key, 0.0) + r["persons"]
        converted[key] = converted.get(key, 0.0) + (r.get("converted") or 0)
    if not any(converted.values()):  # rows of an older producer: the detector used stage k+1's persons
        for (t, ch, cm, stage) in persons:
            if stage != STAGES[-1]:
                converted[(t, ch, cm, stage)] = persons.get((t, ch, cm, STAGES[STAGES.index(stage) + 1]), 0.0)
    volumes = sum(1 for v in persons.values() if v / windows >= cfg.min_volume_count)
    conversions = sum(1 for k, v in persons.items() if k[3] != STAGES[-1] and v / windows >= cfg.min_upper_count
                      and converted[k] > 0)
    return volumes + conversions


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
    watched = _watched_series(funnel, float(cfg.get("duration_s", 0)), window_ms) if funnel else None
    watched_days = watched * days if watched and days else None
    by_kind: dict[str, int] = {}
    for a in false_alarms:
        dim = a.get("dimension") or {}
        level = "total" if not dim.get("channel") and not dim.get("campaign") else (
            "cell" if dim.get("channel") and dim.get("campaign") else "channel" if dim.get("channel") else "campaign")
        key = f"{a['kind']} {a['stage_from']}→{a['stage_to']} @{level}"
        by_kind[key] = by_kind.get(key, 0) + 1
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
        "watched_series": watched,
        "watched_series_days": None if watched_days is None else round(watched_days, 2),
        "false_alarms_per_100_watched_series_days": (round(100 * len(false_alarms) / watched_days, 3)
                                                     if watched_days else None),
        "false_alarms_by_kind": dict(sorted(by_kind.items())),
        "median_delay_windows": statistics.median(delays) if delays else None,
        "false_alarm_examples": false_alarms[:5],
    }


def main(truth_path: str, anomalies_path: str, funnel_path: str | None) -> dict[str, Any]:
    truth = orjson.loads(Path(truth_path).read_bytes())
    funnel = _jsonl(Path(funnel_path)) if funnel_path else None
    return evaluate(truth, _jsonl(Path(anomalies_path)), funnel)


# --- many series-days: simulate → offline core → evaluate, in one process -------------------

#: Bulky offline outputs the evaluation does not read: written to /dev/null.
_DISCARD = ("enriched.jsonl", "merges.jsonl", "sessions.jsonl", "sla.jsonl", "response_times.jsonl",
            "pages.jsonl", "dlq.jsonl")


def incident_plan(cfg: Any, every_min: tuple[int, int] = (100, 160), seed: int = 0) -> tuple[Any, ...]:
    """Funnel incidents spread over a long run, starting 100-160 minutes apart (so each one's
    recovery and echoes, e.g. the return visits an hour later of sessions an outage lost, are in
    the record before the next one).

    Mostly landing-page outages of the first tenant's largest campaign (the one series with
    ≥ 200 clicks/min at rate 200: the product target's bar) of various depths (factor 0.0-0.7)
    and lengths (10-30 min), plus tracking breaks and outages of smaller campaigns."""
    import random

    from streams.devtools.simulate import Incident, tenant_specs

    rng = random.Random(seed)
    specs = tenant_specs(cfg)
    first = specs[0]
    big = max(first.campaigns, key=lambda c: c.share)
    out: list[Incident] = []
    t = cfg.start_ms + 60 * 60_000  # an hour of history first
    end = cfg.start_ms + int(cfg.duration_s * 1000)
    while True:
        t += rng.randint(*every_min) * 60_000
        length = rng.choice((10, 12, 15, 20, 30)) * 60_000
        if t + length + 30 * 60_000 > end:
            break
        roll = rng.random()
        if roll < 0.6:
            out.append(Incident("landing_page_outage", first.tenant_id, t, t + length, campaign=big.name,
                                channel=big.channel, stage_from="click", stage_to="visit",
                                factor=rng.choice((0.0, 0.3, 0.5, 0.6, 0.7))))
        else:
            spec = rng.choice(specs)
            camp = rng.choice(spec.campaigns)
            if roll < 0.85:
                out.append(Incident("tracking_broken", spec.tenant_id, t, t + length, campaign=camp.name,
                                    channel=camp.channel, stage_to="impression", factor=0.0))
            else:
                out.append(Incident("landing_page_outage", spec.tenant_id, t, t + length, campaign=camp.name,
                                    channel=camp.channel, stage_from="click", stage_to="visit",
                                    factor=rng.choice((0.0, 0.5))))
    return tuple(out)


def simulate_and_evaluate(seed: int, hours: float, rate: float = 200.0, start_ms: int = 1_767_225_600_000,
                          keep: str | None = None) -> dict[str, Any]:
    """One seeded run: the simulator with :func:`incident_plan`, the offline core, :func:`evaluate`.

    Equivalent to ``touchstream simulate --truth`` + ``touchstream process`` + ``touchstream
    evaluate`` without the multi-GB intermediate files; ``keep`` names a directory that keeps
    ``funnel.jsonl``, ``anomalies.jsonl`` and ``truth.json``."""
    import os
    import tempfile
    from dataclasses import replace

    from streams import offline
    from streams.devtools import simulate

    cfg = simulate.SimConfig(rate=rate, duration_s=hours * 3600, seed=seed, start_ms=start_ms)
    cfg = replace(cfg, incidents=incident_plan(cfg, seed=seed))
    truth = simulate.truth(cfg)
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(keep) if keep else Path(tmp)
        out.mkdir(parents=True, exist_ok=True)
        for name in _DISCARD:
            link = out / name
            if link.exists() or link.is_symlink():
                link.unlink()
            os.symlink(os.devnull, link)
        offline.run((simulate.dumps(ev) for ev in simulate.generate(cfg)), out)
        (out / "truth.json").write_bytes(orjson.dumps(truth))
        res = evaluate(truth, _jsonl(out / "anomalies.jsonl"), _jsonl(out / "funnel.jsonl"))
    res["seed"] = seed
    res["hours"] = hours
    return res


def replay_detector(funnel: list[dict[str, Any]], config: Any = None) -> list[dict[str, Any]]:
    """The anomaly records the detector emits for ``funnel`` rows (as the pipeline feeds it: per
    tenant, each closed window's rows, ``detected_at`` = the window's end).

    Why: simulating and processing a 6-hour run takes minutes; the detector alone on its kept
    ``funnel.jsonl`` takes seconds, so detector changes can be judged on many series-days. (The
    pipeline also feeds a tenant's empty windows while its tracking is silent; here those windows
    are filled as zeros when the tenant's next window arrives, which only delays a whole-tenant
    silence, not a campaign's.)"""
    from streams.core.anomaly import AnomalyDetector, DetectorConfig
    from streams.core.state import MemoryStore

    det = AnomalyDetector(MemoryStore(), config or DetectorConfig())
    by_window: dict[tuple[int, str], list[dict[str, Any]]] = {}
    for row in funnel:
        by_window.setdefault((row["window_start"], row["tenant_id"]), []).append(row)
    out: list[dict[str, Any]] = []
    for (ws, tenant), rows in sorted(by_window.items()):
        out.extend(det.observe_windows(tenant, ws, rows, rows[0]["window_end"]))
    return out


def replay_dirs(dirs: list[str], config: Any = None) -> dict[str, Any]:
    """:func:`replay_detector` + :func:`evaluate` over kept run directories (``KEEP_DIR/<seed>``)."""
    runs = []
    for d in dirs:
        base = Path(d)
        truth = orjson.loads((base / "truth.json").read_bytes())
        funnel = _jsonl(base / "funnel.jsonl")
        res = evaluate(truth, replay_detector(funnel, config), funnel)
        res.pop("false_alarm_examples")
        res["dir"] = d
        runs.append(res)
    return {"runs": runs, "totals": totals(runs)}


def _cli(argv: list[str]) -> int:
    """``python -m streams.devtools.evaluate SEEDS HOURS [RATE] [KEEP_DIR]``: seeds as ``1-8`` or ``1,3``.
    One JSON line per seed, then one with the totals over all seeds.

    ``python -m streams.devtools.evaluate replay DIR...``: the detector alone on kept runs."""
    if argv and argv[0] == "replay":
        result = replay_dirs(argv[1:])
        for r in result["runs"]:
            print(orjson.dumps(r).decode(), flush=True)
        print(orjson.dumps(result["totals"]).decode())
        return 0
    spec, hours = argv[0], float(argv[1])
    rate = float(argv[2]) if len(argv) > 2 else 200.0
    keep = argv[3] if len(argv) > 3 else None
    if "-" in spec:
        a, b = spec.split("-")
        seeds = list(range(int(a), int(b) + 1))
    else:
        seeds = [int(s) for s in spec.split(",")]
    runs = []
    for seed in seeds:
        res = simulate_and_evaluate(seed, hours, rate, keep=f"{keep}/{seed}" if keep else None)
        res.pop("false_alarm_examples")
        runs.append(res)
        print(orjson.dumps(res).decode(), flush=True)
    print(orjson.dumps(totals(runs)).decode())
    return 0


def totals(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Pool several :func:`evaluate` results (recall and rates over the pooled counts)."""
    eligible = [i for r in runs for i in r["incidents"] if i["eligible"]]
    delays = [i["delay_windows"] for i in eligible if i["detected"]]
    fa = sum(r["false_alarms"] for r in runs)
    sd = sum(r["series_days"] or 0.0 for r in runs)
    wsd = sum(r.get("watched_series_days") or 0.0 for r in runs)
    by_kind: dict[str, int] = {}
    for r in runs:
        for k, v in r.get("false_alarms_by_kind", {}).items():
            by_kind[k] = by_kind.get(k, 0) + v
    return {
        "runs": len(runs),
        "eligible_incidents": len(eligible),
        "detected": sum(1 for i in eligible if i["detected"]),
        "recall": round(len(delays) / len(eligible), 4) if eligible else None,
        "median_delay_windows": statistics.median(delays) if delays else None,
        "max_delay_windows": max(delays) if delays else None,
        "false_alarms": fa,
        "series_days": round(sd, 2),
        "false_alarms_per_100_series_days": round(100 * fa / sd, 3) if sd else None,
        "watched_series_days": round(wsd, 2),
        "false_alarms_per_100_watched_series_days": round(100 * fa / wsd, 3) if wsd else None,
        "false_alarms_by_kind": dict(sorted(by_kind.items())),
    }


if __name__ == "__main__":
    import sys

    raise SystemExit(_cli(sys.argv[1:]))
