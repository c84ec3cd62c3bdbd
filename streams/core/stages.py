"""Funnel stages and the event-type → stage mapping: the one place that knows it.

Stages are ordered; a session's ``max_stage`` and ``converted`` flag, the enriched ``stage``
field and the funnel aggregates all read this module, so a tenant override changes them all.
"""

from __future__ import annotations

from collections.abc import Mapping

STAGES: tuple[str, ...] = (
    "impression",
    "click",
    "visit",
    "interaction",
    "lead",
    "opportunity",
    "deal",
)
STAGE_INDEX: dict[str, int] = {s: i for i, s in enumerate(STAGES)}

DEFAULT_STAGE_OF_TYPE: dict[str, str] = {
    "ad_impression": "impression",
    "ad_click": "click",
    "page_view": "visit",
    "message_in": "interaction",
    "form_submit": "interaction",
    "lead": "lead",
    "opportunity": "opportunity",
    "deal_won": "deal",
}

#: A session counts as converted once it reaches this stage or a later one.
CONVERSION_STAGE = "lead"


class StageMap:
    """Maps event types to stages, with optional per-tenant overrides."""

    __slots__ = ("_default", "_tenants")

    def __init__(
        self,
        default: Mapping[str, str] | None = None,
        tenants: Mapping[str, Mapping[str, str]] | None = None,
    ) -> None:
        self._default = dict(DEFAULT_STAGE_OF_TYPE if default is None else default)
        self._tenants = {t: {**self._default, **m} for t, m in (tenants or {}).items()}
        for mapping in (self._default, *self._tenants.values()):
            for stage in mapping.values():
                if stage not in STAGE_INDEX:
                    raise ValueError(f"unknown funnel stage {stage!r}")

    def stage_of(self, tenant_id: str, event_type: str) -> str | None:
        """The funnel stage of an event type, or None when it is not a funnel step."""
        mapping = self._tenants.get(tenant_id, self._default)
        return mapping.get(event_type)


def stage_index(stage: str | None) -> int:
    """Position of a stage in the funnel; -1 for None (not a funnel step)."""
    return -1 if stage is None else STAGE_INDEX[stage]


def is_converted(stage: str | None) -> bool:
    return stage_index(stage) >= STAGE_INDEX[CONVERSION_STAGE]
