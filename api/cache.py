"""An LRU of serialized orders, bounded by entries and by bytes, with O(1) get and put.

Single-threaded by design (one per event loop, one per replica process): no locks. The
counters are plain ints read by the /metrics collector, so the hit path costs no metric calls.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field
from datetime import datetime

from aiohttp import hdrs
from multidict import CIMultiDict, CIMultiDictProxy

from api.edge import SECURITY_HEADERS, VARY
from api.encoding import strong_etag

# Besides the body and key: the entry, its ETag, two header maps and the dict slot (measured
# with tracemalloc at ~1 KB).
ENTRY_OVERHEAD_BYTES = 1024

_JSON = "application/json"


def _headers(etag: str, x_cache: str) -> CIMultiDictProxy[str]:
    return CIMultiDictProxy(
        CIMultiDict(
            {hdrs.CONTENT_TYPE: _JSON, hdrs.ETAG: etag, "X-Cache": x_cache, **VARY, **SECURITY_HEADERS}
        )
    )


@dataclass(frozen=True, slots=True)
class CachedOrder:
    """One order as served: its bytes, strong ETag and the response headers, computed once."""

    order_uid: str
    body: bytes
    etag: str
    updated_at: datetime
    hit_headers: CIMultiDictProxy[str] = field(repr=False, compare=False)
    miss_headers: CIMultiDictProxy[str] = field(repr=False, compare=False)

    @classmethod
    def build(cls, order_uid: str, body: bytes, updated_at: datetime) -> CachedOrder:
        etag = strong_etag(body)
        return cls(order_uid, body, etag, updated_at, _headers(etag, "hit"), _headers(etag, "miss"))

    @classmethod
    def from_snapshot(cls, order_uid: str, body_json: str, updated_at: datetime) -> CachedOrder:
        """From a snapshot row: body_json is the compact JSON the projector stored."""
        return cls.build(order_uid, body_json.encode(), updated_at)

    @property
    def size(self) -> int:
        return len(self.body) + len(self.order_uid) + ENTRY_OVERHEAD_BYTES


class OrderCache:
    def __init__(self, max_entries: int, max_bytes: int) -> None:
        self.max_entries = max(0, max_entries)
        self.max_bytes = max(0, max_bytes)
        self._entries: OrderedDict[str, CachedOrder] = OrderedDict()
        self.bytes = 0
        self.hits = 0
        self.misses = 0
        self.evictions = 0

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, order_uid: object) -> bool:
        return order_uid in self._entries

    @property
    def enabled(self) -> bool:
        return self.max_entries > 0 and self.max_bytes > 0

    def keys(self) -> list[str]:
        return list(self._entries)

    def get(self, order_uid: str) -> CachedOrder | None:
        """The entry, now the most recently used; counts a hit or a miss."""
        entry = self._entries.get(order_uid)
        if entry is None:
            self.misses += 1
            return None
        self._entries.move_to_end(order_uid)
        self.hits += 1
        return entry

    def peek(self, order_uid: str) -> CachedOrder | None:
        """The entry without touching recency or counters."""
        return self._entries.get(order_uid)

    def put(self, entry: CachedOrder) -> bool:
        """Store as the most recently used, evicting the least recently used to make room.

        A version older than the cached one is refused: a slow reader must not undo a refresh.
        """
        uid = entry.order_uid
        current = self._entries.get(uid)
        if not self._fits(entry):
            if current is not None:
                self.evict(uid)
            return False
        if current is not None:
            if entry.updated_at < current.updated_at:
                return False
            self._replace(current, entry)
            self._entries.move_to_end(uid)
        else:
            self._entries[uid] = entry
            self.bytes += entry.size
        self._shrink()
        return True

    def refresh(self, entry: CachedOrder) -> bool:
        """Replace a cached entry with a newer version, keeping its recency; never adds."""
        current = self._entries.get(entry.order_uid)
        if current is None or entry.updated_at < current.updated_at:
            return False
        if not self._fits(entry):
            self.evict(entry.order_uid)
            return False
        self._replace(current, entry)
        self._shrink()
        return True

    def warm(self, entry: CachedOrder) -> bool:
        """Add as the least recently used, only if there is room; False once full.

        Warm-up streams the most recently updated orders first, so each goes behind the
        previous one and the newest end up the last to be evicted.
        """
        uid = entry.order_uid
        if uid in self._entries:
            self.refresh(entry)
            return True
        if len(self._entries) >= self.max_entries or self.bytes + entry.size > self.max_bytes:
            return False
        self._entries[uid] = entry
        self._entries.move_to_end(uid, last=False)
        self.bytes += entry.size
        return True

    def evict(self, order_uid: str) -> bool:
        """Drop an entry (an invalidation, not counted as an eviction)."""
        entry = self._entries.pop(order_uid, None)
        if entry is None:
            return False
        self.bytes -= entry.size
        return True

    def _fits(self, entry: CachedOrder) -> bool:
        return self.max_entries > 0 and entry.size <= self.max_bytes

    def _replace(self, current: CachedOrder, entry: CachedOrder) -> None:
        self._entries[entry.order_uid] = entry
        self.bytes += entry.size - current.size

    def _shrink(self) -> None:
        entries = self._entries
        while entries and (len(entries) > self.max_entries or self.bytes > self.max_bytes):
            _, dropped = entries.popitem(last=False)
            self.bytes -= dropped.size
            self.evictions += 1
