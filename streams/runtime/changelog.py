"""The state changelog: what a task writes after each batch, and the bulk restore that reads it back.

One compacted topic (``<app id>-state-changelog``) with as many partitions as the input topic:
task *p* (input partition *p*) owns changelog partition *p* and is its only writer. After each
batch, once the batch's outputs are acknowledged (:mod:`streams.runtime.checkpoint`), the task
queues on partition *p*, in this order:

1. the **batch record** ``__wal<SEP><p><SEP><seq % 2><SEP><part>``: every change of the batch
   (namespace, key, value or null) plus ``seq`` (the task's batch counter) and ``pos``, the input
   offset the state now reflects (the next offset to process). Split into parts of at most
   ``WAL_PART_BYTES`` (Kafka refuses a request over ~1 MB by default) when a batch changed a
   lot. Two slots alternate, so a batch's record is never compacted away by the very next
   batch's, which a crash may cut;
2. each changed key ``<namespace><SEP><key>`` once (a tombstone for a deleted key), so
   compaction keeps the state bounded by the number of live keys;
3. the **position record** ``__pos<SEP><p>``: ``seq`` and ``pos`` again, written last.

Why the batch record: a batch changes many keys and a kill -9 can land between two of their
messages. The producer keeps order within a partition, and a batch starts only after the
previous one was acknowledged, so only the newest batch can be cut, and all its batch-record
parts precede its keys. Restore (:func:`apply_changelog`) re-applies every complete batch record
newer than the position record (a batch cut among its keys, at most two: the one cut and the
repair after it), and marks those keys changed so the next checkpoint writes them again; if a
part is missing, none of that batch's keys were written and the state is already whole without
it, and the position comes from the position record, which the cut batch never reached.

Why the position lives here and not (only) in the consumer group: state and input position
must restore *together*. A group commit made after the state write can be lost to a crash
(state ahead of the commit: the batch would be applied twice), and one made before it can
outlive a lost state write (the batch would be skipped). Read from the same log as the state,
the position is exactly what the state reflects; the group commit is kept for lag monitoring
and as the starting point of a changelog that has no position yet.

Kafka transactions were considered instead of the batch record (docs/decisions/0002): they
would make outputs, state and offsets atomic without writing changes twice, but aiokafka has
no KIP-447 group metadata (one transactional producer per input partition), known failures of
its transaction path when a broker goes away mid-transaction (aiokafka#905, #1098), and every
downstream consumer would have to read ``read_committed`` behind the slowest open transaction.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer
from aiokafka.structs import TopicPartition

from streams import metrics
from streams.core.state import MemoryStore
from streams.kafka_admin import client_kwargs
from streams.runtime.producer import MAX_RECORD_BYTES, BatchSender
from streams.settings import Settings

log = logging.getLogger(__name__)

SEP = "\x1f"
WAL = "__wal"
POS = "__pos"
WAL_PART_BYTES = 512 * 1024
#: Topic-level settings of the state changelog (created by the worker before it starts).
CHANGELOG_CONFIG: dict[str, str] = {"cleanup.policy": "compact", "max.message.bytes": str(MAX_RECORD_BYTES)}
#: Records per ``getmany`` of a restore: large, so the per-call overhead vanishes.
RESTORE_FETCH_RECORDS = 50_000


def changelog_topic(app_id: str) -> str:
    return f"{app_id}-state-changelog"


class ChangelogWriter:
    """Queues one task's state changes and input position on changelog partition ``partition``."""

    __slots__ = ("partition", "seq", "stores", "topic", "writes")

    def __init__(self, topic: str, partition: int, stores: Mapping[str, MemoryStore], seq: int = 0) -> None:
        self.topic = topic
        self.partition = partition
        self.stores = stores
        self.seq = seq  # the last batch written (restored from the changelog)
        self.writes = 0

    def queue(self, sender: BatchSender, position: int | None) -> int:
        """Queue every key changed since the last call (batch record first, position record last);
        returns how many keys. The caller awaits ``sender.send()`` before it commits the input."""
        dumps, fragment = orjson.dumps, orjson.Fragment
        changes: list[tuple[str, str, bytes | None]] = []
        for ns, store in self.stores.items():
            for key, value in store.drain_dirty():  # each value serialized once: batch record and key record
                changes.append((ns, key, None if value is None else dumps(value)))
        self.seq += 1
        p, topic, seq = self.partition, self.topic, self.seq
        if changes:
            parts = _split(changes)
            for i, part in enumerate(parts):
                items = [[ns, key, None if raw is None else fragment(raw)] for ns, key, raw in part]
                record = dumps({"seq": seq, "part": i, "parts": len(parts), "pos": position, "changes": items})
                sender.add(topic, f"{WAL}{SEP}{p}{SEP}{seq % 2}{SEP}{i}".encode(), record, p)
            for ns, key, raw in changes:
                sender.add(topic, f"{ns}{SEP}{key}".encode(), raw, p)
        sender.add(topic, f"{POS}{SEP}{p}".encode(), b'{"seq":%d,"pos":%s}' % (seq, _pos(position)), p)
        self.writes += len(changes)
        return len(changes)


def _pos(position: int | None) -> bytes:
    return b"null" if position is None else str(position).encode()


def _split(changes: list[tuple[str, str, bytes | None]]) -> list[list[tuple[str, str, bytes | None]]]:
    """Changes grouped into parts of at most about WAL_PART_BYTES of JSON (one change may exceed it)."""
    parts: list[list[tuple[str, str, bytes | None]]] = [[]]
    size = 0
    for change in changes:
        n = len(change[0]) + len(change[1]) + (4 if change[2] is None else len(change[2])) + 10
        if parts[-1] and size + n > WAL_PART_BYTES:
            parts.append([])
            size = 0
        parts[-1].append(change)
        size += n
    return parts


@dataclass(frozen=True)
class Restored:
    """What a changelog partition held: the input position the state reflects (None: the
    changelog has none yet), the batch the state is the result of (``seq``), the highest batch
    number found in the log (``last_seq``: a writer continues after it, so the parts of a cut
    batch can never be mistaken for parts of a new one), and how many state keys were loaded."""

    position: int | None
    seq: int
    keys: int
    last_seq: int


def apply_changelog(latest: Mapping[bytes, bytes | None], partition: int,
                    stores: Mapping[str, MemoryStore]) -> Restored:
    """Fill ``stores`` (cleared first) from the last value of every changelog key of ``partition``.

    Pure: the caller read the partition (:func:`read_partitions`) or, in tests, built the map."""
    for store in stores.values():
        store.clear()
    wal: list[dict[str, Any]] = []
    pos_record: dict[str, Any] | None = None
    loads = orjson.loads
    wal_prefix = f"{WAL}{SEP}{partition}{SEP}"
    pos_key = f"{POS}{SEP}{partition}"
    n = 0
    for raw_key, raw_value in latest.items():
        if raw_value is None:
            continue
        key = raw_key.decode()
        ns, _, store_key = key.partition(SEP)
        if ns == WAL:
            if key.startswith(wal_prefix):
                wal.append(loads(raw_value))
            continue
        if ns == POS:
            if key == pos_key:
                pos_record = loads(raw_value)
            continue
        store = stores.get(ns)
        if store is None:
            continue  # a namespace this version no longer keeps
        store.load(store_key, loads(raw_value))
        n += 1
    seq = 0 if pos_record is None else int(pos_record["seq"])
    position = None if pos_record is None else pos_record.get("pos")
    last_seq = seq
    by_seq: dict[int, dict[int, dict[str, Any]]] = {}
    for r in wal:
        by_seq.setdefault(int(r["seq"]), {})[int(r["part"])] = r
    for batch_seq in sorted(by_seq):
        last_seq = max(last_seq, batch_seq)
        parts = by_seq[batch_seq]
        if batch_seq <= seq or len(parts) != parts[next(iter(parts))]["parts"]:
            continue  # already covered by the position record, or cut before its keys began
        # complete, but the crash came before its position record: some of its keys may be
        # missing from the log. Apply it, and mark its keys changed, so the task's next batch
        # record carries them again and the log stops depending on this one.
        for ns, key, value in (c for i in sorted(parts) for c in parts[i]["changes"]):
            store = stores.get(ns)
            if store is None:
                continue
            if value is None:
                store.load(key, None)
                store.delete(key)
            else:
                store.put(key, value)
        seq = batch_seq
        if "pos" in parts[0]:
            position = parts[0]["pos"]
    return Restored(position=position, seq=seq, keys=n, last_seq=last_seq)


async def read_partitions(settings: Settings, topic: str, ends: Mapping[int, int],
                          yield_every: int = RESTORE_FETCH_RECORDS) -> dict[int, dict[bytes, bytes | None]]:
    """The last value of every key of each changelog partition in ``ends``, read from the start
    up to (not including) its end offset, with a plain consumer (no group) in large fetches.

    Yields to the event loop between fetches, so heartbeats and the web server go on while a
    large state is read."""
    out: dict[int, dict[bytes, bytes | None]] = {p: {} for p in ends}
    todo = {p for p, end in ends.items() if end > 0}
    if not todo:
        return out
    t0 = time.monotonic()
    consumer = AIOKafkaConsumer(
        bootstrap_servers=settings.bootstrap, group_id=None, enable_auto_commit=False,
        client_id=f"{settings.app_id}-restore", max_partition_fetch_bytes=8 << 20, fetch_max_bytes=64 << 20,
        **client_kwargs(settings),
    )
    await consumer.start()
    read = 0
    try:
        tps = [TopicPartition(topic, p) for p in sorted(todo)]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        while todo:
            got = await consumer.getmany(*[TopicPartition(topic, p) for p in todo], timeout_ms=1000,
                                         max_records=yield_every)
            for tp, records in got.items():
                latest, end = out[tp.partition], ends[tp.partition]
                for rec in records:
                    if rec.offset < end:
                        latest[rec.key] = rec.value
                read += len(records)
            for p in list(todo):
                if await consumer.position(TopicPartition(topic, p)) >= ends[p]:
                    todo.discard(p)
    finally:
        await consumer.stop()
    took = time.monotonic() - t0
    metrics.STATE_RESTORED.inc(read)
    metrics.STATE_RESTORE_SECONDS.observe(took)
    log.info("restored %d changelog records of %s partitions %s in %.1fs", read, topic, sorted(ends), took)
    return out

