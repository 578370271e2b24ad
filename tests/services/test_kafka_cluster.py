"""A three-node Kafka cluster under the projector: partition leaders and the active controller die
(kill -9) and come back while orders are sent; nothing acknowledged is lost or applied twice."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field

import psycopg
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
from aiokafka.errors import KafkaError

from harness.processes import LOGS, Projector
from orderview import kafka_clients
from orderview.settings import Settings
from projector.audit import audit
from tests.clusters import KafkaCluster
from tests.readmodel import message, order

RATE = 150  # orders a second while the brokers die


@dataclass
class Sent:
    """What the broker acknowledged: order_uid -> (partition, offset); and what it did not."""

    acked: dict[str, tuple[int, int]] = field(default_factory=dict)
    failed: int = 0


async def send_until(settings: Settings, stop: asyncio.Event, sent: Sent, prefix: str) -> None:
    """New orders at RATE a second, each awaited in the background, until `stop`."""
    producer = kafka_clients.producer(settings, linger_ms=5, request_timeout_ms=30_000)
    await producer.start()
    pending: set[asyncio.Task] = set()

    async def delivered(uid: str, future: asyncio.Future) -> None:
        try:
            metadata = await future
            sent.acked[uid] = (metadata.partition, metadata.offset)
        except KafkaError:
            sent.failed += 1

    try:
        i = 0
        started = time.monotonic()
        while not stop.is_set():
            uid = f"{prefix}-{i}"
            key, value = message(order(uid))
            task = asyncio.create_task(
                delivered(uid, await producer.send(settings.orders_topic, value, key=key))
            )
            pending.add(task)
            task.add_done_callback(pending.discard)
            i += 1
            await asyncio.sleep(max(0.0, started + i / RATE - time.monotonic()))
        await asyncio.gather(*pending)
    finally:
        await producer.stop()


async def kill_and_restart(cluster: KafkaCluster, node: int, down_s: float = 4.0) -> None:
    await asyncio.to_thread(cluster.kill, node)
    await asyncio.sleep(down_s)
    await asyncio.to_thread(cluster.start_node, node)


def applied_from(settings: Settings) -> dict[str, tuple[int, int]]:
    """order_uid -> the (partition, offset) its snapshot was applied from."""
    with psycopg.connect(settings.dsn("owner")) as conn:
        rows = conn.execute("SELECT order_uid, source_partition, source_offset FROM order_snapshots")
        return {uid: (p, o) for uid, p, o in rows}


def count_orders(settings: Settings) -> int:
    with psycopg.connect(settings.dsn("owner")) as conn:
        return conn.execute("SELECT count(*) FROM orders").fetchone()[0]


async def test_the_bootstrap_replicates_the_topics_to_three_brokers_two_in_sync(on_cluster: Settings) -> None:
    s = on_cluster
    admin = kafka_clients.admin(s)
    await admin.start()
    try:
        for described in await admin.describe_topics([s.orders_topic, s.dlq_topic]):
            assert {len(p["replicas"]) for p in described["partitions"]} == {3}, described
        configs = await admin.describe_configs(
            [ConfigResource(ConfigResourceType.TOPIC, t) for t in (s.orders_topic, s.dlq_topic)]
        )
        for response in configs:
            for resource in response.resources:
                values = {entry[0]: entry[1] for entry in resource[4]}
                assert values["min.insync.replicas"] == "2", resource[2]
    finally:
        await admin.close()


async def test_killed_partition_leaders_and_controller_lose_no_acknowledged_order_and_apply_none_twice(
    on_cluster: Settings, cluster: KafkaCluster
) -> None:
    s = on_cluster
    worker = Projector(s, "projector-cluster").start()
    try:
        worker.wait_ready(120)
        stop, sent = asyncio.Event(), Sent()
        sending = asyncio.create_task(send_until(s, stop, sent, "cluster"))
        await asyncio.sleep(3)
        killed = []
        leader = await cluster.leader(s, s.orders_topic, 0)
        killed.append(f"leader of partition 0: node {leader}")
        await kill_and_restart(cluster, leader)
        controller = await asyncio.to_thread(cluster.controller)
        killed.append(f"controller: node {controller}")
        await kill_and_restart(cluster, controller)
        last_restart = time.monotonic()
        await asyncio.sleep(3)
        stop.set()
        await sending

        for _ in range(600):  # two minutes at most
            if not set(sent.acked) - set(applied_from(s)):
                break
            await asyncio.sleep(0.2)
        caught_up_s = time.monotonic() - last_restart
        applied = applied_from(s)
        found = await audit(s)
        print(
            f"killed {', '.join(killed)}; {len(sent.acked)} acknowledged, {sent.failed} not; "
            f"caught up {caught_up_s:.1f} s after the last restart (sending stopped 3 s after it); "
            f"audit: {found.messages} messages, applied {found.total('applied')}, "
            f"resent {found.total('resent')}, missing {found.total('missing')}"
        )
        (LOGS / "cluster-figures.txt").write_text(f"caught_up_s={caught_up_s:.1f}\n")

        assert len(sent.acked) > RATE * 5, "orders were acknowledged while the brokers died"
        lost = {uid for uid in sent.acked if uid not in applied}
        assert lost == set(), f"{len(lost)} acknowledged orders not applied, e.g. {sorted(lost)[:5]}"
        moved = {uid for uid, where in sent.acked.items() if applied[uid] != where}
        assert moved == set(), "each order is applied from the record the broker acknowledged"
        assert found.total("missing") == found.total("not_yet_applied") == found.total("lost") == 0
        assert found.total("resent") == 0 and found.total("superseded") == 0, "no record was written twice"
        assert count_orders(s) == found.total("applied")
        assert worker.proc is not None and worker.proc.poll() is None, "the worker never exited"
        worker.wait_ready(30)
    finally:
        assert worker.terminate() == 0
