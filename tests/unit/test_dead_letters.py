"""Each dead letter is sent once per process, whatever fails around it (projector/dlq.py), with a
producer that fails on demand. The real broker's side is in tests/integration/test_poison.py and
test_log_operations.py."""

from __future__ import annotations

import asyncio
import time

import pytest
from aiokafka.errors import KafkaTimeoutError

from orderview.settings import Settings
from projector.dlq import DeadLetter, DeadLetterQueue
from projector.messages import Incoming


class FlakyProducer:
    """Acknowledges every record but those whose value is in `failing` (once each)."""

    def __init__(self, failing: set[bytes]) -> None:
        self.failing = failing
        self.sent: list[bytes] = []

    async def send(self, topic: str, value: bytes, key: bytes, headers: list) -> asyncio.Future:
        future = asyncio.get_running_loop().create_future()
        if value in self.failing:
            self.failing.discard(value)
            future.set_exception(KafkaTimeoutError())
        else:
            self.sent.append(value)
            future.set_result(None)
        return future


def letters(n: int) -> list[DeadLetter]:
    return [DeadLetter(Incoming(0, i, b"k", f"v{i}".encode()), "decode", "not JSON", "$") for i in range(n)]


def queue_with(producer: FlakyProducer) -> DeadLetterQueue:
    dlq = DeadLetterQueue(Settings())
    dlq._producer = producer  # type: ignore[assignment]
    dlq._checked_at = time.monotonic() + 3600

    async def exists() -> None:  # the topic is there
        pass

    dlq.check_topic = exists  # type: ignore[method-assign]
    return dlq


async def test_a_retry_after_one_letter_failed_sends_only_that_letter():
    producer = FlakyProducer(failing={b"v2"})
    dlq = queue_with(producer)
    batch = letters(5)
    with pytest.raises(KafkaTimeoutError):
        await dlq.send(batch)
    await dlq.send(batch)  # the batch is retried
    assert sorted(producer.sent) == [b"v0", b"v1", b"v2", b"v3", b"v4"]


async def test_letters_are_forgotten_only_once_their_position_is_recorded():
    producer = FlakyProducer(failing=set())
    dlq = queue_with(producer)
    batch = letters(4)
    await dlq.send(batch)
    dlq.settle({0: 2})  # a batch applied in part, up to offset 2; the rest is retried
    await dlq.send(batch[2:])
    assert producer.sent == [b"v0", b"v1", b"v2", b"v3"], "those past the position are still remembered"
    dlq.settle({0: 4})
    await dlq.send(batch[3:])  # read again by a later batch: sent again
    assert producer.sent[-1] == b"v3"
