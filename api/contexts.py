"""What an app holds while it runs, each as a cleanup context: the pool, the cache (with its
coalescing loader) and the freshness task (LISTEN, warm-up, re-sync)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import orjson
from aiohttp import web
from psycopg import AsyncConnection
from psycopg.types.json import set_json_loads
from psycopg_pool import AsyncConnectionPool

from api.cache import OrderCache
from api.freshness import Freshness
from api.loader import OrderLoader
from api.metrics import ApiMetrics
from api.missing import MissingOrders
from api.scrape import FLUSH_INTERVAL_S, OwnOnly, ReplicaFiles
from orderview.settings import Settings

SETTINGS = web.AppKey("settings", Settings)
METRICS = web.AppKey("metrics", ApiMetrics)
POOL = web.AppKey("pool", AsyncConnectionPool)
CACHE = web.AppKey("cache", OrderCache)
LOADER = web.AppKey("loader", OrderLoader)
FRESHNESS = web.AppKey("freshness", Freshness)
SCRAPE = web.AppKey("scrape", ReplicaFiles | OwnOnly)

POOL_APPLICATION_NAME = "orderview-api"
# The role can only read anyway; read-only transactions say so to anyone reading pg_stat_activity.
SESSION_SETTINGS = {"default_transaction_read_only": "on", "TimeZone": "UTC"}


def api_dsn(settings: Settings) -> str:
    """The API role's connection: keepalives, the statement timeout, read-only, UTC."""
    return settings.dsn("api", **SESSION_SETTINGS)


async def _configure(conn: AsyncConnection) -> None:
    set_json_loads(orjson.loads, conn)


async def pg_context(app: web.Application) -> AsyncIterator[None]:
    """The read-only `orderview_api` pool. Opened without waiting: /readyz tells if it is down."""
    settings = app[SETTINGS]
    pool = AsyncConnectionPool(
        api_dsn(settings),
        min_size=1,
        max_size=max(2, settings.api_pool_size),
        kwargs={"autocommit": True, "application_name": POOL_APPLICATION_NAME},
        configure=_configure,
        timeout=settings.api_db_timeout_s,
        open=False,
        name="orderview-api",
    )
    await pool.open(wait=False)
    app[POOL] = pool
    yield
    await pool.close()


async def cache_context(app: web.Application) -> AsyncIterator[None]:
    settings = app[SETTINGS]
    cache = OrderCache(settings.cache_max_entries, settings.cache_max_bytes)
    missing = MissingOrders(settings.api_not_found_max_entries, settings.api_not_found_ttl_s)
    loader = OrderLoader(
        app[POOL],
        cache,
        missing,
        app[METRICS],
        settings.api_miss_batch_window_s,
        settings.api_miss_batch_max,
        settings.api_miss_lookups_max,
        settings.api_db_timeout_s,
    )
    app[CACHE] = cache
    app[LOADER] = loader
    app[METRICS].cache.cache = cache
    app[METRICS].cache.missing = missing
    yield
    await loader.close()


async def freshness_context(app: web.Application) -> AsyncIterator[None]:
    """Starts LISTEN; the first connection warms the cache, later ones re-sync it."""
    freshness = Freshness(
        app[SETTINGS], app[POOL], app[CACHE], app[LOADER], app[METRICS], api_dsn(app[SETTINGS])
    )
    app[FRESHNESS] = freshness
    # Read at every scrape, not left to whoever last asked /readyz.
    app[METRICS].ready.set_function(lambda: 1 if freshness.ready else 0)
    task = asyncio.create_task(freshness.run(), name="orderview-api-freshness")
    yield
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)


async def scrape_context(app: web.Application) -> AsyncIterator[None]:
    """Keeps this replica's metrics file fresh for the scrapes its siblings answer."""
    scrape = app[SCRAPE]

    async def flush() -> None:
        while True:
            scrape.write()
            await asyncio.sleep(FLUSH_INTERVAL_S)

    task = asyncio.create_task(flush(), name="orderview-api-metrics-file")
    yield
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
