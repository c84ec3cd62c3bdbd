"""Drops repeated ``event_id``s per tenant, and says which event times it can still vouch for.

The guarantee (docs/data-integrity.md): ids are remembered for every event time at or after the
tenant's *dedup floor*, ``watermark - window`` with the event-time watermark ``max occurred_at -
allowed lateness``. An event at or after the floor is checked against every id applied at or
after it; an event before the floor cannot be checked (its twin may have been forgotten), so the
pipeline does not apply it: a re-delivery it recognises by source offset is a duplicate, anything
else is dead-lettered ``too_late``. The floor is a function of persisted state only (the
watermark), so it is the same live, offline and after a restart.

Why segments: every dedup entry must survive a restart together with the rest of the state
(otherwise a replay after a crash counts events twice), but one changelog message per event
doubles Kafka traffic. Ids are grouped into append-only segments keyed
``{tenant}|{bucket_start}|{seq}``; the shell calls :meth:`seal` after each batch, so each
segment is written once, and whole buckets expire as the tenant's event time moves on.

Memory: one entry per id held, i.e. per event of the last ``allowed lateness + window +
window/10`` of event time; ~150 bytes each with a 25-character event id (the id string itself,
shared by the index and its segment, is most of it). Sizing in docs/data-integrity.md.
"""

from __future__ import annotations

import heapq

from streams.core.state import Store


class DedupWindow:
    __slots__ = (
        "_bucket_ms", "_buckets", "_ints", "_open", "_seen", "_segments", "_seq", "_store", "_uses", "window_ms",
    )

    def __init__(self, store: Store, window_ms: int = 900_000) -> None:
        self._store = store
        self.window_ms = window_ms
        self._bucket_ms = max(1000, window_ms // 10)
        # tenant -> event_id -> bucket start. Per tenant, so the key is the event id string the
        # segment holds anyway (a "tenant|id" key was a second copy of every id).
        self._seen: dict[str, dict[str, int]] = {}
        self._ints: dict[int, int] = {}  # one int object per bucket start, shared by its ids
        self._uses: dict[int, int] = {}  # bucket start -> tenants holding it (frees _ints)
        self._open: dict[tuple[str, int], str] = {}  # (tenant, bucket) -> segment key being filled
        self._seq = 0
        self._buckets: dict[str, list[int]] = {}  # tenant -> heap of bucket starts
        self._segments: dict[tuple[str, int], list[str]] = {}  # (tenant, bucket) -> segment keys
        self.rebuild()

    def rebuild(self) -> None:
        self._seen.clear()
        self._ints.clear()
        self._uses.clear()
        self._open.clear()
        self._buckets.clear()
        self._segments.clear()
        for key, ids in self._store.items():
            tenant, bucket_s, seq_s = key.rsplit("|", 2)
            bucket = int(bucket_s)
            self._seq = max(self._seq, int(seq_s) + 1)
            segs = self._segments_of(tenant, bucket)
            bucket = self._ints[bucket]
            seen = self._seen.setdefault(tenant, {})
            for event_id in ids:
                seen[event_id] = bucket
            segs.append(key)

    def _segments_of(self, tenant_id: str, bucket: int) -> list[str]:
        """The segment keys of a tenant's bucket, registering the bucket on first use."""
        segs = self._segments.get((tenant_id, bucket))
        if segs is None:
            segs = self._segments[(tenant_id, bucket)] = []
            heapq.heappush(self._buckets.setdefault(tenant_id, []), bucket)
            self._ints.setdefault(bucket, bucket)
            self._uses[bucket] = self._uses.get(bucket, 0) + 1
        return segs

    def covers(self, watermark_ms: int, occurred_ms: int) -> bool:
        """Can an id of an event at ``occurred_ms`` still be checked, the tenant's event-time
        watermark being ``watermark_ms``? True at or after the floor ``watermark - window``:
        :meth:`expire` with any watermark up to this one kept every id from there on."""
        return occurred_ms >= watermark_ms - self.window_ms

    def seen(self, tenant_id: str, event_id: str, occurred_ms: int) -> bool:
        """True if this id was already seen (a duplicate); otherwise records it and returns False."""
        seen = self._seen.get(tenant_id)
        if seen is None:
            seen = self._seen[tenant_id] = {}
        elif event_id in seen:
            return True
        bucket = occurred_ms - occurred_ms % self._bucket_ms
        seg_key = self._open.get((tenant_id, bucket))
        if seg_key is None:
            seg_key = f"{tenant_id}|{bucket}|{self._seq}"
            self._seq += 1
            self._open[(tenant_id, bucket)] = seg_key
            self._segments_of(tenant_id, bucket).append(seg_key)
            ids: list[str] = []
        else:
            ids = self._store.get(seg_key) or []
        seen[event_id] = self._ints[bucket]
        ids.append(event_id)
        self._store.put(seg_key, ids)
        return False

    def seal(self) -> None:
        """End of a batch: later ids go to new segments, so written segments stay immutable."""
        self._open.clear()

    def expire(self, tenant_id: str, watermark_ms: int) -> int:
        """Forget this tenant's buckets that end before its floor ``watermark - window``.

        ``watermark_ms`` must be the event-time watermark (no processing-time advance): the
        floor :meth:`covers` promises is computed from it, and a larger one would forget ids
        the pipeline still accepts events for."""
        horizon = watermark_ms - self.window_ms - self._bucket_ms
        heap = self._buckets.get(tenant_id)
        removed = 0
        seen = self._seen.get(tenant_id, {})
        while heap and heap[0] < horizon:
            bucket = heapq.heappop(heap)
            for seg_key in self._segments.pop((tenant_id, bucket), ()):
                for event_id in self._store.get(seg_key) or ():
                    if seen.get(event_id) == bucket:
                        del seen[event_id]
                        removed += 1
                self._store.delete(seg_key)
            self._open.pop((tenant_id, bucket), None)
            self._uses[bucket] -= 1
            if not self._uses[bucket]:
                del self._uses[bucket], self._ints[bucket]
        if not seen:
            self._seen.pop(tenant_id, None)
        return removed

    def __len__(self) -> int:
        return sum(len(ids) for ids in self._seen.values())


class SourceOffsets:
    """Recognises input re-delivered by an at-least-once upstream stage, by its source position.

    Why next to the event-id window: the validate stage re-publishes what it had not committed
    when it crashed or lost its partitions. Live that is seconds of event time, inside the
    window. But a catch-up or backfill replays hours of event time per second, and an event
    re-applied after its id left the window is a double count (and, too late for its session,
    an extra session). Every valid record carries the raw ``(topic, partition, offset)`` it came
    from; per tenant and raw partition a writer publishes offsets in increasing order, and a
    re-publish (a successor, or a zombie racing it) only repeats offsets at or below what was
    already published. So an offset at or below the highest applied one is a re-delivery. The
    highest offset per (tenant, raw partition) is state, persisted in the same batch as the rest.

    Store: ``"{tenant}|{topic}|{partition}" -> highest applied offset``.
    """

    __slots__ = ("_store",)

    def __init__(self, store: Store) -> None:
        self._store = store

    def replayed(self, tenant_id: str, source: tuple[str, int, int]) -> bool:
        """True if ``source`` is at or below the highest offset applied from its partition."""
        topic, partition, offset = source
        if partition < 0:
            return False
        high = self._store.get(f"{tenant_id}|{topic}|{partition}")
        return high is not None and offset <= high

    def applied(self, tenant_id: str, source: tuple[str, int, int]) -> None:
        topic, partition, offset = source
        if partition < 0:
            return
        key = f"{tenant_id}|{topic}|{partition}"
        high = self._store.get(key)
        if high is None or offset > high:
            self._store.put(key, offset)
