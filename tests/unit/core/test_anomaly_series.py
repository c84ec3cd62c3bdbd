"""One stand-alone series through the detector's model (:class:`SeriesDetector`, what the NAB
evaluation drives): spikes, low counts, level shifts, daily seasonality, warm-up, persistence."""

from __future__ import annotations

import json
import math
import random

import pytest

from streams.core.anomaly import DetectorConfig, SeriesDetector, baseline
from tests.unit.core.test_anomaly import poisson

W = 60_000
T0 = 1_767_225_600_000  # 2026-01-01T00:00:00Z


def run(det: SeriesDetector, values: list[float], start: int = 0) -> list[float]:
    return [det.observe(T0 + (start + i) * det.window_ms, v)[0] for i, v in enumerate(values)]


def test_a_spike_in_a_noisy_value_series_is_the_top_score() -> None:
    rng = random.Random(1)
    values = [10.0 * (1 + 0.1 * rng.gauss(0, 1)) for _ in range(600)]
    values[400] = 25.0
    scores = run(SeriesDetector("value", W), values)
    assert max(range(600), key=scores.__getitem__) == 400
    assert scores[400] > 0.6
    assert max(scores[300:400] + scores[401:]) < scores[400] - 0.2


def test_warm_up_scores_nothing() -> None:
    scores = run(SeriesDetector("value", W), [1.0, 50.0, 0.1, 30.0, 2.0, 7.0, 0.5, 9.0])
    assert scores == [0.0] * 8


def test_low_counts_stay_low_counts() -> None:
    """0-3 events per window: a window of 4 where 1 is expected is not news, and a series of such
    windows never scores like the same shape at 1000× the volume."""
    rng = random.Random(2)
    thin = [float(poisson(rng, 1.0)) for _ in range(1440)]
    thin_scores = run(SeriesDetector("count", W), thin)
    assert max(thin_scores[60:]) < 0.55
    def with_gap(lam: float) -> list[float]:
        return ([float(poisson(rng, lam)) for _ in range(700)] + [0.0] * 20
                + [float(poisson(rng, lam)) for _ in range(80)])

    # 20 empty minutes at λ = 1: unlikely overall, but no single window says much (the score is per window)
    assert max(run(SeriesDetector("count", W), with_gap(1.0))[700:720]) < 0.4
    assert max(run(SeriesDetector("count", W), with_gap(1000.0))[700:720]) > 0.9


def test_thin_counts_are_learned_without_bias() -> None:
    """One event where 0.05 are expected is "4σ" by a normal yardstick; clipped like that, a thin
    stage's level would be learned at a fraction of its rate. Both baselines stay unbiased."""
    rng = random.Random(8)
    det = SeriesDetector("count", W)
    levels: dict[str, list[float]] = {"": [], "g": []}
    for i in range(6000):
        det.observe(T0 + i * W, float(poisson(rng, 0.05)))
        if i >= 1000:
            for which, out in levels.items():
                out.append(baseline.level(det.state, which))
    for out in levels.values():
        assert sum(out) / len(out) == pytest.approx(0.05, rel=0.15)


def test_a_level_shift_is_scored_once_and_then_learned() -> None:
    rng = random.Random(3)
    values = [100 * (1 + 0.05 * rng.gauss(0, 1)) for _ in range(400)]
    values += [200 * (1 + 0.05 * rng.gauss(0, 1)) for _ in range(600)]
    scores = run(SeriesDetector("value", W), values)
    assert max(scores[400:403]) > 0.6
    assert max(scores[700:]) < 0.5  # the new level is the new normal for the score


def test_a_slow_drift_is_followed_not_alarmed() -> None:
    """+80 % over a day, in 1-minute counts of ~200: the level follows; neither the score nor an
    incident fires, while the same change as a step would."""
    rng = random.Random(9)
    drift = [float(poisson(rng, 200 * (1 + 0.8 * min(1.0, i / 1440)))) for i in range(1800)]
    det = SeriesDetector("count", W)
    outs = [det.observe(T0 + i * W, v) for i, v in enumerate(drift)]
    assert max(score for score, _ in outs[60:]) < 0.55
    assert not any(what == "opened" for _, what in outs)
    step = [float(poisson(rng, 200 if i < 900 else 360)) for i in range(1000)]
    det = SeriesDetector("count", W)
    outs = [det.observe(T0 + i * W, v) for i, v in enumerate(step)]
    assert max(score for score, _ in outs[900:903]) > 0.6
    assert any(what == "opened" for _, what in outs[900:905])


def test_daily_seasonality_is_learned_and_an_off_hour_peak_is_found() -> None:
    """Days with a 3× swing: once the profile is learned the cycle itself is quiet, and the
    day-time value occurring at night (normal for the hour of day, not for this hour) stands out."""
    rng = random.Random(4)
    win = 10 * W  # 10-minute windows, 144 per day

    def level(i: int) -> float:
        return 100 * (2 + math.sin(2 * math.pi * i / 144))

    values = [level(i) * (1 + 0.05 * rng.gauss(0, 1)) for i in range(144 * 6)]
    trough = 144 * 5 + 108  # sin at 3/4 of the day: the trough
    values[trough] = 300.0
    det = SeriesDetector("value", win)
    scores = run(det, values)
    assert det.prof.get("on")
    assert max(scores[144 * 3:trough]) < 0.45
    assert scores[trough] > 0.6


def test_count_series_near_zero_at_night_do_not_alarm_in_the_trough() -> None:
    rng = random.Random(5)
    win = 5 * W

    def lam(i: int) -> float:
        return 40 * max(0.02, math.sin(math.pi * (i % 288) / 288)) ** 2

    values = [float(poisson(rng, lam(i))) for i in range(288 * 5)]
    scores = run(SeriesDetector("count", win), values)
    assert max(scores[288 * 2:]) < 0.55


def test_snapshot_resumes_identically() -> None:
    rng = random.Random(6)
    values = [float(poisson(rng, 30 + 10 * math.sin(i / 50))) for i in range(1500)]
    cfg = DetectorConfig()
    a = SeriesDetector("count", W, cfg)
    run(a, values[:900])
    saved = json.loads(json.dumps(a.snapshot(), allow_nan=False))
    b = SeriesDetector("count", W, cfg, state=saved)
    assert run(a, values[900:], start=900) == run(b, values[900:], start=900)


def test_invalid_arguments() -> None:
    with pytest.raises(ValueError, match="kind"):
        SeriesDetector("conversion", W)
    with pytest.raises(ValueError, match="window_ms"):
        SeriesDetector("count", 0)
