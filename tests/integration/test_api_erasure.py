"""An erased order (its snapshot kept without a body, sql/006) is absent to the API everywhere:
`GET /order` answers 404 on every replica, also one that had it cached, the negative cache
remembers it as any unknown id, and neither `/orders`, the warm-up nor a re-sync brings it back.

The read model is written as the projector writes an erasure (harness/history.py)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

import pytest_asyncio

from api.contexts import CACHE, METRICS
from harness import scratch
from harness.history import Version, erase, later_times, snapshot_row, write_history
from harness.orders import reference_order
from orderview.settings import Settings
from tests import support
from tests.api_server import RunningApi, api_process, running_api
from tests.integration.test_api_coherence import admin_connection, kill_listeners, listener_count


def new_order(prefix: str = "erased") -> dict:
    order = reference_order()
    order["order_uid"] = scratch.unique(prefix)
    order["payment"]["transaction"] = order["order_uid"]
    return order


async def status_of(api: RunningApi, path: str, method: str = "GET") -> tuple[int, dict]:
    async with api.client.request(method, api.url + path) as response:
        body = await response.read()
        return response.status, (json.loads(body) if body else {})


def metric(api: RunningApi, name: str, **labels: str) -> float:
    return api.app[METRICS].registry.get_sample_value(name, labels) or 0.0


def lookups(api: RunningApi) -> float:
    return metric(api, "orderview_api_db_queries_total", kind="lookup")


async def erased_everywhere(replicas: list[RunningApi], uid: str, timeout: float) -> None:
    async def gone() -> bool:
        return all([(await status_of(r, f"/order/{uid}"))[0] == 404 for r in replicas])

    await support.wait_until(gone, timeout=timeout, interval=0.02, message=f"{uid} to answer 404 everywhere")


@pytest_asyncio.fixture(scope="module")
async def api(settings: Settings) -> AsyncIterator[RunningApi]:
    async with running_api(settings) as running:
        yield running


async def test_an_erased_order_answers_404_on_every_replica_that_had_it_cached(settings: Settings) -> None:
    order = new_order()
    uid = order["order_uid"]
    await support.seed_orders(settings, [order])
    async with api_process(settings) as a, api_process(settings) as b:
        for replica in (a, b):
            await status_of(replica, f"/order/{uid}")
            async with replica.client.get(f"{replica.url}/order/{uid}") as response:
                assert (response.status, response.headers["X-Cache"]) == (200, "hit")

        await erase(settings, uid)
        await erased_everywhere([a, b], uid, timeout=1.0)
        for replica in (a, b):
            status, body = await status_of(replica, f"/order/{uid}")
            assert (status, body) == (
                404,
                {"error": "not_found", "message": f"no order with order_uid '{uid}'"},
            )
            assert (await status_of(replica, f"/order/{uid}", "HEAD"))[0] == 404
    body_json, _ = snapshot_row(settings, uid)
    assert body_json is None  # what the API was given: the row, without the order


async def test_an_erased_order_is_remembered_as_absent_like_an_unknown_one(
    api: RunningApi, settings: Settings
) -> None:
    order = new_order()
    uid = order["order_uid"]
    notified = metric(api, "orderview_api_notifications_total")
    await support.seed_orders(settings, [order])
    await erase(settings, uid)
    # Once the erasure's notification is applied: a notification forgets what the negative cache
    # remembers of its order, so one that came after the first read would make a second lookup.
    await support.wait_until(
        lambda: metric(api, "orderview_api_notifications_total") >= notified + 2, message="both notifications"
    )
    before = lookups(api)
    assert (await status_of(api, f"/order/{uid}"))[0] == 404
    assert lookups(api) == before + 1
    for _ in range(3):
        assert (await status_of(api, f"/order/{uid}"))[0] == 404
    assert lookups(api) == before + 1, "the negative cache answers the erased order as any unknown id"
    assert uid not in api.app[CACHE]


async def test_orders_pages_leave_erased_orders_out(api: RunningApi, settings: Settings) -> None:
    kept, erased = new_order("kept"), new_order()
    await support.seed_orders(settings, [kept])
    await support.seed_orders(settings, [erased])
    await erase(settings, erased["order_uid"])

    uids: list[str] = []
    before = None
    while True:
        query = "?limit=3" + (f"&before={before}" if before else "")
        status, page = await status_of(api, "/orders" + query)
        assert status == 200
        uids += [summary["order_uid"] for summary in page["orders"]]
        before = page["next_before"]
        if before is None:
            break
    assert kept["order_uid"] in uids
    assert erased["order_uid"] not in uids


async def test_the_warm_up_leaves_erased_orders_out(settings: Settings) -> None:
    kept, erased = new_order("warm"), new_order()
    await support.seed_orders(settings, [kept, erased])
    await erase(settings, erased["order_uid"])
    async with running_api(settings) as fresh:
        assert kept["order_uid"] in fresh.app[CACHE]
        assert erased["order_uid"] not in fresh.app[CACHE]
        assert (await status_of(fresh, f"/order/{erased['order_uid']}"))[0] == 404


async def test_a_replica_that_missed_the_erasure_while_listen_was_down_evicts_it_on_resync(
    api: RunningApi, settings: Settings
) -> None:
    order = new_order()
    uid = order["order_uid"]
    await support.seed_orders(settings, [order])
    await status_of(api, f"/order/{uid}")
    assert uid in api.app[CACHE]

    notified, resyncs = (
        metric(api, "orderview_api_notifications_total"),
        metric(api, "orderview_api_resyncs_total"),
    )

    async def lose_listen() -> None:
        async with await admin_connection(settings) as admin:
            assert await kill_listeners(admin, settings.pg_database) >= 1

    # The erasure commits after the LISTEN connection is gone and before it is back (0.1 s
    # later): its NOTIFY reaches nobody.
    await erase(settings, uid, before_commit=lose_listen)

    await erased_everywhere([api], uid, timeout=10.0)
    assert uid not in api.app[CACHE]
    assert metric(api, "orderview_api_resyncs_total") == resyncs + 1
    assert metric(api, "orderview_api_notifications_total") == notified, "evicted by the re-sync"

    async def listening() -> bool:
        return await listener_count(settings) >= 1

    await support.wait_until(listening, timeout=5.0, message="LISTEN again")


async def test_a_newer_version_after_the_erasure_brings_the_order_back(
    api: RunningApi, settings: Settings
) -> None:
    order = new_order()
    uid = order["order_uid"]
    await support.seed_orders(settings, [order])
    await erase(settings, uid)
    assert (await status_of(api, f"/order/{uid}"))[0] == 404  # now in the negative cache too

    again = {**order, "customer_id": "came-back"}
    [t] = later_times(1)
    await write_history(settings, uid, [Version(again, t, partition=1, offset=7)])

    async def served() -> bool:
        return await status_of(api, f"/order/{uid}") == (200, again)

    await support.wait_until(served, timeout=1.0, interval=0.02, message="the order served again")
