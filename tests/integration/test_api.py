"""The HTTP API against a real PostgreSQL read model, written through the projector's own path."""

from __future__ import annotations

import asyncio
import copy
import json
import os
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from datetime import datetime
from pathlib import Path

import psycopg
import pytest
import pytest_asyncio
from prometheus_client.parser import text_string_to_metric_families
from yarl import URL

from api import views
from api.contexts import CACHE, METRICS, POOL
from harness import scratch
from harness.orders import reference_order
from orderview.settings import Settings
from schemas import ORDER_SCHEMA
from tests import support
from tests.api_server import RunningApi, free_port, running_api, wait_ready

ROOT = Path(__file__).resolve().parents[2]
BAD_ORDER_UIDS = [
    "x" * 65,
    "x" * 5000,
    "..%2Fetc",
    "..%2F..%2Fetc%2Fpasswd",
    "%00",
    "abc%00def",
    "abc%0A",
    "a%20b",
    "%D0%B7%D0%B0%D0%BA%D0%B0%D0%B7",  # заказ
    "%F0%9F%98%80",  # an emoji
    "%FF%FE",  # not UTF-8
    "caf%C3%A9",
    "%EF%BC%A1",  # a fullwidth A
    "a.b",
    "%25",
]


def new_order(prefix: str, **changes: object) -> dict:
    order = reference_order()
    order["order_uid"] = scratch.unique(prefix)
    order["payment"]["transaction"] = order["order_uid"]
    order.update(changes)
    return order


def lookups(api: RunningApi) -> float:
    value = api.app[METRICS].registry.get_sample_value("orderview_api_db_queries_total", {"kind": "lookup"})
    return value or 0.0


async def get(api: RunningApi, raw_path: str, method: str = "GET", **kwargs: object):
    """(status, headers, body) of a request whose path is sent exactly as written."""
    url = URL(api.url + raw_path, encoded=True)
    async with api.client.request(method, url, **kwargs) as response:
        return response.status, response.headers, await response.read()


@pytest_asyncio.fixture(scope="module")
async def api(settings: Settings) -> AsyncIterator[RunningApi]:
    async with running_api(settings) as running:
        yield running


async def test_warm_up_fills_the_cache_before_ready(settings: Settings) -> None:
    orders = [new_order("warm") for _ in range(3)]
    await support.seed_orders(settings, orders)
    async with running_api(settings, ready=False) as fresh:
        await wait_ready(fresh.client, fresh.url)
        before = lookups(fresh)
        for order in orders:
            async with fresh.client.get(f"{fresh.url}/order/{order['order_uid']}") as response:
                assert response.status == 200
                assert response.headers["X-Cache"] == "hit"
                assert await response.json() == order
        assert lookups(fresh) == before == 0


async def test_a_replica_serves_orders_from_the_database_while_its_cache_warms(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    order = new_order("early")
    await support.seed_orders(settings, [order])
    release = asyncio.Event()
    warm_up = views.recent_snapshots

    async def held_warm_up(*args: object) -> AsyncIterator[list[views.Snapshot]]:
        await release.wait()
        async for rows in warm_up(*args):  # type: ignore[arg-type]
            yield rows

    monkeypatch.setattr(views, "recent_snapshots", held_warm_up)
    async with running_api(settings, ready=False) as fresh:
        path = f"/order/{order['order_uid']}"
        await support.wait_until(
            lambda: readiness_is(fresh, "warming the cache"), interval=0.01, message="the warm-up to start"
        )
        status, headers, body = await get(fresh, path)
        assert (status, headers["X-Cache"], json.loads(body)) == (200, "miss", order)
        assert await readiness(fresh) == "warming the cache"
        release.set()
        await wait_ready(fresh.client, fresh.url)
        assert (await get(fresh, path))[1]["X-Cache"] == "hit"


async def readiness(api: RunningApi) -> str:
    status, _, body = await get(api, "/readyz")
    return "ready" if status == 200 else json.loads(body)["reason"]


async def readiness_is(api: RunningApi, what: str) -> bool:
    return await readiness(api) == what


async def test_server_timing_says_where_the_answer_came_from_and_how_long_it_took(
    api: RunningApi, settings: Settings
) -> None:
    order = new_order("timing")
    await support.seed_orders(settings, [order])
    path = f"/order/{order['order_uid']}"
    sources = []
    for _ in range(2):
        status, headers, _ = await get(api, path)
        name, description, duration = headers["Server-Timing"].split(";")
        assert status == 200 and float(duration.removeprefix("dur=")) >= 0
        sources.append((name, description))
    assert sources == [("db", 'desc="database"'), ("cache", 'desc="cache hit"')]


async def test_a_miss_reads_the_database_then_the_cache_serves_it(
    api: RunningApi, settings: Settings
) -> None:
    order = new_order("miss")
    await support.seed_orders(settings, [order])
    status, headers, body = await get(api, f"/order/{order['order_uid']}")
    assert (status, headers["X-Cache"], headers["Content-Type"]) == (200, "miss", "application/json")
    assert json.loads(body) == order
    status, again, body_again = await get(api, f"/order/{order['order_uid']}")
    assert (status, again["X-Cache"]) == (200, "hit")
    assert body_again == body
    assert again["ETag"] == headers["ETag"]


async def test_the_order_is_the_accepted_message_key_for_key(api: RunningApi, settings: Settings) -> None:
    order = new_order("exact")
    await support.seed_orders(settings, [order])
    _, _, body = await get(api, f"/order/{order['order_uid']}")
    assert list(json.loads(body)) == list(order)
    assert json.loads(body) == order


async def test_unknown_order_is_a_json_404(api: RunningApi) -> None:
    uid = scratch.unique("nobody")
    status, headers, body = await get(api, f"/order/{uid}")
    assert status == 404
    assert headers["Content-Type"] == "application/json"
    assert json.loads(body) == {"error": "not_found", "message": f"no order with order_uid '{uid}'"}


@pytest.mark.parametrize("raw_uid", BAD_ORDER_UIDS)
async def test_malformed_order_uid_is_a_json_400(api: RunningApi, raw_uid: str) -> None:
    status, headers, body = await get(api, f"/order/{raw_uid}")
    assert status == 400, body
    assert headers["Content-Type"] == "application/json"
    error = json.loads(body)
    assert error["error"] == "bad_order_uid"
    assert error["message"]


async def test_etag_and_if_none_match(api: RunningApi, settings: Settings) -> None:
    order = new_order("etag")
    await support.seed_orders(settings, [order])
    path = f"/order/{order['order_uid']}"
    _, headers, _ = await get(api, path)
    etag = headers["ETag"]
    assert etag.startswith('"') and not etag.startswith("W/")
    for if_none_match in (etag, f"W/{etag}", f'"other", {etag}', "*"):
        status, h304, body = await get(api, path, headers={"If-None-Match": if_none_match})
        assert (status, body, h304["ETag"]) == (304, b"", etag)
    status, _, body = await get(api, path, headers={"If-None-Match": '"something-else"'})
    assert status == 200 and json.loads(body) == order


async def test_head(api: RunningApi, settings: Settings) -> None:
    order = new_order("head")
    await support.seed_orders(settings, [order])
    status, headers, body = await get(api, f"/order/{order['order_uid']}", "HEAD")
    assert (status, body) == (200, b"")
    _, get_headers, _ = await get(api, f"/order/{order['order_uid']}")
    assert headers["ETag"] == get_headers["ETag"]
    assert headers["Content-Type"] == "application/json"
    assert (await get(api, f"/order/{scratch.unique('nobody')}", "HEAD"))[0] == 404
    assert (await get(api, "/order/%00", "HEAD"))[0] == 400


async def test_a_changed_order_is_served_fresh_within_a_second(api: RunningApi, settings: Settings) -> None:
    order = new_order("fresh")
    await support.seed_orders(settings, [order])
    path = f"/order/{order['order_uid']}"
    await get(api, path)
    assert (await get(api, path))[1]["X-Cache"] == "hit"
    changed = copy.deepcopy(order)
    changed["delivery"]["city"] = "Haifa"
    await support.seed_orders(settings, [changed])

    async def served_changed() -> bool:
        status, headers, body = await get(api, path)
        return status == 200 and headers["X-Cache"] == "hit" and json.loads(body) == changed

    await support.wait_until(served_changed, timeout=1.0, interval=0.02, message="the changed order")


async def test_recent_orders_newest_first_in_pages(api: RunningApi, settings: Settings) -> None:
    orders = [new_order("page", customer_id=f"c{i}") for i in range(5)]
    for order in orders:  # one transaction each: distinct updated_at, the last the newest
        await support.seed_orders(settings, [order])
    newest_first = [o["order_uid"] for o in reversed(orders)]

    seen: list[dict] = []
    cursor = None
    for _ in range(3):
        query = "?limit=2" + (f"&before={cursor}" if cursor else "")
        status, headers, body = await get(api, "/orders" + query)
        assert status == 200 and headers["Content-Type"] == "application/json"
        page = json.loads(body)
        assert len(page["orders"]) == 2 or len(seen) == 4
        seen.extend(page["orders"])
        cursor = page["next_before"]
    assert [s["order_uid"] for s in seen[:5]] == newest_first

    first = seen[0]
    last_order = orders[-1]
    assert first == {
        "order_uid": last_order["order_uid"],
        "date_created": last_order["date_created"],
        "customer_id": last_order["customer_id"],
        "name": last_order["delivery"]["name"],
        "city": last_order["delivery"]["city"],
        "amount": last_order["payment"]["amount"],
        "currency": last_order["payment"]["currency"],
        "items_count": len(last_order["items"]),
        "updated_at": first["updated_at"],
    }
    assert datetime.fromisoformat(first["updated_at"]).tzinfo is not None


async def test_walking_all_pages_sees_every_order_once_in_order(api: RunningApi, settings: Settings) -> None:
    await support.seed_orders(settings, [new_order("walk") for _ in range(7)])  # same updated_at
    with psycopg.connect(settings.dsn("owner")) as conn:
        total = conn.execute("SELECT count(*) FROM order_snapshots WHERE body_json IS NOT NULL").fetchone()[0]
    rows: list[dict] = []
    cursor = None
    while True:
        query = "?limit=3" + (f"&before={cursor}" if cursor else "")
        status, _, body = await get(api, "/orders" + query)
        assert status == 200
        page = json.loads(body)
        rows.extend(page["orders"])
        cursor = page["next_before"]
        if cursor is None:
            break
    keys = [(datetime.fromisoformat(r["updated_at"]), r["order_uid"]) for r in rows]
    assert len(rows) == total == len(set(keys))
    assert keys == sorted(keys, reverse=True)


async def test_default_limit_is_20(api: RunningApi, settings: Settings) -> None:
    await support.seed_orders(settings, [new_order("many") for _ in range(21)])
    status, _, body = await get(api, "/orders")
    assert status == 200
    assert len(json.loads(body)["orders"]) == 20


@pytest.mark.parametrize(
    ("query", "code"),
    [
        ("limit=0", "bad_limit"),
        ("limit=101", "bad_limit"),
        ("limit=-1", "bad_limit"),
        ("limit=abc", "bad_limit"),
        ("limit=", "bad_limit"),
        ("limit=1.5", "bad_limit"),
        ("limit=%D9%A3", "bad_limit"),  # an Arabic-Indic 3: int() would take it
        ("limit=99999999999999999999999", "bad_limit"),
        ("before=", "bad_cursor"),
        ("before=garbage", "bad_cursor"),
        ("before=1.", "bad_cursor"),
        ("before=.abc", "bad_cursor"),
        ("before=1.a%20b", "bad_cursor"),
        ("before=12345678901234567.x", "bad_cursor"),
        ("before=%00", "bad_cursor"),
        ("before=1.%D0%B7", "bad_cursor"),
    ],
)
async def test_bad_paging_parameters_are_json_400s(api: RunningApi, query: str, code: str) -> None:
    status, headers, body = await get(api, "/orders?" + query)
    assert status == 400, body
    assert headers["Content-Type"] == "application/json"
    assert json.loads(body)["error"] == code


async def test_unknown_routes_and_methods_answer_json(api: RunningApi) -> None:
    for path in ("/nope", "/order", "/order/", "/orders/x", "/ORDER/abc", "/%ZZ"):
        status, headers, body = await get(api, path)
        assert status == 404, path
        assert headers["Content-Type"] == "application/json"
        assert json.loads(body)["error"] == "not_found"
    status, headers, body = await get(api, "/order/abc", "POST")
    assert status == 405
    assert headers["Allow"] == "GET,HEAD"
    assert json.loads(body)["error"] == "method_not_allowed"
    assert (await get(api, "/orders", "DELETE"))[0] == 405


async def test_the_app_reads_as_orderview_api_and_cannot_write(api: RunningApi, settings: Settings) -> None:
    pool = api.app[POOL]
    assert await views.current_user(pool) == settings.pg_api_user == "orderview_api"
    async with pool.connection() as conn:
        with pytest.raises(psycopg.errors.ReadOnlySqlTransaction):
            await conn.execute("DELETE FROM order_snapshots")
        await conn.execute("SET default_transaction_read_only = off")
        try:
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                await conn.execute("DELETE FROM order_snapshots")
        finally:
            await conn.execute("SET default_transaction_read_only = on")


async def test_concurrent_misses_are_coalesced_into_few_queries(api: RunningApi, settings: Settings) -> None:
    orders = [new_order("burst") for _ in range(50)]
    await support.seed_orders(settings, orders)
    before = lookups(api)
    answers = await asyncio.gather(*(get(api, f"/order/{o['order_uid']}") for o in orders))
    queries = lookups(api) - before
    assert [(status, headers["X-Cache"]) for status, headers, _ in answers] == [(200, "miss")] * 50
    assert [json.loads(body) for _, _, body in answers] == orders
    assert queries <= 5, f"{queries} queries for 50 concurrent misses"


async def test_concurrent_requests_for_one_order_share_one_query(api: RunningApi, settings: Settings) -> None:
    order = new_order("flight")
    await support.seed_orders(settings, [order])
    before = lookups(api)
    answers = await asyncio.gather(*(get(api, f"/order/{order['order_uid']}") for _ in range(30)))
    assert {status for status, _, _ in answers} == {200}
    assert lookups(api) - before == 1


async def test_unknown_orders_in_a_burst_are_404s_not_errors(api: RunningApi, settings: Settings) -> None:
    known = new_order("mixed")
    await support.seed_orders(settings, [known])
    uids = [scratch.unique("ghost") for _ in range(10)] + [known["order_uid"]]
    answers = await asyncio.gather(*(get(api, f"/order/{uid}") for uid in uids))
    assert [status for status, _, _ in answers] == [404] * 10 + [200]


async def test_odd_input_never_answers_5xx(api: RunningApi) -> None:
    paths = [
        "/order/" + "%" * 3,
        "/order/%C0%AF",
        "/order/..",
        "/order/../etc/passwd",
        "/order/" + "%E2%80%AE" * 50,
        "/order/abc?limit=1&limit=2",
        "/orders?limit=1&limit=abc",
        "/orders?before=" + "9" * 5000,
        "/orders?limit=%FF",
        "/orders?%00=%00",
        "/ui/..%2F..%2Fpyproject.toml",
        "/ui/%00",
        "/ui/" + "a" * 300,
        "/ui/" + "a/" * 200,
        "/%2e%2e/%2e%2e/etc/passwd",
        "/metrics?x=%FF",
        "/readyz?" + "a=b&" * 100,
    ]
    for path in paths:
        for method in ("GET", "HEAD", "OPTIONS", "PUT"):
            status, _, _ = await get(api, path, method)
            assert status < 500, (method, path, status)


async def test_metrics_tell_cache_hits_from_misses_and_unknown_orders(
    settings: Settings, api: RunningApi
) -> None:
    order = new_order("outcomes")
    await support.seed_orders(settings, [order])
    registry = api.app[METRICS].registry

    def answered(outcome: str, status: str) -> float:
        labels = {"route": "/order/{order_uid}", "status": status, "outcome": outcome}
        return registry.get_sample_value("orderview_api_requests_total", labels) or 0.0

    before = {o: answered(o, s) for o, s in (("hit", "200"), ("miss", "200"), ("not_found", "404"))}
    api.app[CACHE].evict(order["order_uid"])
    for path in (f"/order/{order['order_uid']}",) * 2 + (f"/order/{scratch.unique('nobody')}",):
        await get(api, path)
    after = {o: answered(o, s) for o, s in (("hit", "200"), ("miss", "200"), ("not_found", "404"))}
    assert {o: after[o] - before[o] for o in after} == {"hit": 1, "miss": 1, "not_found": 1}


async def test_readiness_and_notification_freshness_are_in_the_metrics_without_a_probe(
    api: RunningApi,
) -> None:
    """What Prometheus sees: readiness as /readyz would answer it, and the time up to which
    notifications were applied, which the LISTEN heartbeat moves on while nothing changes."""
    registry = api.app[METRICS].registry
    assert registry.get_sample_value("orderview_api_ready") == 1

    def applied() -> float:
        return registry.get_sample_value("orderview_api_notifications_applied_timestamp_seconds") or 0.0

    first = applied()
    await support.wait_until(lambda: applied() > first, timeout=10, message="the heartbeat to move it")
    assert time.time() - applied() < 5


async def test_health_readiness_and_metrics(api: RunningApi) -> None:
    assert (await get(api, "/healthz"))[0] == 200
    status, _, body = await get(api, "/readyz")
    assert (status, json.loads(body)) == (200, {"status": "ready"})
    await get(api, f"/order/{scratch.unique('nobody')}")
    status, headers, body = await get(api, "/metrics")
    assert status == 200 and headers["Content-Type"].startswith("text/plain")
    text = body.decode()
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for f in text_string_to_metric_families(text)
        for s in f.samples
    }
    route_404 = (("outcome", "not_found"), ("route", "/order/{order_uid}"), ("status", "404"))
    for name, labels in (  # one replica on its own: replica="0"
        ("orderview_api_requests_total", route_404),
        ("orderview_api_request_seconds_bucket", (("le", "0.0001"), *route_404)),
        ("orderview_api_cache_hits_total", ()),
        ("orderview_api_cache_misses_total", ()),
        ("orderview_api_cache_evictions_total", ()),
        ("orderview_api_cache_entries", ()),
        ("orderview_api_cache_bytes", ()),
        ("orderview_api_not_found_cached_total", ()),
        ("orderview_api_invalidations_total", (("action", "refreshed"),)),
        ("orderview_api_db_queries_total", (("kind", "lookup"),)),
        ("orderview_api_listen_connected", ()),
    ):
        assert (name, tuple(sorted((*labels, ("replica", "0"))))) in samples, name
    assert samples[("orderview_api_listen_connected", (("replica", "0"),))] == 1.0


async def test_readiness_says_why_when_the_database_is_unreachable(settings: Settings) -> None:
    async with running_api(settings, ready=False, pg_port=free_port()) as down:
        await asyncio.sleep(0.3)
        status, _, body = await get(down, "/readyz")
        assert status == 503
        answer = json.loads(body)
        assert answer["status"] == "not ready" and "LISTEN" in answer["reason"]
        assert (await get(down, "/healthz"))[0] == 200


async def test_a_small_cache_evicts_and_a_zero_cache_always_misses(settings: Settings) -> None:
    orders = [new_order("small") for _ in range(3)]
    await support.seed_orders(settings, orders)
    async with running_api(settings, cache_max_entries=2) as small:
        for order in orders:
            await get(small, f"/order/{order['order_uid']}")
        cache = small.app[CACHE]
        assert len(cache) == 2 and cache.evictions >= 1
    async with running_api(settings, cache_max_entries=0) as none:
        for _ in range(2):
            status, headers, body = await get(none, f"/order/{orders[0]['order_uid']}")
            assert (status, headers["X-Cache"]) == (200, "miss")
            assert json.loads(body) == orders[0]
        assert len(none.app[CACHE]) == 0


async def test_openapi_document_embeds_the_order_schema(api: RunningApi) -> None:
    status, headers, body = await get(api, "/openapi.json")
    assert status == 200 and headers["Content-Type"] == "application/json"
    document = json.loads(body)
    assert document["openapi"].startswith("3.1")
    expected = {k: v for k, v in ORDER_SCHEMA.items() if k not in ("$schema", "$id")}
    assert document["components"]["schemas"]["Order"] == expected
    assert {"/order/{order_uid}", "/orders", "/healthz", "/readyz", "/metrics", "/openapi.json", "/"} <= set(
        document["paths"]
    )


async def test_the_viewer_is_served(api: RunningApi) -> None:
    status, headers, body = await get(api, "/")
    assert status == 200 and headers["Content-Type"].startswith("text/html")
    assert (await get(api, "/ui/index.html"))[2] == body
    status, headers, body = await get(api, "/ui/no-such-file.js")
    assert status == 404 and json.loads(body)["error"] == "not_found"
    for escape in ("/ui/..%2Fpyproject.toml", "/ui/%2E%2E/pyproject.toml", "/ui/../pyproject.toml"):
        assert (await get(api, escape))[0] == 404, escape


def test_the_api_refuses_to_listen_off_loopback_with_default_passwords(settings: Settings) -> None:
    env = {**os.environ, **settings.to_env()}
    for variable, value in [("ORDERVIEW_API_HOST", "0.0.0.0"), (None, None)]:
        command = [sys.executable, "-m", "api", "--replicas", "1", "--port", str(free_port())]
        if variable is None:
            command += ["--host", "0.0.0.0"]
        run_env = {**env, variable: value} if variable else env
        out = subprocess.run(command, env=run_env, capture_output=True, text=True, timeout=30, cwd=ROOT)
        assert out.returncode == 1
        lines = out.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("[orderview] refusing to start:"), out.stderr


SECURITY = {
    "Content-Security-Policy": "default-src 'self'; base-uri 'none'; form-action 'self'; "
    "frame-ancestors 'none'; object-src 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}


async def test_every_answer_carries_the_security_headers(api: RunningApi, settings: Settings) -> None:
    order = new_order("headers")
    await support.seed_orders(settings, [order])
    uid = order["order_uid"]
    _, first, _ = await get(api, f"/order/{uid}")
    requests = [
        (f"/order/{uid}", {}),  # a miss, then hits
        (f"/order/{uid}", {}),
        (f"/order/{uid}", {"If-None-Match": first["ETag"]}),
        (f"/order/{scratch.unique('nobody')}", {}),
        ("/order/bad%20id", {}),
        ("/orders", {}),
        ("/orders?limit=0", {}),
        ("/", {}),
        ("/ui/app.js", {}),
        ("/ui/nothing.js", {}),
        ("/openapi.json", {}),
        ("/healthz", {}),
        ("/readyz", {}),
        ("/metrics", {}),
        ("/nope", {}),
    ]
    for path, headers in requests:
        status, answer, _ = await get(api, path, headers=headers)
        assert {name: answer.get(name) for name in SECURITY} == SECURITY, (path, status)
    assert (await get(api, "/order/x", "POST"))[1]["X-Content-Type-Options"] == "nosniff"


async def test_hosts_off_the_allow_list_get_421(settings: Settings) -> None:
    order = new_order("host")
    await support.seed_orders(settings, [order])
    async with running_api(settings, api_allowed_hosts="localhost, 127.0.0.1") as guarded:
        port = URL(guarded.url).port
        for path in (f"/order/{order['order_uid']}", "/orders", "/", "/readyz"):
            for host in ("rebind.example", f"rebind.example:{port}", "127.0.0.1.rebind.example"):
                status, _, body = await get(guarded, path, headers={"Host": host})
                assert (status, json.loads(body)["error"]) == (421, "misdirected_request"), (path, host)
            for host in (f"127.0.0.1:{port}", f"LOCALHOST:{port}", "localhost"):
                assert (await get(guarded, path, headers={"Host": host}))[0] == 200, (path, host)


async def test_cors_answers_allowed_origins_only(api: RunningApi, settings: Settings) -> None:
    order = new_order("cors")
    await support.seed_orders(settings, [order])
    path = f"/order/{order['order_uid']}"
    shop, other = "https://shop.example", "https://evil.example"
    preflight = {"Access-Control-Request-Method": "GET", "Access-Control-Request-Headers": "if-none-match"}
    async with running_api(settings, api_cors_origins=f"{shop},null") as open_api:
        for request_path in (path, path, "/orders", f"/order/{scratch.unique('nobody')}"):
            _, headers, _ = await get(open_api, request_path, headers={"Origin": shop})
            assert headers["Access-Control-Allow-Origin"] == shop
            assert headers["Access-Control-Expose-Headers"] == "ETag, X-Cache, Server-Timing"
            assert headers["Vary"] == "Origin"
            _, headers, _ = await get(open_api, request_path, headers={"Origin": other})
            assert "Access-Control-Allow-Origin" not in headers
        status, headers, _ = await get(open_api, path, "OPTIONS", headers={"Origin": "null", **preflight})
        assert (status, headers["Access-Control-Allow-Origin"]) == (204, "null")
        assert "GET" in headers["Access-Control-Allow-Methods"]
        assert "if-none-match" in headers["Access-Control-Allow-Headers"]
        status, headers, _ = await get(open_api, path, "OPTIONS", headers={"Origin": other, **preflight})
        assert status == 403 and "Access-Control-Allow-Origin" not in headers
    status, headers, _ = await get(api, path, "OPTIONS", headers={"Origin": shop, **preflight})
    assert status == 405 and "Access-Control-Allow-Origin" not in headers  # none allowed by default
    assert "Access-Control-Allow-Origin" not in (await get(api, path, headers={"Origin": shop}))[1]
