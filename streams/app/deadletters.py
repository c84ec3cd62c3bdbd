"""Dead letters for records that fail *after* validation (the later stages' own inputs).

The validate stage refuses bad raw input with the contract's reasons. A later stage can still
meet a record it cannot use: something else wrote an internal topic, or a contract drifted. The
rule is the same everywhere: the record goes to ``touchpoints.dlq`` with the reason, is counted
in ``touchstream_dlq_total{reason}``, and the stage goes on (never a crash, never a silent drop).
"""

from __future__ import annotations

from typing import Any

import orjson

from streams import metrics
from streams.app import topics
from streams.core.deadletter import dlq_record
from streams.runtime.producer import BatchSender
from streams.settings import Settings

#: ``touchpoints.valid`` carried something the validate stage never wrote
INVALID_INTERNAL = "invalid_internal"
#: an output topic's record could not be mapped to its ClickHouse row
SINK_UNMAPPABLE = "sink_unmappable"
#: a page on ``sla.pages`` could not be read
UNREADABLE_PAGE = "unreadable_page"
#: every reason given after the validate stage (the core's own, ``too_late``, is in
#: ``streams.core.contract.REASONS``)
LATER_STAGE_REASONS: tuple[str, ...] = (INVALID_INTERNAL, SINK_UNMAPPABLE, UNREADABLE_PAGE)


def queue_dead_letter(sender: BatchSender, settings: Settings, reason: str, detail: str, rec: Any,
                      at_ms: int) -> None:
    """Queue the letter for ``rec`` (an aiokafka ConsumerRecord) on ``sender``; the caller sends
    it before committing the record's offset."""
    value = rec.value if isinstance(rec.value, bytes) else b""
    letter = dlq_record(reason, detail[:300], value, (rec.topic, rec.partition, rec.offset), at_ms, rec.key)
    sender.add(settings.topic(topics.DLQ), rec.key, orjson.dumps(letter))
    metrics.DLQ.labels(reason).inc()
