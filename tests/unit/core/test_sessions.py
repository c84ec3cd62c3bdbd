"""Sessionizer: gaps and the exact boundary, lateness, bridging, person merges, ordering, rebuild."""

from __future__ import annotations

import copy as copy_module
from hashlib import blake2b
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from streams.core.model import Touchpoint
from streams.core.sessions import Assignment, SessionConfig, Sessionizer, session_id_for
from streams.core.state import MemoryStore

T = "acme"
MIN = 60_000
GAP = 30 * MIN


def tp(
    event_id: str,
    at: int,
    channel: str = "web",
    tenant: str = T,
    campaign: str | None = None,
    page: str | None = None,
) -> Touchpoint:
    return Touchpoint(
        event_id=event_id,
        tenant_id=tenant,
        occurred_at=at,
        channel=channel,
        type="page_view",
        identities={"anonymous_id": "a"},
        campaign=None if campaign is None else {"name": campaign},
        page=None if page is None else {"url": page},
    )


def new(config: SessionConfig | None = None) -> tuple[Sessionizer, MemoryStore]:
    store = MemoryStore("sessions")
    return Sessionizer(store, config), store


def spans(records: list[dict[str, Any]]) -> list[tuple[int, int, int]]:
    return [(r["started_at"], r["ended_at"], r["touchpoints"]) for r in records]


def test_session_id_and_seq() -> None:
    s, _ = new()
    a = s.observe(tp("e1", 0), "p1", None)
    expected = "s_" + blake2b(b"p1|e1|0", digest_size=8).hexdigest()
    assert a == Assignment(expected, 1, False) and expected == session_id_for("p1", "e1", 0)
    assert s.observe(tp("e2", 5 * MIN), "p1", None) == Assignment(expected, 2, False)
    assert s.observe(tp("e3", 1 * MIN), "p1", None) == Assignment(expected, 3, False)  # arrival index


def test_gap_splits_and_exact_inactivity_stays_in_the_session() -> None:
    s, _ = new()
    a = s.observe(tp("e1", 0), "p", None)
    b = s.observe(tp("e2", GAP), "p", None)  # exactly the inactivity: same session
    c = s.observe(tp("e3", 2 * GAP + 1), "p", None)  # one ms more: new session
    assert a.session_id == b.session_id != c.session_id
    assert s.open_sessions() == 2
    assert spans(s.close_all()) == [(0, GAP, 2), (2 * GAP + 1, 2 * GAP + 1, 1)]


def test_advance_closes_when_end_plus_inactivity_reaches_the_watermark() -> None:
    s, _ = new()
    s.observe(tp("e1", 1_000), "p", None)
    assert s.advance(T, 1_000 + GAP - 1) == []
    out = s.advance(T, 1_000 + GAP)
    assert spans(out) == [(1_000, 1_000, 1)]
    assert s.open_sessions() == 0 and s.advance(T, 10 * GAP) == []


def test_record_fields() -> None:
    s, _ = new()
    s.observe(tp("e2", 2 * MIN, "email", campaign="spring", page=None), "p", "interaction")
    s.observe(tp("e1", 1 * MIN, "ads", campaign="brand", page="https://x.io/a"), "p", "click")
    s.observe(tp("e3", 3 * MIN, "web", page="https://x.io/form"), "p", "lead")
    s.observe(tp("e4", 4 * MIN, "web"), "p", "visit")
    s.observe(tp("e0", 4 * MIN, "web"), "p", None)  # ties in event time: larger event id is later
    (rec,) = s.advance(T, 10 * GAP)
    assert rec == {
        "session_id": session_id_for("p", "e2", 2 * MIN),  # first by arrival, not by event time
        "tenant_id": T,
        "person_id": "p",
        "started_at": 1 * MIN,
        "ended_at": 4 * MIN,
        "touchpoints": 5,
        "channels": ["ads", "email", "web"],
        "first_touch": {"channel": "ads", "campaign": "brand", "page": "https://x.io/a"},
        "last_touch": {"channel": "web", "campaign": None, "page": None},
        "max_stage": "lead",
        "converted": True,
        "merged_session_ids": [],
        "late_events": 0,
    }


def test_unconverted_session_without_stages() -> None:
    s, _ = new()
    s.observe(tp("e1", 0), "p", None)
    (rec,) = s.close_all()
    assert rec["max_stage"] is None and rec["converted"] is False


def test_late_event_within_lateness_bridges_two_open_sessions() -> None:
    s, _ = new()
    first = s.observe(tp("e1", 0), "p", "visit").session_id
    second = s.observe(tp("e2", 50 * MIN, "email"), "p", "lead").session_id
    assert first != second and s.open_sessions() == 2
    bridge = s.observe(tp("e3", 25 * MIN), "p", None)
    assert bridge == Assignment(first, 3, False)  # the earlier session's id survives
    assert s.open_sessions() == 1
    assert s.observe(tp("e4", 51 * MIN), "p", None) == Assignment(first, 4, False)
    (rec,) = s.close_all()
    assert rec["session_id"] == first and rec["merged_session_ids"] == [second]
    assert (rec["started_at"], rec["ended_at"], rec["touchpoints"]) == (0, 51 * MIN, 4)
    assert rec["max_stage"] == "lead" and rec["channels"] == ["email", "web"]


def test_late_event_within_lateness_extends_the_start_and_first_touch() -> None:
    s, _ = new()
    sid = s.observe(tp("e1", 40 * MIN, "web"), "p", None).session_id
    assert s.observe(tp("e0", 15 * MIN, "ads", campaign="c"), "p", None) == Assignment(sid, 2, False)
    (rec,) = s.close_all()
    assert rec["started_at"] == 15 * MIN and rec["first_touch"]["channel"] == "ads"


def test_late_event_that_does_not_fit_any_open_session_starts_its_own() -> None:
    s, _ = new()
    later = s.observe(tp("e1", 100 * MIN), "p", None).session_id
    earlier = s.observe(tp("e2", 10 * MIN), "p", None).session_id  # no advance yet: not too late
    assert earlier != later
    assert spans(s.close_all()) == [(10 * MIN, 10 * MIN, 1), (100 * MIN, 100 * MIN, 1)]


def test_too_late_event_goes_to_the_latest_open_session_without_moving_its_bounds() -> None:
    s, _ = new()
    s.observe(tp("e1", 0), "p", None)
    open_id = s.observe(tp("e2", 100 * MIN), "p", None).session_id
    closed = s.advance(T, 95 * MIN)
    assert spans(closed) == [(0, 0, 1)]
    a = s.observe(tp("late", 10 * MIN, "email"), "p", "lead")  # its session is gone: too late
    assert a == Assignment(open_id, 2, True)
    (rec,) = s.close_all()
    assert (rec["started_at"], rec["ended_at"], rec["touchpoints"], rec["late_events"]) == (
        100 * MIN,
        100 * MIN,
        2,
        1,
    )
    assert rec["first_touch"]["channel"] == "web" and rec["channels"] == ["email", "web"]
    assert rec["max_stage"] == "lead" and rec["converted"]


def test_event_exactly_at_the_watermark_is_late() -> None:
    s, _ = new()
    s.observe(tp("e1", 0), "p", None)
    assert len(s.advance(T, GAP)) == 1  # closed: an event at GAP would have joined it
    assert s.observe(tp("e2", GAP), "p", None).late
    assert not s.observe(tp("e3", GAP + 1), "p", None).late


def test_too_late_event_without_open_session_starts_a_new_late_session() -> None:
    s, _ = new()
    s.observe(tp("e1", 0), "p", None)
    s.advance(T, 200 * MIN)
    a = s.observe(tp("e2", 5 * MIN), "p", None)
    assert a.late and a.session_id == session_id_for("p", "e2", 5 * MIN)
    (rec,) = s.advance(T, 200 * MIN)  # already due: closes at the next advance
    assert rec["late_events"] == 1 and rec["touchpoints"] == 1


def test_too_late_event_that_still_fits_an_open_session_joins_it_flagged_late() -> None:
    s, _ = new()
    sid = s.observe(tp("e1", 60 * MIN), "p", None).session_id
    s.advance(T, 50 * MIN)
    a = s.observe(tp("e2", 40 * MIN), "p", None)
    assert a == Assignment(sid, 2, True)
    (rec,) = s.close_all()
    assert rec["started_at"] == 40 * MIN and rec["late_events"] == 1


def test_watermark_never_moves_back() -> None:
    s, store = new()
    s.advance(T, 100 * MIN)
    s.advance(T, 50 * MIN)
    assert store.get(f"{T}|w") == 100 * MIN
    assert s.observe(tp("e1", 70 * MIN), "p", None).late


def test_merge_persons_joins_overlapping_and_adjacent_sessions() -> None:
    s, store = new()
    a1 = s.observe(tp("a1", 0), "pa", None).session_id
    s.observe(tp("a2", 10 * MIN), "pa", "visit")
    b1 = s.observe(tp("b1", 5 * MIN, "whatsapp"), "pb", "lead").session_id  # overlaps a's session
    b2 = s.observe(tp("b2", 40 * MIN), "pb", None).session_id  # pb: apart from b1, within gap of a's
    far = s.observe(tp("b3", 200 * MIN), "pb", None).session_id  # stays apart
    assert len({a1, b1, b2, far}) == 4 and s.open_sessions() == 4
    s.merge_persons(T, "pb", "pa")
    assert s.open_sessions() == 2
    assert f"{T}|p|pb" not in store
    assert s.observe(tp("a3", 41 * MIN), "pa", None) == Assignment(a1, 5, False)
    out = s.close_all()
    assert [(r["session_id"], r["person_id"]) for r in out] == [(a1, "pa"), (far, "pa")]
    assert out[0]["merged_session_ids"] == sorted([b1, b2])
    assert (out[0]["started_at"], out[0]["ended_at"], out[0]["touchpoints"]) == (0, 41 * MIN, 5)
    assert out[0]["max_stage"] == "lead" and out[0]["channels"] == ["web", "whatsapp"]


def test_merge_into_a_person_without_sessions_moves_them_and_keeps_expiry() -> None:
    s, _ = new()
    sid = s.observe(tp("b1", 0), "pb", None).session_id
    s.merge_persons(T, "pb", "pa")
    s.merge_persons(T, "unknown", "pa")  # no-op
    s.merge_persons(T, "pa", "pa")  # no-op
    out = s.advance(T, GAP)
    assert [(r["session_id"], r["person_id"]) for r in out] == [(sid, "pa")]
    assert s.open_sessions() == 0


def test_merge_earlier_session_keeps_its_id_even_when_moving() -> None:
    s, _ = new()
    later = s.observe(tp("a1", 20 * MIN), "pa", None).session_id
    earlier = s.observe(tp("b1", 0), "pb", None).session_id
    s.merge_persons(T, "pb", "pa")
    (rec,) = s.close_all()
    assert rec["session_id"] == earlier and rec["merged_session_ids"] == [later] and rec["person_id"] == "pa"


def test_advance_is_per_tenant_and_ordered_by_end() -> None:
    s, _ = new()
    s.observe(tp("x1", 10 * MIN, tenant="t2"), "p", None)
    s.observe(tp("e1", 5 * MIN), "p2", None)
    s.observe(tp("e2", 0), "p3", None)
    s.observe(tp("e3", 5 * MIN), "p1", None)
    s.observe(tp("e4", 100 * MIN), "p1", None)
    out = s.advance(T, 90 * MIN)
    tie = sorted([(session_id_for("p1", "e3", 5 * MIN), "p1"), (session_id_for("p2", "e1", 5 * MIN), "p2")])
    assert [(r["person_id"], r["ended_at"]) for r in out] == [("p3", 0)] + [(p, 5 * MIN) for _, p in tie]
    assert s.open_sessions() == 2  # t2 untouched, p1's later session open
    rest = s.close_all()
    assert [(r["tenant_id"], r["person_id"]) for r in rest] == [(T, "p1"), ("t2", "p")]
    assert s.open_sessions() == 0 and s.close_all() == []


def test_only_changed_person_keys_are_written() -> None:
    s, store = new()
    s.observe(tp("e1", 0), "p1", None)
    s.observe(tp("e2", 0), "p2", None)
    store.drain_dirty()
    s.observe(tp("e3", 1), "p1", None)
    assert [k for k, _ in store.drain_dirty()] == [f"{T}|p|p1"]
    s.advance(T, GAP)
    assert sorted(k for k, _ in store.drain_dirty()) == [f"{T}|p|p2", f"{T}|w"]


def test_expiry_index_stays_one_entry_per_person() -> None:
    s, _ = new()
    for n in range(500):
        s.observe(tp(f"e{n}", n * MIN), "p", None)  # one long session, extended 500 times
    assert sum(len(h) for h in s._heaps.values()) == 1
    assert s.advance(T, 498 * MIN) == [] and sum(len(h) for h in s._heaps.values()) == 1


def _feed(s: Sessionizer, items: list[tuple[str, str, int]]) -> list[Any]:
    out: list[Any] = []
    for n, (person, tenant, at) in enumerate(items):
        out.append(s.observe(tp(f"e{n}", at, tenant=tenant), person, "visit" if n % 3 else None))
        if n % 4 == 3:
            out.append(s.advance(tenant, at - 20 * MIN))
        if n == 6:
            s.merge_persons(T, "p2", "p1")
    return out


def test_rebuild_from_a_copied_store_gives_the_same_results() -> None:
    first = [
        ("p1", T, 0),
        ("p2", T, 10 * MIN),
        ("p1", "t2", 5 * MIN),
        ("p3", T, 20 * MIN),
        ("p2", T, 45 * MIN),
        ("p1", T, 100 * MIN),
        ("p3", T, 21 * MIN),
        ("p1", T, 130 * MIN),
    ]
    second = [
        ("p1", T, 140 * MIN),
        ("p3", T, 200 * MIN),
        ("p1", "t2", 300 * MIN),
        ("p1", T, 15 * MIN),
        ("p2", T, 250 * MIN),
        ("p3", T, 400 * MIN),
    ]
    live, store = new()
    _feed(live, first)
    copy = MemoryStore("sessions")
    for k, v in store.items():
        copy.load(k, copy_module.deepcopy(v))
    recovered = Sessionizer(copy)
    assert recovered.open_sessions() == live.open_sessions()
    assert _feed(recovered, second) == _feed(live, second)
    assert recovered.advance(T, 260 * MIN) == live.advance(T, 260 * MIN)
    assert recovered.close_all() == live.close_all()
    # rebuild() on the live instance is idempotent too
    live2, _ = new()
    _feed(live2, first)
    live2.rebuild()
    live3, _ = new()
    _feed(live3, first)
    assert _feed(live2, second) == _feed(live3, second) and live2.close_all() == live3.close_all()


# --- properties ------------------------------------------------------------------------------

SMALL = SessionConfig(inactivity_ms=100, allowed_lateness_ms=20)
times = st.lists(st.integers(min_value=0, max_value=3_000), min_size=1, max_size=40)


def expected_split(ts: list[int], gap: int) -> list[tuple[int, int, int]]:
    ts = sorted(ts)
    out = [[ts[0], ts[0], 1]]
    for t in ts[1:]:
        if t - out[-1][1] > gap:
            out.append([t, t, 1])
        else:
            out[-1][1] = t
            out[-1][2] += 1
    return [tuple(x) for x in out]  # type: ignore[misc]


def run(order: list[tuple[int, int]], with_watermark: bool) -> list[tuple[int, int, int]]:
    """Deliver (time, id) pairs; optionally advance like the pipeline (max seen − lateness)."""
    s = Sessionizer(MemoryStore(), SMALL)
    closed: list[dict[str, Any]] = []
    max_seen = None
    for at, n in order:
        a = s.observe(tp(f"e{n}", at), "p", None)
        assert not a.late
        max_seen = at if max_seen is None else max(max_seen, at)
        if with_watermark:
            closed.extend(s.advance(T, max_seen - SMALL.allowed_lateness_ms))
    closed.extend(s.close_all())
    return sorted(spans(closed))


@settings(max_examples=200, deadline=None)
@given(ts=times, with_watermark=st.booleans())
def test_in_order_delivery_splits_at_gaps_above_inactivity(ts: list[int], with_watermark: bool) -> None:
    ordered = sorted((t, n) for n, t in enumerate(ts))
    assert run(ordered, with_watermark) == expected_split(ts, SMALL.inactivity_ms)


@settings(max_examples=200, deadline=None)
@given(
    ts_jitter=st.lists(
        st.tuples(
            st.integers(min_value=0, max_value=3_000),
            st.integers(min_value=0, max_value=SMALL.allowed_lateness_ms - 1),
        ),
        min_size=1,
        max_size=40,
    ),
    with_watermark=st.booleans(),
)
def test_shuffled_delivery_within_lateness_gives_the_in_order_sessions(
    ts_jitter: list[tuple[int, int]], with_watermark: bool
) -> None:
    # Delivery order sorted by t + jitter with jitter < lateness: every event arrives less than the
    # allowed lateness behind the max seen so far, like a real out-of-order source within bounds.
    events = [(t, n) for n, (t, _) in enumerate(ts_jitter)]
    delivery = [events[i] for i in sorted(range(len(events)), key=lambda i: (sum(ts_jitter[i]), i))]
    expected = run(sorted(events), with_watermark=False)
    assert (
        run(delivery, with_watermark)
        == expected
        == expected_split([t for t, _ in events], SMALL.inactivity_ms)
    )


@settings(max_examples=100, deadline=None)
@given(
    a=st.lists(st.integers(min_value=0, max_value=2_000), min_size=1, max_size=15),
    b=st.lists(st.integers(min_value=0, max_value=2_000), min_size=1, max_size=15),
)
def test_merging_persons_equals_having_been_one_person(a: list[int], b: list[int]) -> None:
    s = Sessionizer(MemoryStore(), SMALL)
    for n, t in enumerate(a):
        s.observe(tp(f"a{n}", t), "pa", None)
    for n, t in enumerate(b):
        s.observe(tp(f"b{n}", t), "pb", None)
    s.merge_persons(T, "pb", "pa")
    out = s.close_all()
    assert {r["person_id"] for r in out} == {"pa"}
    assert sorted(spans(out)) == expected_split(a + b, SMALL.inactivity_ms)
    assert s.open_sessions() == 0
