"""Rebuild the read model by replaying the orders topic from the beginning.

    python -m projector.rebuild [--truncate]

Stop every projector first. The read model must be empty (or --truncate empties it); the topic
is read (committed records only) up to its end at the time the command starts, through the same
BatchProjector as the live worker, so the result equals the live read model. Bad messages that
the DLQ does not hold yet are dead-lettered; those it holds are not sent again. At the end, the
projectors' consumer group is set to the rebuilt positions.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import time
from collections.abc import Sequence

import psycopg
from aiokafka import TopicPartition
from aiokafka.errors import CommitFailedError
from aiokafka.structs import OffsetAndMetadata

from orderview import jsonlog, kafka_clients
from orderview.settings import Settings, get_settings
from projector.batch import BatchProjector
from projector.dlq import DeadLetter, DeadLetterQueue, dead_lettered, holds
from projector.kafka import partitions_of, scan
from projector.messages import Incoming
from projector.positions import read_positions

log = logging.getLogger("orderview.rebuild")

# Children before parents: one TRUNCATE empties the whole read model.
READ_MODEL = "items, payments, deliveries, orders, order_snapshots, applied_offsets"
COUNT_SNAPSHOTS = "SELECT count(*) FROM order_snapshots"
TRUNCATE_READ_MODEL = "TRUNCATE " + READ_MODEL


class NewDeadLetters:
    """The DLQ, minus the letters it already holds: a replay does not send those again."""

    def __init__(self, dlq: DeadLetterQueue, held: dict[tuple[int, int], str | None]) -> None:
        self.dlq = dlq
        self.held = held

    async def start(self) -> None:
        await self.dlq.start()

    async def stop(self) -> None:
        await self.dlq.stop()

    async def send(self, letters: Sequence[DeadLetter]) -> None:
        await self.dlq.send([d for d in letters if not holds(self.held, d.message)])


async def rebuild(settings: Settings, truncate: bool = False) -> int:
    """Replay the topic into the read model; return the number of messages replayed."""
    async with await psycopg.AsyncConnection.connect(settings.dsn("owner")) as conn:
        if truncate:
            await conn.execute(TRUNCATE_READ_MODEL)
            await conn.commit()
        else:
            (count,) = await (await conn.execute(COUNT_SNAPSHOTS)).fetchone()
            if count:
                raise SystemExit(
                    f"the read model holds {count} orders: stop the projectors and use --truncate"
                )
    held = await dead_lettered(settings)
    dlq = DeadLetterQueue(settings)
    projector = BatchProjector(settings, dlq=NewDeadLetters(dlq, held))  # type: ignore[arg-type]
    await projector.start()
    replayed = 0
    try:
        async for _, records in scan(settings, settings.orders_topic, settings.batch_size):
            batch = [Incoming(r.partition, r.offset, r.key, r.value, r.timestamp) for r in records]
            await projector.process(batch)
            replayed += len(batch)
    finally:
        await projector.stop()
    await set_group_offsets(settings)
    return replayed


async def set_group_offsets(settings: Settings, patience_s: float = 30.0) -> None:
    """Point the projectors' consumer group at the positions the read model recorded (the start
    of the partitions it has none for), so that the next worker does not start elsewhere.

    Kafka takes such a commit only from an empty group; a worker that stopped without leaving
    it (killed, or stopped by a failure) is still a member until its session times out."""
    recorded = {p: position.next_offset for p, position in (await read_positions(settings)).items()}
    partitions = await partitions_of(settings, settings.orders_topic)
    offsets = {
        TopicPartition(settings.orders_topic, p): OffsetAndMetadata(recorded.get(p, 0), "")
        for p in partitions
    }
    if not offsets:
        return
    consumer = kafka_clients.consumer(settings, group_id=settings.consumer_group, enable_auto_commit=False)
    await consumer.start()
    try:
        consumer.assign(list(offsets))
        deadline = time.monotonic() + patience_s
        while True:
            try:
                await consumer.commit(offsets)
                return
            except CommitFailedError:
                if time.monotonic() > deadline:
                    raise SystemExit(
                        f"the consumer group {settings.consumer_group!r} still has members: "
                        "stop every projector, then run the rebuild again"
                    ) from None
                log.warning("waiting for the projectors' consumer group to be empty")
                await asyncio.sleep(1.0)
    finally:
        await consumer.stop()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--truncate", action="store_true", help="empty the read model first")
    args = parser.parse_args()
    settings = get_settings()
    jsonlog.setup(settings.log_level)
    started = time.perf_counter()
    count = asyncio.run(rebuild(settings, truncate=args.truncate))
    print(f"replayed {count} messages from {settings.orders_topic} in {time.perf_counter() - started:.1f}s")


if __name__ == "__main__":
    main()
