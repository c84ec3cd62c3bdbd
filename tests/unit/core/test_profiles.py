"""Person profiles: the lifecycle, the counts, tags, and merges that count nothing twice.

Properties (hypothesis): a profile does not depend on the order its events arrive in (tags with
count windows aside, documented); two persons' profiles folded by a merge equal the profile of
one person who had all the events; a replay gives identical records."""

from __future__ import annotations

from typing import Any

import orjson
from hypothesis import given, settings
from hypothesis import strategies as st

from streams.core.contract import Rejection, validate
from streams.core.model import Touchpoint
from streams.core.pipeline import Pipeline, PipelineConfig
from streams.core.profiles import ProfileConfig, Profiles
from streams.core.stages import DEFAULT_STAGE_OF_TYPE
from streams.core.state import MemoryStore
from streams.core.tagrules import parse_rules

T0 = 1_767_225_600_000
H = 3_600_000


def tp(n: int, etype: str = "page_view", t: int = T0, channel: str = "web", campaign: str | None = None,
       ids: dict[str, str] | None = None, tenant: str = "acme") -> Touchpoint:
    return Touchpoint(
        event_id=f"e{n}", tenant_id=tenant, occurred_at=t, channel=channel, type=etype,
        identities=ids or {"anonymous_id": "a"}, campaign=None if campaign is None else {"name": campaign},
    )


def observe(p: Profiles, ev: Touchpoint, person: str = "p_1", deal: tuple[int, str] | None = None) -> None:
    stage = DEFAULT_STAGE_OF_TYPE.get(ev.type)
    if deal is None:
        p.observe(ev, person, stage)
    else:
        p.observe(ev, person, stage, 1, ((deal[1], deal[0]),))


def essence(rec: dict[str, Any]) -> dict[str, Any]:
    """What must not depend on arrival order or on how the events were split between persons."""
    return {k: v for k, v in rec.items() if k not in ("version", "updated_at", "person_id")}


def test_a_journey_from_anonymous_to_customer() -> None:
    p = Profiles(MemoryStore())
    observe(p, tp(1, "ad_click", T0, "ads", "spring"))
    observe(p, tp(2, "page_view", T0 + 1000, campaign="spring"))
    (rec,) = p.flush()
    assert rec["lifecycle_stage"] == "anonymous" and rec["version"] == 2 and rec["events"] == 2
    observe(p, tp(3, "form_submit", T0 + H, ids={"anonymous_id": "a", "email": "x@example.com"}))
    observe(p, tp(4, "lead", T0 + 2 * H, "phone", ids={"email": "x@example.com", "crm_contact_id": "c"}))
    observe(p, tp(5, "deal_won", T0 + 3 * H, "phone", ids={"crm_contact_id": "c"}), deal=(12_345, "EUR"))
    observe(p, tp(6, "page_view", T0 - H))  # late: moves first_seen, not the stage
    (rec,) = p.flush()
    assert rec == p.get("acme", "p_1")
    assert rec["lifecycle_stage"] == "customer" and rec["lifecycle_stage_at"] == T0 + 3 * H
    assert (rec["first_seen"], rec["last_seen"], rec["events"]) == (T0 - H, T0 + 3 * H, 6)
    assert rec["channels"] == ["ads", "phone", "web"]
    assert rec["funnel_stages"] == {"click": 1, "visit": 2, "interaction": 1, "lead": 1, "deal": 1}
    assert list(rec["funnel_stages"]) == ["click", "visit", "interaction", "lead", "deal"]  # funnel order
    assert rec["campaigns"] == ["spring"] and rec["campaigns_truncated"] is False
    assert (rec["deals_won"], rec["revenue_minor"]) == (1, {"EUR": 12_345})
    assert rec["identifier_types"] == ["crm_contact_id", "email", "anonymous_id"]
    assert rec["version"] == 6 and rec["status"] == "active" and rec["merged_into"] is None
    assert p.flush() == []  # nothing changed since


def test_stage_at_is_the_earliest_event_of_the_reached_stage() -> None:
    p = Profiles(MemoryStore())
    observe(p, tp(1, "page_view", T0 + 5 * H, ids={"email": "x@y.z"}))
    observe(p, tp(2, "page_view", T0 + 2 * H, ids={"email": "x@y.z"}))  # late, same stage: earlier
    observe(p, tp(3, "page_view", T0))  # earlier, but anonymous: no change
    assert p.get("acme", "p_1")["lifecycle_stage_at"] == T0 + 2 * H  # type: ignore[index]


def test_campaigns_beyond_the_cap_are_summed_not_named() -> None:
    p = Profiles(MemoryStore(), ProfileConfig(max_campaigns=2))
    for i, name in enumerate(("a", "b", "c", "a", "d")):
        observe(p, tp(i, campaign=name))
    rec = p.get("acme", "p_1")
    assert rec is not None and rec["campaigns"] == ["a", "b"] and rec["campaigns_truncated"] is True


def test_merge_folds_tombstones_and_versions() -> None:
    p = Profiles(MemoryStore())
    observe(p, tp(1, "page_view", T0, campaign="x"), "p_b")
    observe(p, tp(2, "page_view", T0 + 1, campaign="x"), "p_b")
    observe(p, tp(3, "lead", T0 + H, "phone", ids={"email": "e@x.y"}), "p_a")
    p.flush()
    p.merge("acme", "p_b", "p_a", T0 + 2 * H)
    loser, winner = p.flush()
    assert loser == {"tenant_id": "acme", "person_id": "p_b", "version": 3, "status": "merged",
                     "merged_into": "p_a", "updated_at": T0 + 2 * H}
    assert winner["person_id"] == "p_a" and winner["version"] == 3  # above both sides' (2 and 1)
    assert winner["events"] == 3 and winner["campaigns"] == ["x"] and winner["first_seen"] == T0
    assert winner["lifecycle_stage"] == "lead" and winner["updated_at"] == T0 + 2 * H
    assert p.get("acme", "p_b") is None
    p.merge("acme", "p_b", "p_a", T0 + 3 * H)  # already gone: nothing happens
    p.merge("acme", "p_a", "p_a", T0 + 3 * H)
    assert p.flush() == []


def test_changed_then_merged_away_in_one_drain_is_only_the_tombstone() -> None:
    p = Profiles(MemoryStore())
    observe(p, tp(1), "p_b")
    observe(p, tp(2), "p_a")
    p.merge("acme", "p_b", "p_a", T0)
    recs = p.flush()
    assert [(r["person_id"], r["status"]) for r in recs] == [("p_b", "merged"), ("p_a", "active")]


def test_tags_from_the_tenants_rules_and_on_merge() -> None:
    rules = parse_rules('tag hot when 2 or more page_view where url contains "/pricing" within 1d expires after 2d\n'
                        "tag omni when channel whatsapp and channel web\n"
                        "tag vip when revenue >= 100\n")
    p = Profiles(MemoryStore(), ProfileConfig(rules={"acme": rules}))

    def view(n: int, t: int, person: str, url: str = "https://x/pricing") -> Touchpoint:
        ev = tp(n, t=t)
        ev.page = {"url": url}
        return ev

    observe(p, view(1, T0, "p_a"), "p_a")
    observe(p, view(2, T0 + H, "p_b"), "p_b")
    assert p.get("acme", "p_a")["tags"] == []  # type: ignore[index]
    observe(p, tp(3, "message_in", T0 + 2 * H, "whatsapp"), "p_b")
    p.merge("acme", "p_a", "p_b", T0 + 3 * H)  # together: 2 pricing views in a day
    rec = p.get("acme", "p_b")
    assert rec is not None
    assert rec["tags"] == [{"tag": "hot", "since": T0 + 3 * H, "expires_at": T0 + 51 * H},
                           {"tag": "omni", "since": T0 + 2 * H, "expires_at": None}]  # p_b alone had both
    observe(p, tp(4, "deal_won", T0 + 60 * H, "phone"), "p_b", deal=(10_000, "EUR"))
    tags = {t["tag"]: t for t in p.get("acme", "p_b")["tags"]}  # type: ignore[index]
    assert set(tags) == {"omni", "vip"}  # hot expired at T0 + 51h
    other = Profiles(MemoryStore(), ProfileConfig(rules={"acme": rules}))
    observe(other, view(5, T0, "p_c"), "p_c", )
    assert other.get("acme", "p_c")["tags"] == []  # type: ignore[index]
    observe(other, tp(6, t=T0, tenant="globex"), "p_c")  # another tenant: no rules, no tags, own profile
    assert other.get("globex", "p_c")["tags"] == []  # type: ignore[index]


# ------------------------------------------------------------------------------------ properties

TYPES = ("ad_impression", "ad_click", "page_view", "message_in", "form_submit", "lead", "opportunity", "identify")
events_st = st.lists(
    st.tuples(st.sampled_from(TYPES), st.integers(0, 10 * H), st.sampled_from(("web", "ads", "whatsapp", "phone")),
              st.sampled_from((None, "spring", "summer", "winter")), st.sampled_from(("anonymous_id", "email")),
              st.booleans(), st.integers(0, 5000)),
    min_size=1, max_size=25,
)


def build(spec: list[tuple[Any, ...]]) -> list[tuple[Touchpoint, bool, int]]:
    out = []
    for n, (etype, dt, ch, camp, id_type, side, value) in enumerate(spec):
        out.append((tp(n, etype, T0 + dt, ch, camp, {id_type: f"v{n}"}), side, value))
    return out


def feed(p: Profiles, events: list[tuple[Touchpoint, bool, int]], person: str | None = None) -> None:
    for ev, side, value in events:
        deal = (value, "EUR") if ev.type == "opportunity" else None  # deal effects ride along on some events
        observe(p, ev, person or ("p_a" if side else "p_b"), deal)


@settings(max_examples=200, deadline=None)
@given(events_st, st.randoms(use_true_random=False))
def test_order_of_arrival_does_not_change_the_profile(spec: list[tuple[Any, ...]], rnd: Any) -> None:
    events = build(spec)
    a, b = Profiles(MemoryStore()), Profiles(MemoryStore())
    feed(a, events, "p_1")
    shuffled = list(events)
    rnd.shuffle(shuffled)
    feed(b, shuffled, "p_1")
    ra, rb = a.get("acme", "p_1"), b.get("acme", "p_1")
    assert ra is not None and rb is not None
    assert essence(ra) == essence(rb)
    assert ra["version"] == rb["version"] == len(events)


@settings(max_examples=200, deadline=None)
@given(events_st)
def test_a_merge_counts_nothing_twice(spec: list[tuple[Any, ...]]) -> None:
    """Events split between two persons, then merged == all events on one person."""
    events = build(spec)
    split, whole = Profiles(MemoryStore()), Profiles(MemoryStore())
    feed(split, events)
    split.merge("acme", "p_b", "p_a", T0 + 11 * H)
    feed(whole, events, "p_a")
    merged, single = split.get("acme", "p_a"), whole.get("acme", "p_a")
    assert merged is not None and single is not None
    assert essence(merged) == essence(single)
    assert split.get("acme", "p_b") is None
    sides = (sum(1 for _, s, _ in events if s), sum(1 for _, s, _ in events if not s))
    if all(sides):  # (with one side empty there is nothing to fold)
        assert merged["version"] > max(sides)


def test_the_pipeline_folds_profiles_on_identity_merges_and_replays_identically() -> None:
    raw = [
        {"event_id": "1", "occurred_at": "2026-01-01T00:00:00Z", "channel": "ads", "type": "ad_click",
         "identities": {"anonymous_id": "d1"}, "campaign": {"name": "spring"}},
        {"event_id": "2", "occurred_at": "2026-01-01T00:00:05Z", "channel": "web", "type": "page_view",
         "identities": {"anonymous_id": "d1"}, "campaign": {"name": "spring"}},
        {"event_id": "3", "occurred_at": "2026-01-01T01:00:00Z", "channel": "web", "type": "page_view",
         "identities": {"anonymous_id": "d2", "user_id": "u"}},
        {"event_id": "4", "occurred_at": "2026-01-01T02:00:00Z", "channel": "web", "type": "identify",
         "identities": {"anonymous_id": "d1", "user_id": "u"}},
        {"event_id": "5", "occurred_at": "2026-01-01T02:00:01Z", "channel": "web", "type": "page_view",
         "identities": {"anonymous_id": "null"}},
    ]

    def replay() -> list[dict[str, Any]]:
        p = Pipeline(PipelineConfig())
        out: list[dict[str, Any]] = []
        for r in raw:
            ev = validate(orjson.dumps({"tenant_id": "acme", **r}))
            assert not isinstance(ev, Rejection)
            p.process(ev)
            o = p.drain()
            out.extend(o.profiles)
            assert o.unprofiled == (r["event_id"] == "5")  # all identifiers junk: no person, no profile
        return out

    recs = replay()
    assert recs == replay()
    merged = [r for r in recs if r["status"] == "merged"]
    assert len(merged) == 1
    final = {r["person_id"]: r for r in recs}
    (alive,) = [r for r in final.values() if r["status"] == "active"]
    assert alive["events"] == 4 and alive["campaigns"] == ["spring"] and alive["lifecycle_stage"] == "known"
    assert alive["person_id"] == merged[0]["merged_into"]


def test_persisted_bit_orders_cover_the_contract_and_only_grow() -> None:
    """Profiles in state hold channels and identifier types as bit masks: a new channel or type
    must be appended (a reordering would silently relabel every stored profile)."""
    from streams.core.model import CHANNELS, IDENTITY_TYPES
    from streams.core.profiles import CHANNEL_BITS, IDENTIFIER_BITS

    assert set(CHANNEL_BITS) == CHANNELS and len(CHANNEL_BITS) == len(CHANNELS)
    assert set(IDENTIFIER_BITS) == set(IDENTITY_TYPES) and len(IDENTIFIER_BITS) == len(IDENTITY_TYPES)
    assert CHANNEL_BITS[:10] == ("web", "live_chat", "whatsapp", "messenger", "email", "social", "b2b_platform",
                                 "phone", "ads", "other")
    assert IDENTIFIER_BITS[:7] == ("user_id", "crm_contact_id", "email", "phone", "whatsapp_id", "messenger_psid",
                                   "anonymous_id")
