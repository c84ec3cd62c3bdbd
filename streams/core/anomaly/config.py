"""Detector configuration: every default and the reason for it (see the package docstring)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class DetectorConfig:
    """Defaults aim at the product targets: ≥ 95 % recall for ≥ 30 % drops lasting ≥ 10 min on
    series with ≥ 200 upper-stage persons/min, ≤ 1 false alarm per 100 series-days, median
    detection delay ≤ 3 windows (feasible where a 30 % drop is ≥ ~2.5 σ per window, i.e. base
    conversion ≳ 0.3 at 200/min, 0.2 borderline; see the module docstring, the harness in the
    tests and ``python -m streams.devtools.evaluate`` for the simulator)."""

    #: Only used to fill windows when ``rows`` is empty; otherwise taken from the rows.
    window_ms: int = 60_000
    #: Design shift of the conversion CUSUM (relative): the drop size the product must catch.
    conversion_shift: float = 0.3
    #: Design shift of the volume CUSUM: traffic is noisier than conversion, ±50 % is the alert size.
    volume_shift: float = 0.5
    #: CUSUM threshold in nats. The target (≤ 1 false alarm per 100 series-days = 1.44·10^5
    #: windows, two sides) needs ARL0 ≳ 3·10^5 per side; simulated exact-binomial CUSUMs give
    #: ~3.4 false alarms per 100 series-days at h = 10 and ~0.5 at h = 12. At 12 a 30 % drop at
    #: 200/min and p = 0.3 (≈ 3.8 nats/window) still opens within ~3 windows.
    threshold_nats: float = 12.0
    #: One window contributes at most this much evidence: an incident needs at least two strong
    #: windows, so a single extreme outlier (heavy tails the NB model does not capture) cannot
    #: carry one. Sustained shifts are unaffected: they rarely exceed it per window anyway.
    max_window_nats: float = 6.0
    #: Consecutive windows that must each favour the shift before opening: one bad minute is
    #: not an incident, and it costs at most one window of delay on a real step.
    open_after_windows: int = 2
    #: Resolving needs this many consecutive normal windows (LLR < 0: closer to the baseline than
    #: to the shifted rate) and ``resolve_nats`` of evidence for "back to baseline" (a reverse
    #: CUSUM): hysteresis against flapping, and a persisting smaller shift (say −20 % against a
    #: −30 % design) is not declared over just because a few noisy windows looked fine.
    resolve_after_windows: int = 3
    resolve_nats: float = 4.0
    #: While open, at most one ``update`` per this many windows.
    update_every_windows: int = 5
    #: Watch a series once it has this many windows of history (the product asks ≤ 60). Short,
    #: because incidents in a new campaign's first half hour matter (the project simulator's
    #: default plan breaks tracking 9 minutes in); the dispersion prior, the baseline-variance
    #: term and ``min_expected_count`` keep that early phase conservative. At 30, incidents in
    #: the first half hour were missed or found late against a baseline that had learned them.
    warmup_windows: int = 10
    #: Conversion series are watched only with ≥ this many upper-stage persons per window on average.
    min_upper_count: float = 20.0
    #: Volume series are watched only with a level ≥ this many persons per window.
    min_volume_count: float = 10.0
    #: An incident needs at least this many expected lower-stage (volume: expected) persons
    #: over its evidence run: never page on thin traffic.
    min_expected_count: float = 20.0
    #: Half-life of the level EWMA: short enough to follow the daily cycle before seasonality is
    #: learned (lag error ≈ 5 % of a ±30 % daily swing), long enough for a precise baseline.
    level_half_life_windows: float = 30.0
    #: Windows are learned this late, so an incident's first windows never reach the baseline.
    learn_delay_windows: int = 5
    #: Hour-of-day factors: half-life in days (each bucket is updated once a day).
    season_day_half_life: float = 7.0
    #: Hour-of-week factors: half-life in weeks.
    season_week_half_life: float = 3.0
    #: Pseudo-count (in effective expected events: counts / overdispersion factor) shrinking a
    #: seasonal factor towards its parent: a bucket with 50 effective events of history is
    #: half-trusted, with 5000 almost fully.
    season_prior_count: float = 50.0
    #: Overdispersion of conversions (beta-binomial intra-class correlation ρ): prior, floor, memory.
    #: The floor keeps huge series from paging on tiny real-world wobble (relative σ floor ≈
    #: sqrt(ρ(1−p)/p) ≈ 2 % at p = 0.3).
    conversion_dispersion_prior: float = 1e-3
    conversion_dispersion_floor: float = 2e-4
    #: Overdispersion of volumes (negative binomial φ, Var = μ + φμ²): traffic is burstier.
    volume_dispersion_prior: float = 0.02
    volume_dispersion_floor: float = 0.003
    #: Weight of the dispersion prior, in windows, and memory of the estimate (12 h: adapts
    #: within a day, stable across an hour of odd traffic).
    dispersion_prior_windows: float = 60.0
    dispersion_half_life_windows: float = 720.0
    #: Residuals are winsorised at this many σ when learning dispersion: a one-minute glitch
    #: does not blunt the detector for hours, while genuinely heavy tails still raise φ
    #: (at 4σ, NAB's heavy-tailed series produced ~25 % more false alarms).
    dispersion_clip_sigma: float = 8.0
    #: Serial correlation. One person's events spread over several windows (a session's page
    #: views, a conversation's messages), so consecutive windows of a volume share persons; and
    #: the baseline's own estimation error is common to consecutive windows. Either way the
    #: residuals are positively correlated, and a CUSUM that sums windows as if independent
    #: overstates the evidence (on the simulator, the variance of 10-window sums of residuals
    #: was ~2.7 × that of independent windows for chat interaction persons, ~2.4-3.6 for visits,
    #: ~2 for impressions, ~1 for clicks; ignoring it caused most remaining false alarms). The
    #: detector learns ``K = Var(Σ_m z) / m`` of the standardised residuals *the CUSUM saw*
    #: (against the forecast made ``learn_delay_windows`` + 1 ahead) over ``correlation_windows``
    #: consecutive learned windows (about the length of an evidence run that ends in a false
    #: alarm: small shifts accumulate over 5-15 windows) and divides each window's evidence by
    #: ``max(1, K)``: the quasi-likelihood with the long-run variance. Prior: 1 for conversions
    #: (one window's cohort is independent of the next), ``volume_correlation_prior`` for
    #: volumes, weighted like the dispersion prior, so a young volume series starts cautious.
    #: Cost: thin conversions lose some sensitivity (K ≈ 1.2-1.4 from baseline error alone at
    #: ~20 conversions per window), which matters only near or below the feasibility bound above.
    correlation_windows: int = 10
    conversion_correlation_prior: float = 1.0
    volume_correlation_prior: float = 2.0
    #: A parent defers to a single child whose recent deficit is ≥ this share of its own.
    attribution_share: float = 0.7
    #: A parent waits this many windows for a child whose evidence is building (costs a parent
    #: alert at most this much delay, only when a child is about to claim it).
    attribution_wait_windows: int = 3
    #: Half-life of the recent observed/expected sums used for attribution and ``total_*``.
    recent_half_life_windows: float = 3.0
    #: An incident open this long (a day) is accepted as the new normal (resolved, level
    #: re-anchored): a permanent shift must not keep an incident open, and the baseline frozen,
    #: forever.
    max_incident_windows: int = 1440
    #: Windows a dimension may catch up (as zeros) in one go; older missing windows are skipped.
    #: 0 disables filling (for series where a missing window means "no data", not "zero").
    max_catchup_windows: int = 1440
    #: Dimensions untouched for this long (and without incident) are forgotten.
    gc_after_hours: int = 168
    #: Once the daily profile is learned, the deseasonalised series is flat and the level only has
    #: to follow slow drifts: a longer memory gives a more precise baseline (and the expected value
    #: no longer wanders with the noise of the last half hour). Before that, ``level_half_life_windows``.
    seasonal_level_half_life_windows: float = 120.0
    #: A window's value is learned clipped to this many σ of its forecast (Huber): one spike (a
    #: glitch, a bot, a bulk send) moves the baseline no more than a 4σ window would, while a real
    #: shift is learned within a few half-lives or, if it is an incident, not at all.
    learn_clip_sigma: float = 4.0
    #: Overdispersion of real-valued series (``kind="value"``: no Poisson part, Var = φ·e²; the
    #: NAB series and any non-count metric): prior and floor of φ (relative variance). Nothing is
    #: known about an arbitrary metric's noise: the prior (a relative σ of ~30 %) is deliberately
    #: loose, so a young series does not page on its own noise; its data outweigh it within hours.
    value_dispersion_prior: float = 0.1
    value_dispersion_floor: float = 1e-6
    #: Graded score (see ``evidence.py``). Weight, in windows, of the model's own tail rates in
    #: the calibration of the surprise against the series' history: a young series is scored by
    #: the model, an old one by what it has actually shown.
    score_calibration_prior_windows: float = 30.0
    #: Beyond the highest calibrated surprise level each further nat of model surprise counts
    #: this much: real tails are heavier than the model's, by an amount the history cannot show.
    score_tail_slope: float = 0.5
    #: Onset memory: a window's surprise is reported only when it exceeds everything the series
    #: showed in the last this many windows. An anomaly is announced when it begins (or grows),
    #: not again for every window it lasts; users who threshold the score get one alert per event.
    score_rest_windows: int = 60
    #: Surprise (nats) that maps to a graded score of 0.5: score = s / (s + this).
    score_half_nats: float = 10.0

    def __post_init__(self) -> None:
        if not (0 < self.conversion_shift < 1 and 0 < self.volume_shift < 1):
            raise ValueError("design shifts must be in (0, 1): a 100 % drop has no finite likelihood ratio")
        if self.window_ms <= 0 or self.threshold_nats <= 0 or self.max_window_nats <= 0:
            raise ValueError("window_ms, threshold_nats and max_window_nats must be positive")
        if not 1 <= self.warmup_windows <= 60:
            raise ValueError("warmup_windows must be in 1..60 (new series are watched within the hour)")
        if not 0 < self.attribution_share <= 1:
            raise ValueError("attribution_share must be in (0, 1]")
        if min(self.open_after_windows, self.resolve_after_windows, self.update_every_windows) < 1:
            raise ValueError("open_after/resolve_after/update_every windows must be ≥ 1")
        if self.correlation_windows < 1 or min(self.conversion_correlation_prior, self.volume_correlation_prior) < 1:
            raise ValueError("correlation_windows and the correlation priors must be ≥ 1")
        if self.learn_delay_windows < 0 or self.max_catchup_windows < 0:
            raise ValueError("learn_delay_windows and max_catchup_windows must be ≥ 0")
        if self.learn_clip_sigma <= 0 or self.score_half_nats <= 0 or self.score_rest_windows < 0:
            raise ValueError("learn_clip_sigma and score_half_nats must be positive, score_rest_windows ≥ 0")
        if not 0 <= self.score_tail_slope <= 1 or self.score_calibration_prior_windows <= 0:
            raise ValueError("score_tail_slope must be in [0, 1], score_calibration_prior_windows positive")
