"""Versioned, idempotent migrations from ``schemas/clickhouse/NNNN_name.sql``.

The files are package data (``streams/schemas`` is a link to the repository's ``schemas/``, and the
wheel carries a copy), read through :mod:`importlib.resources`: an installed ``touchstream``
migrates without a source tree (tests/integration/test_wheel_install.py).

Each file runs once per database; ``schema_migrations`` records version, name and checksum.
A changed checksum of an applied file is an error (edit by adding a new file, never in place).
Statements use ``IF NOT EXISTS`` as well, so a half-applied file (crash mid-way) re-runs safely.
Placeholders: ``{db}`` (database), ``{raw_ttl_days}`` (TOUCHSTREAM_RAW_TTL_DAYS, default 400).
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from importlib.resources import files
from pathlib import Path

from streams.clickhouse.client import ClickHouse
from streams.progress import Progress

SCHEMA_DIR = Path(str(files("streams").joinpath("schemas", "clickhouse")))


@dataclass(frozen=True)
class Migration:
    version: str
    name: str
    sql: str

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.sql.encode()).hexdigest()[:16]


def load(schema_dir: Path = SCHEMA_DIR) -> list[Migration]:
    out = []
    for path in sorted(schema_dir.glob("[0-9][0-9][0-9][0-9]_*.sql")):
        version, _, name = path.stem.partition("_")
        out.append(Migration(version, name, path.read_text()))
    if not out:
        raise FileNotFoundError(f"no migrations in {schema_dir}")
    return out


def statements(sql: str) -> list[str]:
    """Split on ';' at line ends; our DDL has no semicolons inside strings."""
    out, buf = [], []
    for line in sql.splitlines():
        if line.strip().startswith("--"):
            continue
        buf.append(line)
        if line.rstrip().endswith(";"):
            stmt = "\n".join(buf).strip().rstrip(";").strip()
            if stmt:
                out.append(stmt)
            buf = []
    tail = "\n".join(buf).strip()
    if tail:
        out.append(tail)
    return out


def migrate(
    ch: ClickHouse, schema_dir: Path = SCHEMA_DIR, raw_ttl_days: int | None = None, progress: Progress | None = None
) -> list[str]:
    """Apply pending migrations; returns the versions applied now (empty when up to date).

    ``progress`` (``touchstream migrate``) counts the statements of the pending migrations."""
    ttl = raw_ttl_days if raw_ttl_days is not None else int(os.environ.get("TOUCHSTREAM_RAW_TTL_DAYS", "400"))
    ch.command(
        f"CREATE TABLE IF NOT EXISTS {ch.db}.schema_migrations "
        "(version String, name String, checksum String, applied_at DateTime DEFAULT now()) "
        "ENGINE = MergeTree ORDER BY version"
    )
    applied = {v: c for v, c in ch.query(f"SELECT version, checksum FROM {ch.db}.schema_migrations")}
    done: list[str] = []
    migrations = load(schema_dir)
    if progress is not None:
        progress.set_total(sum(len(statements(m.sql)) for m in migrations if m.version not in applied))
    for m in migrations:
        if m.version in applied:
            if applied[m.version] != m.checksum:
                raise RuntimeError(
                    f"migration {m.version}_{m.name} changed after it was applied; add a new migration instead"
                )
            continue
        for stmt in statements(m.sql):
            ch.command(stmt.replace("{db}", ch.db).replace("{raw_ttl_days}", str(ttl)))
            if progress is not None:
                progress.advance()
        ch.insert("schema_migrations", [[m.version, m.name, m.checksum]], ["version", "name", "checksum"])
        done.append(m.version)
    return done
