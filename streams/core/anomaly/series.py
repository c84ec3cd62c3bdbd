"""One stand-alone series through the same model the funnel uses: a value per window in, a graded
score out.

Why: the detector's per-series model (``baseline``, ``seasonality``, ``evidence``, ``incidents``)
is not specific to funnels, and judging it on labelled real series (NAB, ``streams.devtools.nab_eval``)
must exercise exactly the code the funnel runs, not a re-implementation. A series is ``count``
(non-negative integers: events, persons, tweets per interval; Poisson noise is part of the model,
so low counts stay low counts) or ``value`` (real-valued metrics: prices, latencies, sensor levels;
only their learned relative variability counts). Incidents open and resolve exactly as in the
funnel (and stop the baseline from learning while open); the state is one JSON-able dict.
"""

from __future__ import annotations

from typing import Any

from streams.core.anomaly import incidents
from streams.core.anomaly.baseline import COUNT, VALUE, new_series
from streams.core.anomaly.config import DetectorConfig


class SeriesDetector:
    """``observe(window_start_ms, x)`` → the window's graded score in [0, 1).

    ``window_ms`` is the nominal spacing of observations (irregular spacing is fine: seasonality
    reads the timestamps, everything else counts observations)."""

    __slots__ = ("config", "kind", "prof", "state", "window_ms")

    def __init__(self, kind: str, window_ms: int, config: DetectorConfig | None = None,
                 state: dict[str, Any] | None = None) -> None:
        if kind not in (COUNT, VALUE):
            raise ValueError(f"kind must be {COUNT!r} or {VALUE!r}")
        if window_ms <= 0:
            raise ValueError("window_ms must be positive")
        self.kind = kind
        self.window_ms = window_ms
        self.config = config or DetectorConfig()
        saved = state or {}
        self.state: dict[str, Any] = saved.get("s") or new_series()
        self.prof: dict[str, Any] = saved.get("p") or {}

    def observe(self, window_start: int, x: float) -> tuple[float, str | None]:
        """Score one observation; also returns ``"opened"``/``"resolved"`` on an incident transition."""
        what, _, score = incidents.step(
            self.config, self.state, self.kind, window_start, float(x), 1.0, True, self.prof, self.window_ms)
        self.prof.pop("dirty", None)
        return score, what

    def snapshot(self) -> dict[str, Any]:
        """The JSON-able state (``SeriesDetector(kind, window_ms, config, state=snapshot)`` resumes)."""
        return {"s": self.state, "p": self.prof}
