"""Helpers shared by the test layers: producing, reading the DLQ, seeding, waiting. What the bench
shares with them (scratch settings, topics, the reference order) is in harness/."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable, Sequence

import psycopg
from aiokafka.structs import ConsumerRecord, RecordMetadata

from harness import scratch
from orderview import kafka_clients
from orderview.settings import Settings
from projector.adapters import postgres


async def produce(
    settings: Settings,
    messages: Iterable[tuple[bytes | None, bytes | None]],
    compression: str | None = None,
    partition: int | None = None,
    timestamp_ms: int | None = None,
) -> list[RecordMetadata]:
    """Send (key, value) pairs to the orders topic, acks=all and idempotent; return where each went."""
    producer = kafka_clients.producer(
        settings,
        acks="all",
        linger_ms=5,
        max_request_size=64 * 1024 * 1024,
        compression_type=compression,
    )
    await producer.start()
    try:
        futures = [
            await producer.send(
                settings.orders_topic, value=v, key=k, partition=partition, timestamp_ms=timestamp_ms
            )
            for k, v in messages
        ]
        return list(await asyncio.gather(*futures))
    finally:
        await producer.stop()


async def produce_aborted(settings: Settings, messages: Iterable[tuple[bytes | None, bytes | None]]) -> int:
    """Send (key, value) pairs in a Kafka transaction, then abort it; return how many."""
    producer = kafka_clients.producer(settings, transactional_id=scratch.unique("orderview-test-aborted-"))
    await producer.start()
    try:
        await producer.begin_transaction()
        futures = [await producer.send(settings.orders_topic, value=v, key=k) for k, v in messages]
        await asyncio.gather(*futures)
        await producer.abort_transaction()
    finally:
        await producer.stop()
    return len(futures)


async def read_topic(
    settings: Settings, topic: str, count: int, timeout: float = 30.0
) -> list[ConsumerRecord]:
    """Read `count` records from the start of a topic (no group), or fail after `timeout`."""
    consumer = kafka_clients.consumer(
        settings,
        topic,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        fetch_max_bytes=64 * 1024 * 1024,
        max_partition_fetch_bytes=32 * 1024 * 1024,
    )
    await consumer.start()
    records: list[ConsumerRecord] = []
    try:
        async with asyncio.timeout(timeout):
            while len(records) < count:
                batch = await consumer.getmany(timeout_ms=500)
                for part in batch.values():
                    records.extend(part)
    except TimeoutError:
        raise AssertionError(f"expected {count} records on {topic}, got {len(records)}") from None
    finally:
        await consumer.stop()
    return records


def headers(record: ConsumerRecord) -> dict[str, str]:
    return {k: v.decode(errors="replace") for k, v in record.headers}


def later_offsets(n: int) -> range:
    """Offsets of partition 0 later than any given before: a seeded order is a newer version of
    whatever was seeded of it earlier (projector/core/versions.py)."""
    first = time.time_ns() // 1000
    global _last_offset
    first = max(first, _last_offset + 1)
    _last_offset = first + n - 1
    return range(first, first + n)


_last_offset = 0


def now_ms() -> int:
    """The time of a seeded version: now, as a producer's record would have it."""
    return time.time_ns() // 1_000_000


async def seed_orders(settings: Settings, orders: Sequence[dict]) -> None:
    """Write orders through the projector's own write path (no Kafka), each a newer version of
    what was seeded of it before, and NOTIFY them with the versions written, as a projector that
    tells versions does (orderview/readmodel.py): a replica that read one already keeps it."""
    async with await psycopg.AsyncConnection.connect(settings.dsn("projector")) as conn:
        changes = await postgres.write_orders(
            conn, list(zip(later_offsets(len(orders)), orders, strict=True)), time_ms=now_ms()
        )
        await postgres.notify(conn, settings.notify_channel, changes)
        await conn.commit()


async def wait_until(predicate, timeout: float = 30.0, interval: float = 0.1, message: str = "condition"):
    """Poll an (async or sync) predicate until it returns a truthy value."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        value = predicate()
        if asyncio.iscoroutine(value):
            value = await value
        if value:
            return value
        if loop.time() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {message}")
        await asyncio.sleep(interval)
