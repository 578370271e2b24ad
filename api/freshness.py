"""Keeps one replica's cache fresh: LISTEN for changed orders, re-read the cached ones.

The first time the LISTEN connection is up, the cache is warmed. Notifications that arrive
meanwhile wait in the connection and are applied afterwards, so none is lost to the warm-up.

After a lost LISTEN connection, notifications may have been missed. On reconnect (LISTEN
first, then catch up) every cached order whose snapshot changed since the last heartbeat
minus `api_resync_margin_s` is re-read. The heartbeat (`SELECT now()` every
`api_listen_heartbeat_s`) gives the database time up to which all notifications were
received; the margin covers transactions that started earlier and committed later.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
from collections.abc import Sequence
from datetime import datetime, timedelta
from time import monotonic

import psycopg
from psycopg import sql
from psycopg_pool import AsyncConnectionPool

from api import views
from api.cache import CachedOrder, OrderCache
from api.loader import OrderLoader
from api.metrics import ApiMetrics
from orderview import refusals
from orderview.settings import Settings

log = logging.getLogger("orderview.api.freshness")

LISTEN_APPLICATION_NAME = "orderview-api-listen"
WARM_UP_APPLICATION_NAME = "orderview-api-warm-up"
CHUNK = 1000
FIRST_RETRY_S = 0.1


class Freshness:
    def __init__(
        self,
        settings: Settings,
        pool: AsyncConnectionPool,
        cache: OrderCache,
        loader: OrderLoader,
        metrics: ApiMetrics,
        dsn: str,
    ) -> None:
        self._settings = settings
        self._pool = pool
        self._cache = cache
        self._loader = loader
        self._metrics = metrics
        self._dsn = dsn
        self._listen = sql.SQL("LISTEN {}").format(sql.Identifier(settings.notify_channel))
        self._alive_at: datetime | None = None  # database time of the last heartbeat
        self._answered_at = 0.0  # monotonic time of the last heartbeat
        self.connected = False
        self.warmed = False
        self.problem: str | None = "LISTEN connection not established yet"

    async def run(self) -> None:
        """Forever: connect, LISTEN, catch up, apply notifications; reconnect with capped backoff."""
        delay = FIRST_RETRY_S
        while True:
            try:
                async with await psycopg.AsyncConnection.connect(
                    self._dsn, autocommit=True, application_name=LISTEN_APPLICATION_NAME
                ) as conn:
                    await conn.execute(self._listen)
                    listening_at = await self._heartbeat(conn)
                    self._set_connected(True)
                    self._loader.listening(True)
                    await self._catch_up()
                    self._alive_at = listening_at
                    self.problem = None
                    delay = FIRST_RETRY_S
                    await self._consume(conn)
            except Exception as exc:  # whatever it was, the loop must go on
                # /readyz shows `problem` to anyone: no exception text (hosts, users) in it.
                refused = refusals.database(exc, "api")  # a setting to fix, said once
                if refused is None or refused != self.problem:
                    log.warning(
                        "LISTEN connection failed, retrying in %.1fs: %s", delay, refused or repr(exc)
                    )
                self.problem = refused or "LISTEN connection down: the database is unreachable or refused it"
            if self.connected:
                self._metrics.listen_reconnects.inc()
            self._set_connected(False)
            self._loader.listening(False)
            await asyncio.sleep(delay)
            delay = min(delay * 2, self._settings.api_listen_retry_max_s)

    @property
    def ready(self) -> bool:
        return self.connected and self.warmed and self.problem is None and not self.stale

    @property
    def stale(self) -> bool:
        """No heartbeat answered for three intervals: the database has stopped answering."""
        return monotonic() - self._answered_at > 3 * max(1.0, self._settings.api_listen_heartbeat_s)

    def _set_connected(self, up: bool) -> None:
        self.connected = up
        self._metrics.listen_connected.set(1 if up else 0)

    async def _catch_up(self) -> None:
        if not self.warmed:
            self.problem = "warming the cache"
            await self.warm_up()
            self.warmed = True
        elif self._alive_at is not None:
            self.problem = "re-syncing after a lost LISTEN connection"
            await self.resync(self._alive_at - timedelta(seconds=self._settings.api_resync_margin_s))

    async def _consume(self, conn: psycopg.AsyncConnection) -> None:
        while True:
            async for notify in conn.notifies(timeout=self._settings.api_listen_heartbeat_s):
                await self.apply([uid for uid in notify.payload.split(",") if uid])
            self._alive_at = await self._heartbeat(conn)

    async def _heartbeat(self, conn: psycopg.AsyncConnection) -> datetime:
        # A silently dropped connection would block forever; a live one answers in ms.
        async with asyncio.timeout(max(5.0, 5 * self._settings.api_listen_heartbeat_s)):
            now = await views.db_now(conn)
        self._answered_at = monotonic()
        return now

    async def warm_up(self) -> int:
        """Fill the cache with the most recently updated orders, until it is full.

        The replica serves meanwhile (misses read the database, coalesced): the warm-up reads on
        a connection of its own, so requests never wait for the pool's, and yields to them
        between chunks. /readyz turns ready when it is done."""
        cache = self._cache
        if not cache.enabled:
            return 0
        added = 0
        self._metrics.db_queries["warm_up"].inc()
        # The cyclic GC rescans every new entry as the cache fills (40 % of the warm-up,
        # measured), and entries hold no cycles; once warm, freeze them out of later
        # collections, which would otherwise walk the whole cache on the serving path.
        gc.disable()
        try:
            async with (
                await psycopg.AsyncConnection.connect(
                    self._dsn, autocommit=True, application_name=WARM_UP_APPLICATION_NAME
                ) as conn,
                contextlib.aclosing(views.recent_snapshots(conn, cache.max_entries, CHUNK)) as chunks,
            ):
                async for rows in chunks:
                    for uid, body, updated_at in rows:
                        if not cache.warm(CachedOrder.from_snapshot(uid, body, updated_at)):
                            log.info("cache warmed: %d orders (full)", added)
                            return added
                        added += 1
        finally:
            gc.enable()
            gc.freeze()
        log.info("cache warmed: %d orders", added)
        return added

    async def resync(self, since: datetime) -> int:
        """Re-read the cached orders changed after `since`; returns how many were cached."""
        self._metrics.resyncs.inc()
        self._metrics.db_queries["resync"].inc()
        stale: list[str] = []
        async with contextlib.aclosing(views.changed_since(self._pool, since, CHUNK * 10)) as chunks:
            async for uids in chunks:
                stale.extend(uid for uid in uids if uid in self._cache)
        for start in range(0, len(stale), CHUNK):
            await self._refresh(stale[start : start + CHUNK])
        log.info("re-synced after reconnect: %d cached orders changed since %s", len(stale), since)
        return len(stale)

    async def apply(self, order_uids: Sequence[str]) -> None:
        """A notification: these orders changed. Re-read those that are cached."""
        self._metrics.notifications.inc(len(order_uids))
        self._loader.changed(order_uids)
        cached = [uid for uid in order_uids if uid in self._cache]
        if cached:
            await self._refresh(cached)

    async def _refresh(self, uids: list[str]) -> None:
        self._metrics.db_queries["refresh"].inc()
        try:
            rows = await views.snapshots_by_uid(self._pool, uids)
        except (psycopg.Error, OSError, TimeoutError) as exc:
            # Cannot re-read: better a miss later than a stale answer now.
            log.warning("refresh failed, evicting %d orders: %s", len(uids), exc)
            self._evict(uids)
            return
        found = {uid: (body, at) for uid, body, at in rows}
        gone = []
        for uid in uids:
            if uid in found:
                body, at = found[uid]
                self._cache.refresh(CachedOrder.from_snapshot(uid, body, at))
                self._metrics.refreshed.inc()
            else:
                gone.append(uid)
        self._evict(gone)

    def _evict(self, uids: Sequence[str]) -> None:
        for uid in uids:
            if self._cache.evict(uid):
                self._metrics.invalidated.inc()
