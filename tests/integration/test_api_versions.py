"""Notifications that tell versions, against real replicas: a replica that holds the version a
notification tells keeps its entry, so an order read right after it changed is a hit the next
time, however the read and the notification cross; a newer version is still served fresh."""

from __future__ import annotations

import copy
import json
from collections.abc import AsyncIterator

import pytest
import pytest_asyncio

from api.contexts import METRICS
from orderview.settings import Settings
from tests import notifications, support
from tests.api_server import RunningApi, running_api
from tests.integration.test_api import get, new_order

ROUNDS = 20  # orders seeded and read at once, per test: each a chance for the read and the NOTIFY to cross


def sample(api: RunningApi, name: str, labels: dict[str, str] | None = None) -> float:
    return api.app[METRICS].registry.get_sample_value(name, labels or {}) or 0.0


@pytest_asyncio.fixture(scope="module")
async def replicas(settings: Settings) -> AsyncIterator[tuple[RunningApi, RunningApi]]:
    """Two replicas: each its own cache and LISTEN connection, as the processes of `python -m api`."""
    async with running_api(settings) as first, running_api(settings) as second:
        yield first, second


async def x_cache(api: RunningApi, order: dict) -> tuple[str, str]:
    status, headers, body = await get(api, f"/order/{order['order_uid']}")
    assert status == 200 and json.loads(body) == order
    return headers["X-Cache"], headers["ETag"]


async def test_an_order_seeded_read_and_read_again_at_once_is_a_miss_then_a_hit(
    settings: Settings, replicas: tuple[RunningApi, RunningApi]
) -> None:
    api, _ = replicas
    for _ in range(ROUNDS):
        order = new_order("again")
        await notifications.write(settings, [order])
        (first, etag), (again, etag_again) = await x_cache(api, order), await x_cache(api, order)
        assert (first, again, etag_again) == ("miss", "hit", etag), order["order_uid"]


async def test_on_two_replicas_each_reads_an_order_once_then_serves_it_from_its_cache(
    settings: Settings, replicas: tuple[RunningApi, RunningApi]
) -> None:
    for _ in range(ROUNDS):
        order = new_order("again2")
        await notifications.write(settings, [order])
        answers = [await x_cache(api, order) for api in (*replicas, *replicas)]
        assert [cache for cache, _ in answers] == ["miss", "miss", "hit", "hit"], order["order_uid"]
        assert len({etag for _, etag in answers}) == 1


async def test_a_notification_of_the_version_a_replica_holds_changes_nothing(
    settings: Settings, replicas: tuple[RunningApi, RunningApi]
) -> None:
    api, _ = replicas
    order = new_order("held")
    [version] = await notifications.write(settings, [order])
    await x_cache(api, order)
    assert (await x_cache(api, order))[0] == "hit"
    notified = sample(api, "orderview_api_notifications_total")
    refreshes = sample(api, "orderview_api_db_queries_total", {"kind": "refresh"})
    await notifications.notify_again(settings, [(order["order_uid"], version)])
    await support.wait_until(
        lambda: sample(api, "orderview_api_notifications_total") > notified,
        timeout=5,
        interval=0.01,
        message="the notification to arrive",
    )
    assert sample(api, "orderview_api_db_queries_total", {"kind": "refresh"}) == refreshes
    assert (await x_cache(api, order))[0] == "hit"


@pytest.mark.parametrize("tell_versions", [True, False], ids=["told", "bare-order-uid"])
async def test_a_newer_version_is_served_fresh_by_every_replica_that_holds_the_order(
    settings: Settings, replicas: tuple[RunningApi, RunningApi], tell_versions: bool
) -> None:
    """Told its version, or only its order_uid as an older projector tells it."""
    order = new_order("newer")
    await notifications.write(settings, [order])
    for api in replicas:
        await x_cache(api, order)
        assert (await x_cache(api, order))[0] == "hit"
    changed = copy.deepcopy(order)
    changed["delivery"]["city"] = "Haifa"
    await notifications.write(settings, [changed], tell_versions=tell_versions)

    async def served_changed() -> bool:
        answers = [await get(api, f"/order/{order['order_uid']}") for api in replicas]
        return all(status == 200 and json.loads(body) == changed for status, _, body in answers)

    await support.wait_until(served_changed, timeout=2.0, interval=0.02, message="the newer version")
