from __future__ import annotations

from datetime import date, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from streams.core.business_hours import DAY_S, Schedule

BERLIN = ZoneInfo("Europe/Berlin")
NEW_YORK = ZoneInfo("America/New_York")
H = 3600


def at(tz: ZoneInfo, y: int, mo: int, d: int, h: int = 0, mi: int = 0, fold: int = 0) -> int:
    return int(datetime(y, mo, d, h, mi, tzinfo=tz, fold=fold).timestamp()) * 1000


def local(tz: ZoneInfo, ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, tz)


def office(tz: str = "Europe/Berlin", holidays: list[str] | None = None) -> Schedule:
    hours = {"mon-fri": [["09:00", "17:00"]]}
    return Schedule.from_dict({"timezone": tz, "hours": hours, "holidays": holidays or []})


def all_day(tz: str, days: str = "mon-sun") -> Schedule:
    """Open around the clock but through the day-by-day path (not the 24/7 fast path)."""
    return Schedule.from_dict({"timezone": tz, "hours": {days: [["00:00", "24:00"]]}})


# --- weekends, intervals, holidays, arrival outside hours, multi-day targets ------------------------


def test_friday_evening_message_is_due_monday_morning() -> None:
    s = office()
    due = s.add_business_seconds(at(BERLIN, 2026, 3, 13, 16, 55), 600)  # Friday 16:55, 10 min
    assert local(BERLIN, due) == datetime(2026, 3, 16, 9, 5, tzinfo=BERLIN)  # Monday 09:05
    due = s.add_business_seconds(at(BERLIN, 2026, 3, 13, 17, 55), 600)  # after closing
    assert local(BERLIN, due) == datetime(2026, 3, 16, 9, 10, tzinfo=BERLIN)


def test_the_spec_example_friday_1755_with_a_late_closing() -> None:
    s = Schedule.from_dict({"timezone": "Europe/Berlin", "hours": {"mon-fri": [["09:00", "18:00"]]}})
    due = s.add_business_seconds(at(BERLIN, 2026, 3, 13, 17, 55), 600)
    assert local(BERLIN, due) == datetime(2026, 3, 16, 9, 5, tzinfo=BERLIN)
    assert s.business_seconds_between(at(BERLIN, 2026, 3, 13, 17, 55), due) == 600


def test_target_ending_exactly_at_closing_is_due_at_closing() -> None:
    s = office()
    fri_1659 = at(BERLIN, 2026, 3, 13, 16, 59)
    assert s.add_business_seconds(fri_1659, 60) == at(BERLIN, 2026, 3, 13, 17, 0)
    assert s.add_business_seconds(at(BERLIN, 2026, 3, 13, 17, 0), 60) == at(BERLIN, 2026, 3, 16, 9, 1)


def test_weekend_counts_nothing() -> None:
    s = office()
    assert s.business_seconds_between(at(BERLIN, 2026, 3, 13, 17), at(BERLIN, 2026, 3, 16, 9)) == 0
    assert s.business_seconds_between(at(BERLIN, 2026, 3, 13, 16), at(BERLIN, 2026, 3, 16, 10)) == 2 * H
    assert not s.is_open(at(BERLIN, 2026, 3, 14, 12))
    assert s.is_open(at(BERLIN, 2026, 3, 16, 9))
    assert not s.is_open(at(BERLIN, 2026, 3, 16, 17))


def test_several_intervals_per_day() -> None:
    s = Schedule.from_dict(
        {"timezone": "Europe/Berlin", "hours": {"mon-fri": [["13:00", "17:00"], ["09:00", "12:00"]]}}
    )
    assert s.add_business_seconds(at(BERLIN, 2026, 3, 16, 11, 55), 600) == at(BERLIN, 2026, 3, 16, 13, 5)
    assert s.add_business_seconds(at(BERLIN, 2026, 3, 16, 12, 30), 60) == at(BERLIN, 2026, 3, 16, 13, 1)
    assert s.business_seconds_between(at(BERLIN, 2026, 3, 16, 11), at(BERLIN, 2026, 3, 16, 14)) == 2 * H
    assert s.business_seconds_between(at(BERLIN, 2026, 3, 16), at(BERLIN, 2026, 3, 17)) == 7 * H
    # adjacent intervals behave like one
    t = Schedule.from_dict({"timezone": "UTC", "hours": {"mon": [["09:00", "12:00"], ["12:00", "13:00"]]}})
    utc = ZoneInfo("UTC")
    assert t.business_seconds_between(at(utc, 2026, 3, 16), at(utc, 2026, 3, 17)) == 4 * H


def test_holidays_are_closed_all_local_day() -> None:
    s = office(holidays=["2026-04-03", "2026-04-06"])  # Good Friday and Easter Monday
    due = s.add_business_seconds(at(BERLIN, 2026, 4, 2, 16, 55), 600)  # Thursday 16:55
    assert local(BERLIN, due) == datetime(2026, 4, 7, 9, 5, tzinfo=BERLIN)  # Tuesday
    assert s.business_seconds_between(at(BERLIN, 2026, 4, 2, 17), at(BERLIN, 2026, 4, 7, 9)) == 0


def test_holiday_is_a_local_date_not_a_utc_date() -> None:
    s = office("America/New_York", holidays=["2026-07-03"])  # Friday
    start = at(NEW_YORK, 2026, 7, 2, 16, 55)
    assert local(NEW_YORK, s.add_business_seconds(start, 600)) == datetime(2026, 7, 6, 9, 5, tzinfo=NEW_YORK)
    assert not s.is_open(at(NEW_YORK, 2026, 7, 3, 10))
    around = Schedule.from_dict({"timezone": "America/New_York", "holidays": ["2026-07-03"]})
    utc = ZoneInfo("UTC")
    assert around.is_open(at(utc, 2026, 7, 3, 2))  # 22:00 on the 2nd in New York
    assert not around.is_open(at(utc, 2026, 7, 4, 2))  # 22:00 on the 3rd in New York
    assert around.business_seconds_between(at(utc, 2026, 7, 3), at(utc, 2026, 7, 5)) == 24 * H


def test_24_7_schedule_with_a_holiday() -> None:
    s = Schedule.from_dict({"timezone": "Europe/Berlin", "holidays": ["2026-12-25"]})
    assert not s.is_always
    start = at(BERLIN, 2026, 12, 24, 23, 0)
    assert s.add_business_seconds(start, 2 * H) == at(BERLIN, 2026, 12, 26, 1, 0)
    assert s.business_seconds_between(start, at(BERLIN, 2026, 12, 26, 1)) == 2 * H


def test_arrival_outside_hours_starts_counting_at_next_opening() -> None:
    s = office()
    assert s.add_business_seconds(at(BERLIN, 2026, 3, 14, 12), H) == at(BERLIN, 2026, 3, 16, 10)  # Saturday
    assert s.add_business_seconds(at(BERLIN, 2026, 3, 16, 7), 60) == at(BERLIN, 2026, 3, 16, 9, 1)  # early
    assert s.add_business_seconds(at(BERLIN, 2026, 3, 16, 20), 60) == at(BERLIN, 2026, 3, 17, 9, 1)  # late
    assert s.business_seconds_between(at(BERLIN, 2026, 3, 14, 12), at(BERLIN, 2026, 3, 16, 9, 30)) == 1800


def test_targets_spanning_several_days() -> None:
    s = office()
    mon = at(BERLIN, 2026, 3, 16, 9)
    assert s.add_business_seconds(mon, 20 * H) == at(BERLIN, 2026, 3, 18, 13)  # Wed 13:00
    thu = at(BERLIN, 2026, 3, 19, 9)
    assert s.add_business_seconds(thu, 24 * H) == at(BERLIN, 2026, 3, 23, 17)  # Thu, Fri, Mon
    assert s.add_business_seconds(thu, 40 * H) == at(BERLIN, 2026, 3, 25, 17)  # ... Tue, Wed
    assert s.business_seconds_between(thu, at(BERLIN, 2026, 3, 25, 17)) == 40 * H
    # two weeks of business time across the spring DST change
    assert s.business_seconds_between(at(BERLIN, 2026, 3, 23), at(BERLIN, 2026, 4, 6)) == 10 * 8 * H


def test_zero_negative_and_reversed() -> None:
    s = office()
    t = at(BERLIN, 2026, 3, 14, 12)
    assert s.add_business_seconds(t, 0) == t
    assert s.add_business_seconds(t, -5) == t
    assert s.business_seconds_between(t + 1000, t) == 0
    assert Schedule.always().business_seconds_between(t + 1000, t) == 0


def test_fractional_seconds_round_to_milliseconds() -> None:
    s = office()
    mon = at(BERLIN, 2026, 3, 16, 9)
    assert s.add_business_seconds(mon, 0.0015) == mon + 2
    assert s.business_seconds_between(mon, mon + 1) == 0.001
    assert Schedule.always().add_business_seconds(mon, 1.2344) == mon + 1234


def test_always_fast_path_equals_explicit_24_7() -> None:
    a, b = Schedule.always(), all_day("UTC")
    assert a.is_always and not b.is_always
    start = at(ZoneInfo("UTC"), 2026, 3, 28, 22, 13)
    for x in (0.5, 60, 3600, 86_400 * 3 + 17):
        assert a.add_business_seconds(start, x) == b.add_business_seconds(start, x)
        end = start + int(x * 1000)
        assert a.business_seconds_between(start, end) == b.business_seconds_between(start, end)


# --- DST ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("tz", "spring", "fall"),
    [
        ("Europe/Berlin", date(2026, 3, 29), date(2026, 10, 25)),
        ("America/New_York", date(2026, 3, 8), date(2026, 11, 1)),
    ],
)
def test_dst_days_are_23_and_25_hours_long(tz: str, spring: date, fall: date) -> None:
    z = ZoneInfo(tz)
    s = all_day(tz, "sun")
    for d, hours in ((spring, 23), (fall, 25)):
        assert d.weekday() == 6
        start, end = at(z, d.year, d.month, d.day), at(z, *(d + timedelta(days=1)).timetuple()[:3])
        assert s.business_seconds_between(start, end) == hours * H
        assert s.add_business_seconds(start, hours * H) == end
        next_sunday = at(z, *(d + timedelta(days=7)).timetuple()[:3])
        assert s.add_business_seconds(start, hours * H + 1) == next_sunday + 1000
    # a zone's 24/7 schedule counts real seconds: 24 h from Saturday noon reads 13:00 / 11:00 on the clock
    z24 = all_day(tz)
    for sunday, hour in ((spring, 13), (fall, 11)):
        sat = sunday - timedelta(days=1)
        due = z24.add_business_seconds(at(z, sat.year, sat.month, sat.day, 12), 24 * H)
        assert local(z, due) == datetime(sunday.year, sunday.month, sunday.day, hour, tzinfo=z)


def test_berlin_spring_forward_night_intervals() -> None:
    # 2026-03-29: 02:00 CET jumps to 03:00 CEST; 02:xx does not exist
    s = Schedule.from_dict({"timezone": "Europe/Berlin", "hours": {"sun": [["01:00", "04:00"]]}})
    assert s.business_seconds_between(at(BERLIN, 2026, 3, 29), at(BERLIN, 2026, 3, 30)) == 2 * H
    gap = Schedule.from_dict(
        {"timezone": "Europe/Berlin",
         "hours": {"sun": [["01:30", "02:30"], ["02:30", "02:45"], ["03:00", "03:30"]]}}
    )
    # 01:30-02:30 = 30 real minutes before the jump; 02:30-02:45 vanishes; 03:00-03:30 is normal
    assert gap.business_seconds_between(at(BERLIN, 2026, 3, 29), at(BERLIN, 2026, 3, 30)) == 3600
    start = at(BERLIN, 2026, 3, 29, 1, 45)
    due = gap.add_business_seconds(start, 20 * 60)
    assert local(BERLIN, due) == datetime(2026, 3, 29, 3, 5, tzinfo=BERLIN)


def test_berlin_fall_back_night_intervals() -> None:
    # 2026-10-25: 03:00 CEST falls back to 02:00 CET; 02:xx happens twice
    s = Schedule.from_dict({"timezone": "Europe/Berlin", "hours": {"sun": [["01:00", "04:00"]]}})
    assert s.business_seconds_between(at(BERLIN, 2026, 10, 25), at(BERLIN, 2026, 10, 26)) == 4 * H
    first = Schedule.from_dict({"timezone": "Europe/Berlin", "hours": {"sun": [["00:00", "02:30"]]}})
    # an ambiguous boundary means its first occurrence (02:30 CEST)
    assert first.business_seconds_between(at(BERLIN, 2026, 10, 25), at(BERLIN, 2026, 10, 26)) == 2.5 * H
    due = first.add_business_seconds(at(BERLIN, 2026, 10, 25), 2.5 * H)
    assert due == at(BERLIN, 2026, 10, 25, 2, 30, fold=0)
    assert due + H * 1000 == at(BERLIN, 2026, 10, 25, 2, 30, fold=1)


def test_new_york_spring_forward_and_fall_back_night_intervals() -> None:
    spring = Schedule.from_dict({"timezone": "America/New_York", "hours": {"sun": [["01:00", "03:00"]]}})
    assert spring.business_seconds_between(at(NEW_YORK, 2026, 3, 8), at(NEW_YORK, 2026, 3, 9)) == 1 * H
    fall = Schedule.from_dict({"timezone": "America/New_York", "hours": {"sun": [["00:00", "03:00"]]}})
    assert fall.business_seconds_between(at(NEW_YORK, 2026, 11, 1), at(NEW_YORK, 2026, 11, 2)) == 4 * H


@pytest.mark.parametrize(
    ("tz", "fri", "mon"),
    [
        ("Europe/Berlin", date(2026, 3, 27), date(2026, 3, 30)),
        ("Europe/Berlin", date(2026, 10, 23), date(2026, 10, 26)),
        ("America/New_York", date(2026, 3, 6), date(2026, 3, 9)),
        ("America/New_York", date(2026, 10, 30), date(2026, 11, 2)),
    ],
)
def test_office_hours_across_a_dst_weekend_follow_local_time(tz: str, fri: date, mon: date) -> None:
    z = ZoneInfo(tz)
    s = office(tz)
    start = at(z, fri.year, fri.month, fri.day, 16)
    due = s.add_business_seconds(start, 2 * H)
    assert local(z, due) == datetime(mon.year, mon.month, mon.day, 10, tzinfo=z)
    assert s.business_seconds_between(start, due) == 2 * H
    # the wall time in between is 2 days 18 h +/- the hour the clocks moved
    wall_h = (due - start) / 1000 / H
    assert wall_h in (65.0, 67.0)


# --- parsing ---------------------------------------------------------------------------------


def test_from_dict_accepts_ranges_comments_and_24_00() -> None:
    s = Schedule.from_dict(
        {"_comment": "x", "timezone": "Asia/Kolkata", "hours": {"_note": 1, "mon-wed": [["22:00", "24:00"]],
                                                                 "sun": [["00:00", "00:30"]]}},
        "night",
    )
    assert s.name == "night" and s.timezone == "Asia/Kolkata"
    kol = ZoneInfo("Asia/Kolkata")
    assert s.business_seconds_between(at(kol, 2026, 3, 16), at(kol, 2026, 3, 23)) == 3 * 2 * H + 1800


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ([], "must be an object"),
        ({"timezone": "Mars/Olympus"}, "unknown time zone"),
        ({"timezone": ""}, "IANA"),
        ({"tz": "UTC"}, "unknown field"),
        ({"hours": []}, "hours must be an object"),
        ({"hours": {}}, "never open"),
        ({"hours": {"mon": []}}, "never open"),
        ({"hours": {"monday": [["09:00", "17:00"]]}}, "day key"),
        ({"hours": {"fri-mon": [["09:00", "17:00"]]}}, "day key"),
        ({"hours": {"mon": [["9:00", "17:00"]]}}, "HH:MM"),
        ({"hours": {"mon": [["09:00", "25:00"]]}}, "between 00:00 and 24:00"),
        ({"hours": {"mon": [["09:00", "24:30"]]}}, "between 00:00 and 24:00"),
        ({"hours": {"mon": [["09:60", "10:00"]]}}, "between 00:00 and 24:00"),
        ({"hours": {"mon": [["17:00", "09:00"]]}}, "must end after it starts"),
        ({"hours": {"mon": [["09:00", "09:00"]]}}, "must end after it starts"),
        ({"hours": {"mon": [["09:00", "12:00"], ["11:00", "13:00"]]}}, "overlap"),
        ({"hours": {"mon": [["09:00"]]}}, "pair"),
        ({"hours": {"mon": "09:00-17:00"}}, "list"),
        ({"hours": {"mon-fri": [["09:00", "17:00"]], "fri": [["09:00", "12:00"]]}}, "more than once"),
        ({"holidays": "2026-12-25"}, "holidays must be a list"),
        ({"holidays": ["25.12.2026"]}, "YYYY-MM-DD"),
        ({"holidays": ["2026-02-30"]}, "YYYY-MM-DD"),
    ],
)
def test_from_dict_rejects_bad_input_with_a_clear_message(spec: object, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Schedule.from_dict(spec, "s")  # type: ignore[arg-type]


# --- properties --------------------------------------------------------------------------------

ZONES = ("Europe/Berlin", "America/New_York", "Australia/Sydney", "Asia/Kolkata", "UTC")
# dates around DST changes of those zones, so the properties see them often
TRANSITIONS = (
    date(2026, 3, 8), date(2026, 3, 29), date(2026, 4, 5),
    date(2026, 10, 4), date(2026, 10, 25), date(2026, 11, 1),
)
T0 = at(ZoneInfo("UTC"), 2025, 12, 1)
T1 = at(ZoneInfo("UTC"), 2027, 2, 1)
MIN = 60_000
Week = dict[int, list[tuple[int, int]]]


def _grid(safe: bool) -> list[int]:
    """Interval boundaries on a 30-minute grid; ``safe`` avoids the (01:00, 03:00) band where
    clocks repeat in these zones (the oracle below reads clocks, the schedule takes first occurrences)."""
    pts = list(range(0, DAY_S + 1, 1800))
    return [p for p in pts if not 3600 < p < 3 * 3600] if safe else pts


@st.composite
def schedules(draw: st.DrawFn, safe: bool = False) -> tuple[Schedule, Week, set[date]]:
    tz = draw(st.sampled_from(ZONES))
    grid = _grid(safe)
    week: dict[int, list[tuple[int, int]]] = {}
    for wd in range(7):
        pts = sorted(draw(st.sets(st.sampled_from(grid), max_size=6)))
        ivs = [(pts[i], pts[i + 1]) for i in range(0, len(pts) - 1, 2)]
        if ivs:
            week[wd] = ivs
    if not week:
        week[draw(st.integers(0, 6))] = [(9 * 3600, 17 * 3600)]
    near = [t + timedelta(days=k) for t in TRANSITIONS for k in (-1, 0, 1)]
    holidays = set(draw(st.lists(st.sampled_from(near), max_size=3)))
    return Schedule(tz, week, holidays), week, holidays


instants = st.one_of(
    st.integers(T0, T1),
    st.builds(
        lambda d, off: at(ZoneInfo("UTC"), d.year, d.month, d.day) + off,
        st.sampled_from(TRANSITIONS), st.integers(-4 * DAY_S * 1000, 4 * DAY_S * 1000),
    ),
)
durations = st.one_of(st.integers(0, 20 * DAY_S * 1000).map(lambda ms: ms / 1000), st.floats(0, 7 * DAY_S))
FAST = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@FAST
@given(schedules(), instants, durations)
def test_between_of_add_is_the_target_and_add_is_earliest(
    sched: tuple[Schedule, object, object], start: int, x: float
) -> None:
    s = sched[0]
    due = s.add_business_seconds(start, x)
    want_ms = round(x * 1000)
    assert due >= start
    assert s.business_ms_between(start, due) == want_ms
    assert abs(s.business_seconds_between(start, due) - x) <= 0.0005 + 1e-9
    if want_ms > 0:
        assert s.business_ms_between(start, due - 1) == want_ms - 1  # not a millisecond earlier
        assert s.is_open(due - 1)


@FAST
@given(schedules(), instants, durations, durations)
def test_add_is_monotonic_in_target_and_start(
    sched: tuple[Schedule, object, object], start: int, x1: float, x2: float
) -> None:
    s = sched[0]
    lo, hi = sorted((x1, x2))
    assert s.add_business_seconds(start, lo) <= s.add_business_seconds(start, hi)
    later = start + int(hi * 1000) // 3
    assert s.add_business_seconds(start, lo) <= s.add_business_seconds(later, lo)


@FAST
@given(schedules(), instants, st.integers(0, 9 * DAY_S * 1000), st.integers(0, 9 * DAY_S * 1000))
def test_between_is_monotonic_additive_and_bounded(
    sched: tuple[Schedule, object, object], a: int, d1: int, d2: int
) -> None:
    s = sched[0]
    b, c = a + min(d1, d2), a + max(d1, d2)
    ab, bc, ac = s.business_ms_between(a, b), s.business_ms_between(b, c), s.business_ms_between(a, c)
    assert 0 <= ab <= ac
    assert ab + bc == ac
    assert ac <= c - a


def _oracle_open(tz: ZoneInfo, week: Week, holidays: set[date], ms: int) -> bool:
    """Read the local clock at an instant (the opposite direction from the implementation)."""
    t = datetime.fromtimestamp(ms / 1000, tz)
    if t.date() in holidays:
        return False
    sec = t.hour * 3600 + t.minute * 60 + t.second
    return any(s <= sec < e for s, e in week.get(t.weekday(), ()))


@settings(max_examples=60, deadline=None)
@given(schedules(safe=True), instants, st.integers(0, 4 * 24 * 60))
def test_between_matches_a_minute_by_minute_clock_reading_oracle(
    sched: tuple[Schedule, Week, set[date]], start: int, minutes: int
) -> None:
    s, week, holidays = sched
    tz = ZoneInfo(s.timezone)
    a = start - start % MIN
    b = a + minutes * MIN
    open_minutes = sum(_oracle_open(tz, week, holidays, a + i * MIN) for i in range(minutes))
    assert s.business_ms_between(a, b) == open_minutes * MIN
    assert s.is_open(a) == _oracle_open(tz, week, holidays, a)
