"""Rebuild the read model by replaying the orders topic from the beginning.

    python -m projector.rebuild                  into an empty read model
    python -m projector.rebuild --keep           over the read model, keeping what the log lost
    python -m projector.rebuild --truncate       from empty tables (refused on a trimmed log)

Stop every projector first: the command refuses while the projectors' consumer group has members
or any partition is held by a projector. The topic is read (committed records only) up to its end
at the time the command starts, through the same BatchProjector as the live worker, so the result
equals the live read model for every order whose records the log still holds. Bad messages that
the DLQ does not hold yet are dead-lettered; those it holds are not sent again. At the end, the
projectors' consumer group is set to the rebuilt positions.

What each keeps: the log holds the latest version of every order whose records it still has (a
compacted topic keeps the last record of each key, and a tombstone until delete.retention.ms).
--truncate rebuilds exactly that, so orders whose records retention or delete-records removed
would vanish: it refuses while any partition no longer starts at offset 0, unless --accept-loss
says so. --keep forgets where each order's version came from and which redrives were taken, then
replays: every order the log holds gets its versions and history from the log again, and the
others stay as they were. Records below the recorded positions that the log no longer holds were
applied before: they are not reported lost.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import time
from collections.abc import Sequence

import psycopg
from aiokafka import TopicPartition
from aiokafka.errors import CommitFailedError, KafkaError
from aiokafka.structs import OffsetAndMetadata

from orderview import jsonlog, kafka_clients
from orderview.settings import Settings, get_settings
from projector.adapters import postgres
from projector.adapters.dead_letters import DeadLetterQueue, dead_lettered, holds
from projector.adapters.kafka import KafkaLog, partitions_of, scan
from projector.batch import BatchProjector, collect_less_often
from projector.core.plan import Advance, Letter
from projector.core.records import Record, timestamp

log = logging.getLogger("orderview.rebuild")

# Children before parents: one TRUNCATE empties the whole read model.
READ_MODEL = (
    "items, payments, deliveries, orders, order_snapshots, order_history, applied_offsets, redrives, "
    "lost_records"
)
COUNT_SNAPSHOTS = "SELECT count(*) FROM order_snapshots"
GROUP_POLL_S = 1.0  # how often the consumer group is asked again while a rebuild waits for it
TRUNCATE_READ_MODEL = "TRUNCATE " + READ_MODEL
# --keep: the versions the read model holds are forgotten (projector/core/versions.py: UNKNOWN), so
# that the log's versions replace them; orders the log does not hold keep theirs.
FORGET_POSITIONS = "DELETE FROM applied_offsets WHERE topic = %(topic)s"
FORGET_LOSSES = "DELETE FROM lost_records WHERE topic = %(topic)s"
FORGET_VERSIONS = """
UPDATE order_snapshots SET version_time = NULL, version_partition = NULL, version_offset = NULL
"""
FORGET_REDRIVES = "TRUNCATE redrives"


class Refused(SystemExit):
    """The rebuild cannot start: one sentence says why."""


class TrimmedLog(Refused):
    """--truncate on a log that no longer starts at offset 0."""


class NewDeadLetters:
    """The DLQ, minus the letters it already holds: a replay does not send those again."""

    def __init__(self, dlq: DeadLetterQueue, held: dict[tuple[int, int], str | None]) -> None:
        self.dlq = dlq
        self.held = held

    @property
    def acknowledged(self) -> set[tuple[int, int]]:
        return self.dlq.acknowledged

    async def start(self) -> None:
        await self.dlq.start()

    async def stop(self) -> None:
        await self.dlq.stop()

    async def send(self, letters: Sequence[Letter]) -> None:
        self.dlq.acknowledged.update(d.source for d in letters if holds(self.held, d.record))
        await self.dlq.send([d for d in letters if not holds(self.held, d.record)])

    def settle(self, recorded: dict[int, int]) -> None:
        self.dlq.settle(recorded)


async def rebuild(
    settings: Settings, truncate: bool = False, keep: bool = False, accept_loss: bool = False
) -> int:
    """Replay the topic into the read model; return the number of messages replayed."""
    await refuse_running_projectors(settings)
    kafka_log = KafkaLog(settings, settings.orders_topic)
    await kafka_log.start()
    try:
        if truncate and not accept_loss:
            await refuse_trimmed_log(settings, kafka_log)
        async with await psycopg.AsyncConnection.connect(settings.dsn("owner")) as conn:
            if truncate:
                await conn.execute(TRUNCATE_READ_MODEL)
            elif keep:
                await forget(conn, settings, kafka_log)
            else:
                (count,) = await (await conn.execute(COUNT_SNAPSHOTS)).fetchone()
                if count:
                    raise Refused(
                        f"the read model holds {count} orders: stop the projectors and use --keep "
                        "(keeps orders the log no longer holds) or --truncate (starts from empty tables)"
                    )
            await conn.commit()
    finally:
        await kafka_log.stop()
    replayed = await replay(settings)
    await set_group_offsets(settings)
    return replayed


async def replay(settings: Settings) -> int:
    held = await dead_lettered(settings)
    projector = BatchProjector(settings, dlq=NewDeadLetters(DeadLetterQueue(settings), held))  # type: ignore[arg-type]
    await projector.start()
    replayed = 0
    try:
        async for _, records in scan(settings, settings.orders_topic, settings.batch_size):
            batch = [
                Record(
                    r.partition,
                    r.offset,
                    r.key,
                    r.value,
                    timestamp(r.timestamp),
                    r.timestamp_type,
                    tuple(r.headers),
                )
                for r in records
            ]
            await projector.process(batch)
            replayed += len(batch)
    finally:
        await projector.stop()
    return replayed


async def forget(conn: psycopg.AsyncConnection, settings: Settings, kafka_log: KafkaLog) -> None:
    """--keep: forget versions and redrives; each partition is replayed from its start, and what
    the log deleted below the recorded position was applied before (not lost)."""
    topic = settings.orders_topic
    recorded = await postgres.read_positions(conn, topic)
    topic_id = await kafka_log.topic_id()
    starts: list[Advance] = []
    for partition, position in recorded.items():
        same = position.topic_id is None or position.topic_id == topic_id
        begin = min(position.next_offset, await kafka_log.start_offset(partition)) if same else 0
        if begin > 0:
            # Applied up to here before: the replay goes on from there, and only what the log deleted
            # past the recorded position is lost.
            starts.append(Advance(partition, begin, 0, None, None))
    await conn.execute(FORGET_POSITIONS, {"topic": topic})
    await conn.execute(FORGET_LOSSES, {"topic": topic})
    await conn.execute(FORGET_VERSIONS)
    await conn.execute(FORGET_REDRIVES)
    await postgres.record_positions(conn, topic, topic_id, starts)


async def refuse_running_projectors(settings: Settings, patience_s: float = 30.0) -> None:
    """Refused while the projectors' consumer group keeps members (a worker that stopped without
    leaving it, killed or failed, is one until its session times out: waited for) or a partition
    is held."""
    await wait_for_an_empty_group(settings, patience_s)
    partitions = await partitions_of(settings, settings.orders_topic)
    async with await psycopg.AsyncConnection.connect(settings.dsn("projector"), autocommit=True) as conn:
        held, _ = await postgres.own(conn, settings.orders_topic, partitions)
        if held:
            raise Refused(
                f"partition {held[0]} of {settings.orders_topic!r} is being written by a projector: stop "
                "every projector and run the rebuild again; nothing was changed"
            )
        await postgres.release(conn, settings.orders_topic, partitions)


async def wait_for_an_empty_group(settings: Settings, patience_s: float) -> None:
    """Return once the consumer group has no members; Refused if it still has some, or if its
    coordinator has not answered (a new cluster elects one first), after `patience_s`: a group
    not seen is not an empty one."""
    group = settings.consumer_group
    deadline = time.monotonic() + patience_s
    while True:
        try:
            members = await group_members(settings)
        except KafkaError as exc:
            if not exc.retriable:
                raise
            if time.monotonic() >= deadline:
                raise Refused(
                    f"the coordinator of the consumer group {group!r} did not answer within "
                    f"{patience_s:.0f} s ({type(exc).__name__}), so whether projectors are running is "
                    "unknown: nothing was changed; run the rebuild again once the cluster answers"
                ) from exc
            log.warning("waiting for the consumer group's coordinator", extra={"reason": type(exc).__name__})
        else:
            if not members:
                return
            if time.monotonic() >= deadline:
                raise Refused(
                    f"the consumer group {group!r} has {members} members: stop every projector and "
                    "run the rebuild again; nothing was changed"
                )
            log.warning("waiting for the projectors' consumer group to be empty", extra={"members": members})
        await asyncio.sleep(GROUP_POLL_S)


async def group_members(settings: Settings) -> int:
    admin = kafka_clients.admin(settings)
    await admin.start()
    try:
        described = await admin.describe_consumer_groups([settings.consumer_group])
    finally:
        await admin.close()
    return sum(
        len(members)
        for response in described
        for _, group_id, _, _, _, members, *_ in response.groups
        if group_id == settings.consumer_group
    )


async def refuse_trimmed_log(settings: Settings, kafka_log: KafkaLog) -> None:
    """TrimmedLog unless every partition of the topic still starts at offset 0."""
    for partition in await partitions_of(settings, settings.orders_topic):
        start = await kafka_log.start_offset(partition)
        if start > 0:
            raise TrimmedLog(
                f"refusing to truncate: partition {partition} of {settings.orders_topic!r} starts "
                f"at offset {start}, not 0 (retention or delete-records removed its first "
                "records), so orders only those records held would vanish from the read model; "
                "rebuild with --keep to keep them, or add --accept-loss to truncate anyway"
            )


async def set_group_offsets(settings: Settings, patience_s: float = 30.0) -> None:
    """Point the projectors' consumer group at the positions the read model recorded (the start
    of the partitions it has none for), so that the next worker does not start elsewhere.

    Kafka takes such a commit only from an empty group; a worker that stopped without leaving
    it (killed, or stopped by a failure) is still a member until its session times out."""
    async with await psycopg.AsyncConnection.connect(settings.dsn("projector")) as conn:
        recorded = {
            p: pos.next_offset
            for p, pos in (await postgres.read_positions(conn, settings.orders_topic)).items()
        }
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
                    raise Refused(
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
    collect_less_often()
    started = time.perf_counter()
    count = asyncio.run(
        rebuild(settings, truncate=args.truncate, keep=args.keep, accept_loss=args.accept_loss)
    )
    print(f"replayed {count} messages from {settings.orders_topic} in {time.perf_counter() - started:.1f}s")


if __name__ == "__main__":
    main()
