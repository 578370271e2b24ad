"""Rebuild the read model by replaying the orders topic from the beginning.

    python -m projector.rebuild [--truncate]

Stop the projector first. The read model must be empty (or --truncate empties it);
the topic is read up to its end at the time the command starts, through the same
BatchProjector as the live worker, so the result equals the live read model.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import time
from collections.abc import Sequence

import psycopg
from aiokafka import AIOKafkaConsumer

from orderview import jsonlog
from orderview.settings import Settings, get_settings
from projector.batch import BatchProjector
from projector.dlq import DeadLetter, Incoming

log = logging.getLogger("orderview.rebuild")

# Children before parents: one TRUNCATE empties the whole read model.
READ_MODEL = "items, payments, deliveries, orders, order_snapshots, applied_offsets"
COUNT_SNAPSHOTS = "SELECT count(*) FROM order_snapshots"
TRUNCATE_READ_MODEL = "TRUNCATE " + READ_MODEL


class AlreadyDeadLettered:
    """The live projector dead-lettered the bad messages once; a replay does not again."""

    async def start(self) -> None:
        pass

    async def stop(self) -> None:
        pass

    async def send(self, letters: Sequence[DeadLetter]) -> None:
        pass


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
                    f"the read model holds {count} orders: stop the projector and use --truncate"
                )

    # No group: a consumer without one is given every partition of the topic.
    consumer = AIOKafkaConsumer(
        settings.orders_topic,
        bootstrap_servers=settings.kafka_bootstrap,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        max_partition_fetch_bytes=16 * 1024 * 1024,
        fetch_max_bytes=64 * 1024 * 1024,
    )
    projector = BatchProjector(settings, dlq=AlreadyDeadLettered())
    await consumer.start()
    await projector.start()
    replayed = 0
    try:
        partitions = sorted(consumer.assignment())
        await consumer.seek_to_beginning(*partitions)
        end = await consumer.end_offsets(partitions)
        remaining = {tp for tp in partitions if end[tp] > 0}
        while remaining:
            fetched = await consumer.getmany(*remaining, timeout_ms=1000, max_records=settings.batch_size)
            batch = []
            for tp, records in fetched.items():
                for r in records:
                    if r.offset < end[tp]:
                        batch.append(Incoming(r.partition, r.offset, r.key, r.value))
                if await consumer.position(tp) >= end[tp]:
                    remaining.discard(tp)
            if batch:
                await projector.process(batch)
                replayed += len(batch)
    finally:
        await projector.stop()
        await consumer.stop()
    return replayed


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
