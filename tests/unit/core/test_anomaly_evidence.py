"""The graded score's pieces: deviance residuals that respect counts, the normal tail, calibration
against the series' own history, the onset memory, and the mapping to [0, 1)."""

from __future__ import annotations

import math
from itertools import pairwise

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from streams.core.anomaly import DetectorConfig, baseline, evidence
from streams.core.anomaly.evidence import LEVELS

CFG = DetectorConfig()


def test_deviance_residual_is_honest_about_low_counts() -> None:
    """3 events where 0.5 were expected is p ≈ 0.014 (Poisson): ~2.4 σ, not the 3.5 σ of (x − e)/√e."""
    r = evidence.deviance_residual("count", False, 3, 1.0, 0.5, 0.5, 0.5)
    assert 2.2 < r < 2.6
    assert evidence.deviance_residual("count", False, 0, 1.0, 2.0, 2.0, 2.0) == pytest.approx(-2.0)
    # large counts: the deviance residual agrees with the Pearson residual
    assert evidence.deviance_residual("count", False, 1100, 1.0, 1000, 1000, 1000) == pytest.approx(
        100 / math.sqrt(1000), rel=0.05)


def test_deviance_residual_divides_by_the_overdispersion() -> None:
    plain = evidence.deviance_residual("count", False, 150, 1.0, 100, 100, 100)
    over = evidence.deviance_residual("count", False, 150, 1.0, 100, 100, 400)
    assert over == pytest.approx(plain / 2)


def test_binomial_and_value_residuals() -> None:
    r = evidence.deviance_residual("conversion", True, 150, 1000, 400, 240, 240)
    assert r < -15  # 150 of 1000 converted where 400 were expected: overwhelming
    assert evidence.deviance_residual("value", False, 13.0, 1.0, 10.0, 0.0, 4.0) == pytest.approx(1.5)


def test_tail_nats_matches_the_normal_tail_and_has_no_underflow() -> None:
    assert evidence.tail_nats(1.96) == pytest.approx(-math.log(0.05), abs=0.01)
    assert evidence.tail_nats(0.0) == 0.0
    huge = evidence.tail_nats(100.0)
    assert math.isfinite(huge) and huge == pytest.approx(5000, rel=0.01)
    assert evidence.tail_nats(-3.0) == evidence.tail_nats(3.0)


def test_calibration_without_history_is_the_model_and_learns_heavy_tails() -> None:
    s = baseline.new_series()
    for nats in (2.5, 5.0, 9.0, 15.0):  # no history: the model's own rates, e^{-level}
        assert evidence.calibrated(CFG, s, nats) == pytest.approx(nats, abs=1e-9)
    assert evidence.calibrated(CFG, s, 20.0) == pytest.approx(16 + CFG.score_tail_slope * 4)
    spiky = baseline.new_series()
    for i in range(2000):  # a series where 6-nat surprises happen every 20 windows
        evidence.learn_calibration(CFG, spiky, 6.0 if i % 20 == 0 else 0.5)
    assert evidence.calibrated(CFG, spiky, 6.0) == pytest.approx(math.log(20), abs=0.3)
    assert evidence.calibrated(CFG, spiky, 6.0) < evidence.calibrated(CFG, s, 6.0) - 2.5


def test_onset_reports_a_surprise_once_until_a_bigger_one() -> None:
    cfg = DetectorConfig(score_rest_windows=5)
    s = baseline.new_series()
    out = []
    for surprise in (0.0, 8.0, 7.0, 8.0, 9.0, 1.0, 1.0, 1.0, 1.0, 1.0, 6.0):
        s["age"] += 1
        out.append(evidence.onset(cfg, s, surprise))
    assert out == [0.0, 8.0, 0.0, 0.0, 9.0, 0.0, 0.0, 0.0, 0.0, 0.0, 6.0]
    assert len(s["sp"]) <= 5


@settings(max_examples=100, deadline=None)
@given(st.lists(st.floats(0, 50), min_size=1, max_size=60), st.integers(0, 12))
def test_onset_equals_the_max_of_the_rest_period(surprises: list[float], rest: int) -> None:
    cfg = DetectorConfig(score_rest_windows=rest)
    s = baseline.new_series()
    for i, x in enumerate(surprises):
        s["age"] += 1
        got = evidence.onset(cfg, s, x)
        prev = [round(v, 4) for v in surprises[max(0, i - rest + 1):i]] if rest else []
        expected = x if not prev or x > max(prev) else 0.0
        assert got == expected


def test_graded_is_monotone_in_0_1() -> None:
    values = [evidence.graded(CFG, x) for x in (0.0, 1.0, 5.0, 10.0, 100.0, 1e6)]
    assert values[0] == 0.0 and values[3] == pytest.approx(0.5)
    assert all(a < b for a, b in pairwise(values)) and values[-1] < 1.0


def test_levels_are_increasing() -> None:
    assert list(LEVELS) == sorted(LEVELS) and LEVELS[0] > 0
