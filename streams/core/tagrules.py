"""Per-tenant rule files: lifecycle stage rules and tags, written by a marketer, no code.

Why a small language of its own rather than YAML or Python: the people who write these rules
are not programmers, the worker must never run their text as code, and a mistake must be
reported as ``rules/acme.rules:7: ...`` with what was expected, not as a stack trace. One rule
per line; ``#`` starts a comment; keywords are case-insensitive; text in double quotes.

::

    # lifecycle: which events move a person to a stage (a stage never moves back)
    stage known when identity email, phone, user_id, crm_contact_id, whatsapp_id, messenger_psid
    stage lead when type form_submit, lead
    stage opportunity when type opportunity
    stage customer when type deal_won

    # tags: set while the conditions hold at an event, kept for `expires after` since the last time
    tag hot when 3 or more page_view where url contains "/pricing" within 7d expires after 14d
    tag chatty when 2 or more message_in on whatsapp, messenger within 1d expires after 7d
    tag whatsapp_user when channel whatsapp
    tag big_spender when revenue >= 1000
    tag sales_ready when stage opportunity or later and channel phone

Grammar (``[...]`` optional, ``A, B`` a comma-separated list meaning "any of")::

    stage <known|lead|opportunity|customer> when <event condition> [and <event condition>]...
    tag <name> when <condition> [and <condition>]... [expires after <duration>]

    event condition (about the event being processed):
        type <event type>, ...      identity <identifier type>, ...     channel <channel>, ...
        campaign "<name>", ...      funnel <funnel stage> [or later]    value <op> <number>
    condition (about the person, after the event):
        <N> or more <event type|events> [on <channel>, ...] [where <field> <match> "<text>"] within <duration>
        channel <channel>, ...      (has used one of them)
        campaign "<name>", ...      (has touched one of them)
        stage <lifecycle stage> [or later]
        funnel <funnel stage> [or later]   (has reached it; without "or later": exactly that stage)
        revenue <op> <number>       (won revenue, major units, summed over currencies)
        deals <op> <integer>        (won deals)
        events <op> <integer>       (all events)
        deal value <op> <number>    (the event is a won deal of that value)

    <op>: >= > <= < =          <match>: contains | is | starts with  (case-insensitive)
    <field>: url | title | referrer | campaign | source | medium
    <duration>: a whole number with ms, s, m, h, d or w, e.g. 90s, 30m, 12h, 7d, 2w

Several lines with the same tag (or stage) mean "any of them". A file that has ``stage X``
lines replaces the built-in rules of stage X only (:data:`DEFAULT_STAGE_RULES`).

Semantics, all in event time: a tag is set at an event when all its conditions hold after the
event is applied to the profile; its ``since`` is when it was first set (again, after it
expired) and, with ``expires after D``, it is kept until ``D`` after the last event at which the
conditions held. Without ``expires after`` a tag stays. A count condition "N or more X within W"
holds at an event at time t when N matching events fall in [t - W, t]; the profile keeps only
the latest N matching times per condition, so its state is bounded by N. A late event is
judged against those kept times. Each condition's state is keyed by a hash of its canonical
text, so editing one rule resets only that rule's counts.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from hashlib import blake2b
from typing import Protocol

from streams.core.model import CHANNELS, IDENTITY_TYPES, TYPES, Touchpoint
from streams.core.stages import STAGE_INDEX, STAGES

#: Lifecycle stages, in order; a person's stage never moves back.
LIFECYCLE: tuple[str, ...] = ("anonymous", "known", "lead", "opportunity", "customer")
LIFECYCLE_INDEX: dict[str, int] = {s: i for i, s in enumerate(LIFECYCLE)}

FIELDS: tuple[str, ...] = ("url", "title", "referrer", "campaign", "source", "medium")
MATCHES: tuple[str, ...] = ("contains", "is", "starts with")
OPS: tuple[str, ...] = (">=", ">", "<=", "<", "=")
UNITS: dict[str, int] = {"ms": 1, "s": 1000, "m": 60_000, "h": 3_600_000, "d": 86_400_000, "w": 604_800_000}
MAX_COUNT = 1000  # "N or more": the state keeps N times, so N is bounded
MAX_NAME = 64
_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.:-]*\Z")


class RuleError(ValueError):
    """A rule file that cannot be used; the message names the file and line."""

    def __init__(self, source: str, line: int, message: str) -> None:
        super().__init__(f"{source}:{line}: {message}")
        self.source = source
        self.line = line
        self.detail = message


# ----------------------------------------------------------------------------- the rules


def _cmp(op: str, a: float, b: float) -> bool:
    if op == ">=":
        return a >= b
    if op == ">":
        return a > b
    if op == "<=":
        return a <= b
    if op == "<":
        return a < b
    return a == b


def _num(x: float) -> str:
    """Canonical text of a number, in the form the parser reads (no exponent, ≤ 6 decimals)."""
    return str(int(x)) if float(x).is_integer() else f"{x:.6f}".rstrip("0")


def _quote(s: str) -> str:
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"'


def format_duration(ms: int) -> str:
    for unit in ("w", "d", "h", "m", "s"):
        if ms % UNITS[unit] == 0:
            return f"{ms // UNITS[unit]}{unit}"
    return f"{ms}ms"


class Facts(Protocol):
    """What a person-level condition may ask about the profile (streams/core/profiles.py)."""

    def lifecycle(self) -> int: ...

    def used_channel(self, channel: str) -> bool: ...

    def touched_campaign(self, campaign: str) -> bool: ...

    def reached_funnel(self, stage_idx: int, or_later: bool) -> bool: ...

    def revenue_major(self) -> float: ...

    def deals(self) -> int: ...

    def events(self) -> int: ...


def _field_value(tp: Touchpoint, name: str) -> str | None:
    if name in ("url", "title", "referrer"):
        obj = tp.page
    else:
        obj = tp.campaign
        name = "name" if name == "campaign" else name
    v = None if obj is None else obj.get(name)
    return v if isinstance(v, str) else None


@dataclass(frozen=True)
class EventCond:
    """A condition on the event itself: used by stage rules and as ``deal value`` in tags."""

    kind: str  # type | identity | channel | campaign | funnel | value | deal_value
    values: tuple[str, ...] = ()
    op: str = ""
    number: float = 0.0
    or_later: bool = False

    def holds(self, tp: Touchpoint, funnel_stage: str | None) -> bool:
        kind = self.kind
        if kind == "type":
            return tp.type in self.values
        if kind == "identity":
            return any(t in tp.identities for t in self.values)
        if kind == "channel":
            return tp.channel in self.values
        if kind == "campaign":
            return tp.campaign_name in self.values
        if kind == "funnel":
            if funnel_stage is None:
                return False
            want = STAGE_INDEX[self.values[0]]
            got = STAGE_INDEX[funnel_stage]
            return got >= want if self.or_later else got == want
        amount = None if tp.value is None else tp.value.get("amount")
        if isinstance(amount, bool) or not isinstance(amount, int | float):
            return False
        if kind == "deal_value" and tp.type != "deal_won":
            return False
        return _cmp(self.op, float(amount), self.number)

    def text(self) -> str:
        kind = self.kind
        if kind in ("type", "identity", "channel"):
            return f"{kind} {', '.join(self.values)}"
        if kind == "campaign":
            return "campaign " + ", ".join(_quote(v) for v in self.values)
        if kind == "funnel":
            return f"funnel {self.values[0]}" + (" or later" if self.or_later else "")
        if kind == "deal_value":
            return f"deal value {self.op} {_num(self.number)}"
        return f"value {self.op} {_num(self.number)}"


@dataclass(frozen=True)
class CountCond:
    """``N or more <type> [on <channels>] [where <field> <match> "<text>"] within <window>``."""

    n: int
    event_type: str | None  # None: any event
    window_ms: int
    channels: tuple[str, ...] = ()
    field_name: str | None = None
    match: str = ""
    needle: str = ""
    id: str = field(default="", compare=False)

    def __post_init__(self) -> None:
        digest = blake2b(self.text().encode(), digest_size=5).hexdigest()
        object.__setattr__(self, "id", digest)

    def matches(self, tp: Touchpoint) -> bool:
        if self.event_type is not None and tp.type != self.event_type:
            return False
        if self.channels and tp.channel not in self.channels:
            return False
        if self.field_name is None:
            return True
        v = _field_value(tp, self.field_name)
        if v is None:
            return False
        v = v.lower()
        if self.match == "contains":
            return self.needle in v
        if self.match == "is":
            return v == self.needle
        return v.startswith(self.needle)

    def record(self, times: list[int], t: int) -> None:
        """Keep the latest ``n`` matching times, sorted (the window is judged from them)."""
        if len(times) >= self.n and t <= times[0]:
            return
        i = len(times)
        while i and times[i - 1] > t:
            i -= 1
        times.insert(i, t)
        if len(times) > self.n:
            del times[0]

    def holds_at(self, times: Sequence[int], t: int) -> bool:
        lo = t - self.window_ms
        return sum(1 for x in times if lo <= x <= t) >= self.n

    def text(self) -> str:
        what = self.event_type or "events"
        out = f"{self.n} or more {what}"
        if self.channels:
            out += " on " + ", ".join(self.channels)
        if self.field_name is not None:
            out += f" where {self.field_name} {self.match} {_quote(self.needle)}"
        return out + f" within {format_duration(self.window_ms)}"


@dataclass(frozen=True)
class PersonCond:
    """A condition on the profile after the event: channel/campaign used, stage, totals."""

    kind: str  # channel | campaign | stage | funnel | revenue | deals | events
    values: tuple[str, ...] = ()
    op: str = ""
    number: float = 0.0
    or_later: bool = False

    def holds(self, facts: Facts) -> bool:
        kind = self.kind
        if kind == "channel":
            return any(facts.used_channel(c) for c in self.values)
        if kind == "campaign":
            return any(facts.touched_campaign(c) for c in self.values)
        if kind == "stage":
            cur, want = facts.lifecycle(), LIFECYCLE_INDEX[self.values[0]]
            return cur >= want if self.or_later else cur == want
        if kind == "funnel":
            return facts.reached_funnel(STAGE_INDEX[self.values[0]], self.or_later)
        if kind == "revenue":
            return _cmp(self.op, facts.revenue_major(), self.number)
        if kind == "deals":
            return _cmp(self.op, facts.deals(), self.number)
        return _cmp(self.op, facts.events(), self.number)

    def text(self) -> str:
        kind = self.kind
        if kind == "channel":
            return "channel " + ", ".join(self.values)
        if kind == "campaign":
            return "campaign " + ", ".join(_quote(v) for v in self.values)
        if kind in ("stage", "funnel"):
            return f"{kind} {self.values[0]}" + (" or later" if self.or_later else "")
        return f"{kind} {self.op} {_num(self.number)}"


TagCond = CountCond | PersonCond | EventCond


@dataclass(frozen=True)
class TagRule:
    tag: str
    conditions: tuple[TagCond, ...]
    expires_ms: int | None = None
    line: int = field(default=0, compare=False)

    def text(self) -> str:
        out = f"tag {self.tag} when " + " and ".join(c.text() for c in self.conditions)
        if self.expires_ms is not None:
            out += f" expires after {format_duration(self.expires_ms)}"
        return out


@dataclass(frozen=True)
class StageRule:
    stage: str  # a LIFECYCLE stage other than "anonymous"
    conditions: tuple[EventCond, ...]
    line: int = field(default=0, compare=False)

    def text(self) -> str:
        return f"stage {self.stage} when " + " and ".join(c.text() for c in self.conditions)


def _stage(stage: str, *conditions: EventCond) -> StageRule:
    return StageRule(stage, conditions)


#: The lifecycle without a tenant file: known once any identifier other than a cookie id is
#: seen, then by the CRM's own events.
DEFAULT_STAGE_RULES: tuple[StageRule, ...] = (
    _stage("known", EventCond("identity", tuple(t for t in IDENTITY_TYPES if t != "anonymous_id"))),
    _stage("lead", EventCond("type", ("lead",))),
    _stage("opportunity", EventCond("type", ("opportunity",))),
    _stage("customer", EventCond("type", ("deal_won",))),
)


class RuleSet:
    """One tenant's compiled rules: the lifecycle (defaults where the file is silent) and tags."""

    __slots__ = ("_by_identity", "_by_type", "_general", "counts", "stage_rules", "tag_rules")

    def __init__(self, stage_rules: Iterable[StageRule] = (), tag_rules: Iterable[TagRule] = ()) -> None:
        own = tuple(stage_rules)
        overridden = {r.stage for r in own}
        self.stage_rules: tuple[StageRule, ...] = (
            *(r for r in DEFAULT_STAGE_RULES if r.stage not in overridden), *own
        )
        self.tag_rules: tuple[TagRule, ...] = tuple(tag_rules)
        counts: dict[str, CountCond] = {}
        for rule in self.tag_rules:
            for c in rule.conditions:
                if isinstance(c, CountCond):
                    counts.setdefault(c.id, c)
        self.counts: tuple[CountCond, ...] = tuple(counts.values())
        # Stage rules run on every event, so the common shapes are tables: a rule that is only
        # "type ..." is a lookup by type, one that is only "identity ..." a set test; the rest
        # run as written, highest stage first.
        self._by_type: dict[str, int] = {}
        self._by_identity: list[tuple[int, frozenset[str]]] = []
        general: list[tuple[int, tuple[EventCond, ...]]] = []
        for rule in self.stage_rules:
            idx = LIFECYCLE_INDEX[rule.stage]
            (first, *more) = rule.conditions
            if not more and first.kind == "type":
                for t in first.values:
                    self._by_type[t] = max(idx, self._by_type.get(t, 0))
            elif not more and first.kind == "identity":
                self._by_identity.append((idx, frozenset(first.values)))
            else:
                general.append((idx, rule.conditions))
        self._by_identity.sort(key=lambda x: -x[0])
        self._general = tuple(sorted(general, key=lambda x: -x[0]))

    def event_stage(self, tp: Touchpoint, funnel_stage: str | None) -> int:
        """The highest lifecycle stage this event qualifies the person for (0: anonymous)."""
        best = self._by_type.get(tp.type, 0)
        for idx, ids in self._by_identity:
            if idx <= best:
                break
            if not ids.isdisjoint(tp.identities):
                best = idx
                break
        for idx, conds in self._general:
            if idx <= best:
                break
            if all(c.holds(tp, funnel_stage) for c in conds):
                best = idx
                break
        return best

    def text(self) -> str:
        return "".join(r.text() + "\n" for r in (*self.stage_rules, *self.tag_rules))

    def __eq__(self, other: object) -> bool:
        return isinstance(other, RuleSet) and (self.stage_rules, self.tag_rules) == (
            other.stage_rules, other.tag_rules
        )

    def __hash__(self) -> int:
        return hash((self.stage_rules, self.tag_rules))


Tags = dict[str, list[int | None]]  # tag -> [since, until]; until None: never expires


def evaluate_tags(
    rules: RuleSet,
    tags: Tags,
    windows: Mapping[str, Sequence[int]],
    facts: Facts,
    t: int,
    tp: Touchpoint | None = None,
    funnel_stage: str | None = None,
) -> bool:
    """Set the tags whose conditions hold at event time ``t``; drop those expired by then.

    ``tp``: the event just applied (None at an identity merge: event conditions do not hold then);
    ``tags`` is changed in place; ``windows``: count-condition id → its kept times (already
    updated with ``tp``). Returns whether ``tags`` changed."""
    changed = False
    for name in [n for n, (_, until) in tags.items() if until is not None and until <= t]:
        del tags[name]
        changed = True
    for rule in rules.tag_rules:
        ok = True
        for c in rule.conditions:
            if isinstance(c, CountCond):
                ok = c.holds_at(windows.get(c.id, ()), t)
            elif isinstance(c, PersonCond):
                ok = c.holds(facts)
            else:
                ok = tp is not None and c.holds(tp, funnel_stage)
            if not ok:
                break
        if not ok:
            continue
        until = None if rule.expires_ms is None else t + rule.expires_ms
        cur = tags.get(rule.tag)
        if cur is None:
            tags[rule.tag] = [t, until]
            changed = True
            continue
        since, old_until = cur
        new = [t if since is None or t < since else since,
               None if old_until is None or until is None else max(old_until, until)]
        if new != cur:
            tags[rule.tag] = new
            changed = True
    return changed


def fold_tags(into: Tags, other: Mapping[str, list[int | None]]) -> None:
    """A merged person has every tag either side had: earliest since, latest until (None wins)."""
    for name, (since, until) in other.items():
        cur = into.get(name)
        if cur is None:
            into[name] = [since, until]
            continue
        s0, u0 = cur
        earliest = since if s0 is None or (since is not None and since < s0) else s0
        into[name] = [earliest, None if u0 is None or until is None else max(u0, until)]


def fold_windows(rules: RuleSet, into: dict[str, list[int]], other: Mapping[str, Sequence[int]]) -> None:
    """Merge count-condition times: the latest N of both sides (N of the condition; unknown ids:
    conditions no longer in the file, dropped)."""
    by_id = {c.id: c for c in rules.counts}
    for cid, times in other.items():
        cond = by_id.get(cid)
        if cond is None:
            continue
        merged = sorted([*into.get(cid, ()), *times])[-cond.n:]
        into[cid] = merged
    for cid in [c for c in into if c not in by_id]:
        del into[cid]


# ----------------------------------------------------------------------------- the parser

_TOKEN = re.compile(
    r"""\s*(?:
        (?P<str>"(?:[^"\\]|\\.)*")
      | (?P<op>>=|<=|>|<|=)
      | (?P<comma>,)
      | (?P<word>[A-Za-z0-9_][A-Za-z0-9_.:/+-]*)
      | (?P<bad>\S)
    )""",
    re.VERBOSE,
)
_DURATION = re.compile(r"(\d{1,9})(ms|s|m|h|d|w)\Z")
_NUMBER = re.compile(r"\d{1,15}(\.\d{1,6})?\Z")


@dataclass
class _Tok:
    kind: str  # str | op | comma | word
    text: str
    col: int


class _Line:
    """Tokens of one line with a cursor; every error names the file, line and what was expected."""

    def __init__(self, source: str, lineno: int, text: str) -> None:
        self.source = source
        self.lineno = lineno
        self.toks: list[_Tok] = []
        pos = 0
        while pos < len(text):
            m = _TOKEN.match(text, pos)
            if m is None or m.end() == pos:  # only trailing whitespace is left
                break
            pos = m.end()
            kind = m.lastgroup or "bad"
            raw = m.group(kind)
            col = m.start(kind) + 1
            if kind == "bad":
                if raw == '"':
                    raise self.error(f"column {col}: unterminated text (a closing \" is missing)")
                raise self.error(f"column {col}: unexpected character {raw!r}")
            if kind == "str":
                raw = re.sub(r"\\(.)", r"\1", raw[1:-1])
            self.toks.append(_Tok(kind, raw, col))
        self.i = 0

    def error(self, message: str) -> RuleError:
        return RuleError(self.source, self.lineno, message)

    def peek(self, ahead: int = 0) -> _Tok | None:
        j = self.i + ahead
        return self.toks[j] if j < len(self.toks) else None

    def at_word(self, *words: str, ahead: int = 0) -> bool:
        tok = self.peek(ahead)
        return tok is not None and tok.kind == "word" and tok.text.lower() in words

    def next(self, what: str) -> _Tok:
        tok = self.peek()
        if tok is None:
            raise self.error(f"expected {what}, but the line ends")
        self.i += 1
        return tok

    def word(self, what: str) -> str:
        tok = self.next(what)
        if tok.kind != "word":
            raise self.error(f"column {tok.col}: expected {what}, got {tok.text!r}")
        return tok.text

    def keyword(self, *words: str) -> str:
        tok = self.next(" or ".join(repr(w) for w in words))
        if tok.kind != "word" or tok.text.lower() not in words:
            raise self.error(f"column {tok.col}: expected {' or '.join(repr(w) for w in words)}, got {tok.text!r}")
        return tok.text.lower()

    def string(self, what: str) -> str:
        tok = self.next(what)
        if tok.kind != "str":
            raise self.error(f'column {tok.col}: expected {what} in double quotes, got {tok.text!r}')
        return tok.text

    def op(self) -> str:
        tok = self.next("a comparison (>=, >, <=, <, =)")
        if tok.kind != "op":
            raise self.error(f"column {tok.col}: expected a comparison (>=, >, <=, <, =), got {tok.text!r}")
        return tok.text

    def number(self, integer: bool = False) -> float:
        what = "a whole number" if integer else "a number"
        tok = self.next(what)
        if tok.kind != "word" or not _NUMBER.match(tok.text) or (integer and "." in tok.text):
            raise self.error(f"column {tok.col}: expected {what}, got {tok.text!r}")
        return float(tok.text)

    def duration(self) -> int:
        tok = self.next("a duration such as 7d")
        m = _DURATION.match(tok.text.lower()) if tok.kind == "word" else None
        if m is None or int(m.group(1)) == 0:
            raise self.error(
                f"column {tok.col}: expected a duration such as 90s, 30m, 12h, 7d or 2w, got {tok.text!r}"
            )
        return int(m.group(1)) * UNITS[m.group(2)]

    def names(self, what: str, allowed: Iterable[str]) -> tuple[str, ...]:
        """``a, b, c`` of names from ``allowed`` (lower-cased), in the order written, no repeats."""
        allowed = set(allowed)
        out: list[str] = []
        while True:
            tok = self.next(what)
            name = tok.text.lower()
            if tok.kind != "word" or name not in allowed:
                known = ", ".join(sorted(allowed))
                raise self.error(f"column {tok.col}: unknown {what} {tok.text!r} (known: {known})")
            if name not in out:
                out.append(name)
            if not self._comma():
                return tuple(out)

    def strings(self, what: str) -> tuple[str, ...]:
        out: list[str] = []
        while True:
            s = self.string(what)
            if s not in out:
                out.append(s)
            if not self._comma():
                return tuple(out)

    def _comma(self) -> bool:
        tok = self.peek()
        if tok is not None and tok.kind == "comma":
            self.i += 1
            return True
        return False

    def or_later(self) -> bool:
        if self.at_word("or") and self.at_word("later", ahead=1):
            self.i += 2
            return True
        return False

    def end(self) -> None:
        tok = self.peek()
        if tok is not None:
            raise self.error(f"column {tok.col}: unexpected {tok.text!r} (expected 'and' or the end of the line)")


def _event_cond(ln: _Line) -> EventCond:
    kind = ln.keyword("type", "identity", "channel", "campaign", "funnel", "value")
    if kind == "type":
        return EventCond("type", ln.names("event type", TYPES))
    if kind == "identity":
        return EventCond("identity", ln.names("identifier type", IDENTITY_TYPES))
    if kind == "channel":
        return EventCond("channel", ln.names("channel", CHANNELS))
    if kind == "campaign":
        return EventCond("campaign", ln.strings("campaign name"))
    if kind == "funnel":
        stage = ln.names("funnel stage", STAGES)
        if len(stage) > 1:
            raise ln.error("funnel takes one stage")
        return EventCond("funnel", stage, or_later=ln.or_later())
    return EventCond("value", op=ln.op(), number=ln.number())


def _count_cond(ln: _Line) -> CountCond:
    tok = ln.next("a count")
    if not tok.text.isdigit() or not 1 <= int(tok.text) <= MAX_COUNT:
        raise ln.error(f"column {tok.col}: expected a count from 1 to {MAX_COUNT}, got {tok.text!r}")
    n = int(tok.text)
    ln.keyword("or")
    ln.keyword("more")
    what = ln.word("an event type or 'events'").lower()
    if what != "events" and what not in TYPES:
        raise ln.error(f"unknown event type {what!r} (known: events, {', '.join(sorted(TYPES))})")
    channels: tuple[str, ...] = ()
    field_name: str | None = None
    match = needle = ""
    if ln.at_word("on"):
        ln.i += 1
        channels = ln.names("channel", CHANNELS)
    if ln.at_word("where"):
        ln.i += 1
        field_name = ln.keyword(*FIELDS)
        match = ln.keyword("contains", "is", "starts")
        if match == "starts":
            ln.keyword("with")
            match = "starts with"
        needle = ln.string("the text to match").lower()
        if not needle:
            raise ln.error("the text to match is empty")
    ln.keyword("within")
    window = ln.duration()
    return CountCond(n, None if what == "events" else what, window, channels, field_name, match, needle)


def _tag_cond(ln: _Line) -> TagCond:
    tok = ln.peek()
    if tok is not None and tok.kind == "word" and tok.text.isdigit():
        return _count_cond(ln)
    kind = ln.keyword("channel", "campaign", "stage", "funnel", "revenue", "deals", "events", "deal")
    if kind == "channel":
        return PersonCond("channel", ln.names("channel", CHANNELS))
    if kind == "campaign":
        return PersonCond("campaign", ln.strings("campaign name"))
    if kind in ("stage", "funnel"):
        allowed = LIFECYCLE if kind == "stage" else STAGES
        stage = ln.names("lifecycle stage" if kind == "stage" else "funnel stage", allowed)
        if len(stage) > 1:
            raise ln.error(f"{kind} takes one stage")
        return PersonCond(kind, stage, or_later=ln.or_later())
    if kind == "deal":
        ln.keyword("value")
        return EventCond("deal_value", op=ln.op(), number=ln.number())
    return PersonCond(kind, op=ln.op(), number=ln.number(integer=kind != "revenue"))


def _parse_line(ln: _Line) -> StageRule | TagRule:
    head = ln.keyword("stage", "tag")
    if head == "stage":
        stage = ln.word("a lifecycle stage").lower()
        if stage not in LIFECYCLE[1:]:
            raise ln.error(f"unknown lifecycle stage {stage!r} (known: {', '.join(LIFECYCLE[1:])})")
        ln.keyword("when")
        conds = [_event_cond(ln)]
        while ln.at_word("and"):
            ln.i += 1
            conds.append(_event_cond(ln))
        ln.end()
        return StageRule(stage, tuple(conds), ln.lineno)
    tok = ln.next("a tag name")
    if tok.kind != "word" or not _NAME.match(tok.text) or len(tok.text) > MAX_NAME:
        raise ln.error(
            f"column {tok.col}: a tag name is letters, digits and _ . : - (at most {MAX_NAME}), got {tok.text!r}"
        )
    if tok.text.lower() in ("when", "and", "expires"):
        raise ln.error(f"column {tok.col}: a tag name is missing before {tok.text!r}")
    ln.keyword("when")
    tag_conds = [_tag_cond(ln)]
    expires: int | None = None
    while True:
        if ln.at_word("and"):
            ln.i += 1
            tag_conds.append(_tag_cond(ln))
            continue
        if ln.at_word("expires"):
            ln.i += 1
            ln.keyword("after")
            expires = ln.duration()
        break
    ln.end()
    return TagRule(tok.text, tuple(tag_conds), expires, ln.lineno)


def parse_rules(text: str, source: str = "<rules>") -> RuleSet:
    """Parse one tenant's rule file; raises :class:`RuleError` naming ``source`` and the line."""
    stage_rules: list[StageRule] = []
    tag_rules: list[TagRule] = []
    for lineno, raw in enumerate(text.splitlines(), 1):
        body = _strip_comment(raw)
        if not body.strip():
            continue
        rule = _parse_line(_Line(source, lineno, body))
        (stage_rules if isinstance(rule, StageRule) else tag_rules).append(rule)  # type: ignore[arg-type]
    return RuleSet(stage_rules, tag_rules)


def _strip_comment(line: str) -> str:
    """Drop a ``#`` comment unless the ``#`` is inside double quotes."""
    quoted = escaped = False
    for i, ch in enumerate(line):
        if escaped:
            escaped = False
        elif ch == "\\" and quoted:
            escaped = True
        elif ch == '"':
            quoted = not quoted
        elif ch == "#" and not quoted:
            return line[:i]
    return line


def parse_tenant_rules(files: Mapping[str, tuple[str, str]]) -> dict[str, RuleSet]:
    """Tenant → (source name, text) → compiled rules; the first bad file raises :class:`RuleError`.

    The shell reads the files (one per tenant, e.g. ``rules/<tenant>.rules``); parsing stays pure."""
    return {tenant: parse_rules(text, source) for tenant, (source, text) in sorted(files.items())}


DEFAULT_RULES = RuleSet()
