"""How recorded positions are trusted, skipped to and sought back to (projector/positions.py),
against a log kept in memory."""

from __future__ import annotations

import uuid

import pytest

from projector.faults import SkippedRecords, UntrustedPosition
from projector.messages import Incoming
from projector.positions import LogRecord, Plan, Position, Positions

TOPIC = "orders"


INCARNATION = uuid.UUID(int=1)


class MemoryLog:
    """Partition 0 of a topic: offset -> message; records below `start` deleted by retention,
    others missing where compaction removed them; `end` is the next offset."""

    def __init__(
        self, messages: list[Incoming], start: int = 0, end: int | None = None, topic_id=INCARNATION
    ) -> None:
        self.messages = {m.offset: m for m in messages}
        self.start = start
        self.end = end if end is not None else max(self.messages, default=-1) + 1
        self.id = topic_id
        self.lookups = 0

    async def first_record(self, partition: int, offset: int) -> LogRecord | None:
        self.lookups += 1
        found = sorted(o for o in self.messages if o >= max(offset, self.start))
        if not found:
            return None
        m = self.messages[found[0]]
        return LogRecord(m.offset, m.timestamp_ms, m.digest())

    async def start_offset(self, partition: int) -> int:
        return self.start

    async def end_offset(self, partition: int) -> int:
        return self.end

    async def topic_id(self) -> uuid.UUID | None:
        return self.id


class Seen:
    """An Observer that remembers what it was told."""

    def __init__(self) -> None:
        self.losses: list[tuple[int, int, int]] = []
        self.deleted: list[tuple[int, str]] = []

    def lost(self, partition: int, first: int, end: int) -> None:
        self.losses.append((partition, first, end))

    def applied_record_deleted(self, partition: int, reason: str) -> None:
        self.deleted.append((partition, reason))


def log_of(n: int, value: bytes = b"v", generation: int = 1) -> list[Incoming]:
    return [Incoming(0, o, b"k", value + str(o).encode(), 1_000 + o, generation) for o in range(n)]


def applied_up_to(
    messages: list[Incoming], next_offset: int, topic_id: uuid.UUID | None = INCARNATION
) -> dict[int, Position]:
    last = next(m for m in messages if m.offset == next_offset - 1)
    return {0: Position(next_offset, last.timestamp_ms, last.digest(), topic_id)}


async def planned(positions: Positions, batch: list[Incoming], recorded: dict[int, Position]) -> Plan:
    plan = await positions.plan(batch, recorded)
    positions.settle(plan)
    return plan


async def test_with_nothing_recorded_every_message_is_fresh():
    messages = log_of(5)
    plan = await planned(Positions(TOPIC, MemoryLog(messages)), messages, {})
    assert (plan.fresh, plan.skipped, plan.seeks) == (messages, 0, {})


async def test_messages_below_a_verified_position_are_skipped_as_redeliveries():
    messages = log_of(10)
    plan = await planned(Positions(TOPIC, MemoryLog(messages)), messages, applied_up_to(messages, 6))
    assert (plan.fresh, plan.skipped) == (messages[6:], 6)


async def test_the_record_before_the_position_is_looked_up_in_the_log_when_the_batch_lacks_it():
    messages = log_of(10)
    log = MemoryLog(messages)
    plan = await planned(Positions(TOPIC, log), messages[6:], applied_up_to(messages, 6))
    assert (plan.fresh, plan.skipped, log.lookups) == (messages[6:], 0, 1)


async def test_a_position_is_verified_once_per_consumer_generation():
    messages = log_of(30)
    log = MemoryLog(messages)
    positions = Positions(TOPIC, log)
    recorded = applied_up_to(messages, 10)
    await planned(positions, messages[10:20], recorded)
    await planned(positions, messages[20:30], applied_up_to(messages, 20))
    assert log.lookups == 1
    regenerated = [Incoming(0, m.offset, m.key, m.value, m.timestamp_ms, 2) for m in messages[20:30]]
    await planned(positions, regenerated, applied_up_to(messages, 20))
    assert log.lookups == 2


async def test_a_recreated_topic_whose_record_differs_at_the_position_stops_with_how_to_rebuild():
    old = log_of(100)
    new = log_of(150, value=b"other")
    with pytest.raises(UntrustedPosition) as caught:
        await planned(Positions(TOPIC, MemoryLog(new)), new[100:], applied_up_to(old, 100))
    assert "its record at offset 99 is not the one applied there" in str(caught.value)
    assert "python -m projector.rebuild --keep" in str(caught.value)


async def test_a_recreated_shorter_topic_read_from_its_start_stops_instead_of_skipping():
    old = log_of(100)
    new = log_of(50, value=b"other")
    with pytest.raises(UntrustedPosition, match="it ends before offset 99"):
        await planned(Positions(TOPIC, MemoryLog(new)), new, applied_up_to(old, 100, topic_id=None))


async def test_the_same_bytes_at_the_same_offset_but_sent_at_another_time_are_another_record():
    old = log_of(100)
    resent = [Incoming(0, m.offset, m.key, m.value, m.timestamp_ms + 5, 1) for m in old]
    with pytest.raises(UntrustedPosition):
        await planned(Positions(TOPIC, MemoryLog(resent)), resent[:10], applied_up_to(old, 100))


async def test_offsets_going_backwards_within_a_generation_are_verified_again():
    old = log_of(100)
    positions = Positions(TOPIC, MemoryLog(old))
    await planned(positions, old[90:], applied_up_to(old, 90))
    new = log_of(30, value=b"other")  # the topic recreated under a running consumer
    positions.log = MemoryLog(new)
    with pytest.raises(UntrustedPosition):
        await planned(positions, new, applied_up_to(old, 100))


async def test_records_deleted_by_retention_before_they_were_applied_are_reported_lost_and_the_rest_applied():
    messages = log_of(100)
    seen = Seen()
    positions = Positions(TOPIC, MemoryLog(messages[80:], start=80), seen)
    plan = await planned(positions, messages[80:], applied_up_to(messages, 60))
    assert (plan.fresh, plan.skipped) == (messages[80:], 0)
    assert seen.deleted == [(0, "retention")], "the last record applied is gone too"
    assert seen.losses == plan.lost == [(0, 60, 80)], "counted, and recorded with the batch for the audit"


async def test_a_last_applied_record_removed_by_compaction_is_expected_and_said_once():
    messages = log_of(100)
    compacted = [m for m in messages if m.offset % 10 != 9]  # newer versions of their keys follow
    seen = Seen()
    positions = Positions(TOPIC, MemoryLog(compacted), seen)
    batch = [m for m in compacted if m.offset >= 50]
    plan = await planned(positions, batch, applied_up_to(messages, 50))
    assert plan.fresh == batch, "applied from the position on; the gaps are not skips"
    assert (seen.deleted, seen.losses) == ([(0, "compaction")], [])
    regenerated = [Incoming(0, m.offset, m.key, m.value, m.timestamp_ms, 2) for m in batch]
    await planned(positions, regenerated, applied_up_to(messages, 50))
    assert seen.deleted == [(0, "compaction")], "verified again in a new generation, said once"


async def test_a_topic_deleted_and_created_again_is_another_incarnation_even_where_its_records_match():
    messages = log_of(100)
    again = MemoryLog(messages, topic_id=uuid.UUID(int=2))  # the same bytes, sent again
    with pytest.raises(UntrustedPosition, match="deleted and created again"):
        await planned(Positions(TOPIC, again), messages[50:], applied_up_to(messages, 50))


async def test_a_recreated_topic_compacted_at_the_position_is_still_another_incarnation():
    messages = log_of(100)
    again = MemoryLog([m for m in messages if m.offset != 49], topic_id=uuid.UUID(int=2))
    with pytest.raises(UntrustedPosition, match="deleted and created again"):
        await planned(Positions(TOPIC, again), messages[50:], applied_up_to(messages, 50))


async def test_a_log_that_ends_before_the_position_in_the_same_incarnation_is_not_trusted():
    messages = log_of(100)
    with pytest.raises(UntrustedPosition, match="it ends before offset 99"):
        await planned(Positions(TOPIC, MemoryLog(messages[:60])), messages[:60], applied_up_to(messages, 100))


async def test_positions_are_recorded_with_the_incarnation_they_were_verified_in():
    messages = log_of(10)
    positions = Positions(TOPIC, MemoryLog(messages))
    await planned(positions, messages, {})
    assert positions.topic_id == INCARNATION


async def test_a_consumer_started_past_the_position_seeks_back_and_drops_what_it_fetched_meanwhile():
    messages = log_of(100)
    positions = Positions(TOPIC, MemoryLog(messages))
    recorded = applied_up_to(messages, 40)
    plan = await planned(positions, messages[70:80], recorded)
    assert (plan.fresh, plan.seeks, plan.discarded) == ([], {0: 40}, 10)
    stale = await planned(positions, messages[80:90], recorded)  # fetched before the seek took effect
    assert (stale.fresh, stale.seeks, stale.discarded) == ([], {}, 10)
    again = await planned(positions, messages[40:60], recorded)
    assert (again.fresh, again.seeks, again.discarded) == (messages[40:60], {}, 0)


async def test_a_plan_rolled_back_before_it_was_settled_is_planned_the_same_again():
    messages = log_of(100)
    positions = Positions(TOPIC, MemoryLog(messages))
    recorded = applied_up_to(messages, 40)
    first = await positions.plan(messages[70:80], recorded)  # the transaction then failed
    retried = await positions.plan(messages[70:80], recorded)
    assert first.seeks == retried.seeks == {0: 40}


async def test_messages_of_an_aborted_transaction_leave_a_gap_that_is_not_a_skip():
    messages = [m for m in log_of(20) if not 5 <= m.offset <= 12]  # 5..11 aborted, 12 its marker
    log = MemoryLog(messages)
    plan = await planned(
        Positions(TOPIC, log), [m for m in messages if m.offset >= 13], applied_up_to(log_of(20), 5)
    )
    assert [m.offset for m in plan.fresh] == list(range(13, 20)) and plan.seeks == {}


async def test_a_record_the_consumer_skipped_stops_the_batch_before_any_position_passes_it():
    messages = log_of(30)
    positions = Positions(TOPIC, MemoryLog(messages))
    await planned(positions, messages[:10], {})
    with pytest.raises(SkippedRecords, match="without the records from offset 17"):
        await planned(positions, messages[10:17] + messages[18:25], applied_up_to(messages, 10))


async def test_a_batch_that_starts_after_a_skipped_record_is_not_applied():
    messages = log_of(30)
    positions = Positions(TOPIC, MemoryLog(messages))
    await planned(positions, messages[:10], {})
    with pytest.raises(SkippedRecords, match="from offset 10"):
        await planned(positions, messages[11:20], applied_up_to(messages, 10))


async def test_a_redelivery_beside_the_first_delivery_in_one_batch_is_applied_once_in_order():
    messages = log_of(30)
    positions = Positions(TOPIC, MemoryLog(messages))
    await planned(positions, messages[:10], {})
    # fetched before a rebalance, then again from the position the consumer was sought to
    plan = await planned(positions, messages[10:20] + messages[5:25], applied_up_to(messages, 10))
    assert [m.offset for m in plan.fresh] == list(range(10, 25))
    assert plan.skipped == 15
