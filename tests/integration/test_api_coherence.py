"""Two API replicas (real `python -m api` processes, each with its own cache) stay coherent:
a change NOTIFYed by the projector's write path reaches both, and a replica whose LISTEN
connection was killed re-syncs what it missed."""

from __future__ import annotations

import asyncio
import copy
import json
from collections.abc import AsyncIterator

import psycopg
import pytest_asyncio

from api.freshness import LISTEN_APPLICATION_NAME
from harness import scratch
from harness.orders import reference_order
from orderview.settings import Settings
from projector.adapters import postgres
from tests import support
from tests.api_server import RunningApi, api_process

LISTENER_PIDS = """
SELECT pid FROM pg_stat_activity WHERE application_name = %(name)s AND datname = %(database)s
"""
TERMINATE = "SELECT pg_terminate_backend(pid) FROM unnest(%(pids)s::int[]) AS pid"
ALIVE = "SELECT count(*) FROM pg_stat_activity WHERE pid = ANY(%(pids)s)"


def new_order() -> dict:
    order = reference_order()
    order["order_uid"] = scratch.unique("coherent")
    return order


def changed(order: dict, city: str) -> dict:
    new = copy.deepcopy(order)
    new["delivery"]["city"] = city
    return new


async def served(replica: RunningApi, uid: str) -> tuple[str, dict]:
    async with replica.client.get(f"{replica.url}/order/{uid}") as response:
        assert response.status == 200
        return response.headers["X-Cache"], json.loads(await response.read())


async def metric(replica: RunningApi, name: str) -> float:
    async with replica.client.get(f"{replica.url}/metrics") as response:
        for line in (await response.text()).splitlines():
            if line.startswith((name + " ", name + "{")):  # a replica of its own: one series
                return float(line.split()[-1])
    raise AssertionError(f"no metric {name}")


async def all_serve(replicas: list[RunningApi], order: dict, timeout: float) -> None:
    async def check() -> bool:
        versions = [(await served(r, order["order_uid"]))[1] for r in replicas]
        return all(version == order for version in versions)

    await support.wait_until(
        check, timeout=timeout, interval=0.02, message="every replica to serve the new version"
    )


async def listener_pids(admin: psycopg.AsyncConnection, database: str) -> list[int]:
    cur = await admin.execute(LISTENER_PIDS, {"name": LISTEN_APPLICATION_NAME, "database": database})
    return [row[0] for row in await cur.fetchall()]


async def listener_count(settings: Settings) -> int:
    async with await admin_connection(settings) as admin:
        return len(await listener_pids(admin, settings.pg_database))


async def admin_connection(settings: Settings) -> psycopg.AsyncConnection:
    return await psycopg.AsyncConnection.connect(
        settings.admin_dsn_for(settings.pg_database), autocommit=True
    )


async def kill_listeners(admin: psycopg.AsyncConnection, database: str) -> int:
    """Terminate every replica's LISTEN connection and return once all are gone. Replicas wait
    0.1 s before reconnecting, so for that long nobody listens."""
    pids = await listener_pids(admin, database)
    await admin.execute(TERMINATE, {"pids": pids})
    for _ in range(2500):
        if not (await (await admin.execute(ALIVE, {"pids": pids})).fetchone())[0]:
            return len(pids)
        await asyncio.sleep(0.002)
    raise AssertionError("terminated LISTEN connections still alive after 5 s")


@pytest_asyncio.fixture
async def replicas(settings: Settings) -> AsyncIterator[list[RunningApi]]:
    async with api_process(settings) as a, api_process(settings) as b:
        yield [a, b]


async def test_both_replicas_serve_a_change_within_a_second(
    settings: Settings, replicas: list[RunningApi]
) -> None:
    order = new_order()
    await support.seed_orders(settings, [order])
    for replica in replicas:
        await served(replica, order["order_uid"])
        assert await served(replica, order["order_uid"]) == ("hit", order)

    update = changed(order, "Haifa")
    await support.seed_orders(settings, [update])
    await all_serve(replicas, update, timeout=1.0)
    for replica in replicas:
        assert (await served(replica, order["order_uid"]))[0] == "hit"


async def listening_again(settings: Settings) -> None:
    async def both() -> bool:
        return await listener_count(settings) == 2

    await support.wait_until(both, timeout=5.0, message="both replicas to LISTEN again")


async def test_a_replica_that_lost_listen_resyncs_what_it_missed(
    settings: Settings, replicas: list[RunningApi]
) -> None:
    order = new_order()
    await support.seed_orders(settings, [order])
    for replica in replicas:
        await served(replica, order["order_uid"])

    async def seed_notified() -> bool:
        return all([await metric(r, "orderview_api_notifications_total") == 1 for r in replicas])

    await support.wait_until(seed_notified, timeout=5.0, message="the seed's NOTIFY to be applied")
    assert await listener_count(settings) == 2

    # The update commits after the LISTEN connections are gone and before any replica is back
    # (each waits 0.1 s before reconnecting): its NOTIFY reaches nobody.
    update = changed(order, "Eilat")
    async with await psycopg.AsyncConnection.connect(settings.dsn("projector")) as writer:
        [offset] = support.later_offsets(1)
        changes = await postgres.write_orders(writer, [(offset, update)], time_ms=support.now_ms())
        await postgres.notify(writer, settings.notify_channel, changes)
        async with await admin_connection(settings) as admin:
            assert await kill_listeners(admin, settings.pg_database) == 2
        await writer.commit()

    await all_serve(replicas, update, timeout=10.0)
    for replica in replicas:
        assert await metric(replica, "orderview_api_notifications_total") == 1, "served thanks to the re-sync"
        assert await metric(replica, "orderview_api_resyncs_total") == 1
        assert await metric(replica, "orderview_api_listen_reconnects_total") == 1
        assert (await served(replica, order["order_uid"]))[0] == "hit"
    await listening_again(settings)

    # And the new connections carry notifications again.
    again = changed(order, "Akko")
    await support.seed_orders(settings, [again])
    await all_serve(replicas, again, timeout=1.0)


async def test_readiness_follows_the_listen_connection(
    settings: Settings, replicas: list[RunningApi]
) -> None:
    """Not ready from the loss of LISTEN until it is back and re-synced (at least the 0.1 s
    before the first reconnect attempt), then ready again."""
    seen: list[tuple[int, dict]] = []

    async def watch(replica: RunningApi) -> None:
        while True:
            async with replica.client.get(replica.url + "/readyz") as response:
                seen.append((response.status, await response.json()))
            await asyncio.sleep(0.005)

    watchers = [asyncio.create_task(watch(r)) for r in replicas]
    try:
        await asyncio.sleep(0.05)
        async with await admin_connection(settings) as admin:
            assert await kill_listeners(admin, settings.pg_database) == 2
        await listening_again(settings)

        async def ready_again() -> bool:
            return all(status == 200 for status, _ in seen[-4:])

        await support.wait_until(ready_again, timeout=5.0, interval=0.02, message="/readyz to say 200 again")
    finally:
        for watcher in watchers:
            watcher.cancel()
        await asyncio.gather(*watchers, return_exceptions=True)
    assert seen[0][0] == 200
    reasons = [answer["reason"] for status, answer in seen if status == 503]
    assert reasons, "never saw /readyz answer 503 while LISTEN was down"
    assert any("LISTEN" in reason for reason in reasons), reasons
