"""The dead-letter topic: each bad message's key and bytes, with why, where from, and a digest.

Every dead letter carries headers `dlq.reason`, `dlq.error`, `dlq.path`, its source
`dlq.topic`/`dlq.partition`/`dlq.offset`/`dlq.timestamp`, and the original value's
`dlq.original_size` and `dlq.original_sha256`; the original's own headers follow, each renamed
`dlq.header.<name>` (python -m projector.redrive gives them back their names). Dead letters are
compressed (`DLQ_CODEC`). One that cannot fit the DLQ topic's `max.message.bytes` even compressed
(`fits`) is sent truncated — a prefix of the value (and of a long key), without the original's
headers, `dlq.truncated: true` — so a bad message never blocks the messages behind it; the source
topic keeps the original, and the coordinates and digest find it there. Cutting it before
sending matters: a record the broker refuses breaks the idempotent producer's sequence, and every
letter in flight behind it has to be sent again by a new producer. One the broker refuses all the
same (the limit unknown, or the estimate wrong) is truncated then.

Each letter is sent once per process: the producer is idempotent (the broker drops a batch the
client sends again after a lost acknowledgement), a letter acknowledged while its batch is retried
is remembered and not sent again (`settle` forgets them once their position is recorded), and a
send that failed without a refusal (a timeout, a lost connection: a timeout is not "not written")
is settled by reading the DLQ back from where it ended before the send: what landed there counts
as acknowledged, and only the rest is sent again. A crash between a letter's acknowledgement and
its batch's commit sends it again after the restart: readers deduplicate by the source
coordinates (`dlq.topic`, `dlq.partition`, `dlq.offset`).
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from collections.abc import AsyncIterator, Callable, Sequence

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord, TopicPartition, codec
from aiokafka.errors import MessageSizeTooLargeError, OutOfOrderSequenceNumber

from orderview import kafka_clients
from orderview.settings import Settings
from projector.adapters import topics
from projector.adapters.kafka import READ_COMMITTED, scan
from projector.core import versions
from projector.core.plan import Letter
from projector.core.records import Record
from projector.faults import TopicMissing

log = logging.getLogger("orderview.projector")

REASONS = (
    "too_large",
    "decode",
    "schema",
    "invariant",
    "forged_redrive",
    "stale_version",
    "db_rejected",
)
# Headers are for people and tools reading the DLQ; a bounded error keeps them small.
MAX_ERROR_CHARS = 1000
# The client refuses records over this before compressing; the broker's limit applies to the
# compressed batch, so the client's is generous and the broker decides.
MAX_REQUEST_BYTES = 64 * 1024 * 1024
# A refused dead letter is sent again with at most this much of its value, then less.
TRUNCATED_VALUE_BYTES = (64 * 1024, 1024, 0)
# zstd where aiokafka has its codec (the cramjam this project installs), gzip otherwise: a hostile
# stream's letters are large, and on the worker's loop zstd compresses a 2 MB letter of random bytes
# in 1.3 ms against gzip's 47, a 20 MiB one of spaces in 10 ms against 82, and reads them back
# faster. Kafka clients read zstd since Kafka 2.1.
DLQ_CODEC: str = "zstd" if codec.has_zstd() else "gzip"
COMPRESS: Callable[[bytes], bytes] = codec.zstd_encode if DLQ_CODEC == "zstd" else codec.gzip_encode
# More than a record batch's framing (61 bytes), a record's (at most 21) and a header's (at most
# 10 besides its name and value) take.
BATCH_OVERHEAD_BYTES = 256
HEADER_OVERHEAD_BYTES = 16
TRUNCATED_KEY_BYTES = 1024
ORIGINAL_HEADER = "dlq.header."
# Whether the DLQ topic exists is asked again at most this often while letters are sent.
TOPIC_CHECK_EVERY_S = 10.0


class DeadLetterRefused(Exception):
    """The broker refuses even a truncated dead letter: the DLQ topic's limits are wrong."""


def dlq_headers(letter: Letter, source_topic: str) -> list[tuple[str, bytes]]:
    m = letter.record
    headers = [
        ("dlq.reason", letter.reason.encode()),
        ("dlq.error", letter.error[:MAX_ERROR_CHARS].encode()),
        ("dlq.path", letter.path.encode()),
        ("dlq.topic", source_topic.encode()),
        ("dlq.partition", str(m.partition).encode()),
        ("dlq.offset", str(m.offset).encode()),
    ]
    if m.timestamp_ms is not None:
        headers.append(("dlq.timestamp", str(m.timestamp_ms).encode()))
    if letter.version is not None:  # what a redrive of it carries (projector/core/redrives.py)
        headers.append(("dlq.version", versions.text(letter.version).encode()))
    if m.value is not None:
        headers += [
            ("dlq.original_size", str(len(m.value)).encode()),
            ("dlq.original_sha256", hashlib.sha256(m.value).hexdigest().encode()),
        ]
    return headers


def letter_headers(letter: Letter, source_topic: str) -> list[tuple[str, bytes]]:
    """Ours, then the original's under `dlq.header.<name>`."""
    own = [(ORIGINAL_HEADER + name, value) for name, value in letter.record.headers]
    return dlq_headers(letter, source_topic) + own


def truncated(letter: Letter, source_topic: str) -> tuple[bytes | None, list[tuple[str, bytes]]]:
    """Key and headers of the letter cut down (its value is cut to whatever size is tried)."""
    key = letter.record.key
    headers = [*dlq_headers(letter, source_topic), ("dlq.truncated", b"true")]
    if key is not None and len(key) > TRUNCATED_KEY_BYTES:
        headers += [
            ("dlq.original_key_size", str(len(key)).encode()),
            ("dlq.original_key_sha256", hashlib.sha256(key).hexdigest().encode()),
        ]
        key = key[:TRUNCATED_KEY_BYTES]
    return key, headers


def framing_bytes(key: bytes | None, headers: Sequence[tuple[str, bytes]]) -> int:
    """At least what a record of one letter takes on the wire besides its value."""
    return (
        BATCH_OVERHEAD_BYTES
        + len(key or b"")
        + sum(HEADER_OVERHEAD_BYTES + len(name) + len(value) for name, value in headers)
    )


def fits(
    key: bytes | None, value: bytes | None, headers: Sequence[tuple[str, bytes]], limit: int | None
) -> bool:
    """Whether a letter can go whole under the DLQ topic's max.message.bytes (`limit`; None:
    unknown), as far as can be told before sending: its bytes fit, or they do with its value
    compressed as the producer compresses it."""
    if limit is None or value is None:
        return True
    framing = framing_bytes(key, headers)
    if framing + len(value) <= limit:
        return True
    return framing + len(COMPRESS(value)) <= limit


def value_bytes_that_fit(key: bytes | None, headers: Sequence[tuple[str, bytes]], limit: int) -> int:
    """The longest prefix of a value that fits uncompressed beside this key and these headers."""
    return max(0, limit - framing_bytes(key, headers))


class DeadLetterQueue:
    """Produces with acks=all, idempotently, and waits for every acknowledgement."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.dlq_topic = settings.dlq_topic
        self.source_topic = settings.orders_topic
        self._producer: AIOKafkaProducer | None = None
        self._offsets_consumer: AIOKafkaConsumer | None = None
        self._acknowledged: set[tuple[int, int]] = set()  # source coordinates, until `settle`
        # Letters whose send failed without an answer, and where the DLQ ended before it.
        self._unknown: set[tuple[int, int]] = set()
        self._since: dict[int, int] = {}
        self._checked_at = -TOPIC_CHECK_EVERY_S
        self._max_bytes: int | None = None  # the DLQ topic's max.message.bytes, as last asked

    async def start(self) -> None:
        # aiokafka binds to the running loop: the producer is made here, not in __init__.
        producer = kafka_clients.producer(
            self.settings,
            acks="all",
            enable_idempotence=True,
            compression_type=DLQ_CODEC,
            max_request_size=MAX_REQUEST_BYTES,
            request_timeout_ms=10_000,
        )
        try:
            await producer.start()
        except BaseException:
            await producer.stop()
            raise
        self._producer = producer

    async def stop(self) -> None:
        if self._producer is not None:
            producer, self._producer = self._producer, None
            await producer.stop()
        if self._offsets_consumer is not None:
            consumer, self._offsets_consumer = self._offsets_consumer, None
            await consumer.stop()

    @property
    def acknowledged(self) -> set[tuple[int, int]]:
        """Source coordinates of the letters acknowledged and not yet settled."""
        return self._acknowledged

    async def check_topic(self) -> None:
        """TopicMissing unless the DLQ topic exists, with a leader for each partition."""
        self._checked_at = time.monotonic()
        client = self._started().client
        found = (await topics.describe(client, [self.dlq_topic]))[self.dlq_topic]
        if not topics.usable(found):
            raise TopicMissing(self.dlq_topic, "dead-letter")
        self._max_bytes = await topics.max_message_bytes(client, self.dlq_topic)

    async def send(self, letters: Sequence[Letter]) -> None:
        """Send every letter not acknowledged yet, truncating those the broker refuses for
        their size; each acknowledged one is remembered until `settle`."""
        if self._unknown:
            await self._read_back()
        todo = [d for d in letters if d.source not in self._acknowledged]
        if not todo:
            return
        if time.monotonic() - self._checked_at > TOPIC_CHECK_EVERY_S:
            await self.check_topic()
        ends = await self._ends()
        try:
            # Built once per letter: the headers hold the value's SHA-256, and a letter's value can be MBs.
            headers = {d.source: letter_headers(d, self.source_topic) for d in todo}
            for letter in todo:
                m = letter.record
                if not fits(m.key, m.value, headers[letter.source], self._max_bytes):
                    await self._send_truncated(letter, "over the DLQ topic's max.message.bytes")
            todo = [d for d in todo if d.source not in self._acknowledged]
            while todo:
                refused, again = await self._send_all(todo, headers)
                if refused or again:
                    # A refused record leaves a gap in an idempotent producer's sequence numbers:
                    # the broker refuses everything after it. A new producer starts a new sequence.
                    log.info(
                        "dead-letter producer renewed after a refusal",
                        extra={"refused": len(refused), "sent_again": len(again)},
                    )
                    await self._renew()
                for letter in refused:
                    await self._send_truncated(letter, "refused for its size")
                todo = again
        except Exception:
            self._checked_at = -TOPIC_CHECK_EVERY_S  # a topic deleted meanwhile is said next time
            unknown = {d.source for d in todo} - self._acknowledged
            if unknown:  # sent, or not: the DLQ says which, before anything is sent again
                self._unknown |= unknown
                for p, offset in ends.items():
                    self._since[p] = min(offset, self._since.get(p, offset))
            raise

    async def acknowledged_by_the_log(self, since: dict[int, int]) -> set[tuple[int, int]]:
        """The source coordinates of this topic's letters in the DLQ from `since` (DLQ partition ->
        offset) to its end now."""
        consumer = kafka_clients.consumer(
            self.settings, enable_auto_commit=False, isolation_level=READ_COMMITTED, request_timeout_ms=10_000
        )
        await consumer.start()
        found: set[tuple[int, int]] = set()
        try:
            tps = [TopicPartition(self.dlq_topic, p) for p in since]
            consumer.assign(tps)
            end = await consumer.end_offsets(tps)
            remaining = {tp for tp in tps if end[tp] > since[tp.partition]}
            for tp in remaining:
                consumer.seek(tp, since[tp.partition])
            while remaining:
                fetched = await consumer.getmany(*remaining, timeout_ms=1000)
                for tp, records in fetched.items():
                    for r in records:
                        source = letter_source(dict(r.headers), self.source_topic)
                        if r.offset < end[tp] and source is not None:
                            found.add(source)
                for tp in list(remaining):
                    if await consumer.position(tp) >= end[tp]:
                        remaining.discard(tp)
        finally:
            await consumer.stop()
        return found

    async def _read_back(self) -> None:
        landed = await self.acknowledged_by_the_log(self._since)
        self._acknowledged |= landed & self._unknown
        log.info(
            "dead letters whose send had no answer, read back from the DLQ",
            extra={"unknown": len(self._unknown), "landed": len(landed & self._unknown)},
        )
        self._unknown, self._since = set(), {}

    async def _ends(self) -> dict[int, int]:
        """Where each partition of the DLQ ends now: what a failed send is read back from."""
        producer = self._started()
        partitions = await producer.partitions_for(self.dlq_topic)
        tps = [TopicPartition(self.dlq_topic, p) for p in partitions]
        return {tp.partition: offset for tp, offset in (await self._end_offsets(tps)).items()}

    async def _end_offsets(self, tps: list[TopicPartition]) -> dict[TopicPartition, int]:
        consumer = self._offsets_consumer
        if consumer is None:
            consumer = kafka_clients.consumer(
                self.settings, enable_auto_commit=False, request_timeout_ms=10_000
            )
            try:
                await consumer.start()
            except BaseException:
                # Kept half started (the broker away), it would fail every later call in aiokafka's
                # own way (no fetcher): the next call makes a new one.
                await consumer.stop()
                raise
            self._offsets_consumer = consumer
        return await consumer.end_offsets(tps)

    def settle(self, recorded: dict[int, int]) -> None:
        """Positions were recorded (partition -> next offset): letters below them are durable and
        will not be asked for again; those above, of a batch applied in part, are still kept."""
        self._acknowledged = {(p, o) for p, o in self._acknowledged if o >= recorded.get(p, 0)}

    async def _send_all(
        self, letters: Sequence[Letter], headers: dict[tuple[int, int], list[tuple[str, bytes]]]
    ) -> tuple[list[Letter], list[Letter]]:
        """Send at once; return those refused for their size and those to send again."""
        producer = self._started()
        pending: list[tuple[Letter, asyncio.Future]] = []
        refused: list[Letter] = []
        for letter in letters:
            m = letter.record
            try:
                future = await producer.send(
                    self.dlq_topic,
                    value=m.value,
                    key=m.key,
                    headers=headers[letter.source],
                )
            except MessageSizeTooLargeError:  # by the client, before a sequence number is taken
                refused.append(letter)
            else:
                pending.append((letter, future))
        results = await asyncio.gather(*(f for _, f in pending), return_exceptions=True)
        again: list[Letter] = []
        failed: BaseException | None = None
        for (letter, _), result in zip(pending, results, strict=True):
            if isinstance(result, MessageSizeTooLargeError):
                refused.append(letter)
            elif isinstance(result, OutOfOrderSequenceNumber):
                again.append(letter)
            elif isinstance(result, BaseException):
                failed = failed or result
            else:
                self._acknowledged.add(letter.source)
        if failed is not None:
            raise failed
        return refused, again

    def _truncations(self, key: bytes | None, headers: list[tuple[str, bytes]]) -> list[int]:
        """How much of the value to keep, tried in turn: what fits the known limit, then less."""
        if self._max_bytes is None:
            return list(TRUNCATED_VALUE_BYTES)
        most = value_bytes_that_fit(key, headers, self._max_bytes)
        return [most, *(size for size in TRUNCATED_VALUE_BYTES if size < most)]

    async def _send_truncated(self, letter: Letter, why: str) -> None:
        # Built once: the headers hold the whole value's SHA-256, whichever size is tried.
        key, headers = truncated(letter, self.source_topic)
        whole = letter.record.value
        for size in self._truncations(key, headers):
            value = whole[:size] if whole is not None else None
            try:
                await (await self._started().send(self.dlq_topic, value=value, key=key, headers=headers))
            except MessageSizeTooLargeError:
                await self._renew()
                continue
            self._acknowledged.add(letter.source)
            log.warning(
                "dead letter %s, sent truncated",
                why,
                extra={
                    "partition": letter.record.partition,
                    "offset": letter.record.offset,
                    "kept_bytes": len(value or b""),
                    "max_message_bytes": self._max_bytes,
                },
            )
            return
        raise DeadLetterRefused(
            f"the broker refuses even an empty dead letter on {self.dlq_topic!r} "
            f"(for {self.source_topic}[{letter.record.partition}] offset {letter.record.offset}); "
            "check the topic's max.message.bytes"
        )

    async def _renew(self) -> None:
        await self.stop()
        await self.start()

    def _started(self) -> AIOKafkaProducer:
        assert self._producer is not None, "start() first"
        return self._producer


async def letters_of(
    settings: Settings,
) -> AsyncIterator[tuple[ConsumerRecord, dict[str, bytes], tuple[int, int]]]:
    """Every dead letter of the orders topic the DLQ holds, with its headers (ours win over
    nothing: the original's are renamed) and the original's partition and offset."""
    async for _, records in scan(settings, settings.dlq_topic):
        for record in records:
            headers = dict(record.headers)
            source = letter_source(headers, settings.orders_topic)
            if source is not None:
                yield record, headers, source


def letter_source(headers: dict[str, bytes], source_topic: str) -> tuple[int, int] | None:
    """The original's partition and offset, for a letter of `source_topic`."""
    if headers.get("dlq.topic") != source_topic.encode():
        return None
    try:
        return int(headers["dlq.partition"]), int(headers["dlq.offset"])
    except (KeyError, ValueError):
        return None


async def dead_lettered(settings: Settings) -> dict[tuple[int, int], str | None]:
    """What the DLQ holds for the orders topic: (partition, offset) of each dead letter, with the
    SHA-256 of the original value when the letter carries it."""
    found: dict[tuple[int, int], str | None] = {}
    async for _, headers, source in letters_of(settings):
        digest = headers.get("dlq.original_sha256")
        found[source] = digest.decode() if digest else None
    return found


def holds(letters: dict[tuple[int, int], str | None], message: Record) -> bool:
    """Whether `letters` (from `dead_lettered`) holds this message's dead letter."""
    key = (message.partition, message.offset)
    if key not in letters:
        return False
    digest = letters[key]
    return digest is None or message.value is None or digest == hashlib.sha256(message.value).hexdigest()
