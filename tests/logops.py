"""What operators do to a live topic, done through Kafka's admin API: the tests' and the chaos
run's one way to compact, trim, grow, delete and create topics."""

from __future__ import annotations

from aiokafka import TopicPartition
from aiokafka.admin import NewPartitions, NewTopic, RecordsToDelete

from orderview import kafka_clients
from orderview.settings import Settings
from tests import support

# A topic the dev broker compacts within seconds: segments roll at once and any dirty share is
# worth cleaning (Kafka 4 refuses segment.bytes under 1 MiB; segment.ms does the rolling).
FAST_COMPACTION = {
    "cleanup.policy": "compact",
    "segment.ms": "100",
    "min.cleanable.dirty.ratio": "0.01",
    "min.compaction.lag.ms": "0",
    "delete.retention.ms": "100",
    "retention.ms": "-1",
}


async def create_topic(settings: Settings, name: str, partitions: int = 1, **configs: str) -> None:
    """Create a topic, waiting while one of the same name is still being deleted; a refusal the
    broker returns in the response (aiokafka does not raise it) fails here."""
    admin = kafka_clients.admin(settings)
    await admin.start()
    try:

        async def created() -> bool:
            response = await admin.create_topics([NewTopic(name, partitions, 1, topic_configs=configs)])
            errors = [
                (code, message) for _, code, *rest in response.topic_errors for message in rest[:1] if code
            ]
            if errors and errors[0][0] == 36:  # TOPIC_ALREADY_EXISTS: still being deleted
                return False
            assert not errors, f"the broker refused topic {name}: {errors}"
            return True

        await support.wait_until(created, timeout=60, interval=0.5, message=f"topic {name} created")
    finally:
        await admin.close()


async def delete_topic(settings: Settings, name: str) -> None:
    admin = kafka_clients.admin(settings)
    await admin.start()
    try:
        await admin.delete_topics([name])
    finally:
        await admin.close()


async def recreate_orders_topic_compacted(settings: Settings) -> None:
    """The orders topic as a textbook keyed event log: compacted (quickly, for a test)."""
    await delete_topic(settings, settings.orders_topic)
    await create_topic(settings, settings.orders_topic, settings.orders_partitions, **FAST_COMPACTION)


async def delete_records(settings: Settings, partition: int, before: int) -> None:
    """Delete the records of a partition below `before`, as retention would."""
    admin = kafka_clients.admin(settings)
    await admin.start()
    try:
        await admin.delete_records(
            {TopicPartition(settings.orders_topic, partition): RecordsToDelete(before)}
        )
    finally:
        await admin.close()


async def add_partitions(settings: Settings, total: int) -> None:
    admin = kafka_clients.admin(settings)
    await admin.start()
    try:
        await admin.create_partitions({settings.orders_topic: NewPartitions(total)})
    finally:
        await admin.close()
