"""What one series is expected to do next: level, trend, overdispersion, serial correlation.

Why this shape: every series is an observed amount ``x`` against an exposure ``n`` with expected
value ``e = n · L · F(t)``. Three kinds share it:

* ``count`` (a stage's volume: persons per window, exposure 1): Poisson, overdispersed as a
  negative binomial, ``V = e + φe²``;
* ``conversion`` (of the ``n`` persons at stage k, the ``x`` who reached k+1): binomial (Poisson
  when the expected ratio is near or above 1), overdispersed as a beta-binomial ``1 + (n−1)ρ``;
* ``value`` (a real-valued metric: a price, a latency, a sensor; exposure 1): no counting noise,
  only the learned relative variance, ``V = φe²``.

So low counts stay low counts: 2 persons against 4 expected is weak evidence whatever the scale,
while a real-valued series is judged by its own learned variability.

**Level.** ``L`` is a count-weighted EWMA of the deseasonalised rate (a ratio of decayed sums, so a
window of 1000 persons weighs 1000 times one of 1 person) with a short half-life before the daily
profile is known (it must follow the cycle by itself; Brown's double smoothing removes the
EWMA's first-order lag) and a longer one after (the deseasonalised series is flat). Windows are
learned ``learn_delay_windows`` late and clipped to ``learn_clip_sigma`` σ of their forecast.

**Overdispersion** ``φ``/``ρ`` are moment estimates from the residuals (winsorised, with a prior
and a floor), so model error makes the detector less sensitive instead of noisy. The baseline's own
estimation variance is part of ``V``. **Serial correlation** ``K`` is the long-run variance factor
of the standardised residuals over ``correlation_windows`` consecutive learned windows (see
``DetectorConfig.correlation_windows``).
"""

from __future__ import annotations

import math
from typing import Any

from streams.core.anomaly.config import DetectorConfig
from streams.core.anomaly.seasonality import decay

COUNT, CONVERSION, VALUE = "count", "conversion", "value"
#: Above this expected ratio the binomial barely applies: a conversion is tested as a Poisson rate.
P_BINOMIAL_MAX = 0.95
#: Cap of the learned serial-correlation factor.
CORRELATION_MAX = 10.0
#: Key prefixes of the two baselines: the incidents' (learned late, held during incidents) and the
#: graded score's (learned at once, always; see ``incidents._score``).
INCIDENT, SCORE = "", "g"


def new_series() -> dict[str, Any]:
    return {
        "age": 0,  # windows seen
        "A": 0.0, "B": 0.0, "W": 0.0,  # level: Σ x/F, Σ n, Σ windows (decayed)
        "A2": 0.0, "B2": 0.0,  # the level smoothed once more (Brown's trend, before seasonality is known)
        "R1": 0.0, "R2": 0.0, "RW": 0.0,  # dispersion moments (decayed)
        "K1": 0.0, "K2": 0.0, "kz": [], "kw": None,  # serial correlation: Σ (Σ_m z)²/m, Σ 1; last z's, last age
        "cd": 0.0, "cu": 0.0, "kd": 0, "ku": 0,  # CUSUM down/up, consecutive supporting windows
        "rd": None, "ru": None,  # evidence run start (window_start ms)
        "ad": [0.0, 0.0, 0.0, 0.0], "au": [0.0, 0.0, 0.0, 0.0],  # run sums: obs, exp, var, n
        "pd": 0.0, "pu": 0.0,  # the run's highest graded score
        "pend": [],  # [[window_start, x, n, z, age]] not yet learned (z: the residual the CUSUM saw)
        "rec": [0.0, 0.0, 0.0],  # recent decayed obs, exp, n (windows with an expected value)
        "seen": [0.0, 0.0],  # recent decayed obs, n (all windows: what a new series brings)
        "hr": None, "hn": 0.0, "hd": 0.0,  # hour being accumulated for seasonality
        # graded score: its own level (learned at once, never held: see evidence.py), the
        # exceedance rates of the calibration and their weight, the onset queue of recent surprises
        "gA": 0.0, "gB": 0.0, "gW": 0.0, "gA2": 0.0, "gB2": 0.0, "gR1": 0.0, "gR2": 0.0, "gRW": 0.0,
        "sx": [], "st": 0, "sn": 0, "sw": 0.0, "sp": [],
        "inc": None,
    }


def level(s: dict[str, Any], which: str = INCIDENT) -> float:
    b = s[which + "B"]
    return s[which + "A"] / b if b > 0 else 0.0


def dispersion(cfg: DetectorConfig, s: dict[str, Any], kind: str, which: str = INCIDENT) -> float:
    """φ (count, value: relative variance beyond the counting noise) or ρ (conversion), as
    learned from the residuals of ``which`` level."""
    if kind == CONVERSION:
        prior, floor = cfg.conversion_dispersion_prior, cfg.conversion_dispersion_floor
    elif kind == COUNT:
        prior, floor = cfg.volume_dispersion_prior, cfg.volume_dispersion_floor
    else:
        prior, floor = cfg.value_dispersion_prior, cfg.value_dispersion_floor
    r1, r2, rw = s[which + "R1"], s[which + "R2"], s[which + "RW"]
    if rw <= 0 or r2 <= 0:
        return max(prior, floor)
    pw = cfg.dispersion_prior_windows * r2 / rw
    return max(floor, (r1 + prior * pw) / (r2 + pw))


def correlation(cfg: DetectorConfig, s: dict[str, Any], kind: str) -> float:
    """Long-run variance factor K ≥ 1 of the window residuals (see ``correlation_windows``)."""
    prior = cfg.conversion_correlation_prior if kind == CONVERSION else cfg.volume_correlation_prior
    pw = cfg.dispersion_prior_windows
    return min(CORRELATION_MAX, max(1.0, (s["K1"] + prior * pw) / (s["K2"] + pw)))


def moments(
    cfg: DetectorConfig, s: dict[str, Any], kind: str, x: float, n: float, p: float, which: str = INCIDENT,
) -> tuple[float, float, float, bool]:
    """Expected value, base variance V0 (the counting noise), full variance V, binomial applies.

    ``which`` level's support (its decayed counts or windows) gives the baseline's own
    estimation variance."""
    e = n * p
    binom = kind == CONVERSION and p <= P_BINOMIAL_MAX and x <= n
    if kind == CONVERSION:
        q = 1.0 - min(p, P_BINOMIAL_MAX)
        v0 = e * (1.0 - p) if binom else e
        extra = n * (n - 1.0) * p * q
        relvar = q / max(s[which + "A"], 1.0)
    elif kind == COUNT:
        v0 = e
        extra = e * e
        relvar = 1.0 / max(s[which + "A"], 1.0)
    else:
        v0 = 0.0
        extra = e * e
        relvar = dispersion(cfg, s, kind, which) / max(s[which + "W"], 1.0)
    v = v0 + dispersion(cfg, s, kind, which) * extra + e * e * relvar
    return e, v0, max(v, 1e-12), binom


def dispersion_extra(kind: str, n: float, p: float, e: float) -> float:
    """The variance term the dispersion multiplies (see :func:`moments`)."""
    if kind == CONVERSION:
        return n * (n - 1.0) * p * (1.0 - min(p, P_BINOMIAL_MAX))
    return e * e


def forecast(
    cfg: DetectorConfig, s: dict[str, Any], prof: dict[str, Any] | None, ahead: int, which: str = INCIDENT,
) -> float:
    """Deseasonalised rate expected ``ahead`` windows after the last learned one.

    Until seasonal factors exist, the daily cycle is a trend the EWMA lags behind (by ~τ +
    the learning delay ≈ 50 windows, i.e. 10-15 % of a strong cycle): Brown's double
    smoothing removes that first-order lag. Once factors exist the deseasonalised series is
    flat and the trend would only add noise, so it is dropped.
    """
    lvl = level(s, which)
    b2 = s[which + "B2"]
    if (prof and prof.get("on")) or b2 <= 0 or lvl <= 0 or s["age"] < 4 * cfg.warmup_windows:
        return lvl  # (a young series' trend is mostly noise)
    lam = decay(cfg.level_half_life_windows)
    gap = lvl - s[which + "A2"] / b2
    return min(2.0 * lvl, max(0.5 * lvl, lvl + gap * (1.0 + ahead * (1.0 - lam) / lam)))


def learn(
    cfg: DetectorConfig, s: dict[str, Any], kind: str, x: float, n: float, f: float, p: float,
    z: float | None, age: int | None, seasonal: bool,
) -> None:
    """Learn one window ``learn_delay_windows`` late: level, dispersion, serial correlation.

    ``p`` is the one-step forecast (× the seasonal factor ``f``). ``z`` is the standardised
    residual the CUSUM saw for this window (against the forecast made ``learn_delay_windows`` + 1
    windows ahead): the serial correlation that matters is the one of those residuals, which a
    lagging forecast makes more persistent than the one-step-ahead residuals the level and
    dispersion learn from."""
    if n > 0 and p > 0:
        e, v0, v, _ = moments(cfg, s, kind, x, n, p)
        x = clipped(cfg, s, kind, x, n, e, v, INCIDENT)
        learn_dispersion(cfg, s, kind, x, n, p, e, v0, v, INCIDENT)
        g = decay(cfg.dispersion_half_life_windows)
        if z is None:
            z = (x - e) / math.sqrt(v)
        _learn_correlation(cfg, s, z, g, age)
    else:
        s["kz"] = []
    learn_level(cfg, s, x, n, f, seasonal, INCIDENT)


def learn_dispersion(
    cfg: DetectorConfig, s: dict[str, Any], kind: str, x: float, n: float, p: float, e: float, v0: float,
    v: float, which: str,
) -> None:
    """Moment estimate of the overdispersion from one (clipped) residual of ``which`` level."""
    r2 = min((x - e) ** 2, cfg.dispersion_clip_sigma**2 * v)
    g = decay(cfg.dispersion_half_life_windows)
    s[which + "R1"] = g * s[which + "R1"] + (r2 - v0)
    s[which + "R2"] = g * s[which + "R2"] + dispersion_extra(kind, n, p, e)
    s[which + "RW"] = g * s[which + "RW"] + 1.0


def learn_level(
    cfg: DetectorConfig, s: dict[str, Any], x: float, n: float, f: float, seasonal: bool, which: str,
) -> None:
    """One window into ``which`` level (``x`` already clipped by the caller where it should be)."""
    hl = cfg.seasonal_level_half_life_windows if seasonal else cfg.level_half_life_windows
    lam = decay(hl)
    a, b = which + "A", which + "B"
    s[a] = lam * s[a] + x / f
    s[b] = lam * s[b] + n
    s[which + "W"] = lam * s[which + "W"] + 1.0
    if s[b] > 0:
        s[which + "A2"] = lam * s[which + "A2"] + n * s[a] / s[b]
        s[which + "B2"] = lam * s[which + "B2"] + n


def clipped(
    cfg: DetectorConfig, s: dict[str, Any], kind: str, x: float, n: float, e: float, v: float, which: str,
) -> float:
    """Huber: ``x`` moved to within ``learn_clip_sigma`` σ of its forecast ``e`` (once the level is
    established: a young level is too uncertain to clip against).

    The upper bound of a count carries the counting noise's skew (Cornish–Fisher: a Poisson quantile
    lies ``(z² − 1)/6`` above the normal one; binomial ``(1 − 2p)`` times that): without it, one deal
    in a stage that expects 0.02 per window would be "4σ" and learned as half a deal, and thin
    stages' levels would be biased low. (The lower bound stays the normal one, which is below the
    true quantile of a skewed count: it clips less, never wrongly.)"""
    if s[which + "W"] < cfg.warmup_windows:
        return x
    z = cfg.learn_clip_sigma
    if kind == COUNT:
        skew = (z * z - 1.0) / 6.0
    elif kind == CONVERSION and n > 0:
        skew = (z * z - 1.0) / 6.0 * (1.0 - 2.0 * min(e / n, 1.0))
    else:
        skew = 0.0
    bound = z * math.sqrt(v)
    return min(max(x, e - bound), e + bound + max(0.0, skew))



def _learn_correlation(cfg: DetectorConfig, s: dict[str, Any], z: float, g: float, age: int | None) -> None:
    """Accumulate (Σ of the last m standardised residuals)² / m over consecutive learned windows."""
    m = cfg.correlation_windows
    clip = cfg.dispersion_clip_sigma
    zs: list[float] = s["kz"]
    if age is None or s["kw"] is None or s["kw"] != age - 1:
        zs = []  # a gap (an incident's windows were not learned): start a new run
    zs.append(max(-clip, min(clip, z)))
    if len(zs) > m:
        zs.pop(0)
    s["kz"] = zs
    s["kw"] = age
    if len(zs) == m:
        total = sum(zs)
        s["K1"] = g * s["K1"] + total * total / m
        s["K2"] = g * s["K2"] + 1.0


def upgrade(s: dict[str, Any]) -> None:
    """Bring a series state written by an older detector version up to the current layout.

    States live in changelogs across deployments; the fields added since are given their initial
    values (pending windows without an age start a new correlation run)."""
    if "gRW" in s:  # current layout
        return
    for key, value in new_series().items():
        if key not in s:
            s[key] = value
    s["pend"] = [pw if len(pw) >= 5 else [*pw[:4], *([None] * (4 - len(pw))), None] for pw in s["pend"]]
    if s["kw"] is not None and s["kw"] > 1_000_000_000:  # a window start (ms), not an age
        s["kw"] = None
