"""One ClickHouse client per process, embedded (chdb) or server (HTTP), same code path.

Why a single-thread executor: chdb runs one engine per process and clickhouse-connect
clients are not meant for concurrent use, so every call goes through one worker thread. That
also keeps inserts off the asyncio event loop (``await ch.run(fn)``) without locking.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit, urlunsplit

import clickhouse_connect

T = TypeVar("T")


def redact(url: str) -> str:
    """The URL with any password replaced, for logs and `status` output."""
    parts = urlsplit(url)
    if parts.password:
        netloc = f"{parts.username}:***@{parts.hostname}" + (f":{parts.port}" if parts.port else "")
        return urlunsplit(parts._replace(netloc=netloc))
    return url


def database_of(url: str, default: str) -> str:
    """An HTTP URL may name the database in its path; chdb paths never do."""
    if url.startswith("chdb:"):
        return default
    path = urlsplit(url).path.strip("/")
    return path or default


#: engines that collapse rows at read time with FINAL (every table of ours is one of them)
FINAL_ENGINES = ("ReplacingMergeTree", "CollapsingMergeTree", "SummingMergeTree", "AggregatingMergeTree")


class ClickHouse:
    """Process-wide handle; ``db`` is the database every table name is qualified with."""

    def __init__(self, url: str, database: str = "touchstream") -> None:
        self.url = url
        self.db = database_of(url, database)
        if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", self.db):
            raise ValueError(f"invalid ClickHouse database name {self.db!r}")
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="clickhouse")
        self._client: Any = None
        self._lock = threading.Lock()

    @property
    def embedded(self) -> bool:
        return self.url.startswith("chdb:")

    def _connect(self) -> Any:
        with self._lock:
            if self._client is None:
                if self.embedded:
                    path = self.url[len("chdb://"):] if self.url.startswith("chdb://") else self.url[5:]
                    Path(path).mkdir(parents=True, exist_ok=True)
                    client = clickhouse_connect.get_client(dsn=f"chdb://{path}")
                    client.command(f"CREATE DATABASE IF NOT EXISTS {self.db}")
                else:
                    parts = urlsplit(self.url)
                    # connect to `default` first: the target database may not exist yet
                    dsn = urlunsplit(parts._replace(path="/default"))
                    client = clickhouse_connect.get_client(dsn=dsn)
                    client.command(f"CREATE DATABASE IF NOT EXISTS {self.db}")
                self._client = client
            return self._client

    def reset(self) -> None:
        """Drop the client so the next call reconnects (after an outage)."""
        with self._lock:
            client, self._client = self._client, None
        if client is not None and not self.embedded:
            with contextlib.suppress(Exception):  # a broken connection may fail to close; it is discarded
                client.close()

    # --- synchronous API (CLI, tests, migrations) ---
    def command(self, sql: str, settings: dict[str, Any] | None = None) -> Any:
        return self._connect().command(sql, settings=settings)

    def query(self, sql: str, parameters: dict[str, Any] | None = None) -> list[tuple[Any, ...]]:
        return list(self._connect().query(sql, parameters=parameters).result_rows)

    def insert(
        self,
        table: str,
        rows: Sequence[Sequence[Any]],
        columns: Sequence[str],
        dedup_token: str | None = None,
    ) -> None:
        settings: dict[str, Any] = {}
        if dedup_token:
            settings["insert_deduplication_token"] = dedup_token
        self._connect().insert(f"{self.db}.{table}", rows, column_names=list(columns), settings=settings)

    def count(self, table: str, final: bool = True) -> int:
        """Rows of ``table``; ``final``: as queries read them (FINAL), where the engine has it."""
        if final:
            engine = self.query("SELECT engine FROM system.tables WHERE database = {db:String} AND name = {t:String}",
                                {"db": self.db, "t": table})
            final = bool(engine) and engine[0][0].endswith(FINAL_ENGINES)
        return int(self.query(f"SELECT count() FROM `{self.db}`.`{table}`{' FINAL' if final else ''}")[0][0])

    def tables(self) -> list[str]:
        """The data tables: not views, not the migrations ledger, and not the tables ClickHouse
        keeps for itself (a materialized view such as ``person_rfm`` holds its rows in
        ``.inner_id.<uuid>`` and builds each refresh in a temporary table beside it, a plain
        MergeTree that exists only while the refresh runs)."""
        rows = self.query(
            "SELECT name FROM system.tables WHERE database = {db:String} AND engine NOT LIKE '%View%' "
            "AND name != 'schema_migrations' AND NOT startsWith(name, '.') AND NOT startsWith(name, '_tmp') "
            "ORDER BY name",
            {"db": self.db},
        )
        return [r[0] for r in rows]

    # --- async API (worker) ---
    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, fn, *args)

    def close(self) -> None:
        self._executor.shutdown(wait=True)
        client, self._client = self._client, None
        if client is not None:
            with contextlib.suppress(Exception):  # best effort on shutdown
                client.close()
