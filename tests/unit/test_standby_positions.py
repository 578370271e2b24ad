"""What a replica on a standby knows of the primary's WAL: how recent a standby read must be,
and how far behind the standby is."""

from __future__ import annotations

from datetime import UTC, datetime

from prometheus_client import CollectorRegistry

from api.cache import CachedOrder, OrderCache
from api.metrics import StandbyMetrics
from api.reads import StandbyReads
from api.standby import PrimaryPositions, RecentChanges
from orderview.settings import Settings

T0 = datetime(2024, 1, 1, tzinfo=UTC)


def test_the_floor_is_where_the_primary_was_one_bound_ago() -> None:
    positions = PrimaryPositions(window_s=1.0)
    for at, lsn in ((10.0, 100), (10.5, 200), (11.2, 300)):
        positions.learned(lsn, at)
    assert positions.floor(10.9) == 0  # nothing learned a second before
    assert positions.floor(11.0) == 100
    assert positions.floor(11.6) == 200
    assert positions.floor(20.0) == 300


def test_an_older_or_equal_position_learned_later_says_nothing_new() -> None:
    positions = PrimaryPositions(window_s=1.0)
    positions.learned(200, 10.0)
    positions.learned(150, 10.5)  # e.g. a primary read that finished after a notification
    positions.learned(200, 10.6)
    assert len(positions) == 1 and positions.floor(11.0) == 200


def test_the_lag_dates_from_the_oldest_position_not_replayed() -> None:
    positions = PrimaryPositions(window_s=1.0)
    for at, lsn in ((10.0, 100), (12.0, 200), (14.0, 300)):
        positions.learned(lsn, at)
    assert positions.behind_since(300) is None
    assert positions.behind_since(250) == 14.0
    assert positions.behind_since(100) == 12.0
    assert positions.behind_since(50) == 10.0


def test_pruning_keeps_what_the_floor_and_the_lag_still_need() -> None:
    positions = PrimaryPositions(window_s=1.0)
    for i in range(10):
        positions.learned(100 * (i + 1), 10.0 + i)  # 100 at 10.0 ... 1000 at 19.0
    positions.prune(replayed=500, now=19.5)
    assert positions.floor(19.5) == 900  # unchanged
    assert positions.behind_since(500) == 15.0  # 600, still not replayed
    assert len(positions) == 5  # 100 to 500 are replayed and older than the floor: 600 to 1000 stay
    positions.prune(replayed=1000, now=19.5)
    assert positions.floor(19.5) == 900 and positions.behind_since(1000) is None


def test_samples_are_bounded_and_the_oldest_stays_to_date_the_lag() -> None:
    positions = PrimaryPositions(window_s=1.0, max_samples=3)
    for i in range(10):
        positions.learned(i + 1, float(i))
    assert len(positions) == 3 and positions.behind_since(0) == 0.0


def test_a_change_requires_its_position_for_one_bound_then_the_floor_covers_it() -> None:
    recent = RecentChanges(window_s=1.0)
    recent.changed(["a", "b"], 500, at=10.0)
    recent.changed(["a"], 400, at=10.2)  # learned later, from an older position: keeps the newer
    assert recent.required(["a"], now=10.5) == 500
    assert recent.required(["b", "c"], now=10.5) == 500
    assert recent.required(["c"], now=10.5) == 0
    assert recent.required(["b"], now=11.1) == 0 and len(recent) == 1  # past the bound: forgotten
    assert recent.required(["a"], now=11.1) == 500


def entry(uid: str, position: int, seconds: int = 0) -> CachedOrder:
    return CachedOrder.build(uid, b"{}", T0.replace(second=seconds), position)


def test_a_notification_past_an_entrys_position_stops_serving_it_until_it_is_read_again() -> None:
    cache = OrderCache(10, 10_000)
    cache.put(entry("old", 100))
    cache.put(entry("new", 900))
    assert cache.mark_stale(["old", "new", "absent"], 500) == ["old"]
    assert cache.get("old") is None and cache.get("new") is not None
    assert "old" in cache  # kept in place ...
    assert cache.refresh(entry("old", 600, seconds=1))  # ... until the new version replaces it
    assert cache.get("old") is not None


def test_a_stale_entry_offered_an_older_version_is_dropped() -> None:
    cache = OrderCache(10, 10_000)
    cache.put(entry("a", 100, seconds=5))
    cache.mark_stale(["a"], 500)
    assert not cache.refresh(entry("a", 600, seconds=1))
    assert "a" not in cache


def test_without_positions_a_notification_leaves_entries_served_while_they_are_re_read() -> None:
    cache = OrderCache(10, 10_000)
    cache.put(entry("a", 0))
    assert cache.mark_stale(["a"]) == ["a"]
    assert cache.get("a") is not None


def test_a_new_timeline_forgets_the_old_ones_positions_and_requires_the_new_primarys() -> None:
    """The new timeline forks below what the old primary had flushed: remembered positions would
    hold every read back (and keep cached versions from being re-read) until it wrote that much."""
    settings = Settings(pg_read_host="127.0.0.1", api_standby_max_lag_s=1.0)
    reads = StandbyReads(settings, None, None, "", "", StandbyMetrics(CollectorRegistry()))  # type: ignore[arg-type]
    assert not reads.on_timeline((7, 1))  # the first primary LISTEN reaches
    reads.at_least(5_000)
    reads.learned(["changed"], 9_000)
    assert reads.required(["changed"]) == 9_000
    assert not reads.on_timeline((7, 1))  # a reconnection to the same primary changes nothing
    assert reads.required(["changed"]) == 9_000

    assert reads.on_timeline((7, 2))  # promoted: its history forked below 5,000
    reads.at_least(4_200)  # where the new primary is when LISTEN starts, past the fork
    assert reads.required(["changed"]) == reads.required() == 4_200


def test_an_entry_read_on_the_old_timeline_is_re_read_at_the_next_notification() -> None:
    cache = OrderCache(10, 1 << 20)
    cache.put(CachedOrder.build("uid", b"{}", T0, position=9_000))
    assert cache.mark_stale(["uid"], 4_300) == []  # as if read past the new timeline's change
    cache.forget_positions()
    assert cache.mark_stale(["uid"], 4_300) == ["uid"] and cache.get("uid") is None
