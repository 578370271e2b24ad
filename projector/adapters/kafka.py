"""How the projector reads the orders topic: committed records only, from where the read model is.

- `broker_url`: Faust's Kafka transport with two changes to its consumer. It reads with
  isolation_level read_committed (Faust asks for that only in its exactly-once mode, which would
  also make it produce and commit in transactions we do not use; without it, records of an
  aborted Kafka transaction would be projected as real orders). And when partitions are
  assigned, it seeks each to the position the read model recorded, not to the group's offset
  (projector/positions.py).
- `KafkaLog`: single records, looked up by offset, to check what a recorded position points to.
- `scan`: a whole topic from its start, for rebuilds and audits.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import AsyncIterator, Mapping, Sequence
from typing import Any

from aiokafka import AIOKafkaClient, AIOKafkaConsumer, ConsumerRecord, TopicPartition
from aiokafka.errors import KafkaTimeoutError
from faust.transport.drivers import TRANSPORTS
from faust.transport.drivers import aiokafka as faust_aiokafka
from faust.types import TP

from orderview import kafka_clients
from orderview.settings import Settings
from projector import faults, topics
from projector.messages import digest
from projector.positions import LogRecord, seek_targets

log = logging.getLogger("orderview.projector")

SCHEME = "orderview-kafka"
READ_COMMITTED = "read_committed"
LOOKUP_TIMEOUT_S = 10.0
COMMIT_RETRY_S = 0.5  # a commit refused while the group rebalances is tried again after this


def broker_url(bootstrap: str) -> str:
    """Faust's broker URL for a comma-separated bootstrap list: `scheme://h1:p1;h2:p2`."""
    return f"{SCHEME}://" + ";".join(a.strip() for a in bootstrap.split(",") if a.strip())


class _ReadCommittedConsumerThread(faust_aiokafka.AIOKafkaConsumerThread):
    logger = faust_aiokafka.logger  # Faust's, whose level the logging configuration sets

    def _create_worker_consumer(self, transport: Any) -> AIOKafkaConsumer:
        consumer = super()._create_worker_consumer(transport)
        # aiokafka hands this to its fetcher when the consumer starts, which is after this.
        consumer._isolation_level = READ_COMMITTED
        return consumer


class _Consumer(faust_aiokafka.Consumer):
    logger = faust_aiokafka.logger

    def _new_consumer_thread(self) -> faust_aiokafka.AIOKafkaConsumerThread:
        return _ReadCommittedConsumerThread(self, loop=self.loop, beacon=self.beacon)

    async def _seek(self, partition: TP, offset: int) -> None:
        # Faust's own seek calls aiokafka from this thread while the consumer's thread fetches;
        # both delete from the fetcher's buffers, and the race crashed the fetcher (KeyError).
        # seek_wait seeks on the consumer's thread.
        await self._thread.seek_wait({partition: offset})

    async def perform_seek(self) -> None:
        """Faust calls this once partitions are assigned, to seek them to the group's offsets.
        The read model is the source of truth: seek each to the position it recorded (the start
        for a partition it has none for), once what the position points to is verified. If the
        database or the broker cannot be asked now, the group's offsets stand (the start where
        there is none), and positions are checked when the first batch is written.

        Every partition gets an explicit position: the consumer resets none by itself
        (auto_offset_reset "none"), so a position that leaves the log under it — a topic
        truncated or recreated between two metadata refreshes — stops the worker instead of
        being quietly moved."""
        await super().perform_seek()
        projector = self.app.projector  # projector/app.py: create_app
        settings = projector.settings
        assigned = {tp.partition: tp for tp in self.assignment() if tp.topic == settings.orders_topic}
        if not assigned:
            return
        kafka_log = KafkaLog(settings, settings.orders_topic)
        try:
            await kafka_log.start()
            existing = await partitions_of(settings, settings.orders_topic)
            targets = await seek_targets(
                settings, kafka_log, sorted(assigned), existing, projector.metrics, projector.positions.said
            )
        except faults.UntrustedPosition as exc:
            faults.stop_worker(str(exc), status=faults.EXIT_UNTRUSTED_POSITION)
        except Exception as exc:
            if faults.outage(exc) is None:
                raise
            log.warning("cannot check the recorded positions now; starting from the group's offsets: %s", exc)
            committed = await self.seek_to_committed()
            for tp in assigned.values():
                if not committed.get(tp):
                    await self.seek(tp, 0)
            return
        finally:
            await kafka_log.stop()
        sought = {assigned[p]: offset for p, offset in targets.items()}
        for tp, offset in sought.items():
            await self.seek(tp, offset)
        self._copy_to_group(sought)

    async def _commit(self, offsets: Mapping[TP, int]) -> bool:
        """Commit to the group, or False if it cannot take the offsets now (try again later).

        Not while the group rebalances: a commit that reaches the coordinator after the group's
        generation moved on fails with IllegalGeneration, and aiokafka answers that by making
        this member join again, which moves the generation on again, and so on (a CI run of the
        chaos test showed three such rebalances in a row after a kill -9). The offsets are a
        copy of the database's positions: they can wait.

        Never moving a partition back from an offset this worker sent: the copy of the
        positions sought and the first batch's commit may cross."""
        if self.app.rebalancing:
            return False
        sent: dict[TP, int] = self.__dict__.setdefault("_sent_offsets", {})
        ahead = {tp: o for tp, o in offsets.items() if o > sent.get(tp, -1)}
        if not ahead:
            return True
        before = {tp: sent.get(tp, -1) for tp in ahead}
        sent.update(ahead)  # before sending: a commit that starts later sees it
        done = False
        try:
            done = await super()._commit(ahead)
        finally:
            for tp, o in ahead.items():
                if not done and sent.get(tp) == o:  # not sent after all
                    sent[tp] = before[tp]
        return done

    def _copy_to_group(self, offsets: dict[TP, int]) -> None:
        """The group's offsets say the same as the positions sought (for tools that show lag),
        once the group takes them (`_commit`)."""
        previous = getattr(self, "_copying", None)
        if previous is not None:
            previous.cancel()

        async def copy() -> None:
            while not await self._commit(offsets):  # noqa: ASYNC110 (a retry, not a wait for a flag)
                await asyncio.sleep(COMMIT_RETRY_S)

        self._copying = asyncio.ensure_future(copy())


class Transport(faust_aiokafka.Transport):
    Consumer = _Consumer


TRANSPORTS.aliases.setdefault(SCHEME, f"{__name__}:Transport")


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
                        return LogRecord(r.offset, r.timestamp, digest(r.key, r.value))
                    if await consumer.position(tp) >= end:
                        return None
        except TimeoutError:
            raise KafkaTimeoutError(f"no answer reading {self.topic}[{partition}] at {offset}") from None

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
