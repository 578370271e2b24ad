"""Each dead letter is sent once per process, whatever fails around it
(projector/adapters/dead_letters.py), with a producer that fails on demand. A send that fails
without a refusal may have been written: the DLQ is read back before anything is sent again. The
real broker's side is in tests/integration/test_poison.py and test_log_operations.py."""

from __future__ import annotations

import asyncio
import logging
import random
import time

import pytest
from aiokafka import TopicPartition
from aiokafka.errors import KafkaConnectionError, KafkaTimeoutError, MessageSizeTooLargeError
from hypothesis import given
from hypothesis import strategies as st

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


# --- letters over the DLQ topic's max.message.bytes ----------------------------------------------

LIMIT = 64 * 1024
headers_ = st.lists(st.tuples(st.text(max_size=40), st.binary(max_size=200)), max_size=12)
keys = st.none() | st.binary(max_size=2000)


@given(keys, st.binary(max_size=LIMIT), headers_)
def test_a_letter_whose_bytes_are_within_the_limit_fits(key, value, headers):
    if dead_letters.framing_bytes(key, headers) + len(value) <= LIMIT:
        assert dead_letters.fits(key, value, headers, LIMIT)


@given(keys, st.integers(1, 4 * LIMIT), headers_, st.integers(0, 2**32))
def test_an_incompressible_value_over_the_limit_does_not_fit(key, extra, headers, seed):
    value = random.Random(seed).randbytes(LIMIT + extra)
    assert not dead_letters.fits(key, value, headers, LIMIT)


@given(keys, st.binary(), headers_)
def test_without_a_known_limit_every_letter_goes_whole(key, value, headers):
    assert dead_letters.fits(key, value, headers, None)


@given(st.integers(LIMIT + 1, 64 * LIMIT))
def test_a_compressible_value_over_the_limit_still_fits_whole(size):
    assert dead_letters.fits(b"bomb", bytes(size), [("dlq.reason", b"too_large")], LIMIT)


@given(keys, headers_, st.integers(0, 8 * LIMIT))
def test_the_prefix_kept_of_a_cut_letter_fits_uncompressed(key, headers, size):
    kept = dead_letters.value_bytes_that_fit(key, headers, LIMIT)
    value = bytes(min(size, kept))
    assert kept >= 0
    if dead_letters.framing_bytes(key, headers) <= LIMIT:
        assert dead_letters.framing_bytes(key, headers) + len(value) <= LIMIT


class LimitedProducer(FlakyProducer):
    """Refuses (as the broker would) any record whose value is over `limit` bytes."""

    def __init__(self, limit: int) -> None:
        super().__init__(unanswered=set())
        self.limit = limit

    async def send(self, topic: str, value: bytes, key: bytes, headers: list) -> asyncio.Future:
        future = asyncio.get_running_loop().create_future()
        if len(value or b"") > self.limit:
            future.set_exception(MessageSizeTooLargeError())
        else:
            self.sent.append(value)
            future.set_result(None)
        return future


async def test_a_letter_that_cannot_fit_is_cut_before_sending_and_nothing_is_sent_again(caplog):
    producer = LimitedProducer(LIMIT)
    dlq = queue_with(producer)
    dlq._max_bytes = LIMIT

    async def not_renewed() -> None:
        raise AssertionError("the producer was renewed: a record was refused")

    dlq._renew = not_renewed  # type: ignore[method-assign]
    noise = random.Random(3).randbytes(4 * LIMIT)
    batch = [*letters(3), Letter(Record(0, 3, b"k", noise), "too_large", "too large", "$"), *letters(6)[4:]]
    with caplog.at_level(logging.WARNING, logger="orderview.projector"):
        await dlq.send(batch)
    assert dlq.acknowledged == {(0, i) for i in range(6)}
    [cut] = [v for v in producer.sent if v not in {f"v{i}".encode() for i in range(6)}]
    assert noise.startswith(cut) and LIMIT - 4096 < len(cut) <= LIMIT, "as much as fits is kept"
    assert len(producer.sent) == 6, "each letter sent once"
    assert "over the DLQ topic's max.message.bytes, sent truncated" in caplog.text


async def test_with_the_limit_unknown_a_refused_letter_is_sent_truncated_by_a_new_producer():
    producer = LimitedProducer(2048)
    dlq = queue_with(producer)
    renewed = []

    async def renew() -> None:
        renewed.append(True)

    dlq._renew = renew  # type: ignore[method-assign]
    noise = random.Random(5).randbytes(100_000)
    batch = [*letters(2), Letter(Record(0, 2, b"k", noise), "decode", "not JSON", "$")]
    await dlq.send(batch)
    assert dlq.acknowledged == {(0, 0), (0, 1), (0, 2)} and renewed
    assert producer.sent[-1] == noise[:1024], "64 KiB refused too, then 1 KiB taken"
