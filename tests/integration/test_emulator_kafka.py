"""What the emulator sends reaches the real broker as a shop's producer would send it: orders,
their later versions, and erasures as tombstones (the order's key, no value)."""

from __future__ import annotations

import io
from collections.abc import AsyncIterator

import pytest_asyncio

from emulator.send import Tally, send
from emulator.stream import stream
from harness import scratch
from harness.topics import create_topics, delete_topics
from orderview.settings import Settings
from tests import support


@pytest_asyncio.fixture
async def own_topic(settings: Settings) -> AsyncIterator[Settings]:
    s = scratch.topics_for_tests(settings)
    await create_topics(s)
    yield s
    await delete_topics(s, best_effort=True)


async def test_erasures_reach_the_topic_as_tombstones_of_orders_sent_before(own_topic: Settings) -> None:
    messages = list(stream(300, seed=3, repeat_share=0.2, erase_share=0.05, start=1_772_355_600, rate=0))
    tally = Tally()
    done = await send(
        messages,
        settings=own_topic,
        topic=own_topic.orders_topic,
        rate=0,
        max_bytes=own_topic.max_message_bytes,
        tally=tally,
        progress_to=io.StringIO(),
    )
    assert done and not tally.failed and tally.acked["erase"] == 15

    records = await support.read_topic(own_topic, own_topic.orders_topic, len(messages))
    tombstones = [r for r in records if r.value is None]
    assert sorted(r.key for r in tombstones) == sorted(m.key for m in messages if m.kind == "erase")
    for tombstone in tombstones:
        earlier = [r for r in records if r.key == tombstone.key and r.value is not None]
        assert earlier and all(
            (r.partition, r.offset) < (tombstone.partition, tombstone.offset) for r in earlier
        ), "an erasure follows the order's versions in its partition"
