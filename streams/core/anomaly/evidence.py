"""How much one window says: likelihood ratios for the CUSUM, and the graded per-window score.

**Likelihood ratios** (for incidents). Each window contributes the log-likelihood ratio of "the
rate moved by θ" against "the rate is as expected": binomial for conversions (Poisson when the
ratio is near or above 1), Poisson for counts, Gaussian for real values, divided by the learned
overdispersion factor ``D = V / V0`` (quasi-likelihood) and by the serial-correlation factor
``K``, and capped at ``max_window_nats`` (a single outlier cannot open an incident on its own).
2/4 → 0/3 carries ~0.8 nats; 400/1000 → 150/1000 about a hundred.

**Graded score** (per window, in [0, 1)): how surprising the window is, on one scale for every
series, so one threshold means the same on a thin series and a huge one, on counts and on prices.

1. The *deviance residual* ``r`` of the window under the model (the signed root of the likelihood-
   ratio statistic against the expected value; for counts it is nearly normal even at 0-3 events,
   unlike (x − e)/σ), divided by the square root of the overdispersion factor. Its model surprise
   is the two-sided normal tail, ``s = −ln P(|N| ≥ |r|)`` nats.
2. *Calibration* against the series' own history: real tails are heavier than any fitted model's,
   and by how much differs per series. The detector keeps decayed rates at which the model surprise
   exceeded a ladder of levels (2 … 16 nats), shrunk towards the model's own rate ``e^{−level}``
   with a prior weight of ``score_calibration_prior_windows``. The calibrated surprise is
   ``−ln(rate)`` interpolated between levels; beyond the top, each further nat of model surprise
   counts ``score_tail_slope``. A series that often spikes learns that spikes are not news (the
   HTM "anomaly likelihood" idea: judge a surprise by how often this series surprises), and a
   calm one keeps the model's rates.
3. *Onset*: the surprise is reported only when it exceeds every surprise of the last
   ``score_rest_windows`` windows (contextOSE's rest period, without a fixed threshold): an
   anomaly is announced when it begins or grows, not for every window it lasts.
4. ``score = s / (s + score_half_nats)``: monotone, so any threshold on the score is a threshold on
   calibrated surprise. Until the series has ``warmup_windows`` windows it is 0.
"""

from __future__ import annotations

import math
from typing import Any

from streams.core.anomaly.baseline import CONVERSION, VALUE
from streams.core.anomaly.config import DetectorConfig
from streams.core.anomaly.seasonality import decay

#: Calibration ladder of model surprise, in nats (the rate at which each is exceeded is learned).
LEVELS: tuple[float, ...] = (2.0, 3.0, 4.5, 6.0, 8.0, 10.0, 13.0, 16.0)
_SQRT2 = math.sqrt(2.0)
_MODEL_RATE = tuple(math.exp(-lv) for lv in LEVELS)


def llr(cfg: DetectorConfig, kind: str, binom: bool, x: float, n: float, e: float, p: float,
        v: float) -> tuple[float, float]:
    """Log-likelihood ratios (before dispersion) of a drop and of a surge of the design size.

    Counts and conversions: the exact Poisson / binomial ratio (the caller divides it by the
    overdispersion factor). Values: the Gaussian ratio with the full variance ``v``."""
    th = cfg.conversion_shift if kind == CONVERSION else cfg.volume_shift
    if binom:
        qd = p * (1.0 - th)
        qu = min(p * (1.0 + th), (1.0 + p) / 2.0)
        ld = x * math.log(1.0 - th) + (n - x) * math.log((1.0 - qd) / (1.0 - p))
        lu = x * math.log(qu / p) + (n - x) * math.log((1.0 - qu) / (1.0 - p))
    elif kind == VALUE:
        d = th * e
        ld = (-d * (x - e) - 0.5 * d * d) / v
        lu = (d * (x - e) - 0.5 * d * d) / v
    else:
        ld = x * math.log(1.0 - th) + e * th
        lu = x * math.log(1.0 + th) - e * th
    return ld, lu


def deviance_residual(kind: str, binom: bool, x: float, n: float, e: float, v0: float, v: float) -> float:
    """Signed root of the deviance of ``x`` against ``e``, in units of the overdispersed noise."""
    if kind == VALUE or v0 <= 0 or e <= 0:
        return (x - e) / math.sqrt(v)
    dev = 2.0 * (_xlogy(x, x / e) - (x - e))
    if binom and n > e:
        dev = 2.0 * (_xlogy(x, x / e) + _xlogy(n - x, (n - x) / (n - e)))
    r = math.copysign(math.sqrt(max(0.0, dev)), x - e)
    return r / math.sqrt(v / v0)


def _xlogy(x: float, y: float) -> float:
    return x * math.log(y) if x > 0 else 0.0


def tail_nats(r: float) -> float:
    """−ln P(|N(0,1)| ≥ |r|): the model surprise of a residual."""
    t = abs(r) / _SQRT2
    if t < 25.0:
        return -math.log(math.erfc(t))
    return t * t + math.log(t * math.sqrt(math.pi))  # asymptotic, where erfc underflows


def calibrated(cfg: DetectorConfig, s: dict[str, Any], nats: float) -> float:
    """The model surprise re-expressed as −ln(the rate this series exceeds it at)."""
    if nats <= 0:
        return 0.0
    if nats <= LEVELS[0]:
        return nats * _level_surprise(cfg, s, 0) / LEVELS[0]
    for i in range(1, len(LEVELS)):
        if nats <= LEVELS[i]:
            lo, hi = _level_surprise(cfg, s, i - 1), _level_surprise(cfg, s, i)
            return lo + (nats - LEVELS[i - 1]) / (LEVELS[i] - LEVELS[i - 1]) * (hi - lo)
    return _level_surprise(cfg, s, len(LEVELS) - 1) + cfg.score_tail_slope * (nats - LEVELS[-1])


def _level_surprise(cfg: DetectorConfig, s: dict[str, Any], i: int) -> float:
    """−ln of the (shrunk) rate at which this series' model surprise has exceeded level ``i``."""
    prior = cfg.score_calibration_prior_windows
    seen = s["sx"][i] * decay(cfg.dispersion_half_life_windows) ** (s["sn"] - s["st"]) if s["sx"] else 0.0
    return -math.log((seen + prior * _MODEL_RATE[i]) / (s["sw"] + prior))


def learn_calibration(cfg: DetectorConfig, s: dict[str, Any], nats: float) -> None:
    """Count the window (decayed) and, if it exceeded levels, those exceedances.

    The exceedance counts are decayed lazily (``st``: the window count they are as of), so an
    unsurprising window, nearly all of them, costs one multiply-add."""
    g = decay(cfg.dispersion_half_life_windows)
    s["sw"] = g * s["sw"] + 1.0
    s["sn"] += 1
    if nats >= LEVELS[0]:
        f = g ** (s["sn"] - s["st"])
        sx: list[float] = s["sx"] or [0.0] * len(LEVELS)
        s["sx"] = [c * f + 1.0 if nats >= lv else c * f for c, lv in zip(sx, LEVELS, strict=True)]
        s["st"] = s["sn"]


def onset(cfg: DetectorConfig, s: dict[str, Any], surprise: float) -> float:
    """``surprise`` if it exceeds every surprise of the last ``score_rest_windows`` windows, else 0.

    ``sp`` is a monotone queue of ``[age, surprise]`` (decreasing surprise), so its head is the
    maximum of the rest period and it rarely holds more than a few entries."""
    rest = cfg.score_rest_windows
    if rest <= 0:
        return surprise
    age = s["age"]
    queue: list[list[float]] = s["sp"]
    while queue and queue[0][0] <= age - rest:
        queue.pop(0)
    out = surprise if not queue or surprise > queue[0][1] else 0.0
    while queue and queue[-1][1] <= surprise:
        queue.pop()
    queue.append([age, round(surprise, 4)])
    return out


def graded(cfg: DetectorConfig, surprise: float) -> float:
    return surprise / (surprise + cfg.score_half_nats) if surprise > 0 else 0.0
