"""Every Kafka client the project makes is made here: one place says how to reach the brokers.

The projector's consumer (through Faust), its dead-letter producer and log lookups, the
bootstrap's admin client, the emulator, the audit, the rebuild, the redrive, the bench and the
tests all take their connection options from `options(settings)`: the bootstrap list, TLS (the
CA that verifies the brokers, a client certificate) and SASL (mechanism, user, password) reach
each of them at once. Faust's app takes the same as `faust_credentials`, librdkafka (the bench's
Quix peer) as `librdkafka_config`.

Producers are idempotent with acks=all unless a caller says otherwise: a send retried after a
leader moved is written once, and acknowledged only once every in-sync replica has it.
"""

from __future__ import annotations

import ssl
from typing import Any

from aiokafka import AIOKafkaClient, AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient

from orderview.settings import Settings


def options(settings: Settings) -> dict[str, Any]:
    """Connection options shared by every aiokafka client."""
    opts: dict[str, Any] = {
        "bootstrap_servers": settings.kafka_bootstrap,
        "security_protocol": settings.kafka_security_protocol,
    }
    if settings.kafka_tls:
        opts["ssl_context"] = ssl_context(settings)
    if settings.kafka_sasl:
        opts.update(
            sasl_mechanism=settings.kafka_sasl_mechanism,
            sasl_plain_username=settings.kafka_sasl_username,
            sasl_plain_password=settings.kafka_sasl_password,
        )
    return opts


def ssl_context(settings: Settings) -> ssl.SSLContext:
    """Verifies the broker's certificate and host name against the CA file (the system's CAs
    when none is set); shows the client certificate when one is set."""
    context = ssl.create_default_context(cafile=settings.kafka_ssl_cafile or None)
    if settings.kafka_ssl_certfile:
        context.load_cert_chain(settings.kafka_ssl_certfile, settings.kafka_ssl_keyfile)
    return context


def faust_credentials(settings: Settings) -> Any:
    """The same connection for Faust's app (`broker_credentials`); None for PLAINTEXT."""
    from faust.auth import SASLCredentials, SSLCredentials  # not imported by the other services

    if settings.kafka_sasl:
        return SASLCredentials(
            username=settings.kafka_sasl_username,
            password=settings.kafka_sasl_password,
            mechanism=settings.kafka_sasl_mechanism,
            ssl_context=ssl_context(settings) if settings.kafka_tls else None,
        )
    if settings.kafka_tls:
        return SSLCredentials(ssl_context(settings))
    return None


def librdkafka_config(settings: Settings) -> dict[str, str]:
    """The same connection for librdkafka-based clients (confluent-kafka, Quix Streams)."""
    config = {"security.protocol": settings.kafka_security_protocol.lower()}
    if settings.kafka_tls:
        config["ssl.endpoint.identification.algorithm"] = "https"
        for key, value in (
            ("ssl.ca.location", settings.kafka_ssl_cafile),
            ("ssl.certificate.location", settings.kafka_ssl_certfile),
            ("ssl.key.location", settings.kafka_ssl_keyfile),
        ):
            if value:
                config[key] = value
    if settings.kafka_sasl:
        config.update(
            {
                "sasl.mechanism": settings.kafka_sasl_mechanism,
                "sasl.username": settings.kafka_sasl_username,
                "sasl.password": settings.kafka_sasl_password,
            }
        )
    return config


def consumer(settings: Settings, *topics: str, **kwargs: Any) -> AIOKafkaConsumer:
    return AIOKafkaConsumer(*topics, **options(settings), **kwargs)


def producer(settings: Settings, **kwargs: Any) -> AIOKafkaProducer:
    """acks=all and idempotence unless `kwargs` say otherwise. An idempotent producer whose
    record the broker refused for its size fails every later send to that partition
    (OutOfOrderSequenceNumber; aiokafka does not reset its sequence): make a new one then."""
    return AIOKafkaProducer(**{"acks": "all", "enable_idempotence": True, **options(settings), **kwargs})


def admin(settings: Settings, **kwargs: Any) -> AIOKafkaAdminClient:
    return AIOKafkaAdminClient(**options(settings), **kwargs)


def client(settings: Settings, **kwargs: Any) -> AIOKafkaClient:
    return AIOKafkaClient(**options(settings), **kwargs)
