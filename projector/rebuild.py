"""Rebuild the read model by replaying the orders topic from the beginning.

    python -m projector.rebuild                  into an empty read model
    python -m projector.rebuild --keep           over the read model, keeping what the log lost
    python -m projector.rebuild --truncate       from empty tables (refused on a trimmed log)

Stop every projector first. The topic is read (committed records only) up to its end at the time
the command starts, through the same BatchProjector as the live worker, so the result equals the
live read model. Bad messages that the DLQ does not hold yet are dead-lettered; those it holds are
not sent again. At the end, the projectors' consumer group is set to the rebuilt positions.

What each keeps: the log holds the latest version of every order whose records it still has (a
compacted topic keeps the last record of each key). --truncate rebuilds exactly that, so orders
whose records retention or delete-records removed would vanish: it refuses while any partition
no longer starts at offset 0, unless --accept-loss says so. --keep forgets the positions and
where each order's version came from, then replays: every order the log holds gets its latest
version from the log, and the others stay as they were.
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
from projector.kafka import KafkaLog, partitions_of, scan
from projector.messages import Incoming
from projector.positions import read_positions

log = logging.getLogger("orderview.rebuild")

# Children before parents: one TRUNCATE empties the whole read model.
READ_MODEL = "items, payments, deliveries, orders, order_snapshots, applied_offsets, redrives, lost_records"
COUNT_SNAPSHOTS = "SELECT count(*) FROM order_snapshots"
TRUNCATE_READ_MODEL = "TRUNCATE " + READ_MODEL
# --keep: the versions the read model holds came from a log that is not this one any more (or
# not all of it): unknown, so that any version of the log replaces them (projector/versions.py).
FORGET_POSITIONS = "DELETE FROM applied_offsets WHERE topic = %(topic)s"
FORGET_LOSSES = "DELETE FROM lost_records WHERE topic = %(topic)s"
FORGET_VERSIONS = """
UPDATE order_snapshots SET version_partition = NULL, version_offset = NULL, version_time = NULL
"""
FORGET_REDRIVES = "TRUNCATE redrives"


class TrimmedLog(SystemExit):
    """--truncate on a log that no longer starts at offset 0."""


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

    def settle(self, recorded: dict[int, int]) -> None:
        self.dlq.settle(recorded)


async def rebuild(
    settings: Settings, truncate: bool = False, keep: bool = False, accept_loss: bool = False
) -> int:
    """Replay the topic into the read model; return the number of messages replayed."""
    if truncate and not accept_loss:
        await refuse_trimmed_log(settings)
    async with await psycopg.AsyncConnection.connect(settings.dsn("owner")) as conn:
        if truncate:
            await conn.execute(TRUNCATE_READ_MODEL)
        elif keep:
            await conn.execute(FORGET_POSITIONS, {"topic": settings.orders_topic})
            await conn.execute(FORGET_LOSSES, {"topic": settings.orders_topic})
            await conn.execute(FORGET_VERSIONS)
            await conn.execute(FORGET_REDRIVES)
        else:
            (count,) = await (await conn.execute(COUNT_SNAPSHOTS)).fetchone()
            if count:
                raise SystemExit(
                    f"the read model holds {count} orders: stop the projectors and use --keep "
                    "(keeps orders the log no longer holds) or --truncate (starts from empty tables)"
                )
        await conn.commit()
    held = await dead_lettered(settings)
    dlq = DeadLetterQueue(settings)
    projector = BatchProjector(settings, dlq=NewDeadLetters(dlq, held))  # type: ignore[arg-type]
    await projector.start()
    replayed = 0
    try:
        async for _, records in scan(settings, settings.orders_topic, settings.batch_size):
            batch = [
                Incoming(r.partition, r.offset, r.key, r.value, r.timestamp, None, tuple(r.headers))
                for r in records
            ]
            await projector.process(batch)
            replayed += len(batch)
    finally:
        await projector.stop()
    await set_group_offsets(settings)
    return replayed


async def refuse_trimmed_log(settings: Settings) -> None:
    """TrimmedLog unless every partition of the topic still starts at offset 0."""
    kafka_log = KafkaLog(settings, settings.orders_topic)
    await kafka_log.start()
    try:
        for partition in await partitions_of(settings, settings.orders_topic):
            start = await kafka_log.start_offset(partition)
            if start > 0:
                raise TrimmedLog(
                    f"refusing to truncate: partition {partition} of {settings.orders_topic!r} starts "
                    f"at offset {start}, not 0 (retention or delete-records removed its first "
                    "records), so orders only those records held would vanish from the read model; "
                    "rebuild with --keep to keep them, or add --accept-loss to truncate anyway"
                )
    finally:
        await kafka_log.stop()


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
    how = parser.add_mutually_exclusive_group()
    how.add_argument(
        "--keep",
        action="store_true",
        help="replay over the read model, keeping orders the log no longer holds",
    )
    how.add_argument(
        "--truncate", action="store_true", help="empty the read model first (refused on a trimmed log)"
    )
    parser.add_argument(
        "--accept-loss",
        action="store_true",
        help="with --truncate: even if the log no longer starts at offset 0",
    )
    args = parser.parse_args()
    if args.accept_loss and not args.truncate:
        parser.error("--accept-loss goes with --truncate")
    settings = get_settings()
    jsonlog.setup(settings.log_level)
    started = time.perf_counter()
    count = asyncio.run(
        rebuild(settings, truncate=args.truncate, keep=args.keep, accept_loss=args.accept_loss)
    )
    print(f"replayed {count} messages from {settings.orders_topic} in {time.perf_counter() - started:.1f}s")


if __name__ == "__main__":
    main()
