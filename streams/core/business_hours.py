"""Business-hours clocks: SLA targets that only count while a team is open.

Why per-day local→UTC conversion: a schedule is written in the team's wall clock ("mon-fri
09:00-17:00 in Berlin"), but deadlines must be instants. Every local date's intervals are turned
into UTC millisecond instants with :mod:`zoneinfo`; all counting then happens on those instants.
So a business second is a real elapsed second: a ``00:00-24:00`` day is 23 h long on the
spring-forward date and 25 h on the fall-back date, and a team's 09:00 opening moves in UTC when
its country changes clocks.

Wall-clock readings that are not unique are resolved the way a person reading the clock would:

* a local time that does not exist (inside the spring-forward gap) means the transition instant,
  i.e. the first moment the clock shows a later time: ``02:00-02:30`` on that day is empty,
  ``01:30-02:30`` is the 30 real minutes before the jump;
* a local time that occurs twice (fall-back) means its first occurrence.

Schedule dict (one entry of ``"schedules"`` in the SLA policy file, see :mod:`streams.core.sla`)::

    {
      "timezone": "Europe/Berlin",                       # IANA name; default "UTC"
      "hours": {                                         # omitted = open 24 h every day
        "mon-thu": [["09:00", "12:30"], ["13:30", "17:00"]],   # several intervals per day
        "fri": [["09:00", "15:00"]],                     # days: mon tue wed thu fri sat sun,
        "sat": [["10:00", "24:00"]]                      # or a range "mon-fri"; missing = closed
      },
      "holidays": ["2026-12-24", "2026-12-25"]           # local dates, closed all day
    }

Intervals are ``[start, end)`` in ``HH:MM`` local time with ``00:00 <= start < end <= 24:00``;
within a day they must not overlap. A shift past midnight is written as two intervals
(``"fri": [["22:00", "24:00"]], "sat": [["00:00", "06:00"]]``), which also makes it explicit
which date a holiday closes. Keys starting with ``_`` are ignored (comments).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, date, datetime, time, timedelta
from itertools import pairwise
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

DAYS: tuple[str, ...] = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
DAY_S = 86_400

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MS = timedelta(milliseconds=1)
_HHMM = re.compile(r"^(\d{2}):(\d{2})$")
# A schedule is open at least once a week and holidays are finite, so a search ends long
# before this; the bound only turns a corrupted schedule into an error instead of a hang.
_MAX_SCAN_DAYS = 366 * 30
_CACHE_DAYS = 4096

Interval = tuple[int, int]


class Schedule:
    """Weekly opening hours in one time zone, minus holidays.

    Deterministic and free of I/O (the tz database is read once per zone by :mod:`zoneinfo`).
    The per-date UTC intervals are cached because consecutive waits hit the same few days.
    """

    __slots__ = ("_cache", "_holidays", "_tz", "_week", "is_always", "name", "timezone")

    def __init__(
        self,
        timezone: str = "UTC",
        hours: Mapping[int, Sequence[Interval]] | None = None,
        holidays: Iterable[date] = (),
        name: str = "",
    ) -> None:
        """``hours`` maps weekday (0 = Monday) to ``(start_s, end_s)`` seconds after local midnight;
        ``None`` means open around the clock."""
        try:
            self._tz = ZoneInfo(timezone)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise ValueError(f"unknown time zone {timezone!r}") from exc
        self.timezone = timezone
        self.name = name
        self._holidays: frozenset[date] = frozenset(holidays)
        week: list[tuple[Interval, ...]] = []
        for wd in range(7):
            raw = [(0, DAY_S)] if hours is None else list(hours.get(wd, ()))
            ivs = sorted((int(s), int(e)) for s, e in raw)
            for s, e in ivs:
                if not 0 <= s < e <= DAY_S:
                    raise ValueError(f"{DAYS[wd]}: interval {s}-{e} s must satisfy 0 <= start < end <= 86400")
            for (_, e1), (s2, _) in pairwise(ivs):
                if s2 < e1:
                    raise ValueError(f"{DAYS[wd]}: intervals overlap")
            week.append(tuple(ivs))
        if not any(week):
            raise ValueError("schedule is never open")
        self._week: tuple[tuple[Interval, ...], ...] = tuple(week)
        # 24/7 without holidays: pure arithmetic, the zone cannot matter.
        self.is_always = hours is None and not self._holidays
        self._cache: dict[int, tuple[Interval, ...]] = {}

    @staticmethod
    def always() -> Schedule:
        return Schedule("UTC", None, (), "always")

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], name: str = "") -> Schedule:
        """Parse one schedule of the policy file; ``ValueError`` names what is wrong."""
        where = f"schedule {name!r}" if name else "schedule"
        if not isinstance(d, Mapping):
            raise ValueError(f"{where}: must be an object")
        unknown = sorted(k for k in d if not k.startswith("_") and k not in ("timezone", "hours", "holidays"))
        if unknown:
            raise ValueError(f"{where}: unknown field(s) {unknown}; allowed: timezone, hours, holidays")
        tz = d.get("timezone", "UTC")
        if not isinstance(tz, str) or not tz:
            raise ValueError(f"{where}: timezone must be an IANA zone name such as 'Europe/Berlin'")
        hours: dict[int, list[Interval]] | None = None
        if "hours" in d:
            hours = _parse_hours(d["hours"], where)
        holidays = _parse_holidays(d.get("holidays", []), where)
        try:
            return cls(tz, hours, holidays, name)
        except ValueError as exc:
            raise ValueError(f"{where}: {exc}") from None

    # --- clock math -------------------------------------------------------------------------
    def add_business_seconds(self, start_ms: int, seconds: float) -> int:
        """The earliest instant at which ``seconds`` of open time have elapsed since ``start_ms``.

        Outside hours the count starts at the next opening; a target that ends exactly at a
        closing time is due at that closing time, not at the next opening. ``seconds <= 0``
        returns ``start_ms``.
        """
        remaining = round(seconds * 1000)
        if remaining <= 0:
            return start_ms
        if self.is_always:
            return start_ms + remaining
        day = self._ordinal(start_ms) - 1  # the previous date's last interval may reach past midnight
        for _ in range(_MAX_SCAN_DAYS):
            for a, b in self._day(day):
                if b <= start_ms:
                    continue
                s = max(a, start_ms)
                if b - s >= remaining:
                    return s + remaining
                remaining -= b - s
            day += 1
        raise ValueError(f"schedule {self.name!r}: no opening within {_MAX_SCAN_DAYS} days")

    def business_ms_between(self, start_ms: int, end_ms: int) -> int:
        """Open milliseconds in ``[start_ms, end_ms)``; 0 if ``end_ms <= start_ms``."""
        if end_ms <= start_ms:
            return 0
        if self.is_always:
            return end_ms - start_ms
        total = 0
        for day in range(self._ordinal(start_ms) - 1, self._ordinal(end_ms) + 1):
            for a, b in self._day(day):
                lo = max(a, start_ms)
                hi = min(b, end_ms)
                if hi > lo:
                    total += hi - lo
        return total

    def business_seconds_between(self, start_ms: int, end_ms: int) -> float:
        return self.business_ms_between(start_ms, end_ms) / 1000

    def is_open(self, at_ms: int) -> bool:
        if self.is_always:
            return True
        day = self._ordinal(at_ms)
        return any(a <= at_ms < b for d in (day - 1, day) for a, b in self._day(d))

    # --- internals ----------------------------------------------------------------------------
    def _ordinal(self, ms: int) -> int:
        return (_EPOCH + ms * _MS).astimezone(self._tz).toordinal()

    def _day(self, ordinal: int) -> tuple[Interval, ...]:
        """Open intervals of one local date as UTC epoch-ms ``[a, b)`` pairs, ascending."""
        got = self._cache.get(ordinal)
        if got is not None:
            return got
        d = date.fromordinal(ordinal)
        spans = self._week[d.weekday()]
        out: tuple[Interval, ...] = ()
        if spans and d not in self._holidays:
            conv = [(self._local_to_ms(d, s), self._local_to_ms(d, e)) for s, e in spans]
            out = tuple((a, b) for a, b in conv if b > a)  # intervals inside a DST gap vanish
        if len(self._cache) >= _CACHE_DAYS:
            self._cache.clear()
        self._cache[ordinal] = out
        return out

    def _local_to_ms(self, d: date, second_of_day: int) -> int:
        naive = datetime.combine(d, time()) + timedelta(seconds=second_of_day)
        first = naive.replace(tzinfo=self._tz, fold=0)
        second = naive.replace(tzinfo=self._tz, fold=1)
        ua = (first - _EPOCH) // _MS
        ub = (second - _EPOCH) // _MS
        if ua <= ub:  # unique, or repeated (fall-back): the first occurrence
            return ua
        # Inside a spring-forward gap: fold=0 used the old offset (ua), fold=1 the new one (ub);
        # the transition instant T lies in (ub, ua]. Bisect on whole seconds for it.
        after = second.utcoffset()
        lo, hi = ub // 1000, ua // 1000
        while hi - lo > 1:
            mid = (lo + hi) // 2
            if (_EPOCH + timedelta(seconds=mid)).astimezone(self._tz).utcoffset() == after:
                hi = mid
            else:
                lo = mid
        return hi * 1000

    def __repr__(self) -> str:
        return f"Schedule(name={self.name!r}, timezone={self.timezone!r}, always={self.is_always})"


def _parse_hhmm(v: Any, where: str) -> int:
    m = _HHMM.match(v) if isinstance(v, str) else None
    if m is None:
        raise ValueError(f"{where}: time {v!r} must be 'HH:MM'")
    h, mi = int(m.group(1)), int(m.group(2))
    if mi >= 60 or h > 24 or (h == 24 and mi != 0):
        raise ValueError(f"{where}: time {v!r} is not between 00:00 and 24:00")
    return h * 3600 + mi * 60


def _parse_days(key: str, where: str) -> list[int]:
    parts = key.strip().lower().split("-")
    if len(parts) == 1 and parts[0] in DAYS:
        return [DAYS.index(parts[0])]
    if len(parts) == 2 and parts[0] in DAYS and parts[1] in DAYS:
        a, b = DAYS.index(parts[0]), DAYS.index(parts[1])
        if a <= b:
            return list(range(a, b + 1))
    raise ValueError(f"{where}: day key {key!r} must be one of {', '.join(DAYS)} or a range like 'mon-fri'")


def _parse_hours(raw: Any, where: str) -> dict[int, list[Interval]]:
    if not isinstance(raw, Mapping):
        raise ValueError(f"{where}: hours must be an object like {{\"mon-fri\": [[\"09:00\", \"17:00\"]]}}")
    out: dict[int, list[Interval]] = {}
    for key, spans in raw.items():
        if key.startswith("_"):
            continue
        days = _parse_days(key, where)
        here = f"{where} hours {key!r}"
        if not isinstance(spans, list):
            raise ValueError(f"{here}: must be a list of [\"HH:MM\", \"HH:MM\"] pairs")
        ivs: list[Interval] = []
        for span in spans:
            if not isinstance(span, list | tuple) or len(span) != 2:
                raise ValueError(f"{here}: interval {span!r} must be a [\"HH:MM\", \"HH:MM\"] pair")
            s, e = _parse_hhmm(span[0], here), _parse_hhmm(span[1], here)
            if s >= e:
                raise ValueError(f"{here}: interval {span!r} must end after it starts (split night shifts)")
            ivs.append((s, e))
        for wd in days:
            if wd in out:
                raise ValueError(f"{where}: {DAYS[wd]} is given more than once in hours")
            out[wd] = list(ivs)
    return out


def _parse_holidays(raw: Any, where: str) -> list[date]:
    if not isinstance(raw, list):
        raise ValueError(f"{where}: holidays must be a list of 'YYYY-MM-DD' dates")
    out: list[date] = []
    for v in raw:
        try:
            if not isinstance(v, str) or len(v) != 10:
                raise ValueError
            out.append(date.fromisoformat(v))
        except ValueError:
            raise ValueError(f"{where}: holiday {v!r} must be a 'YYYY-MM-DD' date") from None
    return out
