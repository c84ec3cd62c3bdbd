"""Dead-letter records: the original bytes, why they were refused, and where they came from.

The original travels base64-encoded (it may not be UTF-8 or JSON), plus as text when it
decodes, so a human can read it and ``touchstream dlq replay`` can re-send it byte for byte.
"""

from __future__ import annotations

import base64
from typing import Any

from streams.core.contract import format_timestamp

#: At most this much of the original travels in ``original_b64``. The input limit
#: (TOUCHSTREAM_MAX_MESSAGE_BYTES) does not bound raw messages, the broker's does (4 MiB on the
#: local broker), and base64 adds a third: an unbounded letter can exceed what the broker accepts,
#: and a letter that cannot be produced blocks the validate stage (its batch is retried forever).
#: 1 MiB keeps a letter under ~1.8 MB, below the worker producer's 2 MiB max_request_size.
MAX_ORIGINAL_BYTES = 1 << 20


def dlq_record(
    reason: str, detail: str, original: bytes, source: tuple[str, int, int], at_ms: int, key: bytes | None = None
) -> dict[str, Any]:
    rec: dict[str, Any] = {
        "reason": reason,
        "detail": detail,
        "source": {"topic": source[0], "partition": source[1], "offset": source[2]},
        "dead_lettered_at": format_timestamp(at_ms),
        "original_b64": base64.b64encode(original[:MAX_ORIGINAL_BYTES]).decode("ascii"),
    }
    if len(original) > MAX_ORIGINAL_BYTES:  # only a prefix is kept: not replayable
        rec["original_truncated"] = True
        rec["original_size"] = len(original)
    try:
        text = original.decode("utf-8")
        rec["original"] = text if len(text) <= 65_536 else text[:65_536]
    except UnicodeDecodeError:
        pass
    if key is not None:
        rec["key_b64"] = base64.b64encode(key).decode("ascii")
    return rec


def original_of(rec: dict[str, Any]) -> tuple[bytes | None, bytes]:
    """(key, value) as they were first produced."""
    key = rec.get("key_b64")
    return (base64.b64decode(key) if key else None), base64.b64decode(rec["original_b64"])
