"""Hour-of-day and hour-of-week factors of one series (multiplicative, shrunk towards their parent).

Why this shape: traffic and conversion rates follow the clock, and a baseline that ignores it
either lags the daily cycle or mistakes its troughs for incidents. ``F(t)`` is an hour-of-week
factor shrunk towards an hour-of-day factor, shrunk towards 1 (posterior means with a pseudo-count
in *effective* counts: what the hour is worth as evidence given the series' noise). Each hour is
learned when it ends, against the trailing 24-hour mean (a mean over exactly one period is free of
the daily cycle), and factors are interpolated between hour centres (no step at the hour). Until
most hours of the day are known the factors are not used (a half-learned day is a poor shape).

Seasonality learns from every window, incidents included: a seasonal factor is a multi-day average
of one hour, so a one-off incident moves it little (one visit of a week-long half-life); but a
pattern that recurs every night *is* seasonality, and excluding incident windows would keep it an
incident every night, forever.

State: the profile dict of one series (``ring``: the last 24 closed hours ``[hour, num, den]``;
``d``/``w``: ``[Σ weighted num, Σ weighted den·mean]`` per hour of day / week; ``on``) and the
series' open hour (``hr``, ``hn``, ``hd``).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from functools import lru_cache
from typing import Any

HOUR_MS = 3_600_000
#: 1970-01-01 was a Thursday: hours since epoch + 72 = hours since a Monday 00:00 UTC.
WEEK_OFFSET_H = 72
FACTOR_MIN, FACTOR_MAX = 0.05, 20.0
#: Closed hours the trailing mean needs before an hour can be learned against it.
_RING_MIN_HOURS = 18
#: Hours of the day that must be learned before the factors are used.
_HOURS_KNOWN = 20


@lru_cache(maxsize=64)
def decay(half_life: float) -> float:
    """Per-window factor of an exponential memory with this half-life (in windows)."""
    return 0.5 ** (1.0 / half_life) if half_life > 0 else 0.0


def roll(
    s: dict[str, Any], prof: dict[str, Any] | None, ws: int,
    close_hour: Callable[[dict[str, Any], dict[str, Any]], None],
) -> None:
    """Before a window of a new hour is scored, ``close_hour(s, prof)`` learns the last hour."""
    hour = ws // HOUR_MS
    if s["hr"] != hour:
        if s["hr"] is not None and prof is not None:
            close_hour(s, prof)
        s["hr"], s["hn"], s["hd"] = hour, 0.0, 0.0


def add(s: dict[str, Any], x: float, n: float) -> None:
    """Add a window to its hour (``x`` clipped like the level learns it: one spike is not a season)."""
    s["hn"] += x
    s["hd"] += n


def learn_hour(
    prof: dict[str, Any], hour: int, num: float, den: float, weight: Callable[[float], float], old_enough: bool,
    day_half_life: float, week_half_life: float,
) -> bool:
    """Push the closed hour on the 24-hour ring and learn its factor against the ring's mean.

    ``weight(mean)``: what one unit of the hour's amount is worth in effective counts, given the
    trailing mean per unit of ``den`` (1 / the overdispersion factor for counts; for a real-valued
    series 1 / (relative variance · mean), so each row weighs 1/φ), so the hour weighs what it is
    worth as evidence. Returns True when the factors have just been switched on (the caller
    re-expresses its level in deseasonalised units)."""
    ring = [h for h in prof.get("ring", []) if h[0] > hour - 24]
    ring.append([hour, num, den])
    prof["ring"] = ring
    prof["dirty"] = True
    if not old_enough or den <= 0 or len(ring) < _RING_MIN_HOURS:
        return False
    tn = sum(h[1] for h in ring)
    td = sum(h[2] for h in ring)
    if tn <= 0 or td <= 0:
        return False
    mean = tn / td
    wgt = weight(mean)
    if wgt <= 0:
        return False
    for name, bucket, half_life in (
        ("d", hour % 24, day_half_life),
        ("w", (hour + WEEK_OFFSET_H) % 168, week_half_life),
    ):
        arr = prof.get(name)
        if arr is None:
            arr = prof[name] = [0.0] * (48 if name == "d" else 336)
        g = decay(half_life)
        arr[2 * bucket] = g * arr[2 * bucket] + wgt * num
        arr[2 * bucket + 1] = g * arr[2 * bucket + 1] + wgt * den * mean
    if not prof.get("on") and sum(1 for b in range(24) if prof["d"][2 * b + 1] > 0) >= _HOURS_KNOWN:
        prof["on"] = True
        return True
    return False


def season_factor(prof: dict[str, Any] | None, ws: int, win: int, prior: float) -> float:
    """Multiplicative factor at the window's centre, interpolated between hour centres."""
    if not prof or not prof.get("on"):
        return 1.0
    u = (ws + win / 2.0) / HOUR_MS - 0.5
    h0 = math.floor(u)
    frac = u - h0
    f = (1.0 - frac) * _hour_factor(prof, h0, prior) + frac * _hour_factor(prof, h0 + 1, prior)
    return min(FACTOR_MAX, max(FACTOR_MIN, f))


def _hour_factor(prof: dict[str, Any], hour: int, prior: float) -> float:
    d = prof["d"]
    b = hour % 24
    if d[2 * b + 1] > 0:
        fd = (d[2 * b] + prior) / (d[2 * b + 1] + prior)
    else:
        # An hour never learned (no traffic then, or not yet): bridge its learned neighbours
        # linearly rather than fall back to 1, which would be a step in the expected value.
        left = next((k for k in range(1, 24) if d[2 * ((b - k) % 24) + 1] > 0), 0)
        right = next((k for k in range(1, 24) if d[2 * ((b + k) % 24) + 1] > 0), 0)
        if not left or not right:
            return 1.0
        lb, rb = (b - left) % 24, (b + right) % 24
        fl = (d[2 * lb] + prior) / (d[2 * lb + 1] + prior)
        fr = (d[2 * rb] + prior) / (d[2 * rb + 1] + prior)
        fd = fl + (fr - fl) * left / (left + right)
    w = prof.get("w")
    if w is None:
        return fd
    b = (hour + WEEK_OFFSET_H) % 168
    return (w[2 * b] + prior * fd) / (w[2 * b + 1] + prior)
