"""Logging: JSON lines for workers (machines read them), human lines for ``run`` and the CLI.

Two filters sit on the one handler:
- :class:`Redact` removes secrets before anything is formatted: the values we know are secret
  (SASL password, web token, notifier URLs' keys) and anything shaped like one (``password=``,
  ``token=``, ``routing_key=``, ``Bearer ...``, ``user:pass@`` in URLs). Notifier URLs carry
  API keys in their query strings, and an exception message can quote a URL verbatim.
- :class:`RateLimit` lets at most one line per logger and message shape through every
  ``RateLimit.PERIOD_S``, and says how many it held back. A broker outage makes every client
  of a worker (eight consumers, a producer, admin clients) log each failed connection attempt:
  thousands of identical lines a minute that bury the one line that says what is wrong.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Iterable
from typing import Any

import orjson

#: (kept prefix, secret) pairs: the second group is masked.
_PATTERNS = (
    re.compile(r"(?i)\b((?:password|passwd|secret|token|routing_key|api_key|apikey|integration_key)=)([^&\s'\"]+)"),
    re.compile(r'(?i)("(?:password|secret|token|routing_key|api_key)"\s*:\s*")([^"]+)'),
    re.compile(r"(?i)\b(bearer\s+)([A-Za-z0-9._~+/=-]{6,})"),
    re.compile(r"(://[^/:@\s]+:)([^@\s/]+)(?=@)"),
    re.compile(r"(hooks\.slack\.com/services/)([A-Za-z0-9/]+)"),
)
MASK = "***"


def mask_secrets(text: str, secrets: Iterable[str], mask: str = MASK, min_len: int = 1) -> str:
    """Replace every known secret value in ``text`` (shared by log redaction and notifiers)."""
    for secret in secrets:
        if secret and len(secret) >= min_len:
            text = text.replace(secret, mask)
    return text


def redact(text: str, secrets: Iterable[str] = ()) -> str:
    text = mask_secrets(text, secrets, min_len=4)  # shorter values would mask ordinary words
    for pat in _PATTERNS:
        text = pat.sub(lambda m: m.group(1) + MASK, text)
    return text


class Redact(logging.Filter):
    def __init__(self, secrets: Iterable[str] = ()) -> None:
        super().__init__()
        self.secrets = tuple(s for s in secrets if s)

    def filter(self, record: logging.LogRecord) -> bool:
        msg = record.getMessage()
        clean = redact(msg, self.secrets)
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redact(record.exc_text, self.secrets)
        record.msg, record.args = clean, None
        return True


_DIGITS = re.compile(r"\d+")


class RateLimit(logging.Filter):
    """One line per (logger, level, message shape) per ``PERIOD_S``; the next one that passes
    says how many were held back. The shape is the message with its numbers removed, so
    "node 1" and "node 2" are one shape. Errors of our own code (``streams.*``) are not limited:
    they are rare and each one matters."""

    PERIOD_S = 30.0

    def __init__(self, period_s: float | None = None, clock: Any = time.monotonic) -> None:
        super().__init__()
        self.period_s = self.PERIOD_S if period_s is None else period_s
        self.clock = clock
        self._last: dict[tuple[str, int, str], float] = {}
        self._held: dict[tuple[str, int, str], int] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        if record.name.startswith("streams"):
            return True
        shape = (record.name, record.levelno, _DIGITS.sub("#", str(record.msg))[:200])
        now = self.clock()
        last = self._last.get(shape)
        if last is not None and now - last < self.period_s:
            self._held[shape] = self._held.get(shape, 0) + 1
            return False
        if len(self._last) > 10_000:  # bounded: shapes are few, but never let it grow
            self._last.clear()
            self._held.clear()
        self._last[shape] = now
        held = self._held.pop(shape, 0)
        if held:
            record.msg = f"{record.getMessage()} ({held} similar lines in the last {self.period_s:.0f}s held back)"
            record.args = None
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ts (ISO-8601 UTC), level, logger, msg, and exc when there is one."""

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        if record.exc_text:
            out["exc"] = record.exc_text
        elif record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return orjson.dumps(out).decode()


HUMAN_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def level_of(name: str) -> int:
    value = logging.getLevelName(name.upper().replace("WARN", "WARNING").replace("WARNINGING", "WARNING"))
    return value if isinstance(value, int) else logging.INFO


def logging_config(fmt: str, level: str, secrets: Iterable[str] = ()) -> dict[str, Any]:
    """A ``logging.config.dictConfig`` for the worker and the CLI."""
    formatter = {"()": JsonFormatter} if fmt == "json" else {"format": HUMAN_FORMAT}
    root = level_of(level)
    # aiokafka narrates every group join, sync and assignment at INFO, for each of a worker's
    # consumers (one per stage): noise unless debugging. The stages log their own assignments.
    loggers = {} if root <= logging.DEBUG else {"aiokafka": {"level": max(root, logging.WARNING)}}
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"default": formatter},
        "filters": {"redact": {"()": Redact, "secrets": list(secrets)}, "ratelimit": {"()": RateLimit}},
        "handlers": {
            "default": {
                "class": "logging.StreamHandler",
                "stream": "ext://sys.stderr",
                "formatter": "default",
                "filters": ["ratelimit", "redact"],
            }
        },
        "root": {"level": root, "handlers": ["default"]},
        "loggers": loggers,
    }


def setup(fmt: str, level: str, secrets: Iterable[str] = ()) -> None:
    import logging.config

    logging.config.dictConfig(logging_config(fmt, level, secrets))
