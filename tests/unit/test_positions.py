"""How recorded positions are trusted, skipped to and sought back to (projector/positions.py),
against a log kept in memory."""

from __future__ import annotations

import pytest

from projector.faults import SkippedRecords, UntrustedPosition
from projector.messages import Incoming
from projector.positions import LogRecord, Plan, Position, Positions

TOPIC = "orders"


class MemoryLog:
    """Partition 0 of a topic: offset -> message; records below `start` deleted by retention."""

    def __init__(self, messages: list[Incoming], start: int = 0) -> None:
        self.messages = {m.offset: m for m in messages}
        self.start = start
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


def log_of(n: int, value: bytes = b"v", generation: int = 1) -> list[Incoming]:
    return [Incoming(0, o, b"k", value + str(o).encode(), 1_000 + o, generation) for o in range(n)]


def applied_up_to(messages: list[Incoming], next_offset: int) -> dict[int, Position]:
    last = messages[next_offset - 1]
    return {0: Position(next_offset, last.timestamp_ms, last.digest())}


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
    assert "python -m projector.rebuild --truncate" in str(caught.value)


async def test_a_recreated_shorter_topic_read_from_its_start_stops_instead_of_skipping():
    old = log_of(100)
    new = log_of(50, value=b"other")
    with pytest.raises(UntrustedPosition, match="it ends before offset 99"):
        await planned(Positions(TOPIC, MemoryLog(new)), new, applied_up_to(old, 100))


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


async def test_a_record_deleted_by_retention_cannot_be_verified_and_is_trusted():
    messages = log_of(100)
    plan = await planned(
        Positions(TOPIC, MemoryLog(messages, start=80)), messages[80:], applied_up_to(messages, 60)
    )
    assert (plan.fresh, plan.skipped) == (messages[80:], 0)


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
