"""The API's order cache: an LRU bounded by entries and by bytes."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import orjson
import pytest

from api.cache import ENTRY_OVERHEAD_BYTES, CachedOrder, OrderCache
from harness.orders import reference_order, reference_order_bytes

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def entry(uid: str, size: int = 100, at: datetime = T0) -> CachedOrder:
    """An entry whose accounted size is exactly `size` plus the fixed overhead and the key."""
    return CachedOrder.build(uid, b"x" * size, at)


def cost(uid: str, size: int = 100) -> int:
    return size + len(uid) + ENTRY_OVERHEAD_BYTES


def test_get_returns_what_was_put_and_counts_hits_and_misses() -> None:
    cache = OrderCache(10, 10**6)
    e = entry("a")
    assert cache.put(e)
    assert cache.get("a") is e
    assert cache.get("b") is None
    assert (cache.hits, cache.misses, len(cache), cache.bytes) == (1, 1, 1, cost("a"))


def test_least_recently_used_is_evicted_first() -> None:
    cache = OrderCache(3, 10**6)
    for uid in "abc":
        cache.put(entry(uid))
    cache.get("a")  # a is now the most recently used; b the least
    cache.put(entry("d"))
    assert cache.keys() == ["c", "a", "d"]
    assert cache.evictions == 1


def test_entry_bound() -> None:
    cache = OrderCache(5, 10**9)
    for i in range(12):
        cache.put(entry(f"o{i}"))
    assert len(cache) == 5
    assert cache.keys() == [f"o{i}" for i in range(7, 12)]
    assert cache.evictions == 7


def test_byte_bound_evicts_until_the_new_entry_fits() -> None:
    cache = OrderCache(100, 3 * cost("a", 1000) + 10)
    for uid in "abc":
        cache.put(entry(uid, 1000))
    assert cache.bytes == 3 * cost("a", 1000)
    cache.put(entry("d", 2000))  # needs the room of two entries
    assert cache.keys() == ["c", "d"]
    assert cache.evictions == 2
    assert cache.bytes == cost("c", 1000) + cost("d", 2000) <= cache.max_bytes


def test_an_entry_larger_than_the_whole_cache_is_not_cached_and_evicts_nothing() -> None:
    cache = OrderCache(100, cost("a", 1000))
    cache.put(entry("a", 1000))
    assert not cache.put(entry("big", 5000))
    assert cache.keys() == ["a"]
    assert cache.evictions == 0


@pytest.mark.parametrize(("max_entries", "max_bytes"), [(0, 10**6), (10, 0), (0, 0)])
def test_zero_capacity_caches_nothing(max_entries: int, max_bytes: int) -> None:
    cache = OrderCache(max_entries, max_bytes)
    assert not cache.enabled
    assert not cache.put(entry("a"))
    assert not cache.warm(entry("a"))
    assert cache.get("a") is None
    assert (len(cache), cache.bytes, cache.misses, cache.evictions) == (0, 0, 1, 0)


def test_replacing_an_entry_updates_bytes_and_recency() -> None:
    cache = OrderCache(3, 10**6)
    for uid in "abc":
        cache.put(entry(uid))
    cache.put(entry("a", 500, T0 + timedelta(seconds=1)))
    assert cache.keys() == ["b", "c", "a"]
    assert cache.bytes == 2 * cost("a") + cost("a", 500)
    assert cache.peek("a").body == b"x" * 500


def test_an_older_version_never_replaces_a_newer_one() -> None:
    cache = OrderCache(3, 10**6)
    newer = entry("a", 10, T0 + timedelta(seconds=5))
    cache.put(newer)
    assert not cache.put(entry("a", 20, T0))
    assert not cache.refresh(entry("a", 20, T0))
    assert cache.peek("a") is newer


def test_refresh_replaces_only_cached_entries_and_keeps_their_recency() -> None:
    cache = OrderCache(3, 10**6)
    for uid in "ab":
        cache.put(entry(uid))
    assert cache.refresh(entry("a", 50, T0 + timedelta(seconds=1)))
    assert not cache.refresh(entry("z"))
    assert cache.keys() == ["a", "b"]
    assert cache.peek("a").body == b"x" * 50
    assert "z" not in cache


def test_peek_and_refresh_do_not_count() -> None:
    cache = OrderCache(3, 10**6)
    cache.put(entry("a"))
    cache.peek("a")
    cache.peek("b")
    cache.refresh(entry("a"))
    assert (cache.hits, cache.misses) == (0, 0)


def test_warm_up_puts_the_newest_last_in_line_for_eviction_and_stops_when_full() -> None:
    cache = OrderCache(3, 10**6)
    newest_first = ["n1", "n2", "n3", "n4"]
    added = [cache.warm(entry(uid)) for uid in newest_first]
    assert added == [True, True, True, False]
    assert cache.keys() == ["n3", "n2", "n1"]  # least recently used first
    cache.put(entry("x"))
    assert "n3" not in cache and "n1" in cache
    assert cache.evictions == 1


def test_warm_up_stops_at_the_byte_bound() -> None:
    cache = OrderCache(100, 2 * cost("a1", 1000))
    assert [cache.warm(entry(uid, 1000)) for uid in ("a1", "a2", "a3")] == [True, True, False]
    assert cache.evictions == 0


def test_evict_is_an_invalidation_not_an_eviction() -> None:
    cache = OrderCache(3, 10**6)
    cache.put(entry("a"))
    assert cache.evict("a")
    assert not cache.evict("a")
    assert (len(cache), cache.bytes, cache.evictions) == (0, 0, 0)


def test_etag_is_strong_and_derived_from_the_bytes() -> None:
    a, b, c = (
        CachedOrder.build("a", b"{}", T0),
        CachedOrder.build("b", b"{}", T0),
        CachedOrder.build("a", b"[]", T0),
    )
    assert a.etag == b.etag != c.etag
    assert a.etag.startswith('"') and a.etag.endswith('"') and not a.etag.startswith("W/")


def test_cached_bytes_are_the_stored_json_exactly() -> None:
    stored = orjson.dumps(reference_order()).decode()
    entry = CachedOrder.from_snapshot(reference_order()["order_uid"], stored.encode(), T0)
    assert entry.body == stored.encode()
    assert list(json.loads(entry.body)) == list(json.loads(reference_order_bytes())), "the sender's key order"


def test_an_entry_holds_only_what_differs_between_orders() -> None:
    """No per-entry headers or dict: the answer's shared headers live in the handler. Besides the
    order, only how fresh it is: its version, the standby position it was read at, and whether it
    is stale."""
    e = entry("a")
    assert not hasattr(e, "__dict__")
    assert set(CachedOrder.__slots__) == {
        "order_uid",
        "body",
        "etag",
        "updated_at",
        "position",
        "stale",
        "version",
    }
