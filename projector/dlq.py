"""The dead-letter topic: the original key and bytes, untouched, with the reason in headers."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass

from aiokafka import AIOKafkaProducer

# Headers are for people and tools reading the DLQ; a bounded error keeps them small.
MAX_ERROR_CHARS = 1000


@dataclass(frozen=True, slots=True)
class Incoming:
    """One message of the orders topic, as the broker gave it."""

    partition: int
    offset: int
    key: bytes | None
    value: bytes | None


@dataclass(frozen=True, slots=True)
class DeadLetter:
    message: Incoming
    reason: str  # too_large | decode | schema | invariant | db_rejected
    error: str
    path: str


def dlq_headers(letter: DeadLetter, source_topic: str) -> list[tuple[str, bytes]]:
    return [
        ("dlq.reason", letter.reason.encode()),
        ("dlq.error", letter.error[:MAX_ERROR_CHARS].encode()),
        ("dlq.path", letter.path.encode()),
        ("dlq.topic", source_topic.encode()),
        ("dlq.partition", str(letter.message.partition).encode()),
        ("dlq.offset", str(letter.message.offset).encode()),
    ]


class DeadLetterQueue:
    """Produces with acks=all and waits for every acknowledgement before returning."""

    def __init__(self, bootstrap: str, dlq_topic: str, source_topic: str) -> None:
        self.bootstrap = bootstrap
        self.dlq_topic = dlq_topic
        self.source_topic = source_topic
        self._producer: AIOKafkaProducer | None = None

    async def start(self) -> None:
        # aiokafka binds to the running loop: the producer is made here, not in __init__.
        self._producer = AIOKafkaProducer(
            bootstrap_servers=self.bootstrap,
            acks="all",
            enable_idempotence=True,
            # A too_large message is kept whole in the DLQ.
            max_request_size=16 * 1024 * 1024,
            request_timeout_ms=10_000,
        )
        await self._producer.start()

    async def stop(self) -> None:
        if self._producer is not None:
            await self._producer.stop()
            self._producer = None

    async def send(self, letters: Sequence[DeadLetter]) -> None:
        if not letters:
            return
        assert self._producer is not None, "start() first"
        pending = [
            await self._producer.send(
                self.dlq_topic,
                value=letter.message.value,
                key=letter.message.key,
                headers=dlq_headers(letter, self.source_topic),
            )
            for letter in letters
        ]
        await asyncio.gather(*pending)
