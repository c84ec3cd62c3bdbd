"""The composed core through the offline runner: deterministic bytes, every event accounted for."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import orjson

from streams import simulate
from streams.offline import OUTPUT_FILES, process_file

START = 1_767_225_600_000  # 2026-01-01T00:00:00Z


def _feed(path: Path, noise: float = 0.0) -> list[dict]:
    cfg = simulate.SimConfig(rate=40, duration_s=600, seed=3, start_ms=START, incidents=())
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
    # per session, session_seq counts 1..n in arrival order
    seqs: dict[str, list[int]] = {}
    for e in enriched:
        seqs.setdefault(e["session_id"], []).append(e["session_seq"])
    assert all(v == list(range(1, len(v) + 1)) for v in seqs.values())
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
