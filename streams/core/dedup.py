"""Drops repeated ``event_id``s within an event-time window, per tenant.

Why segments: every dedup entry must survive a restart together with the rest of the state
(otherwise a replay after a crash counts events twice), but one changelog message per event
doubles Kafka traffic. Ids are grouped into append-only segments keyed
``{tenant}|{bucket_start}|{seq}``; the shell calls :meth:`seal` after each batch, so each
segment is written once, and whole buckets expire as the tenant's event time moves on.
Memory is ~100 bytes per id held, i.e. rate × window (see README for sizing).
"""

from __future__ import annotations

import heapq

from streams.core.state import Store


class DedupWindow:
    __slots__ = ("_bucket_ms", "_buckets", "_horizon", "_open", "_seen", "_segments", "_seq", "_store", "window_ms")

    def __init__(self, store: Store, window_ms: int = 900_000) -> None:
        self._store = store
        self.window_ms = window_ms
        self._bucket_ms = max(1000, window_ms // 10)
        self._seen: dict[str, int] = {}  # "{tenant}|{event_id}" -> bucket_start
        self._open: dict[tuple[str, int], str] = {}  # (tenant, bucket) -> segment key being filled
        self._seq = 0
        self._buckets: dict[str, list[int]] = {}  # tenant -> heap of bucket starts
        self._segments: dict[tuple[str, int], list[str]] = {}  # (tenant, bucket) -> segment keys
        self._horizon: dict[str, int] = {}  # tenant -> buckets before this may have been forgotten
        self.rebuild()

    def rebuild(self) -> None:
        self._seen.clear()
        self._open.clear()
        self._buckets.clear()
        self._segments.clear()
        self._horizon.clear()
        for key, ids in self._store.items():
            tenant, bucket_s, seq_s = key.rsplit("|", 2)
            bucket = int(bucket_s)
            self._seq = max(self._seq, int(seq_s) + 1)
            for event_id in ids:
                self._seen[f"{tenant}|{event_id}"] = bucket
            segs = self._segments.setdefault((tenant, bucket), [])
            if not segs:
                heapq.heappush(self._buckets.setdefault(tenant, []), bucket)
            segs.append(key)
        for tenant, heap in self._buckets.items():  # older buckets may have expired before the restart
            self._horizon[tenant] = heap[0]

    def remembers(self, tenant_id: str, occurred_ms: int) -> bool:
        """Would an id of an event at ``occurred_ms`` still be held (its bucket not expired)?"""
        horizon = self._horizon.get(tenant_id)
        return horizon is not None and occurred_ms - occurred_ms % self._bucket_ms >= horizon

    def seen(self, tenant_id: str, event_id: str, occurred_ms: int) -> bool:
        """True if this id was already seen (a duplicate); otherwise records it and returns False."""
        key = f"{tenant_id}|{event_id}"
        if key in self._seen:
            return True
        bucket = occurred_ms - occurred_ms % self._bucket_ms
        self._seen[key] = bucket
        seg_key = self._open.get((tenant_id, bucket))
        if seg_key is None:
            seg_key = f"{tenant_id}|{bucket}|{self._seq}"
            self._seq += 1
            self._open[(tenant_id, bucket)] = seg_key
            segs = self._segments.setdefault((tenant_id, bucket), [])
            if not segs:
                heapq.heappush(self._buckets.setdefault(tenant_id, []), bucket)
                self._horizon.setdefault(tenant_id, bucket)
            segs.append(seg_key)
            ids: list[str] = []
        else:
            ids = self._store.get(seg_key) or []
        ids.append(event_id)
        self._store.put(seg_key, ids)
        return False

    def seal(self) -> None:
        """End of a batch: later ids go to new segments, so written segments stay immutable."""
        self._open.clear()

    def expire(self, tenant_id: str, watermark_ms: int) -> int:
        """Forget buckets of this tenant that ended more than the window before the watermark."""
        horizon = watermark_ms - self.window_ms - self._bucket_ms
        heap = self._buckets.get(tenant_id)
        removed = 0
        if horizon > self._horizon.get(tenant_id, horizon - 1):
            self._horizon[tenant_id] = horizon
        while heap and heap[0] < horizon:
            bucket = heapq.heappop(heap)
            for seg_key in self._segments.pop((tenant_id, bucket), ()):
                for event_id in self._store.get(seg_key) or ():
                    if self._seen.get(f"{tenant_id}|{event_id}") == bucket:
                        del self._seen[f"{tenant_id}|{event_id}"]
                        removed += 1
                self._store.delete(seg_key)
            self._open.pop((tenant_id, bucket), None)
        return removed

    def __len__(self) -> int:
        return len(self._seen)


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
