"""The orders topic as the projector reads it besides its consumer: committed records only.

- `KafkaLog`: single records looked up by offset, and the partitions' bounds: the facts the plan
  asks for (projector/core/plan.py: gaps in offsets, the record before a position).
- `scan`: a whole topic from its start, for rebuilds and audits.
- `describe_topics`, `partitions_of`: what the broker says of topics now.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import AsyncIterator, Sequence

from aiokafka import AIOKafkaClient, AIOKafkaConsumer, ConsumerRecord, TopicPartition
from aiokafka.errors import KafkaTimeoutError

from orderview import kafka_clients
from orderview.settings import Settings
from projector.adapters import topics
from projector.core.plan import Gap, Last
from projector.core.records import LogRecord, digest, timestamp

log = logging.getLogger("orderview.projector")

READ_COMMITTED = "read_committed"
LOOKUP_TIMEOUT_S = 10.0


class KafkaLog:
    """Looks records of one topic up by partition and offset; committed records only."""

    def __init__(self, settings: Settings, topic: str) -> None:
        self.settings = settings
        self.topic = topic
        self._consumer: AIOKafkaConsumer | None = None
        self._client: AIOKafkaClient | None = None

    async def start(self) -> None:
        # aiokafka binds to the running loop: the clients are made here, not in __init__.
        self._client = kafka_clients.client(self.settings, request_timeout_ms=10_000)
        try:
            await self._client.bootstrap()
        except BaseException:
            await self._client.close()
            self._client = None
            raise
        consumer = kafka_clients.consumer(
            self.settings,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            isolation_level=READ_COMMITTED,
            max_partition_fetch_bytes=64 * 1024,
            request_timeout_ms=10_000,
        )
        try:
            await consumer.start()
        except BaseException:
            await consumer.stop()
            await self.stop()
            raise
        self._consumer = consumer

    async def stop(self) -> None:
        if self._consumer is not None:
            await self._consumer.stop()
            self._consumer = None
        if self._client is not None:
            await self._client.close()
            self._client = None

    async def first_record(self, partition: int, offset: int) -> LogRecord | None:
        """The first committed record at or after `offset`, or None if there is none yet."""
        consumer = self._started()
        tp = TopicPartition(self.topic, partition)
        consumer.assign([tp])
        try:
            async with asyncio.timeout(LOOKUP_TIMEOUT_S):
                end = (await consumer.end_offsets([tp]))[tp]
                if offset >= end:
                    return None
                consumer.seek(tp, offset)
                while True:
                    fetched = await consumer.getmany(tp, timeout_ms=500, max_records=1)
                    for r in fetched.get(tp, []):
                        return LogRecord(r.offset, timestamp(r.timestamp), digest(r.key, r.value))
                    if await consumer.position(tp) >= end:
                        return None
        except TimeoutError:
            raise KafkaTimeoutError(f"no answer reading {self.topic}[{partition}] at {offset}") from None

    async def gap(self, partition: int, offset: int) -> Gap:
        """The first committed record at or after `offset`, and the partition's start."""
        found = await self.first_record(partition, offset)
        return Gap(found.offset if found is not None else None, await self.start_offset(partition))

    async def last(self, partition: int, offset: int) -> Last:
        """What the log holds at `offset`, the record before a position, and the bounds."""
        found = await self.first_record(partition, offset)
        return Last(found, await self.start_offset(partition), await self.end_offset(partition))

    async def start_offset(self, partition: int) -> int:
        """The partition's first offset still held (retention may have deleted older ones)."""
        consumer = self._started()
        tp = TopicPartition(self.topic, partition)
        try:
            async with asyncio.timeout(LOOKUP_TIMEOUT_S):
                return (await consumer.beginning_offsets([tp]))[tp]
        except TimeoutError:
            raise KafkaTimeoutError(f"no answer for the start of {self.topic}[{partition}]") from None

    async def end_offset(self, partition: int) -> int:
        """The offset the partition's next record will get."""
        consumer = self._started()
        tp = TopicPartition(self.topic, partition)
        try:
            async with asyncio.timeout(LOOKUP_TIMEOUT_S):
                return (await consumer.end_offsets([tp]))[tp]
        except TimeoutError:
            raise KafkaTimeoutError(f"no answer for the end of {self.topic}[{partition}]") from None

    async def topic_id(self) -> uuid.UUID | None:
        """The topic's incarnation now; None when it does not exist."""
        found = (await self.describe_topics([self.topic]))[self.topic]
        return found.id if found is not None else None

    async def describe_topics(self, names: Sequence[str]) -> dict[str, topics.Topic | None]:
        """What the broker says of these topics now (None for one that does not exist)."""
        assert self._client is not None, "start() first"
        try:
            async with asyncio.timeout(LOOKUP_TIMEOUT_S):
                return await topics.describe(self._client, names)
        except TimeoutError:
            raise KafkaTimeoutError(f"no answer for the metadata of {', '.join(names)}") from None

    def _started(self) -> AIOKafkaConsumer:
        assert self._consumer is not None, "start() first"
        return self._consumer


async def scan(
    settings: Settings, topic: str, max_records: int = 10_000
) -> AsyncIterator[tuple[dict[int, int], list[ConsumerRecord]]]:
    """Every committed record of `topic` from its start to its end at the time of the call, in
    chunks; each chunk comes with the end offsets (for progress)."""
    consumer = kafka_clients.consumer(
        settings,
        topic,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        isolation_level=READ_COMMITTED,
        max_partition_fetch_bytes=16 * 1024 * 1024,
        fetch_max_bytes=64 * 1024 * 1024,
    )
    await consumer.start()
    try:
        partitions = sorted(consumer.assignment())
        await consumer.seek_to_beginning(*partitions)
        end = await consumer.end_offsets(partitions)
        ends = {tp.partition: end[tp] for tp in partitions}
        remaining = {tp for tp in partitions if end[tp] > await consumer.position(tp)}
        while remaining:
            fetched = await consumer.getmany(*remaining, timeout_ms=1000, max_records=max_records)
            chunk = [r for tp, records in fetched.items() for r in records if r.offset < end[tp]]
            for tp in list(remaining):
                if await consumer.position(tp) >= end[tp]:
                    remaining.discard(tp)
            if chunk:
                yield ends, chunk
    finally:
        await consumer.stop()


async def describe_topics(settings: Settings, names: Sequence[str]) -> dict[str, topics.Topic | None]:
    """What the broker says of these topics now (None for one that does not exist)."""
    client = kafka_clients.client(settings, request_timeout_ms=10_000)
    await client.bootstrap()
    try:
        return await topics.describe(client, names)
    finally:
        await client.close()


async def partitions_of(settings: Settings, topic: str) -> list[int]:
    """The partitions of a topic, from the broker's metadata ([] when it does not exist)."""
    found = (await describe_topics(settings, [topic]))[topic]
    return list(found.partitions) if found is not None else []
