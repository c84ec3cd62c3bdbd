"""The composed core through the offline runner: deterministic bytes, every event accounted for."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import orjson
import pytest

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
