"""Tests that start services of their own (tests/clusters.py): a three-node Kafka cluster with a
SASL_SSL listener, a PostgreSQL with TLS. `make test` runs them as a step of their own."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import pytest_asyncio

from harness import scratch
from harness.topics import delete_topics
from orderview.bootstrap import create_database, drop_database, ensure_topics
from orderview.settings import Settings
from tests.clusters import CertificateAuthority, KafkaCluster, TlsPostgres


@pytest.fixture(scope="session")
def cluster() -> Iterator[KafkaCluster]:
    """Three KRaft nodes, each a broker and a controller, PLAINTEXT and SASL_SSL (SCRAM, PLAIN)."""
    running = KafkaCluster(3, sasl_ssl=True).start()
    yield running
    running.stop()


@pytest.fixture(scope="session")
def tls_postgres() -> Iterator[TlsPostgres]:
    running = TlsPostgres().start()
    yield running
    running.stop()


@pytest.fixture(scope="session")
def untrusted_ca() -> Iterator[Path]:
    """A CA that signed none of the servers' certificates."""
    other = CertificateAuthority()
    yield other.make()
    other.remove()


@pytest_asyncio.fixture
async def on_cluster(cluster: KafkaCluster) -> AsyncIterator[Settings]:
    """A database of its own on the shared PostgreSQL, and topics of its own on the cluster,
    made by the bootstrap (three replicas, two in sync)."""
    s = cluster.settings(scratch.topics_for_tests(scratch.database_for_tests()))
    create_database(s)
    await ensure_topics(s)
    yield s
    drop_database(s)
    await delete_topics(s, best_effort=True)
