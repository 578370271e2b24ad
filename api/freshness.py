"""Keeps one replica's cache fresh: LISTEN for changed orders, re-read the cached ones.

The first time the LISTEN connection is up, the cache is warmed. Notifications that arrive
meanwhile wait in the connection and are applied afterwards, so none is lost to the warm-up.

After a lost LISTEN connection, notifications may have been missed. On reconnect (LISTEN
first, then catch up) every cached order whose snapshot changed since the last heartbeat
minus `api_resync_margin_s` is re-read. The heartbeat (`SELECT now()` every
`api_listen_heartbeat_s`) gives the database time up to which all notifications were
received; the margin covers transactions that started earlier and committed later.

With a standby (api/reads.py), the LISTEN connection (on the primary) also asks the primary's
WAL position after each batch of notifications and at each heartbeat. A notification then marks
the cached versions of its orders read before that position stale (no longer served,
api/cache.py) until they are read again, and the re-reads wait until the standby has replayed
it (api/standby.py).

After a failover, the primary LISTEN reaches may lack the last batches the old one committed,
whose versions this replica may have served. A reconnection tells: the primary's cluster,
timeline and flushed WAL position say whether it goes on from the one before. If not, reads of
the database are held until its recorded positions hold every version this replica has read
(api/served.py), notifications meanwhile are held too, and then the re-sync runs and the held
orders are re-read. With a standby, the WAL positions of the old timeline are forgotten.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta
from time import monotonic, time

import psycopg
from psycopg import sql

from api import versions, views
from api.cache import CachedOrder, OrderCache
from api.errors import DatabaseTimeout
from api.loader import OrderLoader
from api.metrics import ApiMetrics
from api.reads import PrimaryReads, StandbyReads
from api.served import Position
from orderview import readmodel, refusals
from orderview.readmodel import Version
from orderview.settings import Settings

log = logging.getLogger("orderview.api.freshness")

LISTEN_APPLICATION_NAME = "orderview-api-listen"
WARM_UP_APPLICATION_NAME = "orderview-api-warm-up"
RESYNC_APPLICATION_NAME = "orderview-api-resync"
CHUNK = 1000
FIRST_RETRY_S = 0.1


class Freshness:
    def __init__(
        self,
        settings: Settings,
        reads: PrimaryReads | StandbyReads,
        cache: OrderCache,
        loader: OrderLoader,
        metrics: ApiMetrics,
        dsn: str,
    ) -> None:
        self._settings = settings
        self._reads = reads
        self._cache = cache
        self._loader = loader
        self._metrics = metrics
        self._dsn = dsn
        self._listen = sql.SQL("LISTEN {}").format(sql.Identifier(settings.notify_channel))
        self._alive_at: datetime | None = None  # database time of the last heartbeat
        self._answered_at = 0.0  # monotonic time of the last heartbeat
        self._asked_at = 0.0  # Unix time the last heartbeat was sent
        # The (system identifier, timeline) of the primary this replica last vouched for (api/served.py),
        # and the flushed WAL position the last heartbeat saw.
        self._vouched_for: tuple[int, int] | None = None
        self._flushed = 0
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
                    history, same_history = await self._follow_history(conn)
                    listening_at, position = await self._heartbeat(conn)
                    if position is not None:  # reads see at least what was never notified
                        self._reads.at_least(position)
                    self._set_connected(True)
                    self._loader.listening(True)
                    held, position = (
                        ([], position) if same_history else await self._hold_until_served(conn, position)
                    )
                    self._vouched_for = history
                    self._reads.served.vouch()
                    await self._catch_up()
                    if held:
                        await self.apply(held, position)
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
                self._reads.served.lost_sight()  # the next connection may reach another database
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
        if self.warmed:  # LISTEN was lost: idle pool connections may have died with the server
            await self._reads.check_pools()
        if not self.warmed:
            self.problem = "warming the cache"
            await self.warm_up()
            self.warmed = True
        elif self._alive_at is not None:
            self.problem = "re-syncing after a lost LISTEN connection"
            await self.resync(self._alive_at - timedelta(seconds=self._settings.api_resync_margin_s))

    async def _follow_history(self, conn: psycopg.AsyncConnection) -> tuple[tuple[int, int], bool]:
        """The primary's (system identifier, timeline), and whether it goes on from the one this
        replica last vouched for: the same cluster on the same timeline, its WAL flushed at least
        as far as the last heartbeat saw. Such a server has every commit it had (they were
        flushed); the one after a failover may not (api/served.py). On a new timeline, with a
        standby, the positions remembered of the old one are forgotten (api/reads.py), and so are
        those the cached orders were read at: the next notification of each re-reads it."""
        async with asyncio.timeout(self._answer_within_s):
            history, flushed = await views.timeline(conn)
        before = self._vouched_for
        same = before is None or (history == before and flushed >= self._flushed)
        if before is not None and not same:
            log.warning(
                "LISTEN reached a primary with another history than before (a failover?)",
                extra={
                    "timeline": history[1],
                    "was": before[1],
                    "flushed": flushed,
                    "flushed_before": self._flushed,
                },
            )
        if self._reads.on_timeline(history):
            self._cache.forget_positions()
        return history, same

    async def _hold_until_served(
        self, conn: psycopg.AsyncConnection, position: int | None
    ) -> tuple[list[str], int | None]:
        """Wait until the database holds every version this replica has read (api/served.py),
        applying no notification meanwhile: an order the projector is applying again may pass
        through versions older than one served. Returns the order_uids notified meanwhile, to
        re-read now, and the primary's position after the wait (with a standby)."""
        served = self._reads.served
        missing = served.missing(await self._positions(conn))
        if not missing:
            return [], position
        started = monotonic()
        self.problem = (
            "catching up: the database lacks changes this replica served (a failover to a standby "
            "that had not replayed them); waiting for the projector to apply them again"
        )
        log.warning(
            "the database lacks versions this replica served; holding reads until the projector "
            "applies them again",
            extra={"missing": {str(p): f"{have} < {need}" for p, (have, need) in missing.items()}},
        )
        self._metrics.catch_ups.inc()
        self._metrics.database_behind.set(1)
        held: dict[str, None] = {}
        interval = self._settings.api_listen_heartbeat_s
        try:
            while missing and monotonic() - started < self._settings.api_catch_up_max_s:
                async for n in conn.notifies(timeout=interval, stop_after=1):
                    held.update((uid, None) for uid, _ in readmodel.decode_changes(n.payload))
                missing = served.missing(await self._positions(conn))
        finally:
            self._metrics.database_behind.set(0)
        if missing:
            log.error(
                "the database still lacks versions this replica served after %.0f s; serving what it "
                "holds (is the projector running?)",
                self._settings.api_catch_up_max_s,
                extra={"missing": {str(p): f"{have} < {need}" for p, (have, need) in missing.items()}},
            )
        else:
            log.info("the database holds what this replica served again after %.1f s", monotonic() - started)
        if self._reads.needs_positions:  # reads see at least what the database holds now
            _, position = await self._heartbeat(conn)
            if position is not None:
                self._reads.at_least(position)
        return list(held), position

    async def _positions(self, conn: psycopg.AsyncConnection) -> dict[int, Position]:
        async with asyncio.timeout(self._answer_within_s):
            return await views.applied_positions(conn, self._settings.orders_topic)

    @property
    def _answer_within_s(self) -> float:
        # A silently dropped connection would block forever; a live one answers in ms.
        return max(5.0, 5 * self._settings.api_listen_heartbeat_s)

    async def _consume(self, conn: psycopg.AsyncConnection) -> None:
        interval = self._settings.api_listen_heartbeat_s
        beat_at = monotonic() + interval
        while True:
            payloads = [
                n.payload async for n in conn.notifies(timeout=max(0.0, beat_at - monotonic()), stop_after=1)
            ]
            if payloads:
                payloads += [n.payload async for n in conn.notifies(timeout=0)]  # what else has arrived
                position = None
                if self._reads.needs_positions:  # the primary's position now: past these commits
                    _, position = await self._heartbeat(conn)
                changes = versions.changes(payloads)
                await self.apply(list(changes), position, changes)
            if monotonic() >= beat_at:
                # What was committed before the last heartbeat was asked reached the connection
                # before its answer, and notifies() yielded it first: it is applied by now.
                self._metrics.notifications_applied.set(self._asked_at)
                self._alive_at, _ = await self._heartbeat(conn)
                beat_at = monotonic() + interval

    async def _heartbeat(self, conn: psycopg.AsyncConnection) -> tuple[datetime, int | None]:
        """The database's time, and with a standby the primary's WAL position, which it records."""
        self._asked_at = time()
        async with asyncio.timeout(self._answer_within_s):
            now, flushed = await views.now_and_flushed(conn)
        self._flushed = flushed
        self._answered_at = monotonic()
        if not self._reads.needs_positions:
            return now, None
        self._reads.primary_at(flushed)
        return now, flushed

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
                self._reads.connection(WARM_UP_APPLICATION_NAME) as (conn, position),
                contextlib.aclosing(views.recent_snapshots(conn, cache.max_entries, CHUNK)) as chunks,
            ):
                async for rows in chunks:
                    self._reads.served.saw((p, o) for _, _, _, _, p, o in rows)
                    for row in rows:
                        if not cache.warm(CachedOrder.from_row(row, position)):
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
        async with (
            self._reads.connection(RESYNC_APPLICATION_NAME) as (conn, _),
            contextlib.aclosing(views.changed_since(conn, since, CHUNK * 10)) as chunks,
        ):
            async for uids in chunks:
                stale.extend(uid for uid in uids if uid in self._cache)
        for start in range(0, len(stale), CHUNK):
            await self._refresh(stale[start : start + CHUNK])
        log.info("re-synced after reconnect: %d cached orders changed since %s", len(stale), since)
        return len(stale)

    async def apply(
        self,
        order_uids: Sequence[str],
        position: int | None = None,
        told: Mapping[str, Version | None] | None = None,
    ) -> None:
        """A notification: these orders changed (committed at or before the primary's `position`,
        when reading from a standby; `told`: the version each changed to, where it said). Their
        cached versions are stale from now on, unless at that version or newer; re-read them."""
        self._metrics.notifications.inc(len(order_uids))
        if position is not None:
            self._reads.learned(order_uids, position)
        self._loader.changed(order_uids, told)
        cached = self._cache.mark_stale(order_uids, position, told)
        if cached:
            await self._refresh(cached)

    async def _refresh(self, uids: list[str]) -> None:
        self._metrics.db_queries["refresh"].inc()
        try:
            async with asyncio.timeout(self._settings.api_db_timeout_s):
                rows, position = await self._reads.snapshots(uids)
        except (psycopg.Error, OSError, TimeoutError, DatabaseTimeout) as exc:
            # Cannot re-read: better a miss later than a stale answer now.
            log.warning("refresh failed, evicting %d orders: %s", len(uids), exc)
            self._evict(uids)
            return
        found = {row[0]: row for row in rows}
        gone = []
        for uid in uids:
            if uid in found:
                if self._cache.refresh(CachedOrder.from_row(found[uid], position)):
                    self._metrics.refreshed.inc()
            else:
                gone.append(uid)
        self._evict(gone)

    def _evict(self, uids: Sequence[str]) -> None:
        for uid in uids:
            if self._cache.evict(uid):
                self._metrics.invalidated.inc()
