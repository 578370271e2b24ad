"""Settings naming a database, topics and consumer group of a run's own, so that tests, the
bench and anyone else on the same Kafka and PostgreSQL never collide. Every scratch name is made
here: `orderview_test_*` and `orders[.dlq].test.*` for tests, `*bench*` for the bench. And a
scratch read model emptied for reuse."""

from __future__ import annotations

import uuid
from dataclasses import replace

import psycopg

from orderview.settings import Settings, get_settings
from projector.rebuild import TRUNCATE_READ_MODEL


def unique(prefix: str, length: int = 10) -> str:
    return f"{prefix}{uuid.uuid4().hex[:length]}"


def _topics(settings: Settings, kind: str, group: str, suffix: str) -> Settings:
    return replace(
        settings,
        orders_topic=f"orders.{kind}.{suffix}",
        dlq_topic=f"orders.dlq.{kind}.{suffix}",
        consumer_group=f"{group}-{suffix}",
    )


def database_for_tests() -> Settings:
    """Settings for a database of this test session's own, so runs never collide."""
    return replace(get_settings(), pg_database=unique("orderview_test_"))


def topics_for_tests(settings: Settings) -> Settings:
    """`settings` with topics and a consumer group of a test's own."""
    return _topics(settings, "test", "orderview-projector-test", unique(""))


def settings_for_bench(tag: str, base: Settings | None = None) -> Settings:
    """Settings naming a database, topics and consumer group of one bench section's own."""
    suffix = unique("", 8)
    base = base or get_settings()
    return _topics(
        replace(base, pg_database=f"orderview_bench_{tag}_{suffix}"),
        f"bench.{tag}",
        f"orderview-bench-{tag}",
        suffix,
    )


def truncate_read_model(settings: Settings) -> None:
    """Empty the read model of a scratch database, for the next test or benchmark to reuse."""
    with psycopg.connect(settings.dsn("owner")) as conn:
        conn.execute(TRUNCATE_READ_MODEL)
