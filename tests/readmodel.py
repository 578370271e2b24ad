"""What the projector tests look at: the read model's rows, the group's offsets, orders to send."""

from __future__ import annotations

import contextlib
import subprocess
from collections.abc import AsyncIterator

import orjson
import psycopg
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import NewTopic
from aiokafka.errors import TopicAlreadyExistsError
from aiokafka.structs import OffsetAndMetadata

from harness import ROOT
from harness.orders import reference_order
from orderview import kafka_clients
from orderview.settings import Settings
from tests import support


def snapshots(settings: Settings) -> dict[str, dict]:
    """The orders the read model holds (an erased one keeps a row without a body: not an order)."""
    with psycopg.connect(settings.dsn("owner")) as conn:
        rows = conn.execute("SELECT order_uid, body_json FROM order_snapshots WHERE body_json IS NOT NULL")
        return {uid: orjson.loads(body) for uid, body in rows}


def count(settings: Settings, table: str) -> int:
    with psycopg.connect(settings.dsn("owner")) as conn:
        return conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0]  # table names are literals here


def positions(settings: Settings) -> dict[int, int]:
    """applied_offsets of the settings' topic: partition -> next offset."""
    with psycopg.connect(settings.dsn("owner")) as conn:
        rows = conn.execute(
            "SELECT partition, next_offset FROM applied_offsets WHERE topic = %s", [settings.orders_topic]
        )
        return dict(rows.fetchall())


def read_model(settings: Settings) -> dict[str, list[tuple]]:
    """Every row of the read model, minus times, in a comparable order."""
    tables = {
        "orders": "SELECT * FROM orders ORDER BY order_uid",
        "deliveries": "SELECT * FROM deliveries ORDER BY order_uid",
        "payments": "SELECT * FROM payments ORDER BY order_uid",
        "items": "SELECT * FROM items ORDER BY order_uid, position",
        "order_snapshots": "SELECT order_uid, body_json, source_partition, source_offset FROM order_snapshots "
        "ORDER BY order_uid",
    }
    with psycopg.connect(settings.dsn("owner")) as conn:
        return {name: conn.execute(query).fetchall() for name, query in tables.items()}


# Every row of the normalized tables that is not one of its order's current version (as
# jsonb_populate_record makes it from the snapshot), and every such row the tables lack.
NOT_FROM_SNAPSHOTS = """
WITH s AS (SELECT order_uid, body_json::jsonb AS b FROM order_snapshots WHERE body_json IS NOT NULL),
o AS (SELECT (jsonb_populate_record(NULL::orders, b)).* FROM s),
d AS (SELECT (jsonb_populate_record(NULL::deliveries, b->'delivery' || jsonb_build_object('order_uid', order_uid))).*
      FROM s),
p AS (SELECT (jsonb_populate_record(NULL::payments, b->'payment' || jsonb_build_object('order_uid', order_uid))).*
      FROM s),
i AS (SELECT (jsonb_populate_record(NULL::items,
                  e.item || jsonb_build_object('order_uid', order_uid, 'position', e.n - 1))).*
      FROM s, jsonb_array_elements(b->'items') WITH ORDINALITY AS e(item, n))
SELECT 'orders', order_uid FROM ((TABLE orders EXCEPT ALL TABLE o) UNION ALL (TABLE o EXCEPT ALL TABLE orders)) x
UNION ALL
SELECT 'deliveries', order_uid FROM ((TABLE deliveries EXCEPT ALL TABLE d) UNION ALL (TABLE d EXCEPT ALL TABLE deliveries)) x
UNION ALL
SELECT 'payments', order_uid FROM ((TABLE payments EXCEPT ALL TABLE p) UNION ALL (TABLE p EXCEPT ALL TABLE payments)) x
UNION ALL
SELECT 'items', order_uid FROM ((TABLE items EXCEPT ALL TABLE i) UNION ALL (TABLE i EXCEPT ALL TABLE items)) x
"""


def not_from_snapshots(settings: Settings) -> list[tuple[str, str]]:
    """(table, order_uid) of each normalized row that differs from its snapshot's, or is missing."""
    with psycopg.connect(settings.dsn("owner")) as conn:
        return conn.execute(NOT_FROM_SNAPSHOTS).fetchall()


async def wait_for_orders(settings: Settings, n: int, timeout: float = 120.0) -> None:
    await support.wait_until(
        lambda: count(settings, "order_snapshots") >= n,
        timeout=timeout,
        message=f"{n} orders in order_snapshots",
    )


def order(uid: str, **changes) -> dict:
    o = reference_order()
    o["order_uid"] = uid
    o["payment"]["transaction"] = uid
    o.update(changes)
    return o


def message(o: dict) -> tuple[bytes, bytes]:
    return o["order_uid"].encode(), orjson.dumps(o)


def orders(prefix: str, n: int) -> list[tuple[bytes, bytes]]:
    return [message(order(f"{prefix}-{i}")) for i in range(n)]


@contextlib.asynccontextmanager
async def projector_group(settings: Settings) -> AsyncIterator[tuple[AIOKafkaConsumer, list, dict]]:
    """A client in the projector's consumer group (without joining it): its partitions and ends."""
    consumer = kafka_clients.consumer(settings, group_id=settings.consumer_group, enable_auto_commit=False)
    await consumer.start()
    try:
        tps = [TopicPartition(settings.orders_topic, p) for p in range(settings.orders_partitions)]
        yield consumer, tps, await consumer.end_offsets(tps)
    finally:
        await consumer.stop()


async def committed_offsets(settings: Settings) -> dict[int, int | None]:
    async with projector_group(settings) as (consumer, tps, _):
        return {tp.partition: await consumer.committed(tp) for tp in tps}


async def set_group_offsets(settings: Settings, where: str) -> int:
    """Commit the start or the end of every partition for the projector's group (which must have
    no member running); return the number of messages in the topic."""
    async with projector_group(settings) as (consumer, tps, ends):
        consumer.assign(tps)
        await consumer.commit({tp: OffsetAndMetadata(ends[tp] if where == "end" else 0, "") for tp in tps})
        return sum(ends.values())


async def recreate_orders_topic(settings: Settings) -> None:
    """Delete the orders topic and create it again, empty, as people do in development."""
    admin = kafka_clients.admin(settings)
    await admin.start()
    try:
        await admin.delete_topics([settings.orders_topic])
        topic = NewTopic(
            settings.orders_topic, settings.orders_partitions, 1, topic_configs={"retention.ms": "-1"}
        )

        async def created() -> bool:
            try:
                await admin.create_topics([topic])
                return True
            except TopicAlreadyExistsError:  # still being deleted
                return False

        await support.wait_until(created, timeout=60, interval=0.5, message="the topic created again")
    finally:
        await admin.close()


def ops(script: str, action: str) -> None:
    """Start or stop one of the services the tests run on, through the project's own script."""
    subprocess.run(["bash", str(ROOT / "ops" / script), action], check=True, capture_output=True)
