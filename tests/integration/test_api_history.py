"""GET /order/{order_uid}/history against a real PostgreSQL read model, written as the projector
writes versions and erasures (harness/history.py): the versions oldest first, a page's first whole
and each later one as the JSON Patch from the one before, paged back to the first version."""

from __future__ import annotations

import asyncio
import copy
import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import jsonpatch
import pytest
import pytest_asyncio

from api.edge import SECURITY_HEADERS
from harness import scratch
from harness.history import Version, erase, later_times, versions_of, write_history
from harness.orders import reference_order
from orderview.settings import Settings
from tests import support
from tests.api_server import RunningApi, running_api
from tests.integration.test_api import BAD_ORDER_UIDS, get
from tests.pg_proxy import pg_proxy


def new_order(prefix: str = "history") -> dict:
    order = reference_order()
    order["order_uid"] = scratch.unique(prefix)
    order["payment"]["transaction"] = order["order_uid"]
    return order


def changed(order: dict, change) -> dict:
    new = copy.deepcopy(order)
    change(new)
    return new


def lifecycle(order: dict, n: int) -> list[dict]:
    """`n` successive versions of an order, as a shop makes them: the first item's status
    advancing, the address corrected every third time."""
    versions = [order]
    for i in range(1, n):

        def step(o: dict, i: int = i) -> None:
            o["items"][0]["status"] += 1
            if i % 3 == 0:
                o["delivery"]["address"] = f"Herzl {i}"

        versions.append(changed(versions[-1], step))
    return versions


async def history(api: RunningApi, uid: str, query: str = "", **kwargs: object) -> tuple[int, dict, dict]:
    status, headers, body = await get(api, f"/order/{uid}/history{query}", **kwargs)
    return status, headers, (json.loads(body) if body else {})


def replay(page: dict) -> list[dict]:
    """Every order a page shows: its first entry's, then each patch applied to the one before."""
    orders: list[dict] = []
    for entry in page["versions"]:
        if not orders:
            orders.append(entry["order"])
        else:
            assert "order" not in entry
            orders.append(jsonpatch.apply_patch(orders[-1], entry["patch"]))
    return orders


async def all_pages(api: RunningApi, uid: str, limit: int) -> list[dict]:
    pages, before = [], None
    while True:
        query = f"?limit={limit}" + (f"&before={before}" if before else "")
        status, _, page = await history(api, uid, query)
        assert status == 200, page
        pages.append(page)
        before = page["next_before"]
        if before is None:
            return pages


@pytest_asyncio.fixture(scope="module")
async def api(settings: Settings) -> AsyncIterator[RunningApi]:
    async with running_api(settings) as running:
        yield running


async def test_an_order_seen_once_has_a_history_of_that_one_version_whole(
    api: RunningApi, settings: Settings
) -> None:
    order = new_order()
    await support.seed_orders(settings, [order])
    status, headers, page = await history(api, order["order_uid"])
    assert (status, headers["Content-Type"]) == (200, "application/json")
    assert page["order_uid"] == order["order_uid"]
    assert page["total_versions"] == 1 and page["next_before"] is None
    [only] = page["versions"]
    assert (only["version"], only["current"], only["order"]) == (1, True, order)
    assert list(only["order"]) == list(order), "the order in the sender's key order"
    assert only["source"]["partition"] == 0 and only["source"]["offset"] >= 0
    assert datetime.fromisoformat(only["applied_at"]).tzinfo is not None


async def test_versions_come_oldest_first_each_later_one_as_the_patch_from_the_one_before(
    api: RunningApi, settings: Settings
) -> None:
    first = new_order()
    corrected = changed(first, lambda o: o["delivery"].update(address="Herzl 12, apt. 4"))
    shipped = changed(corrected, lambda o: o["items"][0].update(status=203))
    uid = first["order_uid"]
    await write_history(settings, uid, versions_of([first, corrected, shipped]))

    status, _, page = await history(api, uid)
    assert status == 200
    assert [v["version"] for v in page["versions"]] == [1, 2, 3]
    assert [v["current"] for v in page["versions"]] == [False, False, True]
    assert page["versions"][0]["order"] == first
    assert page["versions"][1]["patch"] == [
        {"op": "replace", "path": "/delivery/address", "value": "Herzl 12, apt. 4"}
    ]
    assert page["versions"][2]["patch"] == [{"op": "replace", "path": "/items/0/status", "value": 203}]
    assert replay(page) == [first, corrected, shipped]
    assert page["total_versions"] == 3 and page["next_before"] is None


async def test_history_pages_go_back_to_the_first_version_whole(api: RunningApi, settings: Settings) -> None:
    orders = lifecycle(new_order(), 8)
    uid = orders[0]["order_uid"]
    await write_history(settings, uid, versions_of(orders))

    pages = await all_pages(api, uid, limit=3)
    assert [[v["version"] for v in p["versions"]] for p in pages] == [[6, 7, 8], [3, 4, 5], [1, 2]]
    for page in pages:
        assert "order" in page["versions"][0], "each page starts with a whole order"
        assert page["total_versions"] == 8
    shown = [order for page in reversed(pages) for order in replay(page)]
    assert shown == orders
    assert [v["current"] for p in pages for v in p["versions"]] == [False, False, True] + [False] * 5


async def test_a_page_of_one_walks_back_one_whole_version_at_a_time(
    api: RunningApi, settings: Settings
) -> None:
    orders = lifecycle(new_order(), 4)
    uid = orders[0]["order_uid"]
    await write_history(settings, uid, versions_of(orders))
    pages = await all_pages(api, uid, limit=1)
    assert [page["versions"][0]["order"] for page in pages] == orders[::-1]


async def test_a_long_history_is_paged_with_the_default_limit(api: RunningApi, settings: Settings) -> None:
    orders = lifecycle(new_order(), 45)
    uid = orders[0]["order_uid"]
    await write_history(settings, uid, versions_of(orders))
    status, _, page = await history(api, uid)
    assert status == 200 and len(page["versions"]) == 20 and page["next_before"]
    pages = await all_pages(api, uid, limit=100)
    assert len(pages) == 1 and replay(pages[0]) == orders


async def test_each_version_says_where_it_came_from_and_when(api: RunningApi, settings: Settings) -> None:
    first = new_order()
    second = changed(first, lambda o: o.update(customer_id="second"))
    third = changed(second, lambda o: o.update(customer_id="third"))
    uid = first["order_uid"]
    t1, t2, t3 = later_times(3)
    applied = datetime(2026, 3, 1, 12, 0, 5, 250000, tzinfo=UTC)
    await write_history(
        settings,
        uid,
        [
            Version(first, t1, 1, 40, record_timestamp=1_767_225_600_123, applied_at=applied),
            # A redriven dead letter: read at another offset, ordered as its original event.
            Version(second, t2, 1, 41, source_partition=2, source_offset=900, timestamp_type=1),
            Version(third, t3, 2, 7, record_timestamp=None, timestamp_type=None),
        ],
    )
    _, _, page = await history(api, uid)
    one, two, three = page["versions"]
    assert one["source"] == {"partition": 1, "offset": 40}
    assert one["record_time"] == "2026-01-01T00:00:00.123000Z"
    assert one["timestamp_type"] == "CreateTime"
    assert one["applied_at"] == "2026-03-01T12:00:05.250000Z"
    assert two["source"] == {"partition": 2, "offset": 900}
    assert two["timestamp_type"] == "LogAppendTime"
    assert datetime.fromisoformat(two["record_time"]).timestamp() * 1000 == pytest.approx(t2)
    assert three["source"] == {"partition": 2, "offset": 7}
    assert three["timestamp_type"] is None
    assert datetime.fromisoformat(three["record_time"]).timestamp() * 1000 == pytest.approx(t3)


async def test_a_version_of_unknown_coordinates_shows_no_source_and_stays_the_oldest(
    api: RunningApi, settings: Settings
) -> None:
    orders = lifecycle(new_order(), 3)
    uid = orders[0]["order_uid"]
    t2, t3 = later_times(2)
    kept = Version(orders[0], -1, -1, -1, record_timestamp=-1, timestamp_type=None)  # rebuild --keep
    await write_history(settings, uid, [kept, Version(orders[1], t2, 0, 5), Version(orders[2], t3, 0, 6)])
    pages = await all_pages(api, uid, limit=2)
    oldest = pages[-1]["versions"][0]
    assert (oldest["version"], oldest["source"], oldest["record_time"]) == (1, None, None)
    assert [order for page in reversed(pages) for order in replay(page)] == orders


async def test_the_etag_answers_304_until_a_new_version_arrives(api: RunningApi, settings: Settings) -> None:
    orders = lifecycle(new_order(), 3)
    uid = orders[0]["order_uid"]
    versions = versions_of(orders)
    await write_history(settings, uid, versions[:2])
    status, headers, _ = await history(api, uid)
    etag = headers["ETag"]
    assert status == 200 and etag.startswith('"')
    for if_none_match in (etag, f"W/{etag}", f'"other", {etag}'):
        status, h304, body = await history(api, uid, headers={"If-None-Match": if_none_match})
        assert (status, body, h304["ETag"]) == (304, {}, etag)
    await write_history(settings, uid, versions)
    status, headers, page = await history(api, uid, headers={"If-None-Match": etag})
    assert status == 200 and headers["ETag"] != etag
    assert page["total_versions"] == 3


async def test_an_unknown_or_erased_order_has_no_history(api: RunningApi, settings: Settings) -> None:
    nobody = scratch.unique("nobody")
    status, _, body = await history(api, nobody)
    assert (status, body) == (404, {"error": "not_found", "message": f"no order with order_uid '{nobody}'"})

    orders = lifecycle(new_order(), 5)
    uid = orders[0]["order_uid"]
    await write_history(settings, uid, versions_of(orders))
    older = (await history(api, uid, "?limit=2"))[2]["next_before"]
    await erase(settings, uid)
    for query in ("", "?limit=2", f"?before={older}"):
        status, _, body = await history(api, uid, query)
        assert (status, body["error"]) == (404, "not_found"), query


@pytest.mark.parametrize("raw_uid", BAD_ORDER_UIDS)
async def test_a_malformed_order_uid_is_a_json_400(api: RunningApi, raw_uid: str) -> None:
    status, headers, body = await get(api, f"/order/{raw_uid}/history")
    assert (status, headers["Content-Type"]) == (400, "application/json"), body
    assert json.loads(body)["error"] == "bad_order_uid"


@pytest.mark.parametrize(
    ("query", "code"),
    [
        ("?limit=0", "bad_limit"),
        ("?limit=101", "bad_limit"),
        ("?limit=-1", "bad_limit"),
        ("?limit=ten", "bad_limit"),
        ("?limit=", "bad_limit"),
        ("?before=", "bad_cursor"),
        ("?before=abc", "bad_cursor"),
        ("?before=1.2", "bad_cursor"),
        ("?before=1.2.3.4", "bad_cursor"),
        ("?before=-2.0.0", "bad_cursor"),
        ("?before=1.2.3%0A", "bad_cursor"),
        ("?before=9999999999999999999.0.0", "bad_cursor"),  # past bigint
        ("?before=1.9999999999.3", "bad_cursor"),  # past integer
    ],
)
async def test_a_bad_limit_or_cursor_is_a_json_400(
    api: RunningApi, settings: Settings, query: str, code: str
) -> None:
    order = new_order()
    await support.seed_orders(settings, [order])
    status, _, body = await history(api, order["order_uid"], query)
    assert (status, body["error"]) == (400, code)


async def test_every_answer_carries_the_security_headers(api: RunningApi, settings: Settings) -> None:
    order = new_order()
    await support.seed_orders(settings, [order])
    _, headers, _ = await history(api, order["order_uid"])
    answers = [
        headers,
        (await history(api, order["order_uid"], headers={"If-None-Match": headers["ETag"]}))[1],
        (await history(api, scratch.unique("nobody")))[1],
        (await history(api, order["order_uid"], "?limit=0"))[1],
    ]
    for answer in answers:
        for name, value in SECURITY_HEADERS.items():
            assert answer[name] == value


async def test_history_is_read_from_the_database_not_the_cache(api: RunningApi, settings: Settings) -> None:
    orders = lifecycle(new_order(), 2)
    uid = orders[0]["order_uid"]
    versions = versions_of(orders)
    await write_history(settings, uid, versions[:1])
    await get(api, f"/order/{uid}")  # cached now
    await write_history(settings, uid, versions)
    _, _, page = await history(api, uid)  # at once, whatever the cache holds
    assert replay(page) == orders


async def test_a_history_read_past_the_deadline_answers_503(settings: Settings) -> None:
    order = new_order("slow")
    await support.seed_orders(settings, [order])
    async with pg_proxy(settings.pg_host, settings.pg_port) as proxy:
        async with running_api(settings, pg_port=proxy.port, api_db_timeout_s=1.0) as slow:
            proxy.freeze_on = order["order_uid"].encode()
            async with asyncio.timeout(20):
                status, _, body = await history(slow, order["order_uid"])
            assert (status, body["error"]) == (503, "unavailable")
