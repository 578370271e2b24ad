"""Fixtures shared by every layer. Integration and e2e tests run against the real Kafka
and PostgreSQL that `make test` starts; each test session gets a database of its own."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import replace

import pytest_asyncio
from hypothesis import settings as hypothesis_settings

from harness import scratch
from harness.topics import create_topics, delete_topics
from orderview.bootstrap import create_database, drop_database
from orderview.settings import Settings

# Properties, not timings: a noisy 2-core CI machine must not fail a test by slowness.
hypothesis_settings.register_profile("orderview", deadline=None)
hypothesis_settings.load_profile("orderview")


@pytest_asyncio.fixture(scope="session")
async def settings() -> AsyncIterator[Settings]:
    """A fresh database (migrated, with roles) and fresh topics for this test session."""
    s = scratch.topics_for_tests(scratch.database_for_tests())
    create_database(s)
    await create_topics(s)
    yield s
    drop_database(s)
    await delete_topics(s, best_effort=True)


@asynccontextmanager
async def own_topics(settings: Settings, **changes: object) -> AsyncIterator[Settings]:
    """The session database with an empty read model, and topics of the caller's own."""
    scratch.truncate_read_model(settings)
    s = replace(scratch.topics_for_tests(settings), **changes)
    await create_topics(s)
    yield s
    await delete_topics(s, best_effort=True)


@pytest_asyncio.fixture
async def clean_settings(settings: Settings) -> AsyncIterator[Settings]:
    """The session database with an empty read model, and topics of this test's own."""
    async with own_topics(settings) as s:
        yield s


@pytest_asyncio.fixture
async def one_partition(settings: Settings) -> AsyncIterator[Settings]:
    """Like clean_settings, with an orders topic of one partition: what comes after a message
    is then plainly behind it."""
    async with own_topics(settings, orders_partitions=1) as s:
        yield s
