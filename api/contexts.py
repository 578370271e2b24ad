"""What an app holds while it runs, each as a cleanup context: the pools and where reads go
(the primary, or a standby and its watch), the cache (with its coalescing loader) and the
freshness task (LISTEN, warm-up, re-sync)."""

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
from api.metrics import ApiMetrics, StandbyMetrics
from api.missing import MissingOrders
from api.reads import PrimaryReads, StandbyReads
from api.scrape import FLUSH_INTERVAL_S, OwnOnly, ReplicaFiles
from orderview.settings import Settings

SETTINGS = web.AppKey("settings", Settings)
METRICS = web.AppKey("metrics", ApiMetrics)
POOL = web.AppKey("pool", AsyncConnectionPool)
READS = web.AppKey("reads", PrimaryReads | StandbyReads)
CACHE = web.AppKey("cache", OrderCache)
LOADER = web.AppKey("loader", OrderLoader)
FRESHNESS = web.AppKey("freshness", Freshness)
SCRAPE = web.AppKey("scrape", ReplicaFiles | OwnOnly)

POOL_APPLICATION_NAME = "orderview-api"
SESSION_SETTINGS = {"TimeZone": "UTC"}
# The role can only read anyway; read-only transactions say so to anyone reading pg_stat_activity.
# Set once connected, not as a startup option: libpq would take the session's read-only default
# for the server's, and no server would pass target_session_attrs=read-write.
READ_ONLY = "SET default_transaction_read_only = on"


def api_dsn(settings: Settings) -> str:
    """The API role's connection to the primary: keepalives, the statement timeout, UTC."""
    return settings.dsn("api", **SESSION_SETTINGS)


def standby_dsn(settings: Settings) -> str:
    """The same, to the standbys the API reads from (ORDERVIEW_PG_READ_*)."""
    return settings.read_dsn("api", **SESSION_SETTINGS)


async def _configure(conn: AsyncConnection) -> None:
    set_json_loads(orjson.loads, conn)
    await conn.execute(READ_ONLY)


def _pool(settings: Settings, dsn: str, name: str) -> AsyncConnectionPool:
    return AsyncConnectionPool(
        dsn,
        min_size=1,
        max_size=max(2, settings.api_pool_size),
        kwargs={"autocommit": True, "application_name": POOL_APPLICATION_NAME},
        configure=_configure,
        timeout=settings.api_db_timeout_s,
        open=False,
        name=name,
    )


async def pg_context(app: web.Application) -> AsyncIterator[None]:
    """The read-only `orderview_api` pool on the primary, and with a standby configured, one on
    the standby and the standby's watch. Opened without waiting: /readyz tells if one is down."""
    settings = app[SETTINGS]
    pool = _pool(settings, api_dsn(settings), "orderview-api")
    await pool.open(wait=False)
    app[POOL] = pool
    if not settings.reads_from_standby:
        app[READS] = PrimaryReads(pool, api_dsn(settings))
        yield
        await pool.close()
        return
    standby_pool = _pool(settings, standby_dsn(settings), "orderview-api-standby")
    await standby_pool.open(wait=False)
    reads = StandbyReads(
        settings,
        standby_pool,
        pool,
        standby_dsn(settings),
        api_dsn(settings),
        StandbyMetrics(app[METRICS].registry),
    )
    app[READS] = reads
    watch = asyncio.create_task(reads.standby.run(), name="orderview-api-standby-watch")
    yield
    watch.cancel()
    await asyncio.gather(watch, return_exceptions=True)
    await standby_pool.close()
    await pool.close()


async def cache_context(app: web.Application) -> AsyncIterator[None]:
    settings = app[SETTINGS]
    cache = OrderCache(settings.cache_max_entries, settings.cache_max_bytes)
    missing = MissingOrders(settings.api_not_found_max_entries, settings.api_not_found_ttl_s)
    loader = OrderLoader(
        app[READS],
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
        app[SETTINGS], app[READS], app[CACHE], app[LOADER], app[METRICS], api_dsn(app[SETTINGS])
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
