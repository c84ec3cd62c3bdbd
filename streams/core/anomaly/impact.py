"""What an incident cost: the estimated persons lost (or gained) at the end of the funnel.

Why: growth teams prioritise by impact, not by z-score. A deficit of 300 clicks matters as much
as the deals those clicks would have become. The deficit at ``stage_to`` (expected − observed over
the incident) is multiplied by the expected share of ``stage_to`` persons who reach the funnel's
deepest used stage.
"""

from __future__ import annotations

from typing import Any

from streams.core.anomaly.baseline import level
from streams.core.stages import STAGES


def downstream_share(dim_state: dict[str, Any], stage: str) -> float:
    """Expected share of persons at ``stage`` that reach the funnel's end (its deepest used stage).

    The product of the same-window conversion ratios telescopes to end-volume / stage-volume,
    so the volume levels give it directly, also across stages a tenant does not use.
    """
    base = dim_state["v"].get(stage)
    if base is None or level(base) <= 0:
        return 1.0
    end_level = 0.0
    for s_name in reversed(STAGES):
        s = dim_state["v"].get(s_name)
        if s is not None and level(s) > 0:
            end_level = level(s)
            break
    return min(1.0, end_level / level(base))


def lost_conversions(dim_state: dict[str, Any], stage_to: str, observed: float, expected: float) -> float:
    """Persons lost at the funnel's end (negative: gained) for a deficit at ``stage_to``."""
    return (expected - observed) * downstream_share(dim_state, stage_to)
