"""Reading a NAB corpus directory (the benchmark's own layout, see /work/shared/data/nab/SOURCE.md).

``ROOT/data/<category>/<file>.csv`` (timestamp, value), ``ROOT/labels/combined_windows.json``,
``ROOT/config/profiles.json`` and ``ROOT/results/<detector>/<category>/<detector>_<file>.csv``
(NAB's per-row detector output, with an ``anomaly_score`` column).
"""

from __future__ import annotations

import csv
import json
from datetime import datetime
from pathlib import Path

from streams.devtools.nab.scoring import PROFILES, LabelledFile, Profile, label_rows, profiles_from_config

DEFAULT_ROOT = Path("/work/shared/data/nab")


def parse_time(text: str) -> datetime:
    """NAB timestamps are naive local times, with or without fractional seconds."""
    return datetime.fromisoformat(text.strip())


def read_series(path: Path) -> tuple[list[datetime], list[float]]:
    with path.open(newline="") as f:
        rows = list(csv.DictReader(f))
    return [parse_time(r["timestamp"]) for r in rows], [float(r["value"]) for r in rows]


def read_windows(root: Path) -> dict[str, list[tuple[datetime, datetime]]]:
    raw = json.loads((root / "labels" / "combined_windows.json").read_text())
    return {name: [(parse_time(a), parse_time(b)) for a, b in spans] for name, spans in raw.items()}


def read_profiles(root: Path) -> tuple[Profile, ...]:
    path = root / "config" / "profiles.json"
    return profiles_from_config(json.loads(path.read_text())) if path.exists() else PROFILES


def data_files(root: Path, categories: tuple[str, ...] | None = None) -> list[str]:
    """Relative names (``category/file.csv``) of the data files, sorted; all categories by default."""
    base = root / "data"
    cats = categories or tuple(sorted(p.name for p in base.iterdir() if p.is_dir()))
    return sorted(f"{c}/{p.name}" for c in cats if (base / c).is_dir() for p in (base / c).glob("*.csv"))


def labelled(root: Path, name: str, windows: dict[str, list[tuple[datetime, datetime]]]) -> LabelledFile:
    timestamps, _ = read_series(root / "data" / name)
    return label_rows(name, timestamps, windows.get(name, []))


def result_path(root: Path, detector: str, name: str) -> Path:
    category, file = name.split("/", 1)
    return root / "results" / detector / category / f"{detector}_{file}"


def read_result_scores(path: Path) -> tuple[list[datetime], list[float]]:
    """The ``anomaly_score`` column of a NAB per-row result file."""
    with path.open(newline="") as f:
        rows = list(csv.DictReader(f))
    return [parse_time(r["timestamp"]) for r in rows], [float(r["anomaly_score"]) for r in rows]
