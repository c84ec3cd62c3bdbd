"""Progress of long-running commands (simulate, process, dlq replay, migrate), on stderr.

stdout stays machine-readable (the commands print their JSON summary there); progress goes to
stderr and is silenced by ``--quiet``. Two renderings of one state:

* a terminal (``stream.isatty()``): one line rewritten in place (``\\r`` + erase to end of
  line) at most every ``redraw_s`` (0.2 s), ended with a newline by :meth:`Progress.close`;
* anything else (a log file, CI, a pipe): one plain line every ``log_every_s`` (10 s), plus the
  final line, so logs show a heartbeat without a flood.

Line: ``process: 12,345 lines  4,512/s  elapsed 0:03  12.3%  ETA 0:19``. The percentage and ETA
appear when the work's size is known: ``total`` (items) or an explicit ``fraction`` passed with
each update (bytes of a file read, event time of a simulation), because the item count of such
work is not known in advance. The rate is the average since the start; the ETA is
``elapsed × (1 − f) / f``. Clock and stream are injected, so tests need no sleeping.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from typing import IO, Any

ERASE_EOL = "\x1b[K"


def fmt_duration(seconds: float) -> str:
    """``0:07``, ``12:34``, ``1:02:03``."""
    s = max(0, int(seconds + 0.5))
    h, rem = divmod(s, 3600)
    m, sec = divmod(rem, 60)
    return f"{h}:{m:02d}:{sec:02d}" if h else f"{m}:{sec:02d}"


class Progress:
    """Counts items and reports; every method is a no-op when ``enabled`` is False (``--quiet``)."""

    def __init__(
        self,
        label: str,
        *,
        total: int | None = None,
        unit: str = "events",
        stream: IO[str] | None = None,
        clock: Callable[[], float] = time.monotonic,
        tty: bool | None = None,
        enabled: bool = True,
        redraw_s: float = 0.2,
        log_every_s: float = 10.0,
    ) -> None:
        self.label = label
        self.total = total
        self.unit = unit
        self.stream: IO[str] = stream if stream is not None else sys.stderr
        self.clock = clock
        if tty is None:
            isatty = getattr(self.stream, "isatty", None)
            tty = bool(isatty()) if callable(isatty) else False
        self.tty = tty
        self.enabled = enabled
        self.interval = redraw_s if tty else log_every_s
        self.count = 0
        self.fraction: float | None = None
        self.started = clock()
        self._next = self.started + self.interval
        self._closed = False
        self._width = 0

    # --- input ---
    def advance(self, n: int = 1, *, fraction: float | None = None) -> None:
        self.update(self.count + n, fraction=fraction)

    def update(self, count: int, *, fraction: float | None = None) -> None:
        """Set the item count (and, when the size is known another way, the fraction done)."""
        self.count = count
        if fraction is not None:
            self.fraction = min(1.0, max(0.0, fraction))
        if self.enabled:
            now = self.clock()
            if now >= self._next:
                self._emit(now)
                self._next = now + self.interval

    def set_total(self, total: int | None) -> None:
        self.total = total

    def close(self, note: str | None = None) -> None:
        """The final line (always written, TTY or not, unless disabled); idempotent."""
        if self._closed:
            return
        self._closed = True
        if self.enabled:
            self._emit(self.clock(), final=True, note=note)

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, exc_type: Any, *exc: Any) -> None:
        self.close(None if exc_type is None else "interrupted" if exc_type is KeyboardInterrupt else "failed")

    # --- output ---
    def done_fraction(self) -> float | None:
        if self.fraction is not None:
            return self.fraction
        if self.total:
            return min(1.0, self.count / self.total)
        return None

    def line(self, now: float | None = None, final: bool = False) -> str:
        elapsed = max(0.0, (self.clock() if now is None else now) - self.started)
        count = f"{self.count:,}" if self.total is None else f"{self.count:,}/{self.total:,}"
        parts = [f"{self.label}: {count} {self.unit}"]
        if elapsed > 0:
            parts.append(f"{self.count / elapsed:,.0f}/s")
        parts.append(f"elapsed {fmt_duration(elapsed)}")
        f = self.done_fraction()
        if f is not None and not final:
            parts.append(f"{f * 100:.1f}%")
            if f > 0:
                parts.append(f"ETA {fmt_duration(elapsed * (1 - f) / f)}")
        return "  ".join(parts)

    def _emit(self, now: float, final: bool = False, note: str | None = None) -> None:
        text = self.line(now, final)
        if final:
            text += f"  ({note})" if note else "  done"
        try:
            if self.tty:
                pad = " " * max(0, self._width - len(text))  # for terminals without ERASE_EOL
                self.stream.write("\r" + text + pad + ERASE_EOL + ("\n" if final else ""))
                self._width = len(text)
            else:
                self.stream.write(text + "\n")
            self.stream.flush()
        except (OSError, ValueError):  # a closed or broken stderr must not fail the work itself
            self.enabled = False
