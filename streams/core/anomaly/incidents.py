"""One series, one window: score it, accumulate evidence, open and resolve incidents, learn.

**Cumulative evidence, not per-window thresholds.** A one-sided CUSUM per direction on the
window LLRs (Page's test, the optimal sequential detector for a shift of the design size θ): a
big step crosses the threshold in two windows, a 30 % drop on 200 persons/min at p = 0.3 in ~3,
a thin series never (its increments are tiny). An incident opens when the CUSUM reaches ``h``
nats, the last ``open_after_windows`` windows all favoured the shift and the run's expected count
reaches ``min_expected_count``; it starts at the window where the CUSUM left zero. ``resolved``
needs ``resolve_after_windows`` consecutive normal windows *and* ``resolve_nats`` of evidence for
"back to baseline" (a reverse CUSUM): hysteresis, and a persisting smaller shift is not declared
over by a few lucky windows.

**No learning of anomalies.** Windows reach the level ``learn_delay_windows`` late; when an
incident opens, the pending windows of its evidence run are dropped, and nothing is learned while
it is open (nor, via ``hold``, in the series other dimensions' incidents overlap; see
``detector.py``). An incident open for ``max_incident_windows`` is accepted as the new normal:
resolved, level re-anchored.

The graded score (``evidence.py``) is computed for every window of every series past warm-up,
watched or not, on a baseline of its own that incidents never hold (``_score``): incidents stay
what pages and the board use; the score lets a user (or NAB's threshold optimisation) choose a
sensitivity.
"""

from __future__ import annotations

import math
from typing import Any

from streams.core.anomaly import baseline, evidence
from streams.core.anomaly.baseline import CONVERSION, COUNT, INCIDENT, SCORE, VALUE
from streams.core.anomaly.config import DetectorConfig
from streams.core.anomaly.seasonality import HOUR_MS, add, decay, learn_hour, roll, season_factor

#: Run sums of an evidence run / incident (``acc``; the board reads them too): observed,
#: expected, variance, exposure. The run's highest graded score is kept beside them (``p`` + dir,
#: an incident's ``peak``).
OBS, EXP, VAR, EXPOSURE = range(4)


def watched(cfg: DetectorConfig, s: dict[str, Any], kind: str) -> bool:
    """Old enough, and (counts, conversions) with enough traffic to say anything."""
    if s["age"] < cfg.warmup_windows or s["W"] <= 0:
        return False
    if kind == CONVERSION:
        return s["B"] / s["W"] >= cfg.min_upper_count and baseline.level(s) > 0
    if kind == COUNT:
        return baseline.level(s) >= cfg.min_volume_count
    return True


def step(
    cfg: DetectorConfig, s: dict[str, Any], kind: str, ws: int, x: float, n: float, detect: bool,
    prof: dict[str, Any] | None, win: int,
) -> tuple[str | None, dict[str, Any] | None, float]:
    """Advance one series by one window.

    Returns (``"opened"``/``"resolved"``/None, the incident, the window's graded score)."""
    s["age"] += 1
    if s["hr"] != ws // HOUR_MS:
        roll(s, prof, ws, lambda ss, pp: _close_hour(cfg, ss, pp, kind, win))
    f = season_factor(prof, ws, win, cfg.season_prior_count)
    score, peak = _score(cfg, s, kind, x, n, f, prof)
    p = baseline.forecast(cfg, s, prof, len(s["pend"]) + 1) * f
    informative = n > 0 and p > 0
    e = v = 0.0
    ld = lu = 0.0
    if informative:
        e, v0, v, binom = baseline.moments(cfg, s, kind, x, n, p)
        ld, lu = evidence.llr(cfg, kind, binom, x, n, e, p, v)
        d = (v / v0 if v0 > 0 else 1.0) * baseline.correlation(cfg, s, kind)
        cap = cfg.max_window_nats
        ld = min(cap, ld / d)
        lu = min(cap, lu / d)
    r = decay(cfg.recent_half_life_windows)
    seen = s["seen"]  # recent observed and exposure, every window
    seen[0] = r * seen[0] + x
    seen[1] = r * seen[1] + n
    if informative:  # (before a level exists there is no expected value to compare with)
        rec = s["rec"]
        rec[0] = r * rec[0] + x
        rec[1] = r * rec[1] + e
        rec[2] = r * rec[2] + n

    inc = s["inc"]
    if inc is not None:
        if informative:
            _add(inc["acc"], x, e, v, n)
            inc["peak"] = max(inc.get("peak", 0.0), peak)
            llr = ld if inc["dir"] == "d" else lu
            inc["back"] = max(0.0, inc["back"] - llr)
            if llr < 0:
                inc["normal"] += 1
            elif llr > 0:
                inc["normal"] = 0
        inc["age"] += 1
        expired = inc["age"] >= cfg.max_incident_windows
        recovered = inc["normal"] >= cfg.resolve_after_windows and inc["back"] >= cfg.resolve_nats
        if recovered or expired:
            if expired and inc["acc"][EXP] > 0:  # accept the new normal: re-anchor the level
                reanchor(s, inc["acc"][OBS] / inc["acc"][EXP])
            s["inc"] = None
            reset_cusum(s)
            s["pend"] = []
            return "resolved", inc, score
        return None, None, score

    if detect and watched(cfg, s, kind):
        if informative:
            opened = _cusum(cfg, s, kind, ws, x, n, e, v, ld, lu, peak)
            if opened is not None:
                s["inc"] = opened
                start = opened["start"]
                s["pend"] = [pw for pw in s["pend"] if pw[0] < start]
                reset_cusum(s)
                return "opened", opened, score
    else:
        reset_cusum(s)
    hold = s.get("hold")
    if hold is not None:  # an overlapping incident is open: keep its windows out of the baseline
        s["pend"] = [pw for pw in s["pend"] if pw[0] < hold]
        return None, None, score
    if s["age"] == 1:
        return None, None, score  # a series' first window is usually partial (the stream or campaign began mid-window)
    s["pend"].append([ws, x, n, (x - e) / math.sqrt(v) if informative else None, s["age"]])
    while len(s["pend"]) > cfg.learn_delay_windows:
        pws, px, pn, pz, page = s["pend"].pop(0)
        pf = season_factor(prof, pws, win, cfg.season_prior_count)
        pp = baseline.forecast(cfg, s, prof, 1) * pf
        baseline.learn(cfg, s, kind, px, pn, pf, pp, pz, page, bool(prof and prof.get("on")))
    return None, None, score


def _score(
    cfg: DetectorConfig, s: dict[str, Any], kind: str, x: float, n: float, f: float, prof: dict[str, Any] | None,
) -> tuple[float, float]:
    """The window's graded score (after onset) and its raw graded surprise, against the score's
    own level, which then learns the window (clipped) at once, as does the seasonal hour.

    Why a level of its own: the incidents' level is learned late and held while an incident is
    open, which is right for measuring an outage against what it interrupted, and wrong for
    asking "is this window surprising given the recent past?": a level held through a long shift
    makes every later window look anomalous, and one learned late lags the series."""
    seasonal = bool(prof and prof.get("on"))
    p = baseline.forecast(cfg, s, prof, 1, SCORE) * f
    score = peak = 0.0
    if n > 0 and p > 0:
        e, v0, v, binom = baseline.moments(cfg, s, kind, x, n, p, SCORE)
        if s["age"] > cfg.warmup_windows:
            nats = evidence.tail_nats(evidence.deviance_residual(kind, binom, x, n, e, v0, v))
            surprise = evidence.calibrated(cfg, s, nats)
            evidence.learn_calibration(cfg, s, nats)
            peak = evidence.graded(cfg, surprise)
            score = evidence.graded(cfg, evidence.onset(cfg, s, surprise))
        x = baseline.clipped(cfg, s, kind, x, n, e, v, SCORE)
        baseline.learn_dispersion(cfg, s, kind, x, n, p, e, v0, v, SCORE)
    add(s, x, n)
    if s["age"] > 1:  # (a series' first window is usually partial)
        baseline.learn_level(cfg, s, x, n, f, seasonal, SCORE)
    return score, peak


def reanchor(s: dict[str, Any], ratio: float) -> None:
    """Accept a shifted level as the new normal (a long incident, or a launch that explains it)."""
    s["A"] *= ratio
    s["A2"] *= ratio


def reset_cusum(s: dict[str, Any]) -> None:
    s["cd"] = s["cu"] = 0.0
    s["kd"] = s["ku"] = 0
    s["rd"] = s["ru"] = None


def _add(acc: list[float], x: float, e: float, v: float, n: float) -> None:
    acc[OBS] += x
    acc[EXP] += e
    acc[VAR] += v
    acc[EXPOSURE] += n


def _cusum(
    cfg: DetectorConfig, s: dict[str, Any], kind: str, ws: int, x: float, n: float, e: float, v: float,
    ld: float, lu: float, peak: float,
) -> dict[str, Any] | None:
    best: dict[str, Any] | None = None
    for dr, llr in (("d", ld), ("u", lu)):
        c = s["c" + dr]
        c_new = max(0.0, c + llr)
        if c_new > 0 and c == 0:
            s["r" + dr] = ws
            s["a" + dr] = [0.0, 0.0, 0.0, 0.0]
            s["p" + dr] = 0.0
        if c_new > 0:
            _add(s["a" + dr], x, e, v, n)
            s["p" + dr] = max(s["p" + dr], peak)
        else:
            s["r" + dr] = None
        s["c" + dr] = c_new
        s["k" + dr] = s["k" + dr] + 1 if llr > 0 else 0
        enough = kind == VALUE or s["a" + dr][EXP] >= cfg.min_expected_count
        if (
            c_new >= cfg.threshold_nats
            and s["k" + dr] >= cfg.open_after_windows
            and enough
            and (best is None or c_new > best["evidence"])
        ):
            best = {
                "dir": dr, "start": s["r" + dr], "opened": ws, "age": 0, "normal": 0, "back": 0.0,
                "acc": list(s["a" + dr]), "peak": s["p" + dr], "evidence": c_new, "vis": False,
                "emitted": None, "id": None,
            }
    return best


def _close_hour(cfg: DetectorConfig, s: dict[str, Any], prof: dict[str, Any], kind: str, win: int) -> None:
    """Learn the hour that just ended into the seasonal profile, weighted by what it is worth."""
    hour, num, den = int(s["hr"]), float(s["hn"]), float(s["hd"])
    disp = baseline.dispersion(cfg, s, kind, SCORE)  # (the baseline that is never held)
    windows_per_hour = max(1, HOUR_MS // win)

    def weight(mean: float) -> float:
        if kind == CONVERSION:  # den = upper-stage persons in the hour
            return 1.0 / (1.0 + disp * max(0.0, den / windows_per_hour - 1.0))
        if kind == COUNT:  # den = windows in the hour, num = persons
            return 1.0 / (1.0 + disp * num / den)
        return 1.0 / (disp * mean)  # value: each row is worth 1/φ effective counts

    old_enough = s["age"] >= 24 * HOUR_MS // win
    if learn_hour(prof, hour, num, den, weight, old_enough, cfg.season_day_half_life, cfg.season_week_half_life):
        # The level was learned with factor 1: re-express it in deseasonalised units now, or the
        # expected value would jump by the factor at the switch.
        f = season_factor(prof, (hour + 1) * HOUR_MS, win, cfg.season_prior_count)
        for which in (INCIDENT, SCORE):
            s[which + "A"] /= f
            s[which + "A2"] /= f
