"""Run the anomaly detector's volume logic on the labelled NAB series (Numenta Anomaly Benchmark).

Why: the synthetic harness in the tests checks the detector against the model it was built on;
NAB is real, labelled data with a published scoreboard, so it tells us how the volume logic
behaves on series it was not designed around. Usage::

    python -m streams.devtools.nab_eval [ROOT] [FILE ...]     # ROOT defaults to /work/shared/data/nab

Which series: the local NAB subset holds ``realAdExchange`` (hourly cost per click / per mille of
an ad exchange) and ``realTraffic`` (5-10 min road-sensor occupancy, speed, travel time);
``realKnownCause`` is not part of it. None of them is a literal count, but all are non-negative
levels of a flow (traffic density and speed, ad prices), and a collapse or surge of such a
level is what a volume detector is for, so all 13 are used by default. Each value is scaled so
the series' median is 1000 and fed as the persons count of stage ``impression`` of one tenant's
total dimension: with a negative-binomial variance μ + φμ² the learned φ dominates at that
scale, so the test is effectively scale-free (the Poisson term is ≤ 0.1 % of the variance).

Windows: one observation per window at its own timestamp; the window length is the file's
median sampling interval (60 min for realAdExchange, 5 or 10 min for realTraffic). NAB series
have gaps (up to 3.5 days) that mean "no data", not "zero", so gap filling is switched off
(``max_catchup_windows=0``); everything else is the production default configuration.

Scoring: a labelled window is *detected* if an incident opens inside it or at most
``grace_windows`` windows after its end (late, but still the same event); any other opening
is a *false alarm*. ``chance`` is how many windows the same number of openings placed
uniformly at random would be expected to hit: NAB windows are wide, so compare against it.
NAB's own per-file TP/FP for the ``numenta`` (HTM) detector are shown for context; they count
flagged records, not windows, at NAB's optimised threshold.

This module does file I/O and is therefore not part of ``streams/core``.
"""

from __future__ import annotations

import csv
import json
import statistics
import sys
from dataclasses import replace
from datetime import UTC, datetime
from itertools import pairwise
from pathlib import Path
from typing import Any

from streams.core.anomaly import AnomalyDetector, DetectorConfig
from streams.core.state import MemoryStore

DEFAULT_ROOT = "/work/shared/data/nab"
DEFAULT_DIRS = ("realAdExchange", "realTraffic")
SCALE_MEDIAN = 1000.0
TENANT = "nab"


def _ms(ts: str) -> int:
    """NAB timestamps are naive local times; read them as UTC (only hour-of-day alignment matters)."""
    return int(datetime.fromisoformat(ts).replace(tzinfo=UTC).timestamp() * 1000)


def _read_series(path: Path) -> list[tuple[int, float]]:
    with path.open(newline="") as f:
        return [(_ms(r["timestamp"]), float(r["value"])) for r in csv.DictReader(f)]


def _numenta(root: Path, name: str) -> tuple[int, int] | None:
    path = root / "results" / "numenta" / "numenta_standard_scores.csv"
    if not path.exists():
        return None
    with path.open(newline="") as f:
        for r in csv.DictReader(f):
            if r["File"] == name:
                return int(r["TP"]), int(r["FP"])
    return None


def evaluate_file(
    root: Path, name: str, labels: list[list[str]], config: DetectorConfig, grace_windows: int
) -> dict[str, Any]:
    series = _read_series(root / "data" / name)
    steps = [b[0] - a[0] for a, b in pairwise(series) if b[0] > a[0]]
    window_ms = int(statistics.median(steps)) if steps else 60_000
    positive = [v for _, v in series if v > 0]
    scale = SCALE_MEDIAN / statistics.median(positive) if positive else 1.0
    det = AnomalyDetector(MemoryStore(), replace(config, window_ms=window_ms, max_catchup_windows=0))
    opens: list[int] = []
    last = None
    for ts, value in series:
        ws = ts - ts % window_ms
        if last is not None and ws <= last:
            continue  # two samples in one window: keep the first
        last = ws
        count = max(0, round(value * scale))
        rows = []
        if count > 0:
            rows.append(
                {"tenant_id": TENANT, "window_start": ws, "window_end": ws + window_ms, "channel": None,
                 "campaign": None, "stage": "impression", "events": count, "persons": count}
            )
        for ev in det.observe_windows(TENANT, ws, rows, ws + window_ms):
            if ev["status"] == "open" and ev["stage_from"] == ev["stage_to"]:
                opens.append(ws)
    spans = [(_ms(a), _ms(b)) for a, b in labels]
    grace = grace_windows * window_ms
    detected = 0
    delays: list[float] = []
    matched: set[int] = set()
    for start, end in spans:
        hits = [t for t in opens if start <= t <= end + grace]
        if hits:
            detected += 1
            delays.append((hits[0] - start) / window_ms)
            matched.update(hits)
    # What the same number of openings at uniformly random times would hit: NAB windows are wide
    # (~10 % of a file), so a noisy detector "detects" many of them by luck.
    span = max(1, series[-1][0] - series[0][0]) if series else 1
    chance = sum(1.0 - (1.0 - min(1.0, (end + grace - start) / span)) ** len(opens) for start, end in spans)
    numenta = _numenta(root, name)
    return {
        "file": name,
        "rows": len(series),
        "window_min": window_ms / 60_000,
        "labelled": len(spans),
        "detected": detected,
        "chance_detected": round(chance, 2),
        "false_alarms": sum(1 for t in opens if t not in matched),
        "opens": len(opens),
        "delays_windows": delays,
        "numenta_tp_fp": numenta,
    }


def evaluate_nab(
    root: str, files: list[str] | None = None, config: DetectorConfig | None = None, grace_windows: int = 12
) -> dict[str, Any]:
    """Per-file and total detection counts of the volume detector on NAB labelled windows."""
    base = Path(root)
    labels: dict[str, list[list[str]]] = json.loads((base / "labels" / "combined_windows.json").read_text())
    if files is None:
        files = sorted(
            f"{d}/{p.name}" for d in DEFAULT_DIRS if (base / "data" / d).is_dir()
            for p in (base / "data" / d).glob("*.csv")
        )
    cfg = config or DetectorConfig()
    per_file = [evaluate_file(base, name, labels.get(name, []), cfg, grace_windows) for name in files]
    windows = sum(r["rows"] for r in per_file)
    false_alarms = sum(r["false_alarms"] for r in per_file)
    totals = {
        "files": len(per_file),
        "rows": windows,
        "labelled": sum(r["labelled"] for r in per_file),
        "detected": sum(r["detected"] for r in per_file),
        "chance_detected": round(sum(r["chance_detected"] for r in per_file), 1),
        "false_alarms": false_alarms,
        "false_alarms_per_1000_windows": round(1000 * false_alarms / max(windows, 1), 3),
    }
    totals["recall"] = round(totals["detected"] / totals["labelled"], 3) if totals["labelled"] else None
    return {"files": per_file, "totals": totals, "grace_windows": grace_windows}


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    root = args[0] if args else DEFAULT_ROOT
    files = args[1:] or None
    result = evaluate_nab(root, files)
    head = (
        f"{'file':44} {'rows':>5} {'win':>4} {'labelled':>8} {'detected':>8} {'chance':>6} {'false':>5}"
        "  delays (windows)  numenta TP/FP"
    )
    print(head)
    print("-" * len(head))
    for r in result["files"]:
        delays = ",".join(f"{d:.0f}" for d in r["delays_windows"]) or "-"
        numenta = "/".join(map(str, r["numenta_tp_fp"])) if r["numenta_tp_fp"] else "-"
        print(
            f"{r['file']:44} {r['rows']:5d} {r['window_min']:4.0f} {r['labelled']:8d} {r['detected']:8d}"
            f" {r['chance_detected']:6.1f} {r['false_alarms']:5d}  {delays:16} {numenta}"
        )
    t = result["totals"]
    print("-" * len(head))
    print(
        f"{'total':44} {t['rows']:5d} {'':4} {t['labelled']:8d} {t['detected']:8d}"
        f" {t['chance_detected']:6.1f} {t['false_alarms']:5d}"
        f"  recall {t['recall']}, false alarms per 1000 windows {t['false_alarms_per_1000_windows']}"
        f" (grace {result['grace_windows']} windows)"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
