"""Keyed state for the core, with dirty tracking so the shell persists once per key per batch.

Why a protocol instead of plain dicts: live, the values are backed by a Faust table whose
changelog must receive exactly one write per changed key per batch (every table write is one
Kafka message). Components call :meth:`Store.put` after changing a value; the shell drains
:meth:`MemoryStore.drain_dirty` after each batch. Offline, nobody drains and it is just a dict.

Values must be JSON-able (dict/list/str/int/float/bool/None) and are owned by the store:
a component may mutate a value it got, but must ``put`` it again for the change to persist.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, Protocol


class Store(Protocol):
    """What core components need from state: a keyed map plus a full scan for rebuilds."""

    def get(self, key: str) -> Any | None: ...

    def put(self, key: str, value: Any) -> None: ...

    def delete(self, key: str) -> None: ...

    def items(self) -> Iterator[tuple[str, Any]]: ...

    def __len__(self) -> int: ...


_DELETED = object()


class MemoryStore:
    """Dict-backed store that remembers which keys changed since the last drain."""

    __slots__ = ("_data", "_dirty", "name")

    def __init__(self, name: str = "") -> None:
        self.name = name
        self._data: dict[str, Any] = {}
        self._dirty: set[str] = set()

    def get(self, key: str) -> Any | None:
        return self._data.get(key)

    def put(self, key: str, value: Any) -> None:
        self._data[key] = value
        self._dirty.add(key)

    def delete(self, key: str) -> None:
        if self._data.pop(key, _DELETED) is not _DELETED:
            self._dirty.add(key)

    def items(self) -> Iterator[tuple[str, Any]]:
        return iter(list(self._data.items()))

    def __len__(self) -> int:
        return len(self._data)

    def __contains__(self, key: object) -> bool:
        return key in self._data

    def load(self, key: str, value: Any) -> None:
        """Install a recovered value without marking it dirty (changelog restore)."""
        self._data[key] = value

    def load_delete(self, key: str) -> None:
        """Remove a value during recovery without marking it dirty."""
        self._data.pop(key, None)

    def drain_dirty(self) -> list[tuple[str, Any | None]]:
        """Changed keys since the last drain, with their value (None = deleted)."""
        out = [(k, self._data.get(k)) for k in self._dirty]
        self._dirty.clear()
        return out

    def clear(self) -> None:
        self._data.clear()
        self._dirty.clear()
