"""Each dead letter is sent once per process, whatever fails around it
(projector/adapters/dead_letters.py), with a producer that fails on demand. A send that fails
without a refusal may have been written: the DLQ is read back before anything is sent again. The
real broker's side is in tests/integration/test_poison.py and test_log_operations.py."""

from __future__ import annotations

import asyncio
import time

import pytest
from aiokafka import TopicPartition
from aiokafka.errors import KafkaConnectionError, KafkaTimeoutError

from orderview.settings import Settings
from projector.adapters import dead_letters
from projector.adapters.dead_letters import DeadLetterQueue
from projector.core.plan import Letter
from projector.core.records import Record


class FlakyProducer:
    """Writes every record; those whose value is in `unanswered` (once each) time out after being
    written (`lost=False`) or before (`lost=True`)."""

    def __init__(self, unanswered: set[bytes], lost: bool = False) -> None:
        self.unanswered = unanswered
        self.lost = lost
        self.sent: list[bytes] = []

    async def send(self, topic: str, value: bytes, key: bytes, headers: list) -> asyncio.Future:
        future = asyncio.get_running_loop().create_future()
        if value in self.unanswered:
            self.unanswered.discard(value)
            if not self.lost:
                self.sent.append(value)
            future.set_exception(KafkaTimeoutError())
        else:
            self.sent.append(value)
            future.set_result(None)
        return future


def letters(n: int) -> list[Letter]:
    return [Letter(Record(0, i, b"k", f"v{i}".encode()), "decode", "not JSON", "$") for i in range(n)]


def queue_with(producer: FlakyProducer) -> DeadLetterQueue:
    dlq = DeadLetterQueue(Settings())
    dlq._producer = producer  # type: ignore[assignment]
    dlq._checked_at = time.monotonic() + 3600

    async def exists() -> None:  # the topic is there
        pass

    async def ends() -> dict[int, int]:  # where the DLQ ends before a send
        return {0: len(producer.sent)}

    async def read_back(since: dict[int, int]) -> set[tuple[int, int]]:
        return {(0, int(v[1:])) for v in producer.sent[since[0] :]}

    dlq.check_topic = exists  # type: ignore[method-assign]
    dlq._ends = ends  # type: ignore[method-assign]
    dlq.acknowledged_by_the_log = read_back  # type: ignore[method-assign]
    return dlq


@pytest.mark.parametrize("lost", [False, True], ids=["written-before-the-timeout", "not-written"])
async def test_a_letter_whose_send_timed_out_is_sent_again_only_if_the_dlq_lacks_it(lost):
    producer = FlakyProducer(unanswered={b"v2"}, lost=lost)
    dlq = queue_with(producer)
    batch = letters(5)
    with pytest.raises(KafkaTimeoutError):
        await dlq.send(batch)
    await dlq.send(batch)  # the batch is retried
    assert sorted(producer.sent) == [b"v0", b"v1", b"v2", b"v3", b"v4"], "each letter in the DLQ once"
    assert dlq.acknowledged == {(0, i) for i in range(5)}


async def test_letters_are_forgotten_only_once_their_position_is_recorded():
    producer = FlakyProducer(unanswered=set())
    dlq = queue_with(producer)
    batch = letters(4)
    await dlq.send(batch)
    dlq.settle({0: 2})  # a batch applied in part, up to offset 2; the rest is retried
    await dlq.send(batch[2:])
    assert producer.sent == [b"v0", b"v1", b"v2", b"v3"], "those past the position are still remembered"
    dlq.settle({0: 4})
    await dlq.send(batch[3:])  # read again by a later batch: sent again
    assert producer.sent[-1] == b"v3"


class OffsetsConsumer:
    """A consumer whose start fails while the broker is away."""

    made: list[OffsetsConsumer] = []

    def __init__(self, starts: bool) -> None:
        self.starts, self.stopped = starts, False

    async def start(self) -> None:
        if not self.starts:
            raise KafkaConnectionError("the broker is away")

    async def stop(self) -> None:
        self.stopped = True

    async def end_offsets(self, tps: list) -> dict:
        assert self.starts and not self.stopped, "asked a consumer that never started"
        return {tp: 7 for tp in tps}


async def test_an_offsets_consumer_that_could_not_start_is_not_asked_again(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    outcomes = iter([False, True])

    def consumer(settings: Settings, **kwargs: object) -> OffsetsConsumer:
        made = OffsetsConsumer(starts=next(outcomes))
        OffsetsConsumer.made.append(made)
        return made

    monkeypatch.setattr(dead_letters.kafka_clients, "consumer", consumer)
    dlq = DeadLetterQueue(Settings())
    tps = [TopicPartition("orders.dlq", 0)]
    with pytest.raises(KafkaConnectionError):  # an outage: the batch waits and tries again
        await dlq._end_offsets(tps)
    assert await dlq._end_offsets(tps) == {tps[0]: 7}
    first, second = OffsetsConsumer.made
    assert first.stopped and not second.stopped
