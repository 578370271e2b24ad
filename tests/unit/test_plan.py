"""What a batch does (projector/core/plan.py): which records are fresh, which version wins, what
each offset becomes, and the check before a position is recorded. Plain data, no I/O."""

from __future__ import annotations

import uuid

import pytest

from projector.core import plan
from projector.core.plan import Facts, Fate, FatesBroken, Gap, Head, Last, Position, UntrustedPosition
from projector.core.records import LogRecord, Record
from projector.core.redrives import Claim
from projector.core.verdicts import Erase, Order, Rejected, compact_json
from projector.core.versions import UNKNOWN, Version

TOPIC_ID = uuid.UUID(int=1)


def rec(
    offset: int, uid: str = "a", partition: int = 0, ts: int | None = None, value: bytes | None = b"v"
) -> Record:
    return Record(partition, offset, uid.encode(), value, 1_000 + offset if ts is None else ts)


def order(uid: str, **fields: object) -> Order:
    document = {"order_uid": uid, **fields}
    return Order(uid, compact_json(document), document)


def position_after(r: Record, clock: int | None = None) -> Position:
    return Position(
        r.offset + 1,
        clock if clock is not None else r.timestamp_ms or 0,
        r.timestamp_ms,
        r.digest(),
        TOPIC_ID,
    )


def fresh_of(batch: list[Record], positions: dict[int, Position] | None = None, **facts: dict) -> plan.Fresh:
    return plan.freshness(batch, positions or {}, Facts(TOPIC_ID, **facts))


# --- 1. freshness -------------------------------------------------------------------------------


def test_with_nothing_recorded_every_record_is_fresh_in_the_order_it_came():
    batch = [rec(0), rec(0, "b", partition=1), rec(1)]
    fresh = fresh_of(batch)
    assert [r for r, _ in fresh.records] == batch
    assert fresh.advances[0].next_offset == 2 and fresh.advances[1].next_offset == 1


def test_records_below_the_position_are_redeliveries_and_the_last_applied_is_checked():
    log = [rec(o) for o in range(10)]
    fresh = fresh_of(log, {0: position_after(log[5])})
    assert [r.offset for r, _ in fresh.records] == [6, 7, 8, 9] and fresh.redeliveries == 6


def test_a_batch_that_goes_back_without_the_last_applied_record_asks_the_log_for_it():
    log = [rec(o) for o in range(10)]
    batch = log[2:4] + log[6:]
    fresh = fresh_of(batch, {0: position_after(log[5])})
    assert fresh.asks == [plan.Ask("last", 0, 5)]
    again = fresh_of(
        batch,
        {0: position_after(log[5])},
        last={(0, 5): Last(LogRecord(5, log[5].timestamp_ms, log[5].digest()), 0, 10)},
    )
    assert [r.offset for r, _ in again.records] == [6, 7, 8, 9]


def test_another_record_where_the_last_applied_one_was_is_an_untrusted_position():
    log = [rec(o) for o in range(10)]
    other = rec(5, value=b"another")
    with pytest.raises(UntrustedPosition, match="its record at offset 5 is not the one applied"):
        fresh_of([*log[:5], other, *log[6:]], {0: position_after(log[5])})


def test_a_recreated_topic_is_an_untrusted_position_on_the_very_next_batch():
    recorded = Position(100, 5, 1, b"d", uuid.UUID(int=2))
    with pytest.raises(UntrustedPosition, match="deleted and created again") as caught:
        fresh_of([Record(0, 100 + o, b"a", b"v", 1) for o in range(3)], {0: recorded})
    assert plan.REBUILD in str(caught.value)


def test_a_jump_over_records_the_log_does_not_hold_is_explained_and_applied():
    batch = [rec(0), rec(5)]
    fresh = fresh_of(batch)
    assert fresh.asks == [plan.Ask("gap", 0, 1)]
    fresh = fresh_of(batch, gaps={(0, 1): Gap(first=5, start=0)})
    assert [r.offset for r, _ in fresh.records] == [0, 5] and fresh.absent == [(0, 1, 5)] and not fresh.seeks


def test_records_retention_deleted_before_they_were_applied_are_lost_and_the_rest_applied():
    fresh = fresh_of(
        [rec(80), rec(81)],
        {0: Position(10, 0, None, None, TOPIC_ID)},
        gaps={(0, 10): Gap(first=80, start=80)},
    )
    assert fresh.lost == [(0, 10, 80)] and [r.offset for r, _ in fresh.records] == [80, 81]


def test_a_committed_record_the_consumer_did_not_deliver_makes_the_partition_read_again_from_it():
    batch = [rec(0), rec(1), rec(4), rec(5), rec(0, "b", partition=1)]
    fresh = fresh_of(batch, gaps={(0, 2): Gap(first=2, start=0)})
    assert [r.where for r, _ in fresh.records] == [(0, 0), (0, 1), (1, 0)]
    assert fresh.seeks == {0: 2} and fresh.discarded == 2 and fresh.advances[0].next_offset == 2


def test_a_consumer_ahead_of_an_older_database_reads_again_from_its_positions():
    """A promoted standby lacking the last batches holds older positions than the consumer."""
    fresh = fresh_of(
        [rec(o) for o in range(50, 60)],
        {0: Position(40, 0, None, None, TOPIC_ID)},
        gaps={(0, 40): Gap(40, 0)},
    )
    assert fresh.seeks == {0: 40} and not fresh.records and fresh.discarded == 10


# --- 2. decide ----------------------------------------------------------------------------------


def decided(
    batch: list[Record], verdicts: dict, heads: dict | None = None, seen=(), refused=None
) -> plan.Plan:
    fresh = fresh_of(batch)
    assert not fresh.asks
    return plan.decide(fresh, verdicts, heads or {}, seen, refused or {})


def test_a_newer_version_replaces_the_read_models_and_archives_it():
    r = rec(0, ts=2_000)
    p = decided([r], {r.where: order("a", v=2)}, {"a": Head(Version(1_000, 1, 9), '{"v":1}')})
    [change] = p.changes
    assert (p.fates[r.where], change.known, change.archive, change.rows_from is not None) == (
        Fate.APPLIED,
        True,
        True,
        True,
    )


def test_an_older_version_from_another_partition_is_a_stale_letter_and_changes_nothing():
    r = rec(0, ts=500)
    p = decided([r], {r.where: order("a", v=0)}, {"a": Head(Version(1_000, 1, 9), '{"v":1}')})
    assert p.fates[r.where] is Fate.DEAD_LETTERED and not p.changes
    [letter] = p.letters
    assert letter.reason == "stale_version" and "partition 1, offset 9" in letter.error


def test_the_same_order_again_moves_only_the_version():
    r = rec(0, ts=2_000)
    head = Head(Version(1_000, 1, 9), compact_json({"order_uid": "a", "v": 1}))
    p = decided([r], {r.where: order("a", v=1)}, {"a": head})
    [change] = p.changes
    assert (
        p.fates[r.where] is Fate.RESENT and change.source is None and change.version == Version(2_000, 0, 0)
    )
    assert not p.notifications(), "nothing the API serves changed"


def test_versions_within_a_batch_are_applied_in_turn_and_the_replaced_ones_are_history():
    batch = [rec(0, ts=1), rec(1, ts=2), rec(2, ts=3)]
    p = decided(batch, {r.where: order("a", v=r.offset) for r in batch})
    [change] = p.changes
    assert [p.fates[r.where] for r in batch] == [Fate.SUPERSEDED, Fate.SUPERSEDED, Fate.APPLIED]
    assert [past.source.offset for past in change.history] == [0, 1] and change.body == order("a", v=2).body


def test_a_tombstone_erases_and_an_older_version_after_it_does_not_bring_the_order_back():
    tomb, older = rec(0, ts=5_000, value=None), rec(0, "a", partition=1, ts=4_000)
    p = decided(
        [tomb, older],
        {tomb.where: Erase("a"), older.where: order("a", v=1)},
        {"a": Head(Version(3_000, 0, 0), '{"v":0}')},
    )
    [change] = p.changes
    assert change.body is None and change.clear_history and not change.archive
    assert p.fates[older.where] is Fate.DEAD_LETTERED and p.letters[0].reason == "stale_version"


def test_a_newer_version_after_an_erasure_creates_the_order_again_with_a_fresh_history():
    tomb, newer = rec(0, ts=5_000, value=None), rec(1, ts=6_000)
    p = decided(
        [tomb, newer],
        {tomb.where: Erase("a"), newer.where: order("a", v=2)},
        {"a": Head(Version(3_000, 0, 0), '{"v":0}')},
    )
    [change] = p.changes
    assert change.body == order("a", v=2).body and change.clear_history and not change.history


def test_rejected_refused_and_forged_records_are_letters_and_redrives_seen_are_skipped():
    batch = [rec(0), rec(1, "b"), rec(2, "c")]
    verdicts = {
        (0, 0): Rejected("schema", "bad email", "$.delivery.email"),
        (0, 1): order("b"),
        (0, 2): Order("c", "{}", {}, Claim("orders:0:9", Version(1, 0, 9))),
    }
    p = decided(batch, verdicts, seen={"orders:0:9"}, refused={(0, 1): "violates check constraint"})
    assert [p.fates[r.where] for r in batch] == [Fate.DEAD_LETTERED, Fate.DEAD_LETTERED, Fate.REDRIVE_SEEN]
    assert [letter.reason for letter in p.letters] == ["schema", "db_rejected"]


def test_a_redrive_is_ordered_by_its_originals_version_and_taken_once():
    a, b = rec(0, partition=2, ts=9_000), rec(1, partition=2, ts=9_001)
    claim = Claim("orders:0:7", Version(1_000, 0, 7))
    verdicts = {a.where: Order("a", "{}", {}, claim), b.where: Order("a", "{}", {}, claim)}
    p = decided([a, b], verdicts, {"a": Head(Version(5_000, 0, 8), '{"v":"newer"}')})
    assert p.fates[a.where] is Fate.DEAD_LETTERED and p.letters[0].reason == "stale_version"
    assert p.fates[b.where] is Fate.REDRIVE_SEEN and p.redrives == [("orders:0:7", 2, 0)]


def test_a_version_kept_by_rebuild_keep_is_replaced_with_its_history():
    r = rec(0)
    p = decided([r], {r.where: order("a", v=1)}, {"a": Head(UNKNOWN, '{"v":0}')})
    [change] = p.changes
    assert change.clear_history and not change.archive


# --- 3. check -----------------------------------------------------------------------------------


def test_a_plan_whose_fates_cover_every_offset_passes_the_check():
    batch = [rec(0), rec(3)]
    fresh = fresh_of(batch, gaps={(0, 1): Gap(3, 0)})
    p = plan.decide(fresh, {r.where: Rejected("decode", "x", "$") for r in batch}, {}, (), {})
    plan.check(p, {}, {(0, 0), (0, 3)})


def test_a_position_past_an_offset_without_a_fate_fails_the_check():
    batch = [rec(0), rec(1)]
    p = decided(batch, {r.where: order("a", v=r.offset) for r in batch})
    del p.fates[0, 0]
    with pytest.raises(FatesBroken, match="offsets 0 to 0 have no fate"):
        plan.check(p, {}, set())


def test_a_letter_not_acknowledged_fails_the_check():
    r = rec(0)
    p = decided([r], {r.where: Rejected("decode", "x", "$")})
    with pytest.raises(FatesBroken, match="not acknowledged"):
        plan.check(p, {}, set())


def test_an_applied_record_written_nowhere_fails_the_check():
    r = rec(0)
    p = decided([r], {r.where: order("a")})
    p.changes.clear()
    with pytest.raises(FatesBroken, match="written nowhere"):
        plan.check(p, {}, set())
