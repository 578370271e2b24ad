"""The dead-letter topic: each bad message's key and bytes, with why, where from, and a digest.

Every dead letter carries headers `dlq.reason`, `dlq.error`, `dlq.path`, its source
`dlq.topic`/`dlq.partition`/`dlq.offset`, and the original value's `dlq.original_size` and
`dlq.original_sha256`. Dead letters are compressed (gzip). One the broker still refuses for its
size is sent again truncated — a prefix of the value (and of a long key), `dlq.truncated: true`
— so a bad message never blocks the messages behind it; the source topic keeps the original
forever, and the coordinates and digest find it there.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections.abc import Sequence
from dataclasses import dataclass

from aiokafka import AIOKafkaProducer
from aiokafka.errors import MessageSizeTooLargeError

from orderview import kafka_clients
from orderview.settings import Settings
from projector.kafka import scan
from projector.messages import Incoming

log = logging.getLogger("orderview.projector")

REASONS = ("too_large", "decode", "schema", "invariant", "db_rejected", "unprocessable")
# Headers are for people and tools reading the DLQ; a bounded error keeps them small.
MAX_ERROR_CHARS = 1000
# The client refuses records over this before compressing; the broker's limit applies to the
# compressed batch, so the client's is generous and the broker decides.
MAX_REQUEST_BYTES = 64 * 1024 * 1024
# A refused dead letter is sent again with at most this much of its value, then less.
TRUNCATED_VALUE_BYTES = (64 * 1024, 1024, 0)
TRUNCATED_KEY_BYTES = 1024


@dataclass(frozen=True, slots=True)
class DeadLetter:
    message: Incoming
    reason: str  # one of REASONS
    error: str
    path: str


class DeadLetterRefused(Exception):
    """The broker refuses even a truncated dead letter: the DLQ topic's limits are wrong."""


def dlq_headers(letter: DeadLetter, source_topic: str) -> list[tuple[str, bytes]]:
    m = letter.message
    headers = [
        ("dlq.reason", letter.reason.encode()),
        ("dlq.error", letter.error[:MAX_ERROR_CHARS].encode()),
        ("dlq.path", letter.path.encode()),
        ("dlq.topic", source_topic.encode()),
        ("dlq.partition", str(m.partition).encode()),
        ("dlq.offset", str(m.offset).encode()),
    ]
    if m.value is not None:
        headers += [
            ("dlq.original_size", str(len(m.value)).encode()),
            ("dlq.original_sha256", hashlib.sha256(m.value).hexdigest().encode()),
        ]
    return headers


def truncated(
    letter: DeadLetter, source_topic: str, value_bytes: int
) -> tuple[bytes | None, bytes | None, list[tuple[str, bytes]]]:
    """Key, value and headers of the letter cut down to `value_bytes` of its value."""
    key, value = letter.message.key, letter.message.value
    headers = [*dlq_headers(letter, source_topic), ("dlq.truncated", b"true")]
    if key is not None and len(key) > TRUNCATED_KEY_BYTES:
        headers += [
            ("dlq.original_key_size", str(len(key)).encode()),
            ("dlq.original_key_sha256", hashlib.sha256(key).hexdigest().encode()),
        ]
        key = key[:TRUNCATED_KEY_BYTES]
    return key, value[:value_bytes] if value is not None else None, headers


class DeadLetterQueue:
    """Produces with acks=all and waits for every acknowledgement before returning."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.dlq_topic = settings.dlq_topic
        self.source_topic = settings.orders_topic
        self._producer: AIOKafkaProducer | None = None

    async def start(self) -> None:
        # aiokafka binds to the running loop: the producer is made here, not in __init__.
        producer = kafka_clients.producer(
            self.settings,
            acks="all",
            # Not idempotent: a record the broker refuses would leave a gap in the sequence
            # numbers of an idempotent producer. Readers dedupe by the source coordinates anyway.
            enable_idempotence=False,
            # gzip: every Kafka client reads it without an extra library.
            compression_type="gzip",
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
            await self._producer.stop()
            self._producer = None

    async def send(self, letters: Sequence[DeadLetter]) -> None:
        """Send every letter, truncating those the broker refuses for their size."""
        if not letters:
            return
        producer = self._started()
        pending: list[tuple[DeadLetter, asyncio.Future]] = []
        refused: list[DeadLetter] = []
        for letter in letters:
            m = letter.message
            try:
                future = await producer.send(
                    self.dlq_topic, value=m.value, key=m.key, headers=dlq_headers(letter, self.source_topic)
                )
            except MessageSizeTooLargeError:
                refused.append(letter)
            else:
                pending.append((letter, future))
        results = await asyncio.gather(*(f for _, f in pending), return_exceptions=True)
        for (letter, _), result in zip(pending, results, strict=True):
            if isinstance(result, MessageSizeTooLargeError):
                refused.append(letter)
            elif isinstance(result, BaseException):
                raise result
        for letter in refused:
            await self._send_truncated(letter)

    async def _send_truncated(self, letter: DeadLetter) -> None:
        producer = self._started()
        for size in TRUNCATED_VALUE_BYTES:
            key, value, headers = truncated(letter, self.source_topic, size)
            try:
                await (await producer.send(self.dlq_topic, value=value, key=key, headers=headers))
            except MessageSizeTooLargeError:
                continue
            log.warning(
                "dead letter refused for its size, sent truncated",
                extra={
                    "partition": letter.message.partition,
                    "offset": letter.message.offset,
                    "kept_bytes": len(value or b""),
                },
            )
            return
        raise DeadLetterRefused(
            f"the broker refuses even an empty dead letter on {self.dlq_topic!r} "
            f"(for {self.source_topic}[{letter.message.partition}] offset {letter.message.offset}); "
            "check the topic's max.message.bytes"
        )

    def _started(self) -> AIOKafkaProducer:
        assert self._producer is not None, "start() first"
        return self._producer


async def dead_lettered(settings: Settings) -> dict[tuple[int, int], str | None]:
    """What the DLQ holds for one source topic: (partition, offset) of each dead letter, with the
    SHA-256 of the original value when the letter carries it."""
    found: dict[tuple[int, int], str | None] = {}
    source_topic = settings.orders_topic
    async for _, records in scan(settings, settings.dlq_topic):
        for record in records:
            headers = dict(record.headers)
            if headers.get("dlq.topic") != source_topic.encode():
                continue
            try:
                coordinates = (int(headers["dlq.partition"]), int(headers["dlq.offset"]))
            except (KeyError, ValueError):
                continue
            digest = headers.get("dlq.original_sha256")
            found[coordinates] = digest.decode() if digest else None
    return found


def holds(letters: dict[tuple[int, int], str | None], message: Incoming) -> bool:
    """Whether `letters` (from `dead_lettered`) holds this message's dead letter."""
    key = (message.partition, message.offset)
    if key not in letters:
        return False
    digest = letters[key]
    return digest is None or message.value is None or digest == hashlib.sha256(message.value).hexdigest()
