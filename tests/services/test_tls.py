"""Encrypted, authenticated connections: the projector and the API over Kafka's SASL_SSL listener
(SCRAM) and PostgreSQL's TLS (verify-full); a wrong password or an untrusted CA is one sentence
naming the setting, logged once, and the reason /readyz gives, while the service waits."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path

import psycopg
import pytest
import pytest_asyncio

from harness import scratch
from harness.processes import Projector
from harness.topics import delete_topics
from orderview import kafka_clients, refusals
from orderview.bootstrap import create_database, drop_database, ensure_topics
from orderview.settings import Settings
from tests import support
from tests.api_server import running_api
from tests.clusters import KafkaCluster, TlsPostgres
from tests.readmodel import orders, wait_for_orders

KAFKA_PASSWORD = "the Kafka broker refused the SCRAM-SHA-512 credentials"
KAFKA_CA = "the Kafka broker's certificate is not trusted by ORDERVIEW_KAFKA_SSL_CAFILE"
PG_CA = "PostgreSQL's certificate is not trusted by ORDERVIEW_PG_SSLROOTCERT"


@pytest_asyncio.fixture(scope="module")
async def secure(cluster: KafkaCluster, tls_postgres: TlsPostgres) -> AsyncIterator[Settings]:
    """A database on the TLS PostgreSQL (verify-full) and topics on the cluster, over SASL_SSL."""
    s = tls_postgres.settings(cluster.sasl_ssl_settings(scratch.database_for_tests()))
    create_database(s)
    yield s
    drop_database(s)


@pytest_asyncio.fixture
async def own_topics(secure: Settings) -> AsyncIterator[Settings]:
    scratch.truncate_read_model(secure)
    s = scratch.topics_for_tests(secure)
    await ensure_topics(s)
    yield s
    await delete_topics(s, best_effort=True)


def _tls_roles(settings: Settings) -> set[str]:
    """The roles whose connections to the server are encrypted now."""
    with psycopg.connect(settings.dsn("admin")) as conn:
        rows = conn.execute(
            "SELECT DISTINCT a.usename FROM pg_stat_activity a JOIN pg_stat_ssl s USING (pid) WHERE s.ssl"
        )
        return {name for (name,) in rows}


async def test_the_projector_over_sasl_ssl_and_verify_full_applies_orders_and_dead_letters_end_to_end(
    own_topics: Settings,
) -> None:
    s = own_topics
    worker = Projector(s, "projector-sasl-ssl").start()
    try:
        worker.wait_ready(90)
        await support.produce(s, [*orders("tls", 20), (b"tls-bad", b"not json")])
        await wait_for_orders(s, 20)
        [letter] = await support.read_topic(s, s.dlq_topic, 1)
        assert support.headers(letter)["dlq.reason"] == "decode"
        assert s.pg_projector_user in _tls_roles(s)
        async with running_api(s) as api:
            async with api.client.get(f"{api.url}/order/tls-7") as response:
                assert response.status == 200
            assert s.pg_api_user in _tls_roles(s)
    finally:
        assert worker.terminate() == 0


@pytest.mark.parametrize(
    "mechanism, client_certificate",
    [("PLAIN", False), ("SCRAM-SHA-256", False), ("SCRAM-SHA-512", False), ("SCRAM-SHA-512", True)],
)
async def test_every_sasl_mechanism_and_a_client_certificate_reach_the_listener(
    secure: Settings, cluster: KafkaCluster, mechanism: str, client_certificate: bool
) -> None:
    s = replace(secure, kafka_sasl_mechanism=mechanism)
    if client_certificate:
        s = replace(
            s,
            kafka_ssl_certfile=str(cluster.tls_dir / "client.pem"),
            kafka_ssl_keyfile=str(cluster.tls_dir / "client.key"),
        )
    assert await refusals.explain_kafka(s) is None
    admin = kafka_clients.admin(s)
    await admin.start()
    try:
        assert len((await admin.describe_cluster())["brokers"]) == 3
    finally:
        await admin.close()


async def test_an_unsupported_protocol_value_is_one_sentence() -> None:
    with pytest.raises(
        ValueError, match="ORDERVIEW_KAFKA_SASL_MECHANISM must be one of PLAIN, SCRAM-SHA-256"
    ):
        Settings.from_env({"ORDERVIEW_KAFKA_SASL_MECHANISM": "GSSAPI"})


def _waits_not_ready_saying(worker: Projector, sentence: str, seconds: float = 10.0) -> None:
    """Alive, not ready for `sentence`, which the log holds once, without a traceback."""
    status, body = worker.get("/readyz", worker.port)
    assert status == 503 and sentence in body.decode(), body
    assert worker.proc is not None and worker.proc.poll() is None, "the worker waits"
    log = worker.log_text()
    assert log.count(sentence) == 1, log[-3000:]
    assert "Traceback" not in log, log[-3000:]


async def _projector_refused(s: Settings, name: str, sentence: str) -> None:
    worker = Projector(s, name).start()
    try:
        await support.wait_until(
            lambda: sentence.encode() in _readyz(worker), timeout=60, message=f"not ready: {sentence}"
        )
        await asyncio.sleep(8)  # several attempts, each refused
        _waits_not_ready_saying(worker, sentence)
    finally:
        assert worker.terminate() == 0


def _readyz(worker: Projector) -> bytes:
    try:
        return worker.get("/readyz", worker.port)[1]
    except OSError:
        return b""


async def test_a_wrong_kafka_password_is_one_sentence_and_the_worker_waits_not_ready(
    own_topics: Settings,
) -> None:
    await _projector_refused(
        replace(own_topics, kafka_sasl_password="wrong"), "projector-kafka-pw", KAFKA_PASSWORD
    )


async def test_an_untrusted_kafka_certificate_is_one_sentence_and_the_worker_waits_not_ready(
    own_topics: Settings, untrusted_ca: Path
) -> None:
    s = replace(own_topics, kafka_ssl_cafile=str(untrusted_ca))
    await _projector_refused(s, "projector-kafka-ca", KAFKA_CA)


async def _api_refused(s: Settings, sentence: str, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="orderview.api"):
        async with running_api(s, ready=False) as api:

            async def says() -> bool:
                async with api.client.get(f"{api.url}/readyz") as response:
                    return response.status == 503 and sentence in (await response.json())["reason"]

            await support.wait_until(says, timeout=30, message=f"the API not ready: {sentence}")
            await asyncio.sleep(6)  # several attempts
            assert await says()
    said = [r for r in caplog.records if sentence in r.getMessage()]
    assert len(said) == 1, [r.getMessage() for r in caplog.records]
    assert not any(r.exc_info for r in caplog.records)


async def test_a_wrong_database_password_is_one_sentence_and_projector_and_api_wait_not_ready(
    own_topics: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    s = replace(own_topics, pg_projector_password="wrong", pg_api_password="wrong")
    await _projector_refused(
        s,
        "projector-pg-pw",
        "PostgreSQL refused the password of the projector role: check ORDERVIEW_PG_PROJECTOR_USER",
    )
    await _api_refused(
        s, "PostgreSQL refused the password of the api role: check ORDERVIEW_PG_API_USER", caplog
    )


async def test_an_untrusted_database_certificate_is_one_sentence_and_projector_and_api_wait_not_ready(
    own_topics: Settings, untrusted_ca: Path, caplog: pytest.LogCaptureFixture
) -> None:
    s = replace(own_topics, pg_sslrootcert=str(untrusted_ca))
    await _projector_refused(s, "projector-pg-ca", PG_CA)
    await _api_refused(s, PG_CA, caplog)
