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
    __slots__ = ("_bucket_ms", "_buckets", "_open", "_seen", "_segments", "_seq", "_store", "window_ms")

    def __init__(self, store: Store, window_ms: int = 900_000) -> None:
        self._store = store
        self.window_ms = window_ms
        self._bucket_ms = max(1000, window_ms // 10)
        self._seen: dict[str, int] = {}  # "{tenant}|{event_id}" -> bucket_start
        self._open: dict[tuple[str, int], str] = {}  # (tenant, bucket) -> segment key being filled
        self._seq = 0
        self._buckets: dict[str, list[int]] = {}  # tenant -> heap of bucket starts
        self._segments: dict[tuple[str, int], list[str]] = {}  # (tenant, bucket) -> segment keys
        self.rebuild()

    def rebuild(self) -> None:
        self._seen.clear()
        self._open.clear()
        self._buckets.clear()
        self._segments.clear()
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
