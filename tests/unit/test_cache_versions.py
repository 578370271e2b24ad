"""A notification of a version the cache already holds changes nothing: the rule, as properties.

A cached entry keeps its version (api/versions.py); a notification tells the version an order
changed to (orderview/readmodel.py). An entry at that version or newer stays as it is; an older
one is re-read as before; a notification that tells no version (an older projector's, or
UNKNOWN) re-reads every cached entry it names, as before versions were told.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

from hypothesis import given
from hypothesis import strategies as st

from api import versions
from api.cache import CachedOrder, OrderCache
from api.loader import OrderLoader
from api.metrics import ApiMetrics
from api.missing import MissingOrders
from orderview.readmodel import UNKNOWN, Version, encode_changes

T0 = datetime(2026, 1, 1, tzinfo=UTC)
BIGINT, INTEGER = 2**63, 2**31

# Any version the read model's columns can hold (bigint, integer, bigint) ...
any_versions = st.builds(
    Version,
    st.integers(-BIGINT, BIGINT - 1),
    st.integers(-INTEGER, INTEGER - 1),
    st.integers(-BIGINT, BIGINT - 1),
)
# ... and those the projector writes: a partition clock in ms, a partition, an offset; few
# distinct values, so that equal versions and equal parts are drawn often.
written_versions = st.builds(
    Version, st.integers(0, 3) | st.just(1_767_225_600_000), st.integers(0, 2), st.integers(0, 3)
)
notified_versions = st.none() | st.just(UNKNOWN) | written_versions


def entry(uid: str, version: Version | None, updated_at: datetime = T0, position: int = 0) -> CachedOrder:
    row = (uid, b"{}", updated_at, *(version if version is not None else (None, None, None)))
    return CachedOrder.from_row(row, position)


@given(any_versions, any_versions)
def test_a_cached_version_orders_as_the_version_it_stands_for(a: Version, b: Version) -> None:
    assert (versions.key(a) < versions.key(b)) == (a < b)
    assert (versions.key(a) == versions.key(b)) == (a == b)


def test_a_row_with_any_version_column_null_is_at_the_unknown_version_older_than_any_written() -> None:
    for columns in [(None, None, None), (5, None, 1), (None, 0, 1), (5, 0, None)]:
        assert versions.of_columns(*columns) == versions.UNKNOWN_KEY
    assert versions.UNKNOWN_KEY < versions.of_columns(0, 0, 0)


@given(written_versions, notified_versions, st.booleans())
def test_an_entry_at_the_notified_version_or_newer_is_left_as_it_is(
    cached: Version, notified: Version | None, from_standby: bool
) -> None:
    cache = OrderCache(10, 10**6)
    held = entry("a", cached, position=100 if from_standby else 0)
    cache.put(held)
    position = 500 if from_standby else None  # a standby read at 100, the primary now at 500
    marked = cache.mark_stale(["a"], position, {"a": notified})
    holds = notified is not None and notified != UNKNOWN and notified <= cached
    assert marked == ([] if holds else ["a"])
    assert cache.peek("a") is held
    assert (cache.get("a") is held) == (holds or not from_standby)  # an older one read at 100 is stale


def test_a_notification_without_versions_re_reads_every_cached_entry_it_names() -> None:
    cache = OrderCache(10, 10**6)
    for uid in "ab":
        cache.put(entry(uid, Version(9, 0, 9)))
    assert cache.mark_stale(["a", "b", "absent"]) == ["a", "b"]
    assert cache.mark_stale(["a", "b"], None, {"a": Version(1, 0, 1)}) == ["b"]


def test_a_row_of_unknown_version_is_re_read_by_any_notification() -> None:
    cache = OrderCache(10, 10**6)
    cache.put(entry("kept", None))  # kept by `rebuild --keep`: coordinates unknown
    for told in (Version(0, 0, 0), UNKNOWN, None):
        assert cache.mark_stale(["kept"], None, {"kept": told}) == ["kept"]


changes_lists = st.lists(st.tuples(st.sampled_from("abc"), notified_versions), max_size=12)


@given(changes_lists, st.integers(20, 200))
def test_a_batch_of_payloads_tells_each_order_its_newest_version_or_none_if_any_change_tells_none(
    changes: list[tuple[str, Version | None]], limit: int
) -> None:
    payloads = [
        *encode_changes(((uid, v) for uid, v in changes if v is not None), limit),
        *(uid for uid, v in changes if v is None),  # an older projector's bare order_uids
    ]
    told = versions.changes(payloads)
    assert set(told) == {uid for uid, _ in changes}
    for uid in told:
        versions_of = [v for u, v in changes if u == uid]
        if any(v is None or v == UNKNOWN for v in versions_of):
            assert told[uid] is None
        else:
            assert told[uid] == max(versions_of)


@given(written_versions, written_versions, st.booleans(), st.booleans())
def test_the_cache_keeps_the_newer_version_whatever_order_the_reads_come_in_and_when_each_was_written(
    first: Version, second: Version, refresh: bool, written_later_first: bool
) -> None:
    cache = OrderCache(10, 10**6)
    early, late = T0, T0 + timedelta(seconds=1)
    a = entry("a", first, late if written_later_first else early)
    b = entry("a", second, early if written_later_first else late)
    cache.put(a)
    cache.refresh(b) if refresh else cache.put(b)
    assert cache.peek("a") is (a if first > second else b)


def test_without_known_versions_the_later_written_is_kept() -> None:
    cache = OrderCache(10, 10**6)
    newer = entry("a", None, T0 + timedelta(seconds=1))
    cache.put(newer)
    assert not cache.put(entry("a", Version(5, 0, 5), T0))
    assert cache.peek("a") is newer


class HeldReads:
    """Reads whose one lookup answers `row` when released: a notification can come meanwhile."""

    def __init__(self, version: Version) -> None:
        self.release = asyncio.Event()
        self.started = asyncio.Event()
        self.row = ("a", b"{}", T0, *version)

    async def snapshots(self, uids: list[str], required: int = 0) -> tuple[list, int]:
        self.started.set()
        await self.release.wait()
        return [self.row], 0


@given(written_versions, notified_versions)
def test_a_lookup_result_at_a_version_notified_meanwhile_is_cached_an_older_one_is_not(
    read: Version, notified: Version | None
) -> None:
    async def scenario() -> bool:
        reads = HeldReads(read)
        cache = OrderCache(10, 10**6)
        loader = OrderLoader(reads, cache, MissingOrders(10, 60), ApiMetrics(), 0, 10, 1, 5)  # type: ignore[arg-type]
        loader.fill_cache = True
        served = asyncio.create_task(loader.load("a"))
        await reads.started.wait()
        loader.changed(["a"], {"a": notified})
        reads.release.set()
        assert (await served).version == versions.key(read)
        await loader.close()
        return "a" in cache

    cached = asyncio.run(scenario())
    assert cached == (notified is not None and notified != UNKNOWN and notified <= read)
