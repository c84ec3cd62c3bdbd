"""Score the anomaly detector on NAB's labelled real series, the way NAB scores detectors.

Why: the funnel alarms are only trusted if they are right on real traffic, not only on the
simulator's incidents; NAB (Numenta Anomaly Benchmark) is the field's yardstick, with a published
scoreboard. Usage (the CLI wires it as ``touchstream evaluate nab``)::

    python -m streams.devtools.nab_eval [--root DIR] [--categories C ...] [--files F ...] [--json OUT]

**What runs.** Each file is one series through :class:`streams.core.anomaly.SeriesDetector`: the
same per-series model the funnel runs (baseline, seasonality, graded score, incidents), with the
production defaults. A file of non-negative integers is a ``count`` series (events per interval:
Poisson noise is part of the model, so 0-3 events stay 0-3 events, no rescaling), anything else a
``value`` series (prices, occupancy, speed: judged by their learned relative variability). One
observation per row at its own timestamp (NAB series are irregular and have gaps of days that mean
"no data", not "zero"); ``window_ms`` is the file's median spacing. The per-row anomaly score is
the detector's graded score.

**How it is scored.** :mod:`streams.devtools.nab.scoring`, NAB's rules (verified against NAB's
published per-file scores in ``tests/unit/devtools/test_nab_scoring.py``): windows, probationary
period, scaled sigmoid, the three profiles, one threshold per profile optimised over the scored
files, normalised so the null detector scores 0 and the perfect one 100. The published detectors
whose per-row results are in ``ROOT/results`` are scored the same way on the same files (their
thresholds optimised on these files too), so the comparison is like for like.

**Over-fitting checks.** The threshold is the only thing fitted to the labels. Two held-out
variants show what that is worth: *leave one category out* (each category scored at the threshold
optimised on the other categories) and *leave one file out* (each file at the threshold optimised
on all the others).

This module does file I/O and is therefore not part of ``streams/core``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from itertools import pairwise
from pathlib import Path
from typing import Any

from streams.core.anomaly import DetectorConfig, SeriesDetector
from streams.devtools.nab import corpus, scoring
from streams.devtools.nab.scoring import PROFILES, LabelledFile, Profile

DEFAULT_CATEGORIES = ("realAdExchange", "realTraffic")
#: Published detectors compared against, when their per-row results are present.
COMPARE = ("numenta", "ARTime", "contextOSE", "windowedGaussian")


def series_kind(values: Sequence[float]) -> str:
    """``count`` for non-negative integers (events per interval), else ``value``."""
    return "count" if values and all(v >= 0 and float(v).is_integer() for v in values) else "value"


def _ms(t: datetime) -> int:
    """NAB timestamps are naive local times; read as UTC (only hour-of-day/week alignment matters)."""
    return int(t.replace(tzinfo=UTC).timestamp() * 1000)


def median_step_ms(times: Sequence[int]) -> int:
    steps = [b - a for a, b in pairwise(times) if b > a]
    return int(statistics.median(steps)) if steps else 60_000


def detector_scores(
    timestamps: Sequence[datetime], values: Sequence[float], config: DetectorConfig | None = None,
) -> tuple[list[float], str, float, list[int]]:
    """Per-row graded scores of one series, its kind, the detector's µs per row, and the rows
    where an incident opened (what the funnel would page on; not part of NAB's score)."""
    times = [_ms(t) for t in timestamps]
    kind = series_kind(values)
    det = SeriesDetector(kind, median_step_ms(times), config)
    scores: list[float] = []
    opened: list[int] = []
    t0 = time.perf_counter()
    for i, (t, v) in enumerate(zip(times, values, strict=True)):
        score, what = det.observe(t, v)
        scores.append(score)
        if what == "opened":
            opened.append(i)
    per_row = (time.perf_counter() - t0) * 1e6 / max(1, len(times))
    return scores, kind, per_row, opened


@dataclass(frozen=True, slots=True)
class Scored:
    """One detector's per-row scores on the scored files."""

    name: str
    files: list[tuple[LabelledFile, list[float]]]

    def normalised(self, profile: Profile, threshold: float | None = None) -> tuple[float, float, float]:
        """(normalised score, raw score, threshold); the threshold optimised unless given."""
        labs = [lab for lab, _ in self.files]
        if threshold is None:
            best = scoring.optimise_threshold(self.files, profile)
            raw, threshold = best.score, best.threshold
        else:
            raw = sum(scoring.score_file(lab, s, threshold, profile).score for lab, s in self.files)
        null, perfect = scoring.null_score(labs, profile), scoring.perfect_score(labs, profile)
        return scoring.normalise(raw, null, perfect), raw, threshold

    def held_out(self, profile: Profile, group: Any) -> float:
        """Normalised score when each group of files is scored at the threshold optimised on the
        other groups (``group(name)`` names a file's group)."""
        labs = [lab for lab, _ in self.files]
        raw = 0.0
        for g in sorted({group(lab.name) for lab in labs}):
            train = [(lab, s) for lab, s in self.files if group(lab.name) != g]
            test = [(lab, s) for lab, s in self.files if group(lab.name) == g]
            thr = scoring.optimise_threshold(train, profile).threshold if train else scoring.NO_DETECTION_THRESHOLD
            raw += sum(scoring.score_file(lab, s, thr, profile).score for lab, s in test)
        return scoring.normalise(raw, scoring.null_score(labs, profile), scoring.perfect_score(labs, profile))


def evaluate(
    root: Path, files: list[str] | None = None, config: DetectorConfig | None = None,
    categories: tuple[str, ...] = DEFAULT_CATEGORIES, profiles: tuple[Profile, ...] = PROFILES,
) -> dict[str, Any]:
    """Our detector (and the published ones present) on the NAB files; everything the report shows."""
    names = files or corpus.data_files(root, categories)
    windows = corpus.read_windows(root)
    ours: list[tuple[LabelledFile, list[float]]] = []
    per_file: list[dict[str, Any]] = []
    costs: list[tuple[float, int]] = []
    for name in names:
        timestamps, values = corpus.read_series(root / "data" / name)
        lab = scoring.label_rows(name, timestamps, windows.get(name, []))
        scores, kind, us, opened = detector_scores(timestamps, values, config)
        ours.append((lab, scores))
        costs.append((us, lab.rows))
        scored = [i for i in opened if i >= lab.probation]
        per_file.append({
            "file": name, "rows": lab.rows, "kind": kind, "windows": lab.windows,
            "incidents": {"opened": len(scored),
                          "in_windows": sum(1 for i in scored if lab.window[i] != scoring.OUTSIDE),
                          "windows_with_one": len({lab.window[i] for i in scored} - {scoring.OUTSIDE})},
        })
    result: dict[str, Any] = {"files": per_file, "profiles": {}, "compare": {}}
    detectors = [Scored("touchstream", ours)]
    for other in COMPARE:
        paths = [corpus.result_path(root, other, name) for name in names]
        if all(p.exists() for p in paths):
            loaded = [(lab, corpus.read_result_scores(p)[1]) for (lab, _), p in zip(ours, paths, strict=True)]
            detectors.append(Scored(other, loaded))
    published = _published_thresholds(root)
    for det in detectors:
        entry: dict[str, Any] = {}
        for profile in profiles:
            norm, raw, thr = det.normalised(profile)
            entry[profile.name] = {
                "score": round(norm, 2), "raw": round(raw, 4), "threshold": thr,
                "leave_one_category_out": round(det.held_out(profile, lambda n: n.split("/")[0]), 2),
                "leave_one_file_out": round(det.held_out(profile, lambda n: n), 2),
            }
            nab_thr = published.get(det.name, {}).get(profile.name, {}).get("threshold")
            if nab_thr is not None:  # NAB's own threshold, optimised over its whole 58-file corpus
                entry[profile.name]["score_at_nab_threshold"] = round(det.normalised(profile, nab_thr)[0], 2)
        result["compare" if det.name != "touchstream" else "profiles"][det.name] = entry
    ours_entry = result["profiles"].pop("touchstream")
    result["profiles"] = ours_entry
    for row, (lab, scores) in zip(per_file, ours, strict=True):
        for profile in profiles:
            thr = ours_entry[profile.name]["threshold"]
            ts = scoring.score_file(lab, scores, thr, profile)
            flagged = [i for i in range(lab.probation, lab.rows) if scores[i] >= thr]
            detected = {lab.window[i] for i in flagged if lab.window[i] != scoring.OUTSIDE}
            row[profile.name] = {"raw": round(ts.score, 4), "detected": len(detected),
                                 "fp_rows": ts.fp, "tp_rows": ts.tp}
        for other, det_entry in result["compare"].items():
            other_scores = next(d for d in detectors if d.name == other).files
            other_lab, s = other_scores[per_file.index(row)]
            thr = det_entry["standard"]["threshold"]
            row.setdefault("compare_standard_raw", {})[other] = round(
                scoring.score_file(other_lab, s, thr, PROFILES[0]).score, 4)
    result["incidents"] = {k: sum(r["incidents"][k] for r in per_file)
                           for k in ("opened", "in_windows", "windows_with_one")}
    rows = sum(n for _, n in costs)
    result["us_per_row"] = round(sum(us * n for us, n in costs) / max(1, rows), 1)
    result["rows"] = rows
    return result


def _published_thresholds(root: Path) -> dict[str, dict[str, dict[str, float]]]:
    path = root / "config" / "thresholds.json"
    return json.loads(path.read_text()) if path.exists() else {}


def _table(result: dict[str, Any]) -> str:
    lines = []
    profiles = list(result["profiles"])
    head = f"{'detector':18}" + "".join(f"{p:>20}" for p in profiles)
    lines += ["NAB normalised score (0 = null detector, 100 = perfect; thresholds optimised on these files)",
              head, "-" * len(head)]
    lines.append(f"{'touchstream':18}" + "".join(f"{result['profiles'][p]['score']:>20.2f}" for p in profiles))
    for name, entry in result["compare"].items():
        lines.append(f"{name:18}" + "".join(f"{entry[p]['score']:>20.2f}" for p in profiles))
    at_nab = [(n, e) for n, e in result["compare"].items() if all("score_at_nab_threshold" in e[p] for p in profiles)]
    if at_nab:
        lines.append("published detectors at NAB's own thresholds (optimised over NAB's whole corpus):")
        for name, entry in at_nab:
            lines.append(f"{name:18}" + "".join(f"{entry[p]['score_at_nab_threshold']:>20.2f}" for p in profiles))
    lines.append("")
    lines.append("held out (touchstream): threshold optimised without the scored category / file")
    for key in ("leave_one_category_out", "leave_one_file_out"):
        lines.append(f"  {key:24}" + "".join(f"{result['profiles'][p][key]:>14.2f}" for p in profiles))
    lines.append("  thresholds              " + "".join(f"{result['profiles'][p]['threshold']:>14.4f}"
                                                       for p in profiles))
    lines.append("")
    others = list(result["compare"])
    head = (f"{'file':42} {'rows':>5} {'kind':>5} {'win':>3} {'det':>3} {'fp':>3}"
            + "".join(f"{p[:18]:>19}" for p in profiles) + "".join(f"{o[:10]:>11}" for o in others))
    lines += ["per file: windows detected / flagged rows outside windows / raw score per profile "
              "(standard raw of the published detectors)", head, "-" * len(head)]
    for row in result["files"]:
        std = row[profiles[0]]
        lines.append(
            f"{row['file']:42} {row['rows']:5d} {row['kind']:>5} {row['windows']:3d} {std['detected']:3d}"
            f" {std['fp_rows']:3d}" + "".join(f"{row[p]['raw']:19.3f}" for p in profiles)
            + "".join(f"{row.get('compare_standard_raw', {}).get(o, float('nan')):11.3f}" for o in others))
    inc = result["incidents"]
    lines.append(f"\nincidents (CUSUM, what the funnel pages on; not NAB-scored), after probation: {inc['opened']} "
                 f"opened, {inc['in_windows']} inside labelled windows, "
                 f"{inc['windows_with_one']} of {sum(r['windows'] for r in result['files'])} windows with one")
    lines.append(f"detector cost: {result['us_per_row']} µs per row (window), {result['rows']} rows")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="touchstream evaluate nab", description=__doc__.split("\n\n")[0])
    parser.add_argument("--root", type=Path, default=corpus.DEFAULT_ROOT, help="NAB directory (data/, labels/)")
    parser.add_argument("--categories", nargs="*", default=list(DEFAULT_CATEGORIES),
                        help="data categories to score (default: realAdExchange realTraffic)")
    parser.add_argument("--files", nargs="*", default=None, help="relative data files instead of categories")
    parser.add_argument("--json", type=Path, default=None, help="also write the full result as JSON here")
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    if not (args.root / "data").is_dir() or not (args.root / "labels").is_dir():
        print(f"no NAB corpus at {args.root} (expected data/ and labels/)", file=sys.stderr)
        return 2
    result = evaluate(args.root, args.files, categories=tuple(args.categories))
    if not result["files"]:
        print("no data files selected", file=sys.stderr)
        return 2
    print(_table(result))
    if args.json is not None:
        args.json.write_text(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
