from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from streams.core.paging import DueIndex, Page, Pager, PagingConfig, Route
from streams.core.state import MemoryStore

T0 = 1_773_000_000_000
S = 1000
NO_STALL = PagingConfig(stall_after_s=None, group_wait_s=60)  # delayed grouping: one page per storm


def rec(event: str, conv: str = "c1", *, tenant: str = "t", team: str | None = "vip", channel: str = "live_chat",
        n: int = 1, started_at: int = T0, at: int = T0 + 60 * S) -> dict[str, Any]:
    return {
        "record": "sla_event", "event": event, "tenant_id": tenant, "conversation_id": conv, "channel": channel,
        "team": team, "agent_id": None, "priority": "normal", "policy": "default", "kind": "first_reply",
        "started_at": started_at, "due_at": started_at + 60 * S, "fired_at": at,
        "response_s": None, "wait_id": f"{tenant}:{conv}:{n}", "emitted_at": at,
    }


def copy_store(store: MemoryStore) -> MemoryStore:
    fresh = MemoryStore("paging")
    for k, v in store.items():
        fresh.load(k, json.loads(json.dumps(v)))
    return fresh


def triggers(pages: list[Page]) -> list[str]:
    return [p.dedup_key for p in pages if p.action == "trigger"]


def resolves(pages: list[Page]) -> list[str]:
    return [p.dedup_key for p in pages if p.action == "resolve"]


# --- single waits -------------------------------------------------------------------------------

def test_breach_pages_after_group_window_and_resolves() -> None:
    p = Pager(MemoryStore(), NO_STALL)
    assert p.observe(rec("breach"), T0 + 60 * S) == []  # held for the group window
    assert p.advance(T0 + 119 * S) == []
    out = p.advance(T0 + 120 * S)
    assert len(out) == 1
    page = out[0]
    assert (page.action, page.dedup_key, page.severity, page.notifier) == ("trigger", "t:c1:1", "critical", "default")
    assert (page.tenant_id, page.team, page.channel, page.at) == ("t", "vip", "live_chat", T0 + 120 * S)
    assert page.details["count"] == 1 and page.details["waits"][0]["conversation_id"] == "c1"
    assert "c1" in page.summary
    res = p.observe(rec("resolved", at=T0 + 130 * S), T0 + 130 * S)
    assert [(r.action, r.dedup_key, r.notifier, r.severity) for r in res] == [
        ("resolve", "t:c1:1", "default", "critical")]
    assert p.advance(T0 + 10_000 * S) == []


def test_default_first_breach_pages_at_once_then_followers_group() -> None:
    p = Pager(MemoryStore(), PagingConfig(stall_after_s=None))  # defaults: wait 0, window 60
    first = p.observe(rec("breach", "c0"), T0 + 60 * S)
    assert triggers(first) == ["t:c0:1"] and first[0].at == T0 + 60 * S  # a lone breach is not delayed
    follow: list[Page] = []
    for i in range(1, 50):  # the storm that follows within the window
        follow += p.observe(rec("breach", f"c{i}"), T0 + 60 * S + i * 100)
    assert follow == []
    assert p.advance(T0 + 119 * S) == []
    out = p.advance(T0 + 120 * S)
    assert triggers(out) == [f"group:t:vip:{T0 + 60 * S}"] and out[0].details["count"] == 49
    # the window passed with nothing more: the group is quiet, the next breach pages at once again
    assert p.advance(T0 + 181 * S) == []
    assert triggers(p.observe(rec("breach", "late"), T0 + 200 * S)) == ["t:late:1"]


def test_default_grouping_survives_rebuild() -> None:
    store = MemoryStore()
    p = Pager(store, PagingConfig(stall_after_s=None))
    assert triggers(p.observe(rec("breach", "c0"), T0)) == ["t:c0:1"]
    p.observe(rec("breach", "c1"), T0 + 10 * S)
    restored = Pager(copy_store(store), PagingConfig(stall_after_s=None))
    restored.rebuild()
    assert restored.observe(rec("breach", "c2"), T0 + 20 * S) == []  # still inside the window
    out = restored.advance(T0 + 60 * S)
    assert triggers(out) == [f"group:t:vip:{T0}"] and out[0].details["count"] == 2


def test_zero_window_pages_immediately() -> None:
    p = Pager(MemoryStore(), PagingConfig(group_window_s=0, stall_after_s=None))
    assert triggers(p.observe(rec("breach"), T0 + 60 * S)) == ["t:c1:1"]


def test_resolved_inside_window_never_pages() -> None:
    p = Pager(MemoryStore(), NO_STALL)
    p.observe(rec("breach"), T0 + 60 * S)
    assert p.observe(rec("resolved"), T0 + 70 * S) == []
    assert p.advance(T0 + 500 * S) == []


def test_warning_then_breach() -> None:
    p = Pager(MemoryStore(), NO_STALL)
    p.observe(rec("warning"), T0)
    out = p.advance(T0 + 60 * S)
    assert [(x.dedup_key, x.severity) for x in out] == [("t:c1:1:warning", "warning")]
    p.observe(rec("breach"), T0 + 61 * S)
    out = p.advance(T0 + 121 * S)
    assert [(x.action, x.dedup_key, x.severity) for x in out] == [("trigger", "t:c1:1", "critical")]
    # the warning page stays open while things got worse; both resolve with the reply
    res = p.observe(rec("resolved"), T0 + 200 * S)
    assert sorted(resolves(res)) == ["t:c1:1", "t:c1:1:warning"]


def test_breach_supersedes_unsent_warning() -> None:
    p = Pager(MemoryStore(), NO_STALL)
    p.observe(rec("warning"), T0)
    p.observe(rec("breach"), T0 + 30 * S)
    assert p.advance(T0 + 60 * S) == []  # the warning window lost its only wait
    assert triggers(p.advance(T0 + 90 * S)) == ["t:c1:1"]


def test_replayed_records_are_silent() -> None:
    p = Pager(MemoryStore(), NO_STALL)
    for _ in range(3):
        p.observe(rec("breach"), T0)
    assert triggers(p.advance(T0 + 60 * S)) == ["t:c1:1"]
    p.observe(rec("breach"), T0 + 61 * S)
    p.observe(rec("warning"), T0 + 61 * S)  # a late warning after its breach
    assert p.advance(T0 + 200 * S) == []
    assert resolves(p.observe(rec("resolved"), T0 + 201 * S)) == ["t:c1:1"]
    assert p.observe(rec("resolved"), T0 + 202 * S) == []
    p.observe(rec("breach"), T0 + 203 * S)
    assert p.advance(T0 + 400 * S) == []
    assert p.stats["replayed"] >= 4


def test_ignores_other_and_malformed_records() -> None:
    p = Pager(MemoryStore(), NO_STALL)
    assert p.observe({"record": "response_time"}, T0) == []
    assert p.observe({**rec("breach"), "wait_id": None}, T0) == []
    assert p.observe({**rec("breach"), "event": "nope"}, T0) == []
    assert p.observe(rec("resolved"), T0) == []  # never seen
    assert p.advance(T0 + 3600 * S) == []
    assert p.stats["ignored"] == 3


# --- grouping -----------------------------------------------------------------------------------

def test_storm_groups_into_one_page_listing_oldest() -> None:
    p = Pager(MemoryStore(), NO_STALL)
    out: list[Page] = []
    for i in range(50):
        # arrival order is not age order: the oldest waits are the ones listed
        out += p.observe(rec("breach", f"c{i:02d}", started_at=T0 + ((i * 7) % 50) * S), T0 + 60 * S + i * 100)
    out += p.advance(T0 + 120 * S)
    assert len(out) == 1
    page = out[0]
    assert page.dedup_key == f"group:t:vip:{T0 + 60 * S}"
    assert page.details["count"] == 50 and page.details["not_listed"] == 45
    listed = [w["started_at"] for w in page.details["waits"]]
    assert listed == [T0 + k * S for k in range(5)]
    assert "50 conversations" in page.summary


def test_group_resolves_when_all_waits_resolved() -> None:
    p = Pager(MemoryStore(), NO_STALL)
    for i in range(4):
        p.observe(rec("breach", f"c{i}"), T0)
    (page,) = p.advance(T0 + 60 * S)
    for i in range(3):
        assert p.observe(rec("resolved", f"c{i}"), T0 + 100 * S + i) == []
    res = p.observe(rec("resolved", "c3"), T0 + 200 * S)
    assert [(r.action, r.dedup_key) for r in res] == [("resolve", page.dedup_key)]


def test_groups_per_team_and_tenant_and_next_window() -> None:
    p = Pager(MemoryStore(), NO_STALL)
    for i in range(3):
        p.observe(rec("breach", f"a{i}", team="vip"), T0)
        p.observe(rec("breach", f"b{i}", team="billing"), T0)
        p.observe(rec("breach", f"c{i}", team=None, tenant="u"), T0)
    keys = triggers(p.advance(T0 + 60 * S))
    assert sorted(keys) == sorted([f"group:t:vip:{T0}", f"group:t:billing:{T0}", f"group:u:-:{T0}"])
    # a storm that goes on pages at most once per window
    for i in range(3, 10):
        p.observe(rec("breach", f"a{i}"), T0 + 61 * S + i)
    assert triggers(p.advance(T0 + 130 * S)) == [f"group:t:vip:{T0 + 60 * S}"]  # the window that followed the page


# --- routing & escalation -----------------------------------------------------------------------

def test_routing_most_specific_wins() -> None:
    cfg = PagingConfig(routes=(
        Route(None, "default"), Route("support-*", "support"), Route("support-vip*", "vip-prefix"),
        Route("support-vip", "vip"),
    ))
    assert cfg.route("support-vip").notifier == "vip"
    assert cfg.route("support-vip-emea").notifier == "vip-prefix"
    assert cfg.route("support-emea").notifier == "support"
    assert cfg.route("sales").notifier == "default"
    assert cfg.route(None).notifier == "default"
    p = Pager(MemoryStore(), PagingConfig(group_window_s=0, stall_after_s=None, routes=cfg.routes))
    assert [x.notifier for x in p.observe(rec("breach", team="support-emea"), T0)] == ["support"]


def test_config_validation_and_from_dict() -> None:
    with pytest.raises(ValueError, match="default route"):
        PagingConfig(routes=(Route("x", "n"),))
    with pytest.raises(ValueError, match="more than one"):
        PagingConfig(routes=(Route(None, "a"), Route(None, "b")))
    with pytest.raises(ValueError, match="escalate"):
        Route("x", "n", 60, None)
    with pytest.raises(ValueError, match="unknown"):
        PagingConfig.from_dict({"grup_window_s": 1})
    cfg = PagingConfig.from_dict({
        "_comment": "x", "group_window_s": 30, "channel_stall_after_s": {"email": None},
        "routes": [{"team": None, "notifier": "pd"}, {"team": "vip", "notifier": "pd-vip", "escalate_after_s": 600,
                                                      "escalate_to": "pd-managers"}],
    })
    assert cfg.group_window_s == 30 and cfg.stall_after_ms("email") is None and cfg.stall_after_ms("x") == 300_000
    assert cfg.notifier_names() == {"pd", "pd-vip", "pd-managers"}


def test_escalation_fires_once_and_resolves_with_page() -> None:
    cfg = PagingConfig(group_window_s=0, stall_after_s=None,
                       routes=(Route(None, "default"), Route("vip", "pd-vip", 300, "pd-managers")))
    p = Pager(MemoryStore(), cfg)
    assert triggers(p.observe(rec("breach"), T0)) == ["t:c1:1"]
    assert p.next_due() == T0 + 300 * S
    assert p.advance(T0 + 299 * S) == []
    out = p.advance(T0 + 300 * S)
    assert [(x.dedup_key, x.notifier, x.severity) for x in out] == [("t:c1:1:escalated", "pd-managers", "critical")]
    assert out[0].details["escalates"] == "t:c1:1"
    assert p.advance(T0 + 3000 * S) == []
    res = p.observe(rec("resolved"), T0 + 3001 * S)
    assert [(x.dedup_key, x.notifier) for x in res] == [("t:c1:1", "pd-vip"), ("t:c1:1:escalated", "pd-managers")]


def test_no_escalation_for_warnings_or_resolved_pages() -> None:
    cfg = PagingConfig(group_window_s=0, stall_after_s=None, routes=(Route(None, "d", 60, "boss"),))
    p = Pager(MemoryStore(), cfg)
    p.observe(rec("warning", "w"), T0)
    p.observe(rec("breach", "b"), T0)
    p.observe(rec("resolved", "b"), T0 + 10 * S)
    assert p.advance(T0 + 600 * S) == []


# --- inhibition ---------------------------------------------------------------------------------

def test_stalled_feed_holds_pages_and_pages_once() -> None:
    cfg = PagingConfig(group_window_s=60, group_wait_s=60, stall_after_s=300)
    p = Pager(MemoryStore(), cfg)
    p.input_seen("t", "live_chat", T0)
    p.input_seen("t", "email", T0)
    # the feed dies at T0; the SLA engine keeps breaching waits nobody can answer
    out: list[Page] = []
    out += p.observe(rec("breach", "a"), T0 + 100 * S)
    out += p.advance(T0 + 160 * S)
    assert triggers(out) == ["t:a:1"]  # before the stall threshold: a normal page
    out = []
    for i in range(20):
        out += p.observe(rec("breach", f"s{i}"), T0 + 299 * S)
        out += p.observe(rec("breach", f"late{i}"), T0 + 310 * S)
    out += p.advance(T0 + 310 * S)
    out += p.advance(T0 + 900 * S)
    stall_key = f"stall:t:live_chat:{T0}"
    assert triggers(out) == [stall_key]  # one stall page, breach pages held
    stall = next(x for x in out if x.dedup_key == stall_key)
    assert (stall.severity, stall.channel, stall.team) == ("critical", "live_chat", None)
    # another channel of the tenant is unaffected (no open waits there) and pages normally
    p.input_seen("t", "email", T0 + 901 * S)
    out = p.observe(rec("breach", "e", channel="email"), T0 + 901 * S) + p.advance(T0 + 961 * S)
    assert triggers(out) == ["t:e:1"]
    # input resumes: the stall page resolves, held waits still open flow (grouped) after the window
    for i in range(20):
        p.observe(rec("resolved", f"late{i}"), T0 + 1000 * S)
    p.input_seen("t", "live_chat", T0 + 1000 * S)
    out = p.advance(T0 + 1001 * S)
    assert resolves(out) == [stall_key] and triggers(out) == []
    out = p.advance(T0 + 1061 * S)
    assert triggers(out) == [f"group:t:vip:{T0 + 961 * S}"]  # they join the window that followed e's page
    assert out[0].details["count"] == 20
    assert {w["conversation_id"] for w in out[0].details["waits"]} <= {f"s{i}" for i in range(20)}


def test_stall_needs_open_waits_and_can_recur() -> None:
    p = Pager(MemoryStore(), PagingConfig(group_window_s=0, stall_after_s=300))
    p.input_seen("t", "live_chat", T0)
    assert p.advance(T0 + 10_000 * S) == []  # quiet channel, nobody waiting: no stall
    assert triggers(p.observe(rec("breach", "a"), T0 + 10_000 * S)) == [f"stall:t:live_chat:{T0}"]
    p.input_seen("t", "live_chat", T0 + 10_001 * S)
    out = p.advance(T0 + 10_002 * S)
    assert resolves(out) == [f"stall:t:live_chat:{T0}"] and triggers(out) == ["t:a:1"]
    # silent again while a wait is open: a new episode, a new key
    out = p.advance(T0 + 10_301 * S)
    assert triggers(out) == [f"stall:t:live_chat:{T0 + 10_001 * S}"]


def test_escalation_inhibited_while_channel_stalled() -> None:
    cfg = PagingConfig(group_window_s=0, stall_after_s=300, routes=(Route(None, "d"), Route("vip", "v", 200, "boss")))
    p = Pager(MemoryStore(), cfg)
    p.input_seen("t", "live_chat", T0)
    assert triggers(p.observe(rec("breach"), T0 + 100 * S)) == ["t:c1:1"]
    out = p.advance(T0 + 400 * S)  # stalled before the page escalates
    assert triggers(out) == [f"stall:t:live_chat:{T0}"]
    assert p.advance(T0 + 600 * S) == []  # escalation due, but inhibited
    p.input_seen("t", "live_chat", T0 + 700 * S)
    out = p.advance(T0 + 700 * S)
    assert resolves(out) == [f"stall:t:live_chat:{T0}"] and triggers(out) == ["t:c1:1:escalated"]


def test_per_channel_stall_threshold() -> None:
    cfg = PagingConfig(group_window_s=0, stall_after_s=300, channel_stall_after_s={"email": None})
    p = Pager(MemoryStore(), cfg)
    p.input_seen("t", "email", T0)
    assert triggers(p.observe(rec("breach", channel="email"), T0 + 86_400 * S)) == ["t:c1:1"]
    assert p.advance(T0 + 2 * 86_400 * S) == []


# --- exactly once / recovery --------------------------------------------------------------------

def test_exactly_once_across_rebuild_from_copied_store() -> None:
    cfg = PagingConfig(group_window_s=60, group_wait_s=60, stall_after_s=300, routes=(Route(None, "d", 600, "boss"),))
    store = MemoryStore()
    p = Pager(store, cfg)
    p.input_seen("t", "live_chat", T0)
    for i in range(3):
        p.observe(rec("breach", f"c{i}"), T0 + 10 * S)
    first = p.advance(T0 + 70 * S)
    assert triggers(first) == [f"group:t:vip:{T0 + 10 * S}"]
    # pending window survives a restart too
    p.observe(rec("breach", "later"), T0 + 80 * S)

    q_store = copy_store(store)
    q = Pager(q_store, cfg)
    for i in range(3):  # Kafka redelivers the uncommitted records
        assert q.observe(rec("breach", f"c{i}"), T0 + 90 * S) == []
    assert q.advance(T0 + 90 * S) == []
    assert triggers(q.advance(T0 + 140 * S)) == ["t:later:1"]
    assert resolves(q.observe(rec("resolved", "later"), T0 + 150 * S)) == ["t:later:1"]
    q.input_seen("t", "live_chat", T0 + 600 * S)
    assert triggers(q.advance(T0 + 700 * S)) == [f"group:t:vip:{T0 + 10 * S}:escalated"]

    r_store = copy_store(q_store)
    r = Pager(r_store, cfg)
    assert r.advance(T0 + 800 * S) == []
    assert triggers(r.advance(T0 + 1000 * S)) == [f"stall:t:live_chat:{T0 + 600 * S}"]

    s = Pager(copy_store(r_store), cfg)
    assert s.advance(T0 + 1100 * S) == []
    s.input_seen("t", "live_chat", T0 + 1101 * S)
    out: list[Page] = []
    for i in range(3):
        out += s.observe(rec("resolved", f"c{i}"), T0 + 1101 * S)
    out += s.advance(T0 + 1102 * S)
    assert sorted(resolves(out)) == sorted([
        f"stall:t:live_chat:{T0 + 600 * S}", f"group:t:vip:{T0 + 10 * S}", f"group:t:vip:{T0 + 10 * S}:escalated"])
    assert triggers(out) == []


def test_tombstones_expire_and_keys_start_with_tenant() -> None:
    store = MemoryStore()
    p = Pager(store, PagingConfig(group_window_s=0, stall_after_s=300, retention_s=3600))
    p.input_seen("acme", "live_chat", T0)
    p.observe(rec("breach", tenant="acme"), T0)
    p.observe(rec("resolved", tenant="acme"), T0 + S)
    assert all(k.startswith("acme|") for k, _ in store.items())
    p.advance(T0 + 3602 * S)
    assert [k for k, _ in store.items()] == ["acme|pc|live_chat"]  # only the channel's activity remains


# --- property: exactly once under random interleavings ----------------------------------------

OPS = st.one_of(
    st.tuples(st.just("rec"), st.sampled_from(["warning", "breach", "resolved"]), st.integers(0, 5),
              st.integers(1, 2), st.sampled_from(["vip", "billing", None])),
    st.tuples(st.just("input"), st.sampled_from(["live_chat", "email"])),
    st.tuples(st.just("advance")),
    st.tuples(st.just("restart")),
)

STEP_S = st.one_of(st.integers(0, 10), st.integers(0, 200))  # bursts (groups) and gaps (stalls, escalations)


def check(pages: list[Page], seen: set[str], open_keys: set[str]) -> None:
    for page in pages:
        if page.action == "trigger":
            assert page.dedup_key not in seen, f"trigger twice: {page.dedup_key}"
            seen.add(page.dedup_key)
            open_keys.add(page.dedup_key)
        else:
            assert page.dedup_key in open_keys, f"resolve without open trigger: {page.dedup_key}"
            open_keys.discard(page.dedup_key)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(ops=st.lists(st.tuples(OPS, STEP_S), max_size=60), window=st.sampled_from([0, 30, 60]))
def test_no_trigger_key_emitted_twice(ops: list[tuple[tuple[Any, ...], int]], window: int) -> None:
    cfg = PagingConfig(group_window_s=window, group_wait_s=window, stall_after_s=120, max_listed=2,
                       routes=(Route(None, "d", 90, "boss"), Route("vip", "v")))
    store = MemoryStore()
    p = Pager(store, cfg)
    now = T0
    seen: set[str] = set()
    open_keys: set[str] = set()
    for op, dt in ops:
        now += dt * S
        out: list[Page] = []
        if op[0] == "rec":
            _, event, conv, n, team = op
            # a conversation keeps its channel; teams may change mid-wait
            channel = "email" if conv % 2 else "live_chat"
            out = p.observe(rec(event, f"c{conv}", n=n, channel=channel, team=team), now)
        elif op[0] == "input":
            p.input_seen("t", op[1], now)
        elif op[0] == "advance":
            out = p.advance(now)
        else:
            store = copy_store(store)
            p = Pager(store, cfg)
        check(out, seen, open_keys)
    # liveness: once input flows and every wait is answered, no page is left open
    now += S
    final: list[Page] = []
    for ch in ("live_chat", "email"):
        p.input_seen("t", ch, now)
    for conv in range(6):
        for n in (1, 2):
            final += p.observe(rec("resolved", f"c{conv}", n=n, channel="email" if conv % 2 else "live_chat"), now)
    final += p.advance(now + 3600 * S)
    check(final, seen, open_keys)  # held waits may still page (then resolve) as the feed resumes
    assert open_keys == set()
    assert all(k.startswith("t|") for k, _ in store.items())


def test_due_index_orders_due_keys_and_skips_stale_entries() -> None:
    idx = DueIndex()
    idx["b"] = 20
    idx["a"] = 20
    idx["c"] = 10
    idx["c"] = 30  # moved: its old entry is stale
    idx["d"] = 5
    idx.pop("d")
    assert idx.take_due(4) == []
    assert idx.take_due(25) == ["a", "b"]  # (due, key) order; "c" not due at its new time
    assert sorted(idx.values()) == [20, 20, 30]  # taking does not unset: the caller pops or re-sets
    idx.pop("a")
    idx.pop("b")
    assert idx.take_due(30) == ["c"]


@given(st.lists(st.tuples(st.sampled_from("abcdef"), st.integers(0, 50), st.booleans()), max_size=60),
       st.integers(0, 60))
def test_due_index_matches_a_plain_scan(ops: list[tuple[str, int, bool]], now: int) -> None:
    idx, plain = DueIndex(), {}
    for key, due, keep in ops:
        if keep:
            idx[key] = due
            plain[key] = due
        else:
            idx.pop(key)
            plain.pop(key, None)
    expected = [k for k, d in sorted(plain.items(), key=lambda kv: (kv[1], kv[0])) if d <= now]
    assert idx.take_due(now) == expected


def test_next_due_after_skips_a_held_back_escalation() -> None:
    cfg = PagingConfig(group_window_s=0, stall_after_s=None,
                       routes=(Route(None, "default"), Route("vip", "pd-vip", 300, "pd-managers")))
    p = Pager(MemoryStore(), cfg)
    p.observe(rec("breach"), T0)
    assert p.next_due(T0 + 300 * S) is None  # the escalation is not later than that
    assert p.next_due(T0) == T0 + 300 * S
