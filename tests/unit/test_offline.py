"""The composed core through the offline runner: deterministic bytes, every event accounted for."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from streams.devtools import simulate
from streams.offline import OUTPUT_FILES, process_file

START = 1_767_225_600_000  # 2026-01-01T00:00:00Z


def _feed(path: Path, noise: float = 0.0, rate: float = 40, duration_s: float = 600) -> list[dict]:
    cfg = simulate.SimConfig(rate=rate, duration_s=duration_s, seed=3, start_ms=START, incidents=())
    events = list(simulate.generate(cfg))
    lines = simulate.add_noise(events, noise, seed=5) if noise else (orjson.dumps(e) for e in events)
    path.write_bytes(b"".join(line + b"\n" for line in lines))
    return events


def _jsonl(path: Path) -> list[dict]:
    return [orjson.loads(x) for x in path.read_bytes().splitlines()]


def test_same_input_same_output_bytes(tmp_path: Path) -> None:
    _feed(tmp_path / "in.jsonl")
    process_file(tmp_path / "in.jsonl", tmp_path / "a")
    process_file(tmp_path / "in.jsonl", tmp_path / "b")
    for _, name in (*OUTPUT_FILES, ("dlq", "dlq.jsonl")):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes(), name


def test_every_event_enriched_once_and_in_exactly_one_session(tmp_path: Path) -> None:
    events = _feed(tmp_path / "in.jsonl")
    summary = process_file(tmp_path / "in.jsonl", tmp_path / "out")
    enriched = _jsonl(tmp_path / "out" / "enriched.jsonl")
    assert summary.valid == len(events) and summary.dead_lettered == 0
    assert [e["event_id"] for e in enriched] == [e["event_id"] for e in events]
    sessions = _jsonl(tmp_path / "out" / "sessions.jsonl")
    assert sum(s["touchpoints"] for s in sessions) == len(enriched)  # close_all at end of input
    session_ids = {s["session_id"] for s in sessions}
    merged = {m for s in sessions for m in s["merged_session_ids"]}
    assert {e["session_id"] for e in enriched} <= session_ids | merged
    # per session, session_seq counts 1..n in arrival order; a session that absorbed another (an
    # identity merge, a bridging event) continues the sum from there (streams/core/sessions.py)
    joined = merged | {s["session_id"] for s in sessions if s["merged_session_ids"]}
    seqs: dict[str, list[int]] = {}
    for e in enriched:
        seqs.setdefault(e["session_id"], []).append(e["session_seq"])
    assert all(v == list(range(1, len(v) + 1)) for sid, v in seqs.items() if sid not in joined)
    assert all(v == sorted(set(v)) for v in seqs.values())  # joined ones still only go up
    # funnel rows add up to the enriched events per stage (total dimension)
    funnel = _jsonl(tmp_path / "out" / "funnel.jsonl")
    by_stage = Counter(r["stage"] for r in funnel for _ in range(r["events"]) if r["channel"] is None
                       and r["campaign"] is None)
    assert by_stage == Counter(e["stage"] for e in enriched if e["stage"])


def test_bad_input_goes_to_dlq_with_its_reason_and_duplicates_are_dropped(tmp_path: Path) -> None:
    events = _feed(tmp_path / "in.jsonl", noise=0.05)
    summary = process_file(tmp_path / "in.jsonl", tmp_path / "out")
    dlq = _jsonl(tmp_path / "out" / "dlq.jsonl")
    enriched = _jsonl(tmp_path / "out" / "enriched.jsonl")
    assert len(enriched) == len(events)  # the valid stream is untouched by the noise
    assert summary.dead_lettered == len(dlq) > 0
    assert summary.duplicates > 0
    assert summary.lines == len(events) + len(dlq) + summary.duplicates
    reasons = Counter(d["reason"] for d in dlq)
    expected = set(simulate.NOISE_KINDS.values()) - {"duplicate"}
    assert set(reasons) == expected


def test_touchstream_process_with_pseudonymisation_emits_no_raw_emails_or_phones(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """`touchstream process` end to end (CLI → settings → pipeline → files) with one tenant configured."""
    from streams.cli import build_parser

    events = _feed(tmp_path / "in.jsonl", rate=20, duration_s=300)
    tenants = sorted({e["tenant_id"] for e in events})
    hidden, shown = tenants[0], tenants[1:]
    monkeypatch.setenv("TOUCHSTREAM_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("TOUCHSTREAM_PSEUDONYMISE", hidden)
    monkeypatch.setenv("TOUCHSTREAM_PSEUDONYM_SALT", "a-long-enough-test-salt")
    monkeypatch.delenv("TOUCHSTREAM_PSEUDONYM_TYPES", raising=False)
    args = build_parser().parse_args(["process", str(tmp_path / "in.jsonl"), "--out", str(tmp_path / "out")])
    assert args.fn(args) == 0
    captured = capsys.readouterr()
    assert orjson.loads(captured.out)["valid"] == len(events)  # stdout: only the JSON summary
    assert "process:" in captured.err  # progress went to stderr

    def raw_values(tenant: str) -> set[bytes]:
        vals = set()
        for e in events:
            if e["tenant_id"] == tenant:
                for t in ("email", "phone", "whatsapp_id"):
                    if t in e["identities"]:
                        v = e["identities"][t]
                        vals.add((v.strip().lower() if t == "email" else v).encode())
        return vals

    assert raw_values(hidden), "the feed must give the configured tenant emails or phones to hide"
    outputs = {name: (tmp_path / "out" / name).read_bytes().lower() for _, name in OUTPUT_FILES}
    everything = b"".join(outputs.values())
    leaked = {v for v in raw_values(hidden) if v in everything}
    assert not leaked
    enriched = _jsonl(tmp_path / "out" / "enriched.jsonl")
    hidden_ids = [v for e in enriched if e["tenant_id"] == hidden for t, v in e["identities"].items()
                  if t in ("email", "phone", "whatsapp_id")]
    assert hidden_ids and all(v.startswith("h:") for v in hidden_ids)
    # the other tenants are untouched
    for tenant in shown:
        assert all(v in outputs["enriched.jsonl"] for v in raw_values(tenant))
    # stitching still worked on the raw values: same persons as a run without pseudonymisation
    plain = tmp_path / "plain"
    process_file(tmp_path / "in.jsonl", plain)
    a, b = ({e["person_id"] for e in _jsonl(p) if e["tenant_id"] == hidden}
            for p in (tmp_path / "out" / "enriched.jsonl", plain / "enriched.jsonl"))
    assert len(a) == len(b) and a != b  # as many persons, under keyed ids


# --- issue 18: one bad or repeated event must not change anything else -------------------------

def _outputs(out: Path) -> dict[str, list[dict]]:
    """Every output file, records without ``source`` (line numbers shift when lines are added)."""
    return {name: [{k: v for k, v in r.items() if k != "source"} for r in _jsonl(out / name)]
            for _, name in OUTPUT_FILES}


def _with_lines(src: Path, dst: Path, inserts: dict[int, list[bytes]]) -> None:
    """``src`` with lines added after the given 0-based line numbers."""
    lines = src.read_bytes().splitlines()
    out = []
    for i, line in enumerate(lines):
        out.append(line)
        out.extend(inserts.get(i, ()))
    dst.write_bytes(b"".join(x + b"\n" for x in out))


@pytest.mark.parametrize("occurred_at", ["9999-01-01T00:00:00Z", "2026-01-01T00:25:00.001Z", "2100-06-01T00:00:00Z"])
def test_one_event_from_the_future_changes_nothing_but_its_dead_letter(tmp_path: Path, occurred_at: str) -> None:
    """The backfill applies the live future bound against the wall clock at processing time: one
    event dated 9999 moved its tenant's watermark (every later event late) and the replay clock
    (every tenant's SLA deadlines) to year 9999. Now the outputs are those of the file without it."""
    events = _feed(tmp_path / "in.jsonl", rate=10)
    wall = START + 600_000  # "now" = the end of the feed (2026-01-01T00:10Z): the bound is 00:25Z
    absurd = dict(events[len(events) // 3], event_id="absurd-1", occurred_at=occurred_at)
    _with_lines(tmp_path / "in.jsonl", tmp_path / "bad.jsonl", {len(events) // 3: [orjson.dumps(absurd)]})
    process_file(tmp_path / "in.jsonl", tmp_path / "a", wall_clock=lambda: wall)
    summary = process_file(tmp_path / "bad.jsonl", tmp_path / "b", wall_clock=lambda: wall)
    assert _outputs(tmp_path / "b") == _outputs(tmp_path / "a")
    (letter,) = _jsonl(tmp_path / "b" / "dlq.jsonl")
    assert letter["reason"] == "future_timestamp" and orjson.loads(letter["original"])["event_id"] == "absurd-1"
    assert summary.dead_lettered == 1 and summary.valid == len(events)


def test_an_event_at_the_future_bound_is_history_and_one_past_it_is_refused(tmp_path: Path) -> None:
    events = _feed(tmp_path / "in.jsonl", rate=5, duration_s=120)
    wall = START + 120_000
    at_bound = dict(events[-1], event_id="at-bound", occurred_at="2026-01-01T00:17:00.000Z")  # wall + 900 s
    past = dict(events[-1], event_id="past-bound", occurred_at="2026-01-01T00:17:00.001Z")
    _with_lines(tmp_path / "in.jsonl", tmp_path / "edge.jsonl", {len(events) - 1: [orjson.dumps(at_bound),
                                                                                  orjson.dumps(past)]})
    process_file(tmp_path / "edge.jsonl", tmp_path / "out", wall_clock=lambda: wall)
    assert "at-bound" in {e["event_id"] for e in _jsonl(tmp_path / "out" / "enriched.jsonl")}
    assert [d["reason"] for d in _jsonl(tmp_path / "out" / "dlq.jsonl")] == ["future_timestamp"]


@settings(max_examples=60, deadline=None)
@given(
    steps=st.lists(
        st.tuples(st.sampled_from(["a", "b"]), st.integers(-3_600_000, 900_000), st.booleans(),
                  st.integers(0, 10**13)),
        min_size=1, max_size=30,
    ),
    live=st.booleans(),
)
def test_no_single_event_moves_a_watermark_past_the_contract_bound(
    steps: list[tuple[str, int, bool, int]], live: bool
) -> None:
    """The core's own guard (both paths: the live wall clock, or the backfill's ``received_ms``),
    for events that did not pass the validate stage's check: each tenant's watermark stays
    within ``max_future_ms`` of the clock, and events over it are dead-lettered, not applied."""
    from streams.core.contract import MIN_OCCURRED_MS
    from streams.core.model import Touchpoint
    from streams.core.pipeline import Pipeline, PipelineConfig

    p = Pipeline(PipelineConfig(max_future_ms=900_000))
    clock = START
    refused = 0
    for i, (tenant, offset, absurd, far) in enumerate(steps):
        clock += 1_000
        at = clock + 900_000 + 1 + far if absurd else max(MIN_OCCURRED_MS, clock + offset)
        tp = Touchpoint(event_id=f"e{i}", tenant_id=tenant, occurred_at=at, channel="web", type="page_view",
                        identities={"anonymous_id": f"x{i % 3}"})
        if live:
            p.process(tp, clock)
        else:
            p.process(tp, received_ms=clock)
        refused += absurd
        for _, max_seen in p.stores["watermark"].items():
            assert max_seen <= clock + 900_000
    out = p.drain()
    future = [d for d in out.dead_letters if d["reason"] == "future_timestamp"]
    assert len(future) == refused


def test_a_shuffled_file_with_resent_events_counts_each_event_once(tmp_path: Path) -> None:
    """The issue's case: a shuffled file and 150 events sent again, from right after the original
    to the end of the file (an hour later): each counted once in enriched, sessions and funnel, so
    every output equals the file's without the copies; a copy is a duplicate or, when older than
    the dedup floor, a ``too_late`` letter."""
    import random

    events = _feed(tmp_path / "sorted.jsonl", rate=4, duration_s=3600)
    rng = random.Random(18)
    lines = (tmp_path / "sorted.jsonl").read_bytes().splitlines()
    # shuffled: each line moves by up to ~2 min of the feed, a few by up to ~40 min (too late)
    keyed = sorted(range(len(lines)), key=lambda i: i + rng.uniform(-1000, 1000) * (20 if rng.random() < 0.01 else 1))
    shuffled = [lines[i] for i in keyed]
    (tmp_path / "shuffled.jsonl").write_bytes(b"".join(x + b"\n" for x in shuffled))
    inserts: dict[int, list[bytes]] = {}
    for src in rng.sample(range(len(shuffled)), 150):
        inserts.setdefault(rng.randrange(src, len(shuffled)), []).append(shuffled[src])
    _with_lines(tmp_path / "shuffled.jsonl", tmp_path / "resent.jsonl", inserts)

    process_file(tmp_path / "shuffled.jsonl", tmp_path / "plain")
    noisy = process_file(tmp_path / "resent.jsonl", tmp_path / "noisy")
    assert _outputs(tmp_path / "noisy") == _outputs(tmp_path / "plain")
    enriched = [e["event_id"] for e in _jsonl(tmp_path / "noisy" / "enriched.jsonl")]
    assert len(enriched) == len(set(enriched))
    assert sum(s["touchpoints"] for s in _jsonl(tmp_path / "noisy" / "sessions.jsonl")) == len(enriched)
    plain_letters = _jsonl(tmp_path / "plain" / "dlq.jsonl")
    letters = _jsonl(tmp_path / "noisy" / "dlq.jsonl")
    assert plain_letters and {d["reason"] for d in letters} == {"too_late"}  # the shuffle made some too late
    assert noisy.duplicates + len(letters) - len(plain_letters) == 150
    assert noisy.duplicates > 0 and len(letters) > len(plain_letters)  # both kinds of copy occurred
    assert len(enriched) + len(plain_letters) == len(events)  # every event applied once or refused
