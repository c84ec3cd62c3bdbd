"""NAB's scoring rules, as published with the benchmark (Lavin & Ahmad 2015; Ahmad et al. 2017).

The rules, and why each exists:

* **Windows.** Each labelled anomaly is a window of rows around the labelled point (10 % of the
  file's rows divided among its anomalies). A window is *detected* when at least one row inside it
  is flagged (anomaly score ≥ threshold); only the *earliest* flagged row of a window counts, so a
  detector is not rewarded for repeating itself and not punished for it inside the window.
* **Scaled sigmoid.** A row's value depends on its position: ``σ(x) = 2 / (1 + e^{5x}) − 1``. In a
  window ``x = −(right − i + 1) / width`` runs from −1 at the left edge (σ ≈ 0.987) to ≈ 0 at the
  right edge, so earlier detection scores more; the in-window value is divided by σ(−1), which makes
  a detection at the left edge worth exactly the true-positive weight. A flagged row outside any
  window is a false positive worth ``fp_weight · σ(x)`` with ``x`` its distance after the end of
  the preceding window in units of that window's width − 1 (σ → 0 right after a window: a late
  detection is nearly free; x > 3 and rows before the first window count −1).
* **Probationary period.** The first ``min(⌊0.15 · rows⌋, 0.15 · 5000)`` rows of each file are not
  scored at all: every detector needs some data to learn from.
* **Profiles.** Cost weights (tp, fp, fn): *standard* (1, 0.11, 1), *reward_low_FP_rate* (1, 0.22,
  1), *reward_low_FN_rate* (1, 0.11, 2). An undetected window costs ``−fn_weight``.
* **Threshold optimisation.** Per detector and profile, the one threshold that maximises the summed
  raw score over all scored files (ties: the highest threshold, i.e. the fewest detections); the
  same threshold is then applied to every file.
* **Normalisation.** ``100 · (raw − null) / (perfect − null)``: the null detector flags nothing
  (``−fn_weight`` per window), the perfect detector flags every window at its left edge and nothing
  else (``tp_weight`` per window). 0 = useless, 100 = perfect.

The counts (TP, TN, FP, FN) are NAB's *row* counts at the threshold, over the scored
(non-probationary) rows: flagged rows inside / outside windows and unflagged ones.

Pure functions, no I/O; :mod:`streams.devtools.nab.corpus` reads the files.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

PROBATION_PERCENT = 0.15
#: Probation is capped at this share of 5000 rows (NAB's rule: long files do not get longer probation).
_PROBATION_CAP_ROWS = 5000
#: Beyond this many window widths after a window, a false positive counts fully.
_FAR_PAST_WINDOW = 3.0
#: The sweep starts above every possible score (scores are in [0, 1]): "nothing flagged".
NO_DETECTION_THRESHOLD = 1.1
#: Window index of a row outside every window.
OUTSIDE = -1


@dataclass(frozen=True, slots=True)
class Profile:
    name: str
    tp_weight: float
    fp_weight: float
    fn_weight: float


#: NAB's three application profiles (config/profiles.json of the benchmark).
PROFILES: tuple[Profile, ...] = (
    Profile("standard", 1.0, 0.11, 1.0),
    Profile("reward_low_FP_rate", 1.0, 0.22, 1.0),
    Profile("reward_low_FN_rate", 1.0, 0.11, 2.0),
)


def profiles_from_config(config: dict[str, dict[str, dict[str, float]]]) -> tuple[Profile, ...]:
    """Profiles from NAB's ``config/profiles.json`` (``{name: {"CostMatrix": {...Weight}}}``)."""
    return tuple(
        Profile(name, float(c["CostMatrix"]["tpWeight"]), float(c["CostMatrix"]["fpWeight"]),
                float(c["CostMatrix"]["fnWeight"]))
        for name, c in config.items()
    )


def scaled_sigmoid(x: float) -> float:
    """NAB's position weight: +0.987 at x = −1 (a window's left edge), 0 at x = 0, −1 for x > 3."""
    if x > _FAR_PAST_WINDOW:
        return -1.0
    return 2.0 / (1.0 + math.exp(5.0 * x)) - 1.0


_MAX_TP = scaled_sigmoid(-1.0)


def probation_length(rows: int, percent: float = PROBATION_PERCENT) -> float:
    return min(math.floor(percent * rows), percent * _PROBATION_CAP_ROWS)


@dataclass(frozen=True, slots=True)
class LabelledFile:
    """One file's rows as the scorer sees them, independent of the detector and the profile.

    ``window[i]``: the row's window index in the file, or :data:`OUTSIDE`; ``value[i]``: its
    unweighted sigmoid value (in a window already divided by σ(−1), so a left-edge detection is
    worth 1 × tp_weight); rows before ``probation`` are not scored; ``windows``: labelled windows.
    """

    name: str
    window: tuple[int, ...]
    value: tuple[float, ...]
    probation: int
    windows: int

    @property
    def rows(self) -> int:
        return len(self.window)

    def scored_windows(self) -> set[int]:
        """Windows with at least one scored row: those are the ones a detector can miss."""
        return {k for k in self.window[self.probation:] if k != OUTSIDE}

    def weight(self, i: int, profile: Profile) -> float:
        """Row ``i``'s contribution when flagged under ``profile`` (NAB's per-row ``S(t)``)."""
        w = profile.fp_weight if self.window[i] == OUTSIDE else profile.tp_weight
        return self.value[i] * w


def label_rows(
    name: str, timestamps: Sequence[datetime], windows: Sequence[tuple[datetime, datetime]],
    probation_percent: float = PROBATION_PERCENT,
) -> LabelledFile:
    """Assign every row its window (or none) and its position value.

    Window limits must be row timestamps (NAB's label files are built that way)."""
    index = {t: i for i, t in enumerate(timestamps)}
    spans: list[tuple[int, int]] = []
    for start, end in sorted(windows):
        if start not in index or end not in index:
            raise ValueError(f"{name}: window {start} .. {end} does not start and end on rows of the file")
        spans.append((index[start], index[end]))
    window: list[int] = []
    value: list[float] = []
    w = 0
    prev_right: int | None = None
    prev_width = 0.0
    for i in range(len(timestamps)):
        while w < len(spans) and spans[w][1] < i:
            prev_right, prev_width = spans[w][1], float(spans[w][1] - spans[w][0] + 1)
            w += 1
        if w < len(spans) and spans[w][0] <= i:
            left, right = spans[w]
            window.append(w)
            value.append(scaled_sigmoid(-(right - i + 1) / float(right - left + 1)) / _MAX_TP)
            continue
        window.append(OUTSIDE)
        if prev_right is None:
            value.append(-1.0)  # before any window: as far from one as can be
        else:
            value.append(scaled_sigmoid(abs(i - prev_right) / max(prev_width - 1.0, 1.0)))
    probation = math.ceil(probation_length(len(timestamps), probation_percent))
    return LabelledFile(name, tuple(window), tuple(value), probation, len(spans))


@dataclass(frozen=True, slots=True)
class ThresholdScore:
    threshold: float
    score: float
    tp: int
    tn: int
    fp: int
    fn: int

    @property
    def total(self) -> int:
        """Scored rows (NAB's ``Total_Count``; NAB versions before 2020 also counted probation)."""
        return self.tp + self.tn + self.fp + self.fn


def score_file(lab: LabelledFile, scores: Sequence[float], threshold: float, profile: Profile) -> ThresholdScore:
    """Raw NAB score and row counts of one file, flagging rows with score ≥ ``threshold``."""
    _check(lab, scores)
    best: dict[int, float] = {w: -profile.fn_weight for w in lab.scored_windows()}
    fp_sum = 0.0
    tp = tn = fp = fn = 0
    for k, v, s in zip(lab.window[lab.probation:], lab.value[lab.probation:], scores[lab.probation:], strict=True):
        flagged = s >= threshold
        if k == OUTSIDE:
            if flagged:
                fp += 1
                fp_sum += v * profile.fp_weight
            else:
                tn += 1
        elif flagged:
            tp += 1
            best[k] = max(best[k], v * profile.tp_weight)
        else:
            fn += 1
    return ThresholdScore(threshold, fp_sum + sum(best.values()), tp, tn, fp, fn)


def sweep(files: Sequence[tuple[LabelledFile, Sequence[float]]], profile: Profile) -> list[ThresholdScore]:
    """Scores over all ``files`` together for every distinct threshold, highest first.

    The first entry (threshold 1.1) flags nothing; each following one flags every scored row whose
    score is ≥ its threshold. One pass over the rows sorted by score, so optimising a threshold over
    a corpus costs O(rows · log rows)."""
    rows: list[tuple[float, int, int]] = []
    best: dict[tuple[int, int], float] = {}
    tn = fn = 0
    for f, (lab, scores) in enumerate(files):
        _check(lab, scores)
        for i in range(lab.probation, lab.rows):
            k = lab.window[i]
            rows.append((scores[i], f, i))
            if k == OUTSIDE:
                tn += 1
            else:
                fn += 1
                best[(f, k)] = -profile.fn_weight
    rows.sort(key=lambda r: -r[0])
    total = sum(best.values())
    tp = fp = 0
    out: list[ThresholdScore] = []
    current = NO_DETECTION_THRESHOLD
    for s, f, i in rows:
        if s != current:
            out.append(ThresholdScore(current, total, tp, tn, fp, fn))
            current = s
        lab = files[f][0]
        k = lab.window[i]
        if k == OUTSIDE:
            fp += 1
            tn -= 1
            total += lab.value[i] * profile.fp_weight
        else:
            tp += 1
            fn -= 1
            w = lab.value[i] * profile.tp_weight
            if w > best[(f, k)]:
                total += w - best[(f, k)]
                best[(f, k)] = w
    out.append(ThresholdScore(current, total, tp, tn, fp, fn))
    return out


def optimise_threshold(files: Sequence[tuple[LabelledFile, Sequence[float]]], profile: Profile) -> ThresholdScore:
    """The threshold with the highest summed raw score; among equals the highest threshold."""
    best: ThresholdScore | None = None
    for ts in sweep(files, profile):
        if best is None or ts.score > best.score:
            best = ts
    assert best is not None  # sweep always yields the "nothing flagged" entry
    return best


def null_score(labs: Sequence[LabelledFile], profile: Profile) -> float:
    """The null detector (a constant score, so either nothing or everything is flagged), optimised."""
    return optimise_threshold([(lab, [0.5] * lab.rows) for lab in labs], profile).score


def perfect_score(labs: Sequence[LabelledFile], profile: Profile) -> float:
    """Every window flagged at its left edge, nothing else: ``tp_weight`` per labelled window."""
    return profile.tp_weight * sum(lab.windows for lab in labs)


def normalise(raw: float, null: float, perfect: float) -> float:
    """NAB's normalised score: 0 for the null detector, 100 for the perfect one."""
    return 100.0 * (raw - null) / (perfect - null) if perfect != null else 0.0


def _check(lab: LabelledFile, scores: Sequence[float]) -> None:
    if len(scores) != lab.rows:
        raise ValueError(f"{lab.name}: {len(scores)} scores for {lab.rows} rows")
