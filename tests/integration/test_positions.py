"""The shell does what the core decides (docs/positions.md), against the real broker and
PostgreSQL: a database behind the consumer is read again from, even where the records it lacks
were trimmed; a partition another session owns waits; a redrive refused again can be redriven; a
letter whose send timed out after it was written is in the DLQ once."""

from __future__ import annotations

import asyncio

import psycopg
from aiokafka.errors import KafkaTimeoutError

from harness.processes import Projector
from orderview.settings import Settings
from projector.adapters import postgres
from projector.adapters.dead_letters import DeadLetterQueue, letters_of
from projector.core.plan import Letter
from projector.core.records import Record
from projector.redrive import Choice, redrive
from tests import logops, support
from tests.integration.test_log_operations import critical_lines, log_lines, readiness
from tests.readmodel import message, order, orders, positions, snapshots, wait_for_orders

REWIND = "UPDATE applied_offsets SET next_offset = %s WHERE topic = %s AND partition = 0"


async def test_a_database_behind_the_consumer_is_read_again_from_even_where_its_records_were_trimmed(
    one_partition: Settings,
) -> None:
    """What a failover to a standby that lacked the last commits looks like to a running worker,
    with the records it lacks deleted meanwhile: no stall, no exit, the loss reported."""
    s = one_partition
    p = Projector(s, "projector-behind").start().wait_ready()
    try:
        await support.produce(s, orders("first", 100))
        await support.wait_until(lambda: positions(s).get(0) == 100, message="100 applied")
        with psycopg.connect(s.dsn("owner"), autocommit=True) as conn:
            conn.execute(REWIND, [50, s.orders_topic])
        await logops.delete_records(s, 0, 80)
        await support.produce(s, orders("then", 20))
        await support.wait_until(lambda: positions(s).get(0) == 120, timeout=60, message="caught up")
        assert {f"then-{i}" for i in range(20)} <= set(snapshots(s))
        lost = p.metric("orderview_projector_records_lost_total", 'reason="deleted_before_applied"')
        assert lost == 30, "offsets 50 to 79: deleted before this database applied them"
        assert any("reading again from the position" in line["msg"] for line in log_lines(p))
        assert readiness(p)[0] == 200 and not critical_lines(p)
    finally:
        assert p.terminate() == 0


async def test_a_partition_another_session_owns_waits_not_ready_until_it_is_released(
    one_partition: Settings,
) -> None:
    s = one_partition
    async with await psycopg.AsyncConnection.connect(s.dsn("projector"), autocommit=True) as owner:
        assert (await postgres.own(owner, s.orders_topic, [0]))[0] == []
        p = Projector(s, "projector-owned-elsewhere").start().wait_ready()
        try:
            await support.produce(s, orders("owned", 5))
            sentence = "is being written by another projector"
            await support.wait_until(
                lambda: sentence in readiness(p)[1], message="readiness naming the owner"
            )
            assert positions(s).get(0, 0) == 0, "nothing written while another session owns the partition"
            await postgres.release(owner, s.orders_topic, [0])
            await wait_for_orders(s, 5)
            await support.wait_until(lambda: readiness(p)[0] == 200, message="ready again")
        finally:
            assert p.terminate() == 0


async def test_a_redrive_the_database_refuses_again_can_be_redriven_once_it_takes_it(
    one_partition: Settings,
) -> None:
    s = one_partition
    with psycopg.connect(s.dsn("owner"), autocommit=True) as conn:
        conn.execute("ALTER TABLE deliveries ADD CONSTRAINT no_city CHECK (city <> 'Forbidden City')")
    refused = order("again-1")
    refused["delivery"]["city"] = "Forbidden City"
    p = Projector(s, "projector-redrive-again").start().wait_ready()
    try:
        await support.produce(s, [message(refused), *orders("fine", 3)])
        await wait_for_orders(s, 3)
        await support.read_topic(s, s.dlq_topic, 1)
        first = await redrive(s, Choice(reasons=frozenset({"db_rejected"})))  # still refused
        assert first.redriven == 1
        await support.wait_until(lambda: positions(s).get(0) == 5, message="the redrive judged")
        assert "again-1" not in snapshots(s), "refused again, and dead-lettered again"
        with psycopg.connect(s.dsn("owner"), autocommit=True) as conn:
            conn.execute("ALTER TABLE deliveries DROP CONSTRAINT no_city")
        second = await redrive(s, Choice(at=frozenset({(0, 0)})))
        assert second.redriven == 1
        await wait_for_orders(s, 4)
        assert snapshots(s)["again-1"]["delivery"]["city"] == "Forbidden City"
        assert p.metric("orderview_projector_redrives_skipped_total") == 0, "not taken for seen"
    finally:
        assert p.terminate() == 0


class AnswerLost:
    """The real producer, whose acknowledgements of chosen records never arrive."""

    def __init__(self, producer: object, values: set[bytes]) -> None:
        self.producer = producer
        self.values = values

    def __getattr__(self, name: str) -> object:
        return getattr(self.producer, name)

    async def send(self, topic: str, value: bytes, key: bytes, headers: list) -> asyncio.Future:
        sent = await self.producer.send(topic, value=value, key=key, headers=headers)  # type: ignore[attr-defined]
        if value not in self.values:
            return sent
        self.values.discard(value)
        await sent  # written and acknowledged by the broker; the answer is lost on the way
        lost: asyncio.Future = asyncio.get_running_loop().create_future()
        lost.set_exception(KafkaTimeoutError("no answer"))
        return lost


async def test_a_letter_whose_send_timed_out_after_it_was_written_is_in_the_dlq_once(
    clean_settings: Settings,
) -> None:
    s = clean_settings
    dlq = DeadLetterQueue(s)
    await dlq.start()
    letters = [Letter(Record(0, i, b"k", f"bad {i}".encode()), "decode", "not JSON", "$") for i in range(5)]
    try:
        dlq._producer = AnswerLost(dlq._producer, {b"bad 1", b"bad 3"})  # type: ignore[assignment]
        try:
            await dlq.send(letters)
        except KafkaTimeoutError:
            pass
        await dlq.send(letters)  # the batch retried
    finally:
        await dlq.stop()
    sources = [source async for _, _, source in letters_of(s)]
    assert sorted(sources) == [(0, i) for i in range(5)], "each letter in the DLQ once"
