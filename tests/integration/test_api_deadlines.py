"""The API when PostgreSQL stops answering (a real one, behind a proxy the test freezes), and
what it asks of PostgreSQL for unknown ids and readiness probes."""

from __future__ import annotations

import asyncio
import json

from api.contexts import POOL
from harness import scratch
from orderview.settings import Settings
from tests import support
from tests.api_server import RunningApi, running_api
from tests.integration.test_api import get, lookups, new_order
from tests.pg_proxy import pg_proxy

DEADLINE_S = 1.0
BOUND_S = 20 * DEADLINE_S  # "answers at all": without deadlines these requests never answer


def pool_requests(api: RunningApi) -> int:
    """Connections handed out by the API's pool: every database call takes one."""
    return api.app[POOL].get_stats().get("requests_num", 0)


async def test_requests_answer_503_when_the_database_stops_answering(settings: Settings) -> None:
    async with pg_proxy(settings.pg_host, settings.pg_port) as proxy:
        async with running_api(settings, pg_port=proxy.port, api_db_timeout_s=DEADLINE_S) as api:
            proxy.frozen = True
            async with asyncio.timeout(BOUND_S):
                for path in (f"/order/{scratch.unique('silent')}", "/orders"):
                    status, _, body = await get(api, path)
                    assert (status, json.loads(body)["error"]) == (503, "unavailable"), path

                async def not_ready() -> bool:
                    return (await get(api, "/readyz"))[0] == 503

                await support.wait_until(not_ready, timeout=BOUND_S, message="/readyz to say 503")
            proxy.frozen = False
            known = new_order("thawed")
            await support.seed_orders(settings, [known])

            async def serves_again() -> bool:
                return (await get(api, f"/order/{known['order_uid']}"))[0] == 200

            await support.wait_until(serves_again, timeout=BOUND_S, message="the API to serve again")


async def test_one_hung_lookup_does_not_hold_up_other_misses(settings: Settings) -> None:
    async with pg_proxy(settings.pg_host, settings.pg_port) as proxy:
        async with running_api(settings, pg_port=proxy.port, api_db_timeout_s=5.0) as api:
            hung_uid = scratch.unique("hung")
            proxy.freeze_on = hung_uid.encode()
            hung = asyncio.create_task(get(api, f"/order/{hung_uid}"))
            await support.wait_until(lambda: proxy.frozen_links == 1, message="the lookup to hang")
            other = new_order("other")
            await support.seed_orders(settings, [other])
            status, headers, _ = await asyncio.wait_for(get(api, f"/order/{other['order_uid']}"), BOUND_S)
            assert (status, headers["X-Cache"], hung.done()) == (200, "miss", False)
            assert (await asyncio.wait_for(hung, BOUND_S))[0] == 503


async def test_unknown_ids_cost_no_query_after_the_first(settings: Settings) -> None:
    async with running_api(settings) as api:
        uids = [scratch.unique("ghost") for _ in range(20)]
        for uid in uids:
            assert (await get(api, f"/order/{uid}"))[0] == 404
        queries, taken = lookups(api), pool_requests(api)
        for _ in range(3):
            answers = await asyncio.gather(*(get(api, f"/order/{uid}") for uid in uids))
            assert {status for status, _, _ in answers} == {404}
        assert (lookups(api), pool_requests(api)) == (queries, taken)


async def test_an_order_that_arrives_after_its_404_is_served_at_once(settings: Settings) -> None:
    async with running_api(settings) as api:
        order = new_order("late")
        path = f"/order/{order['order_uid']}"
        assert (await get(api, path))[0] == 404
        assert (await get(api, path))[0] == 404  # remembered as absent now
        await support.seed_orders(settings, [order])

        async def served() -> bool:
            status, _, body = await get(api, path)
            return status == 200 and json.loads(body) == order

        await support.wait_until(served, timeout=1.0, interval=0.02, message="the new order")


async def test_readiness_probes_cost_no_query(settings: Settings) -> None:
    async with running_api(settings) as api:
        taken = pool_requests(api)
        answers = await asyncio.gather(*(get(api, "/readyz") for _ in range(200)))
        assert {status for status, _, _ in answers} == {200}
        assert pool_requests(api) == taken


async def test_readiness_says_why_without_exception_text(settings: Settings) -> None:
    async with pg_proxy(settings.pg_host, settings.pg_port) as proxy:
        proxy_port = proxy.port
    # The proxy is gone: connections to its port are refused, with the port in the error.
    async with running_api(settings, ready=False, pg_port=proxy_port) as down:
        await asyncio.sleep(0.3)
        status, _, body = await get(down, "/readyz")
        reason = json.loads(body)["reason"]
        assert status == 503 and "LISTEN" in reason
        for leak in (str(proxy_port), "127.0.0.1", "Error", settings.pg_api_user):
            assert leak not in reason, reason
