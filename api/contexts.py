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
from orderview.settings import Settings

SETTINGS = web.AppKey("settings", Settings)
METRICS = web.AppKey("metrics", ApiMetrics)
POOL = web.AppKey("pool", AsyncConnectionPool)
CACHE = web.AppKey("cache", OrderCache)
LOADER = web.AppKey("loader", OrderLoader)
FRESHNESS = web.AppKey("freshness", Freshness)

POOL_APPLICATION_NAME = "orderview-api"
# The role can only read anyway; read-only transactions say so to anyone reading pg_stat_activity.
CONNECT_KWARGS = {"options": "-c default_transaction_read_only=on -c TimeZone=UTC"}


async def _configure(conn: AsyncConnection) -> None:
    set_json_loads(orjson.loads, conn)


async def pg_context(app: web.Application) -> AsyncIterator[None]:
    """The read-only `orderview_api` pool. Opened without waiting: /readyz tells if it is down."""
    settings = app[SETTINGS]
    pool = AsyncConnectionPool(
        settings.dsn("api"),
        min_size=1,
        max_size=max(2, settings.api_pool_size),
        kwargs={"autocommit": True, "application_name": POOL_APPLICATION_NAME, **CONNECT_KWARGS},
        configure=_configure,
        timeout=5.0,
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
    loader = OrderLoader(
        app[POOL], cache, app[METRICS], settings.api_miss_batch_window_s, settings.api_miss_batch_max
    )
    app[CACHE] = cache
    app[LOADER] = loader
    app[METRICS].cache.cache = cache
    yield
    await loader.close()


async def freshness_context(app: web.Application) -> AsyncIterator[None]:
    """Starts LISTEN; the first connection warms the cache, later ones re-sync it."""
    freshness = Freshness(app[SETTINGS], app[POOL], app[CACHE], app[LOADER], app[METRICS], {**CONNECT_KWARGS})
    app[FRESHNESS] = freshness
    task = asyncio.create_task(freshness.run(), name="orderview-api-freshness")
    yield
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
