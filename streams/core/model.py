"""The normalised touchpoint, as every core component sees it.

Times are integer epoch milliseconds (UTC) throughout the core: integers keep replay
byte-for-byte deterministic and make window arithmetic exact.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

CHANNELS: frozenset[str] = frozenset(
    {"web", "live_chat", "whatsapp", "messenger", "email", "social", "b2b_platform", "phone", "ads", "other"}
)
TYPES: frozenset[str] = frozenset(
    {
        "ad_impression",
        "ad_click",
        "page_view",
        "message_in",
        "message_out",
        "form_submit",
        "lead",
        "opportunity",
        "deal_won",
        "deal_lost",
        "conversation_closed",
        "identify",
    }
)
CONVERSATION_TYPES: frozenset[str] = frozenset({"message_in", "message_out", "conversation_closed"})
IDENTITY_TYPES: tuple[str, ...] = (
    "user_id",
    "crm_contact_id",
    "email",
    "phone",
    "whatsapp_id",
    "messenger_psid",
    "anonymous_id",
)
PRIORITIES: frozenset[str] = frozenset({"low", "normal", "high", "urgent"})


@dataclass(slots=True)
class Touchpoint:
    """A validated, normalised touchpoint (contract v1) plus its Kafka source.

    ``identities`` holds only non-empty, normalised identifiers (emails lower-cased, phones in
    E.164-like ``+digits`` form). ``extra`` keeps unknown top-level fields so the enriched
    topic can pass them through unchanged.
    """

    event_id: str
    tenant_id: str
    occurred_at: int  # epoch ms, UTC
    channel: str
    type: str
    identities: dict[str, str]
    conversation: dict[str, Any] | None = None
    campaign: dict[str, Any] | None = None
    page: dict[str, Any] | None = None
    value: dict[str, Any] | None = None
    properties: dict[str, Any] | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    # Where it came from (topic, partition, offset); ("", -1, -1) offline or when unknown.
    source: tuple[str, int, int] = ("", -1, -1)

    @property
    def conversation_id(self) -> str | None:
        return None if self.conversation is None else self.conversation.get("id")

    @property
    def campaign_name(self) -> str | None:
        return None if self.campaign is None else self.campaign.get("name")
