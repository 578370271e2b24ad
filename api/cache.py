"""An LRU of serialized orders, bounded by entries and by bytes, with O(1) get and put.

Single-threaded by design (one per event loop, one per replica process): no locks. The
counters are plain ints read by the /metrics collector, so the hit path costs no metric calls.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable, Mapping
from datetime import datetime

from api.encoding import strong_etag
from api.versions import UNKNOWN_KEY, holds, of_columns
from api.views import Snapshot
from orderview.readmodel import Version

# Besides the body and the key: the entry, its ETag, its time, its version and the LRU's slot for
# it (measured with tracemalloc: bench/boot.py reports it beside this accounting).
ENTRY_OVERHEAD_BYTES = 392


class CachedOrder:
    """One order as served: its exact bytes, strong ETag, when it was written and its version
    (api/versions.py: one int that orders as the read model's versions do).

    No headers: every answer's headers but the ETag are the same, so the handler takes shared
    ones (api/handlers.py) and adds the ETag; an entry holds only what differs between orders.
    """

    __slots__ = ("body", "etag", "order_uid", "position", "stale", "updated_at", "version")

    def __init__(
        self,
        order_uid: str,
        body: bytes,
        etag: str,
        updated_at: datetime,
        position: int = 0,
        version: int = UNKNOWN_KEY,
    ) -> None:
        self.order_uid = order_uid
        self.body = body
        self.etag = etag
        self.updated_at = updated_at
        self.version = version
        # Read from a standby that had replayed up to this WAL position (0: from the primary).
        self.position = position
        self.stale = False  # a newer version exists: not served, kept in place until it is read

    def __repr__(self) -> str:
        return f"CachedOrder({self.order_uid!r}, {len(self.body)} bytes, {self.etag}, {self.updated_at})"

    @classmethod
    def build(
        cls, order_uid: str, body: bytes, updated_at: datetime, position: int = 0, version: int = UNKNOWN_KEY
    ) -> CachedOrder:
        return cls(order_uid, body, strong_etag(body), updated_at, position, version)

    # A snapshot row (api/views.py) holds the bytes the API serves: the compact JSON the
    # projector stored, fetched as bytes of exactly their size.
    from_snapshot = build

    @classmethod
    def from_row(cls, row: Snapshot, position: int = 0) -> CachedOrder:
        """The entry of a snapshot row read at a standby's `position` (0: from the primary)."""
        uid, body, updated_at, time, partition, offset = row
        return cls.build(uid, body, updated_at, position, of_columns(time, partition, offset))

    def is_older_than(self, other: CachedOrder) -> bool:
        """By version when both are known (the projector's own order); else by when each was
        written (a version kept by `rebuild --keep` is UNKNOWN)."""
        if self.version != UNKNOWN_KEY and other.version != UNKNOWN_KEY:
            return self.version < other.version
        return self.updated_at < other.updated_at

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
        """The entry, now the most recently used; counts a hit or a miss (a stale entry is one)."""
        entry = self._entries.get(order_uid)
        if entry is None or entry.stale:
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
            if entry.is_older_than(current):
                self._drop_if_stale(current)
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
        if current is None:
            return False
        if entry.is_older_than(current):
            self._drop_if_stale(current)
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

    def mark_stale(
        self,
        order_uids: Iterable[str],
        position: int | None = None,
        versions: Mapping[str, Version | None] | None = None,
    ) -> list[str]:
        """These orders changed: returns the cached ones to re-read.

        With `versions` (the version each changed to, where the notification told it), an entry
        at that version or newer already holds the change: it is left as it is, not re-read.
        With `position` (reading from a standby: the primary's WAL position at or past the
        change), an entry read at an earlier position is stale: not served any more, but kept in
        place until `refresh` replaces it (or `evict` drops it); one read at or past it already
        holds the change and is left alone. Without (reading from the primary), entries are
        served until replaced: the primary has the change already, the re-read is one query."""
        entries, marked = self._entries, []
        told = versions or {}
        for uid in order_uids:
            entry = entries.get(uid)
            if entry is None or holds(entry.version, told.get(uid)):
                continue
            if position is None:
                marked.append(uid)
            elif entry.position < position:
                entry.stale = True
                marked.append(uid)
        return marked

    def forget_positions(self) -> None:
        """The standby positions entries were read at name WAL of a history the primary no longer
        writes (a failover): as if read from an unknown position, the next notification of each
        marks it stale until it is read again."""
        for entry in self._entries.values():
            entry.position = 0

    def evict(self, order_uid: str) -> bool:
        """Drop an entry (an invalidation, not counted as an eviction)."""
        entry = self._entries.pop(order_uid, None)
        if entry is None:
            return False
        self.bytes -= entry.size
        return True

    def _drop_if_stale(self, current: CachedOrder) -> None:
        # What was cached changed, and the version offered is older still: serve neither.
        if current.stale:
            self.evict(current.order_uid)

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
