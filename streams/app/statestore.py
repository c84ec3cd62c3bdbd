"""Persists the core's MemoryStores through one Faust table changelog, once per key per batch.

Why not ``table[key] = value``: Faust only allows that inside per-event stream iteration
(it reads the partition from the current event), which rules out batched ``take`` loops and
timers, and it costs a produce future per key. We write ``table.data`` and queue the changelog
records on the worker's :class:`~streams.app.produce.BatchSender`, naming the partition
explicitly: the partition of the key's tenant in ``touchpoints.valid``, computed with the same
murmur2 partitioner the producer used. On assignment the table is restored (the memory store
reads the changelog in bulk, :mod:`streams.app.replaystore`; Faust's recovery reads the rest),
and :meth:`StateBridge.reload` copies it back into the core's stores.

Atomicity: a batch changes many keys, and a kill -9 can land between two of their changelog
messages. So per partition the batch's whole delta is first written as a delta record, then
the keys one by one. The record is split into parts of at most ~512 KB (Kafka refuses
messages over 1 MB), keyed ``__wal<SEP><partition><SEP><part>`` and tagged with the batch's
sequence number and part count. The producer keeps order within a partition and every batch
is flushed before the next starts, so only the last batch can be half-written, and all its
parts precede its keys. Recovery re-applies the newest batch if all its parts are there
(completing a half-written batch); if a part is missing, no key of that batch was written, and
the state is already consistent without it.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import orjson
from faust.types import TP

from streams.app.produce import MAX_RECORD_BYTES, BatchSender, key_partition
from streams.app.replaystore import ReplayStore
from streams.core.state import MemoryStore

SEP = "\x1f"
WAL = "__wal"
WAL_PART_BYTES = 512 * 1024
#: Topic-level settings of the state changelog (Faust's and ``touchstream worker``'s pre-creation).
CHANGELOG_CONFIG: dict[str, str] = {"cleanup.policy": "compact", "max.message.bytes": str(MAX_RECORD_BYTES)}


def partition_for(key: str, partitions: int) -> int:
    """Same choice as the default Kafka partitioner for the tenant key of ``touchpoints.valid``."""
    return key_partition(key.encode(), partitions)


def right_sized(raw: bytes) -> bytes:
    """A copy of ``raw`` in an allocation of its own size, for values the table keeps.

    orjson returns its output in the buffer it wrote into, which is not shrunk: a 300-byte value
    holds ~4 KB (measured: 400k values of ~220 B cost 1,572 MB kept as returned, 102 MB copied;
    see home-assistant/core#181240). The table keeps one value per state key, so this was most
    of the process role's memory: the worker's peak RSS on the 200k-event bench fell from
    3.9 GB to 1.5 GB. The copy costs ~0.2 µs per value."""
    return bytes(memoryview(raw))


def tenant_of(store_key: str) -> str:
    """Every core store key starts with its tenant id followed by ``|`` (or is the tenant id)."""
    return store_key.split("|", 1)[0]


class StateBridge:
    def __init__(self, table: Any, stores: dict[str, MemoryStore], partitions: int) -> None:
        self.table = table
        self.stores = stores
        self.partitions = partitions
        self.writes = 0
        self.seq = 0

    def _put_local(self, partition: int, key: bytes, value: bytes | None) -> None:
        data = self.table.data
        if isinstance(data, ReplayStore):
            data.put(partition, key, value)
        elif hasattr(data, "_db_for_partition"):  # RocksDB store: one db per partition
            db = data._db_for_partition(partition)
            if value is None:
                db.delete(key)
                data._key_index.pop(key, None)
            else:
                db.put(key, value)
                data._key_index[key] = partition
        elif value is None:
            data.pop(key, None)
        else:
            data[key] = value

    @property
    def changelog(self) -> str:
        return str(self.table.changelog_topic.get_topic_name())

    def flush(self, sender: BatchSender) -> int:
        """Queue every key changed since the last flush on ``sender`` (delta record first); returns how many.

        The caller awaits ``sender.send()`` and then :meth:`persisted` with its result.
        """
        by_partition: dict[int, list[tuple[str, str, bytes | None]]] = {}
        dumps = orjson.dumps
        for ns, store in self.stores.items():
            for key, value in store.drain_dirty():  # each value serialized once: WAL part and key record
                by_partition.setdefault(partition_for(tenant_of(key), self.partitions), []).append(
                    (ns, key, None if value is None else right_sized(dumps(value))))
        n = 0
        self.seq += 1
        topic = self.changelog
        for partition, changes in by_partition.items():
            parts = _split(changes)
            for i, part in enumerate(parts):
                record = b'{"seq":%d,"part":%d,"parts":%d,"changes":[%s]}' % (self.seq, i, len(parts), b",".join(part))
                key = f"{WAL}{SEP}{partition}{SEP}{i}".encode()
                self._put_local(partition, key, record)
                sender.add(topic, key, record, partition)
            for ns, key, raw in changes:
                raw_key = f"{ns}{SEP}{key}".encode()
                self._put_local(partition, raw_key, raw)
                sender.add(topic, raw_key, raw, partition)
                n += 1
        self.writes += n
        return n

    def persisted(self, offsets: dict[tuple[str, int], int]) -> None:
        """Tell the store how far the changelog is in it, so a recovery reads only the rest (a
        RocksDB store keeps it across restarts, the memory store across rebalances)."""
        data = self.table.data
        if not hasattr(data, "set_persisted_offset"):
            return
        topic = self.changelog
        for (t, partition), offset in offsets.items():
            if t == topic:
                data.set_persisted_offset(TP(topic, partition), offset)

    def reload(self, active_partitions: Iterable[int]) -> int:
        """Replace the core's stores with what the table holds for the partitions we own now."""
        owned = set(active_partitions)
        for store in self.stores.values():
            store.clear()
        n = 0
        wal: dict[int, list[dict[str, Any]]] = {}
        data = self.table.data
        filtered = isinstance(data, ReplayStore)  # it knows each key's partition; others are filtered here
        for raw_key, raw_value in (data.items_in(owned) if filtered else list(data.items())):
            if raw_value is None:
                continue
            key = raw_key.decode() if isinstance(raw_key, bytes) else str(raw_key)
            ns, _, store_key = key.partition(SEP)
            if ns == WAL:
                partition = int(store_key.split(SEP)[0])
                if partition in owned:
                    wal.setdefault(partition, []).append(orjson.loads(raw_value))
                continue
            store = self.stores.get(ns)
            if store is None or (not filtered and partition_for(tenant_of(store_key), self.partitions) not in owned):
                continue
            store.load(store_key, orjson.loads(raw_value))
            n += 1
        for records in wal.values():  # complete a batch that a crash cut in half (idempotent if it was whole)
            newest = max(r["seq"] for r in records)
            self.seq = max(self.seq, newest)
            parts = {r["part"]: r for r in records if r["seq"] == newest}
            if len(parts) != parts[next(iter(parts))]["parts"]:
                continue  # the record itself is incomplete: none of that batch's keys were written
            for ns, key, value in (c for i in sorted(parts) for c in parts[i]["changes"]):
                store = self.stores.get(ns)
                if store is None:
                    continue
                if value is None:
                    store.load_delete(key)
                else:
                    store.load(key, value)
        return n


def _split(changes: list[tuple[str, str, bytes | None]]) -> list[list[bytes]]:
    """Changes as JSON ``[ns, key, value]`` items (values already serialized), grouped into parts
    of at most WAL_PART_BYTES (one change may exceed it)."""
    parts: list[list[bytes]] = [[]]
    size = 0
    for ns, key, raw in changes:
        item = b"%s,%s]" % (orjson.dumps([ns, key])[:-1], b"null" if raw is None else raw)
        if parts[-1] and size + len(item) > WAL_PART_BYTES:
            parts.append([])
            size = 0
        parts[-1].append(item)
        size += len(item) + 1
    return parts
