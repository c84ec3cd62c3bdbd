"""The rule-file language: what marketers write, what it means, and that mistakes are explained.

Parser properties (hypothesis): every rule the language can express survives text → rules →
text → rules unchanged; any text at all either parses or raises :class:`RuleError` naming the
file and a line of it (never another exception); a bad line in a good file is the line named."""

from __future__ import annotations

import string
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from streams.core.model import CHANNELS, IDENTITY_TYPES, TYPES, Touchpoint
from streams.core.stages import STAGES
from streams.core.tagrules import (
    DEFAULT_RULES,
    FIELDS,
    LIFECYCLE,
    OPS,
    CountCond,
    EventCond,
    PersonCond,
    RuleError,
    RuleSet,
    StageRule,
    TagRule,
    evaluate_tags,
    fold_tags,
    fold_windows,
    format_duration,
    parse_rules,
    parse_tenant_rules,
)

H = 3_600_000
D = 24 * H
T0 = 1_767_225_600_000

EXAMPLE = """
# acme-shop: lifecycle and tags
stage known when identity email, phone, user_id, crm_contact_id, whatsapp_id, messenger_psid
stage lead when type form_submit, lead    # a form counts as a lead here

tag hot when 3 or more page_view where url contains "/pricing" within 7d expires after 14d
tag chatty when 2 or more message_in on whatsapp, messenger within 1d expires after 7d
tag whatsapp_user when channel whatsapp
tag big_spender when revenue >= 1000
tag sales_ready when stage opportunity or later and channel phone
tag big_deal when deal value > 5000.5
tag spring_fan when campaign "spring #1", "Spring \\"2\\"" and events >= 3
"""


def tp(etype: str = "page_view", t: int = T0, channel: str = "web", url: str | None = None,
       campaign: str | None = None, value: float | None = None, ids: dict[str, str] | None = None) -> Touchpoint:
    return Touchpoint(
        event_id=f"e{t}", tenant_id="acme", occurred_at=t, channel=channel, type=etype,
        identities=ids or {"anonymous_id": "a"}, page=None if url is None else {"url": url},
        campaign=None if campaign is None else {"name": campaign},
        value=None if value is None else {"amount": value, "currency": "EUR"},
    )


class FakeFacts:
    def __init__(self, **kw: Any) -> None:
        self.kw = {"lifecycle": 0, "channels": set(), "campaigns": set(), "funnel": -1, "revenue": 0.0, "deals": 0,
                   "events": 0, **kw}

    def lifecycle(self) -> int:
        return int(self.kw["lifecycle"])

    def used_channel(self, channel: str) -> bool:
        return channel in self.kw["channels"]

    def touched_campaign(self, campaign: str) -> bool:
        return campaign in self.kw["campaigns"]

    def reached_funnel(self, stage_idx: int, or_later: bool) -> bool:
        got = self.kw["funnel"]
        return bool(got == stage_idx or (or_later and got > stage_idx))

    def revenue_major(self) -> float:
        return float(self.kw["revenue"])

    def deals(self) -> int:
        return int(self.kw["deals"])

    def events(self) -> int:
        return int(self.kw["events"])


# ------------------------------------------------------------------------------------ parsing


def test_the_documented_example_parses_to_what_it_says() -> None:
    rules = parse_rules(EXAMPLE, "acme.rules")
    stages = {r.stage: r for r in rules.stage_rules}
    assert stages["lead"].conditions == (EventCond("type", ("form_submit", "lead")),)
    assert stages["customer"] == next(r for r in DEFAULT_RULES.stage_rules if r.stage == "customer")  # kept
    tags = {r.tag: r for r in rules.tag_rules}
    hot = tags["hot"]
    assert hot.expires_ms == 14 * D and hot.line == 6  # (the text starts with a newline)
    (cond,) = hot.conditions
    assert cond == CountCond(3, "page_view", 7 * D, (), "url", "contains", "/pricing")
    assert tags["chatty"].conditions[0].channels == ("whatsapp", "messenger")
    assert tags["sales_ready"].conditions == (PersonCond("stage", ("opportunity",), or_later=True),
                                              PersonCond("channel", ("phone",)))
    assert tags["big_deal"].conditions == (EventCond("deal_value", op=">", number=5000.5),)
    assert tags["spring_fan"].conditions[0] == PersonCond("campaign", ("spring #1", 'Spring "2"'))
    assert tags["whatsapp_user"].expires_ms is None
    assert parse_rules(rules.text()) == rules  # the canonical text means the same


def test_keywords_and_names_are_case_insensitive_tag_names_are_not() -> None:
    rules = parse_rules('TAG Hot WHEN 2 OR MORE Page_View ON Web WHERE URL Starts With "/A" WITHIN 90S')
    (rule,) = rules.tag_rules
    assert rule.tag == "Hot"
    assert rule.conditions[0] == CountCond(2, "page_view", 90_000, ("web",), "url", "starts with", "/a")


@pytest.mark.parametrize(("text", "line", "words"), [
    ("tag hot when", 1, "expected 'channel'"),
    ("\n\ntag hot when 3 or more pageview within 7d", 3, "unknown event type 'pageview'"),
    ("tag hot when 3 or more page_view within 7 days", 1, "expected a duration"),
    ("tag hot when 3 or more page_view within 0d", 1, "expected a duration"),
    ("tag hot when channel fax", 1, "unknown channel 'fax'"),
    ("stage vip when type lead", 1, "unknown lifecycle stage 'vip'"),
    ("stage anonymous when type lead", 1, "unknown lifecycle stage 'anonymous'"),
    ("tag hot when revenue >= lots", 1, "expected a number"),
    ("tag hot when deals >= 1.5", 1, "expected a whole number"),
    ('tag hot when campaign "spring', 1, "unterminated text"),
    ("tag hot when campaign spring", 1, "in double quotes"),
    ("tag hot when channel web expires 7d", 1, "expected 'after'"),
    ("tag hot when channel web or channel phone", 1, "unexpected 'or'"),
    ("tag when channel web", 1, "tag name is missing"),
    ("tag h@t when channel web", 1, "unexpected character '@'"),
    ("tag hot when 0 or more events within 1d", 1, "a count from 1 to 1000"),
    ('tag hot when 1 or more events where url contains "" within 1d', 1, "empty"),
    ("label hot when channel web", 1, "expected 'stage' or 'tag'"),
    ("tag hot when stage lead, customer", 1, "takes one stage"),
])
def test_errors_name_the_file_the_line_and_what_was_expected(text: str, line: int, words: str) -> None:
    with pytest.raises(RuleError) as err:
        parse_rules(text, "rules/acme.rules")
    assert err.value.line == line
    assert str(err.value).startswith(f"rules/acme.rules:{line}: ")
    assert words in str(err.value)


def test_comments_blank_lines_and_hashes_inside_text() -> None:
    rules = parse_rules('# only a comment\n\n   \ntag x when campaign "a#b" # trailing\n')
    assert rules.tag_rules[0].conditions[0] == PersonCond("campaign", ("a#b",))
    assert parse_rules("") == RuleSet()


def test_parse_tenant_rules_names_the_bad_file() -> None:
    ok = parse_tenant_rules({"acme": ("acme.rules", "tag a when channel web"), "globex": ("globex.rules", "")})
    assert set(ok) == {"acme", "globex"}
    with pytest.raises(RuleError, match=r"^globex\.rules:1: "):
        parse_tenant_rules({"acme": ("acme.rules", "tag a when channel web"), "globex": ("globex.rules", "tag")})


# ------------------------------------------------------------------------------------ properties

names = st.text(string.ascii_letters + string.digits + "_", min_size=1, max_size=10).filter(
    lambda s: s.lower() not in ("when", "and", "expires"))
texts = st.text(st.characters(blacklist_categories=("Cs", "Cc")), min_size=1, max_size=12)
needles = texts.map(str.lower).filter(bool)
durations = st.integers(1, 10**6).map(lambda n: n * 1000)
numbers = st.one_of(st.integers(0, 10**9).map(float), st.integers(0, 10**9).map(lambda n: n / 1000))


def subset(options: Any) -> st.SearchStrategy[tuple[str, ...]]:
    return st.lists(st.sampled_from(sorted(options)), min_size=1, max_size=3, unique=True).map(tuple)


event_conds = st.one_of(
    subset(TYPES).map(lambda v: EventCond("type", v)),
    subset(IDENTITY_TYPES).map(lambda v: EventCond("identity", v)),
    subset(CHANNELS).map(lambda v: EventCond("channel", v)),
    st.lists(texts, min_size=1, max_size=3, unique=True).map(lambda v: EventCond("campaign", tuple(v))),
    st.builds(lambda s, later: EventCond("funnel", (s,), or_later=later), st.sampled_from(STAGES), st.booleans()),
    st.builds(lambda op, n: EventCond("value", op=op, number=n), st.sampled_from(OPS), numbers),
)
tag_conds = st.one_of(
    st.builds(lambda n, etype, w, ch, where: CountCond(n, etype, w, ch, *where),
              st.integers(1, 1000), st.sampled_from([None, *sorted(TYPES)]), durations,
              st.one_of(st.just(()), subset(CHANNELS)),
              st.one_of(st.just((None, "", "")), st.tuples(st.sampled_from(FIELDS),
                                                           st.sampled_from(("contains", "is", "starts with")),
                                                           needles))),
    subset(CHANNELS).map(lambda v: PersonCond("channel", v)),
    st.lists(texts, min_size=1, max_size=3, unique=True).map(lambda v: PersonCond("campaign", tuple(v))),
    st.builds(lambda s, later: PersonCond("stage", (s,), or_later=later), st.sampled_from(LIFECYCLE), st.booleans()),
    st.builds(lambda s, later: PersonCond("funnel", (s,), or_later=later), st.sampled_from(STAGES), st.booleans()),
    st.builds(lambda op, n: PersonCond("revenue", op=op, number=n), st.sampled_from(OPS), numbers),
    st.builds(lambda k, op, n: PersonCond(k, op=op, number=float(n)), st.sampled_from(("deals", "events")),
              st.sampled_from(OPS), st.integers(0, 10**6)),
    st.builds(lambda op, n: EventCond("deal_value", op=op, number=n), st.sampled_from(OPS), numbers),
)
rules_st = st.tuples(
    st.lists(st.builds(lambda s, c: StageRule(s, tuple(c)), st.sampled_from(LIFECYCLE[1:]),
                       st.lists(event_conds, min_size=1, max_size=3)), max_size=4),
    st.lists(st.builds(lambda n, c, e: TagRule(n, tuple(c), e), names, st.lists(tag_conds, min_size=1, max_size=3),
                       st.one_of(st.none(), durations)), max_size=5),
)


@settings(max_examples=300, deadline=None)
@given(rules_st)
def test_every_expressible_rule_round_trips_through_its_text(parts: tuple[list[StageRule], list[TagRule]]) -> None:
    stage_rules, tag_rules = parts
    text = "".join(r.text() + "\n" for r in (*stage_rules, *tag_rules))
    parsed = parse_rules(text, "gen.rules")
    assert parsed == RuleSet(stage_rules, tag_rules), text
    n = len(stage_rules)
    assert [r.line for r in parsed.tag_rules] == list(range(n + 1, n + len(tag_rules) + 1))
    assert parse_rules(parsed.text()) == parsed


@settings(max_examples=500, deadline=None)
@given(st.text(max_size=200))
def test_any_text_parses_or_says_which_line_is_wrong(text: str) -> None:
    try:
        parse_rules(text, "any.rules")
    except RuleError as err:
        assert 1 <= err.line <= max(1, len(text.splitlines()))
        assert str(err).startswith(f"any.rules:{err.line}: ") and err.detail


@settings(max_examples=300, deadline=None)
@given(rules_st, st.integers(0, 10), st.sampled_from(["tag", "stage x when", "tag t when 3 or more",
                                                      'tag t when campaign "', "tag t when revenue ~ 3"]))
def test_a_bad_line_in_a_good_file_is_the_line_named(parts: Any, at: int, bad: str) -> None:
    lines = [r.text() for r in (*parts[0], *parts[1])]
    at = min(at, len(lines))
    lines.insert(at, bad)
    with pytest.raises(RuleError) as err:
        parse_rules("\n".join(lines), "f.rules")
    assert err.value.line == at + 1


def test_format_duration_uses_the_largest_exact_unit() -> None:
    assert [format_duration(x) for x in (90_000, 3_600_000, 7 * D, 14 * D, 1500)] == ["90s", "1h", "1w", "2w", "1500ms"]


# ------------------------------------------------------------------------------------ semantics


def test_count_window_holds_in_event_time_and_keeps_only_n_times() -> None:
    cond = CountCond(3, "page_view", 7 * D, (), "url", "contains", "/pricing")
    times: list[int] = []
    for k, t in enumerate((T0, T0 + 2 * D, T0 + 8 * D, T0 + 9 * D)):
        assert cond.matches(tp(url="https://x/Pricing?a", t=t))
        cond.record(times, t)
        assert cond.holds_at(times, t) == (k == 3)  # 3 inside 7 days only at the fourth
    assert times == [T0 + 2 * D, T0 + 8 * D, T0 + 9 * D]
    cond.record(times, T0 - D)  # older than all kept and the state is full: nothing to keep
    assert times == [T0 + 2 * D, T0 + 8 * D, T0 + 9 * D]
    assert not cond.matches(tp(url="https://x/docs")) and not cond.matches(tp("ad_click", url="/pricing"))
    on = CountCond(1, None, D, ("whatsapp",))
    assert on.matches(tp("message_in", channel="whatsapp")) and not on.matches(tp("message_in", channel="email"))


def test_tags_set_renew_and_expire() -> None:
    rules = parse_rules('tag hot when 2 or more page_view within 1d expires after 2d\n'
                        'tag rich when revenue >= 100\n'
                        'tag deal when deal value >= 50 expires after 1h\n')
    (cond,) = rules.counts
    tags: dict[str, list[int | None]] = {}
    times: list[int] = []
    facts = FakeFacts()
    for t in (T0, T0 + H):
        cond.record(times, t)
        evaluate_tags(rules, tags, {cond.id: times}, facts, t, tp(t=t))
    assert tags == {"hot": [T0 + H, T0 + H + 2 * D]}
    assert evaluate_tags(rules, tags, {cond.id: times}, FakeFacts(revenue=100), T0 + 3 * D, tp(t=T0 + 3 * D))
    assert tags == {"rich": [T0 + 3 * D, None]}  # hot expired; rich never does
    assert evaluate_tags(rules, tags, {}, facts, T0 + 4 * D, tp("deal_won", t=T0 + 4 * D, value=50))
    assert tags["deal"] == [T0 + 4 * D, T0 + 4 * D + H] and tags["rich"] == [T0 + 3 * D, None]
    assert not evaluate_tags(rules, tags, {}, facts, T0 + 4 * D, None)  # a merge: no event conditions


def test_stage_rules_event_level_and_defaults() -> None:
    rules = parse_rules("stage lead when type form_submit and channel web\nstage customer when value >= 10")
    assert rules.event_stage(tp("form_submit"), "interaction") == LIFECYCLE.index("lead")
    assert rules.event_stage(tp("form_submit", channel="b2b_platform"), "interaction") == 0
    assert rules.event_stage(tp("opportunity", value=5), "opportunity") == LIFECYCLE.index("opportunity")  # default
    assert rules.event_stage(tp("page_view", value=10), "visit") == LIFECYCLE.index("customer")
    assert DEFAULT_RULES.event_stage(tp(ids={"anonymous_id": "a", "email": "x@y"}), "visit") == 1
    assert DEFAULT_RULES.event_stage(tp("lead"), "lead") == 2  # no rule asks for known first
    assert DEFAULT_RULES.event_stage(tp(), "visit") == 0


def test_folds_keep_every_tag_and_the_latest_times() -> None:
    a: dict[str, list[int | None]] = {"x": [5, 10], "y": [1, None]}
    fold_tags(a, {"x": [3, 20], "y": [0, 7], "z": [2, 4]})
    assert a == {"x": [3, 20], "y": [0, None], "z": [2, 4]}
    rules = parse_rules("tag t when 2 or more events within 1d")
    (cond,) = rules.counts
    w = {cond.id: [1, 5], "gone": [1]}
    fold_windows(rules, w, {cond.id: [3, 9], "other": [2]})
    assert w == {cond.id: [5, 9]}


@settings(max_examples=300, deadline=None)
@given(rules_st, st.sampled_from(sorted(TYPES)), st.sampled_from(sorted(CHANNELS)),
       st.lists(st.sampled_from(IDENTITY_TYPES), min_size=1, max_size=3, unique=True),
       st.one_of(st.none(), st.sampled_from(STAGES)), st.one_of(st.none(), st.integers(0, 10**6)))
def test_the_compiled_stage_rules_decide_as_the_rules_read(parts: Any, etype: str, channel: str, ids: list[str],
                                                          funnel: str | None, value: int | None) -> None:
    rules = RuleSet(parts[0], parts[1])
    ev = tp(etype, channel=channel, value=value, ids={t: "x" for t in ids})
    naive = max([LIFECYCLE.index(r.stage) for r in rules.stage_rules
                 if all(c.holds(ev, funnel) for c in r.conditions)], default=0)
    assert rules.event_stage(ev, funnel) == naive
