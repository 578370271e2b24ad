"""The orders topic and its dead-letter topic of a scratch run: created, deleted, measured."""

from __future__ import annotations

from aiokafka import TopicPartition

from orderview import kafka_clients
from orderview.bootstrap import ensure_topics
from orderview.settings import Settings


async def create_topics(settings: Settings) -> None:
    """The settings' orders and dead-letter topics, as the bootstrap creates them."""
    await ensure_topics(settings)


async def delete_topics(settings: Settings, best_effort: bool = False) -> None:
    """Delete those of the settings' two topics that exist. `best_effort`: a failure to delete
    is ignored (a test session's topics are disposable); one to reach Kafka still raises."""
    admin = kafka_clients.admin(settings)
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        mine = [t for t in (settings.orders_topic, settings.dlq_topic) if t in existing]
        if mine:
            await admin.delete_topics(mine)
    except Exception:
        if not best_effort:
            raise
    finally:
        await admin.close()


async def end_offset(settings: Settings, topic: str, partition: int = 0) -> int:
    """How many records a partition of a topic holds (its end offset)."""
    consumer = kafka_clients.consumer(settings)
    await consumer.start()
    try:
        tp = TopicPartition(topic, partition)
        return (await consumer.end_offsets([tp]))[tp]
    finally:
        await consumer.stop()
