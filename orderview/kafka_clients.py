"""Every Kafka client the project makes is made here: one place says how to reach the brokers.

The projector's consumer (through Faust), its dead-letter producer and log lookups, the
bootstrap's admin client, the emulator, the audit, the rebuild, the redrive, the bench and the
tests all take their connection options from `options(settings)`, so a setting that changes how
to connect (a bootstrap list, later TLS or SASL) reaches each of them at once.
"""

from __future__ import annotations

from typing import Any

from aiokafka import AIOKafkaClient, AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient

from orderview.settings import Settings


def options(settings: Settings) -> dict[str, Any]:
    """Connection options shared by every aiokafka client."""
    return {"bootstrap_servers": settings.kafka_bootstrap}


def consumer(settings: Settings, *topics: str, **kwargs: Any) -> AIOKafkaConsumer:
    return AIOKafkaConsumer(*topics, **options(settings), **kwargs)


def producer(settings: Settings, **kwargs: Any) -> AIOKafkaProducer:
    return AIOKafkaProducer(**options(settings), **kwargs)


def admin(settings: Settings, **kwargs: Any) -> AIOKafkaAdminClient:
    return AIOKafkaAdminClient(**options(settings), **kwargs)


def client(settings: Settings, **kwargs: Any) -> AIOKafkaClient:
    return AIOKafkaClient(**options(settings), **kwargs)
