"""Where each partition assigned to a worker is read from: the position the read model recorded,
once what it points to is verified (projector/core/plan.py: `verify`), never the group's offsets.

A position the log cannot have produced (another incarnation of the topic, another record where
the last applied one was, a log that ends before it, a partition the topic no longer has) raises
UntrustedPosition. Records deleted by retention past the position are gone: the partition is read
from its first record still held, and the first batch there reports them lost.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import psycopg

from orderview.settings import Settings
from projector.adapters import postgres
from projector.adapters.kafka import KafkaLog
from projector.core import plan
from projector.core.plan import Position
from projector.faults import TopicMissing


async def seek_targets(
    settings: Settings,
    kafka_log: KafkaLog,
    assigned: Sequence[int],
    existing: Sequence[int],
    applied_record_deleted: Callable[[int, int, str], None] = lambda *_: None,
) -> dict[int, int]:
    """Partition -> the offset to read it from; a last applied record found deleted since is told
    to `applied_record_deleted` (partition, offset, reason)."""
    async with await psycopg.AsyncConnection.connect(settings.dsn("projector")) as conn:
        recorded = await postgres.read_positions(conn, settings.orders_topic)
    gone = sorted(set(recorded) - set(existing))
    if gone:
        plan.untrusted(gone[0], "the topic has no such partition any more")
    topic_id = await kafka_log.topic_id()
    if topic_id is None:
        raise TopicMissing(settings.orders_topic, "orders")
    targets = {}
    for partition in assigned:
        position = recorded.get(partition, Position())
        plan.same_incarnation(partition, position, topic_id)
        if position.next_offset > 0:
            at = position.next_offset - 1
            deleted = plan.verify(partition, position, await kafka_log.last(partition, at))
            if deleted is not None:
                applied_record_deleted(partition, at, deleted)
        targets[partition] = max(position.next_offset, await kafka_log.start_offset(partition))
    return targets
