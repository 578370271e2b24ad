"""Where a replica reads orders: the primary, or a streaming standby read only when it is recent
enough (api/standby.py says how that is known).

`PrimaryReads` is what the API does without a standby: every read on the primary's pool.
`StandbyReads` reads from the standby once it has replayed what the read requires, waiting for
it at most `api_standby_max_lag_s`; past that, or while the standby is down or lags more than
the bound, it reads from the primary (`api_standby_fallback=primary`) or raises StandbyBehind,
a 503 (`unavailable`). A read from the primary remembers the primary's position for the orders
it returned: the standby must pass it before it serves them again, so a replica never goes back
to an older version when it returns to the standby.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Iterable, Iterator, Sequence
from contextlib import asynccontextmanager
from datetime import datetime
from time import monotonic, perf_counter
from typing import Any

import psycopg
from psycopg import AsyncConnection
from psycopg_pool import AsyncConnectionPool

from api import views
from api.errors import StandbyBehind
from api.metrics import StandbyMetrics
from api.served import Served
from api.standby import WAITING_POLL_S, PrimaryPositions, RecentChanges, StandbyWatch
from orderview.settings import Settings

log = logging.getLogger("orderview.api.reads")

CATCH_UP_RETRY_S = 0.5  # a long read waiting for the standby (fallback `unavailable`) asks again


CHECK_TIMEOUT_S = 5.0


async def _check(pool: AsyncConnectionPool) -> None:
    try:
        async with asyncio.timeout(CHECK_TIMEOUT_S):
            await pool.check()
    except (TimeoutError, psycopg.Error, OSError) as exc:
        log.warning("checking the pool's connections failed: %r", exc)


def _versions(rows: Sequence[views.Snapshot]) -> Iterator[tuple[int | None, int | None]]:
    for _, _, _, _, partition, offset in rows:
        yield partition, offset


class PrimaryReads:
    """Every read on the primary; positions are not needed, so notifications carry none."""

    needs_positions = False
    standby: StandbyWatch | None = None
    problem: str | None = None
    falls_back = True

    def __init__(self, pool: AsyncConnectionPool, dsn: str) -> None:
        self._pool = pool
        self._dsn = dsn
        self.served = Served()

    async def snapshots(self, uids: Sequence[str], required: int = 0) -> tuple[list[views.Snapshot], int]:
        """The snapshots, and the standby position they were read at (0: the primary)."""
        await self.served.wait()
        rows = await views.snapshots_by_uid(self._pool, uids)
        self.served.saw(_versions(rows))
        return rows, 0

    async def recent_orders(self, limit: int, before: tuple[datetime, str] | None) -> list[dict[str, Any]]:
        await self.served.wait()
        return await views.recent_orders(self._pool, limit, before)

    async def history(
        self, order_uid: str, earlier: int, before: tuple[int, int, int] | None
    ) -> views.HistoryRows | None:
        return await views.order_history(self._pool, order_uid, earlier, before)

    @asynccontextmanager
    async def connection(
        self, application_name: str, required: int = 0
    ) -> AsyncIterator[tuple[AsyncConnection, int]]:
        """A connection of its own for a long read (warm-up, re-sync), and its standby position
        (0: the primary)."""
        async with await psycopg.AsyncConnection.connect(
            self._dsn, autocommit=True, application_name=application_name
        ) as conn:
            yield conn, 0

    def learned(self, uids: Iterable[str], lsn: int) -> None:
        pass

    async def check_pools(self) -> None:
        """After an outage: drop the pool's connections that died with the server."""
        await _check(self._pool)

    def primary_at(self, lsn: int) -> None:
        pass

    def on_timeline(self, timeline: tuple[int, int]) -> bool:
        return False


class StandbyReads:
    needs_positions = True

    def __init__(
        self,
        settings: Settings,
        standby_pool: AsyncConnectionPool,
        primary_pool: AsyncConnectionPool,
        standby_dsn: str,
        primary_dsn: str,
        metrics: StandbyMetrics,
    ) -> None:
        window = settings.api_standby_max_lag_s
        self.positions = PrimaryPositions(window)
        self.recent = RecentChanges(window)
        self.standby = StandbyWatch(settings, standby_dsn, self.positions)
        self.falls_back = settings.api_standby_fallback == "primary"
        self._standby_pool = standby_pool
        self._primary_pool = primary_pool
        self._standby_dsn = standby_dsn
        self._primary_dsn = primary_dsn
        self._max_wait_s = window
        self._minimum = 0  # where the primary was when LISTEN (re)started: no standby read sees less
        self._timeline: tuple[int, int] | None = None  # the primary's (system identifier, timeline)
        self._metrics = metrics
        self.served = Served()
        metrics.watch(self.standby)

    @property
    def problem(self) -> str | None:
        return self.standby.problem

    def learned(self, uids: Iterable[str], lsn: int) -> None:
        """These orders changed at or before the primary's position `lsn` (a notification)."""
        now = monotonic()
        self.positions.learned(lsn, now)
        self.recent.changed(uids, lsn, now)

    async def check_pools(self) -> None:
        """After an outage of the primary: drop the pools' connections that died with a server."""
        await _check(self._primary_pool)
        await _check(self._standby_pool)

    def primary_at(self, lsn: int) -> None:
        """The primary's position now (a heartbeat)."""
        self.positions.learned(lsn)

    def on_timeline(self, timeline: tuple[int, int]) -> bool:
        """The primary LISTEN reached writes this (cluster, timeline). After a failover it is
        another: the positions remembered from the old one may lie past everything the new one
        has (its history forked below them, where the promoted standby had replayed to), and
        would hold reads back, or keep cached versions from being re-read, until it wrote that much.
        They are forgotten: the primary's position when LISTEN starts (`at_least`) is past the
        fork, so it asks of a standby at least what they asked below it. True when it changed."""
        before, self._timeline = self._timeline, timeline
        if before is None or before == timeline:
            return False
        log.warning(
            "the primary writes another timeline (a failover): positions of the old one forgotten",
            extra={"system_identifier": timeline[0], "timeline": timeline[1], "was": before[1]},
        )
        self.positions.forget()
        self.recent.forget()
        self._minimum = 0
        return True

    def at_least(self, lsn: int) -> None:
        """From now on, no read sees less than the primary's position `lsn` (LISTEN started there:
        changes before it are never notified)."""
        self._minimum = max(self._minimum, lsn)
        self.positions.learned(lsn)

    def required(self, uids: Sequence[str] = (), at_least: int = 0) -> int:
        now = monotonic()
        need = max(at_least, self._minimum, self.positions.floor(now))
        return max(need, self.recent.required(uids, now)) if uids else need

    async def snapshots(self, uids: Sequence[str], required: int = 0) -> tuple[list[views.Snapshot], int]:
        """The snapshots, and the standby position they were read at (0: the primary)."""
        need = self.required(uids, required)
        give_up = monotonic() + self._max_wait_s
        for attempt in (1, 2):
            try:
                await self.served.wait()
                while await self._standby_has(need):
                    position, rows = await views.replayed_then_snapshots(self._standby_pool, uids)
                    if position is not None and position >= need:
                        self._metrics.reads["standby"].inc()
                        self.served.saw(_versions(rows))
                        return rows, position
                    # This connection's server is behind what the watch saw (a restarted standby,
                    # or another one behind the same address): it has to catch up first.
                    if monotonic() > give_up:
                        break
                    await asyncio.sleep(WAITING_POLL_S)
                break
            except (psycopg.Error, OSError) as exc:
                await self._failed(exc, attempt)
        return await self._from_primary(uids)

    async def recent_orders(self, limit: int, before: tuple[datetime, str] | None) -> list[dict[str, Any]]:
        await self.served.wait()
        for attempt in (1, 2):
            if not await self._standby_has(self.required()):
                break
            try:
                rows = await views.recent_orders(self._standby_pool, limit, before)
                self._metrics.reads["standby"].inc()
                return rows
            except (psycopg.Error, OSError) as exc:
                await self._failed(exc, attempt)
        self._refuse_unless_falling_back()
        self._metrics.reads["primary"].inc()
        return await views.recent_orders(self._primary_pool, limit, before)

    async def history(
        self, order_uid: str, earlier: int, before: tuple[int, int, int] | None
    ) -> views.HistoryRows | None:
        """From the standby once it has replayed what this replica was told of the order (as
        misses are), else as `recent_orders` falls back."""
        for attempt in (1, 2):
            if not await self._standby_has(self.required([order_uid])):
                break
            try:
                rows = await views.order_history(self._standby_pool, order_uid, earlier, before)
                self._metrics.reads["standby"].inc()
                return rows
            except (psycopg.Error, OSError) as exc:
                await self._failed(exc, attempt)
        self._refuse_unless_falling_back()
        self._metrics.reads["primary"].inc()
        return await views.order_history(self._primary_pool, order_uid, earlier, before)

    async def _failed(self, exc: BaseException, attempt: int) -> None:
        """A standby read failed: after a restart of the standby, the pool's idle connections are
        dead. The first time, drop those (the next read gets a live one); then give up."""
        log.warning("reading from the standby failed: %r", exc)
        if attempt == 1:
            await _check(self._standby_pool)

    @asynccontextmanager
    async def connection(
        self, application_name: str, required: int = 0
    ) -> AsyncIterator[tuple[AsyncConnection, int]]:
        """A connection of its own for a long read (warm-up, re-sync) that sees at least `required`
        (and what every read requires): to the standby once it is there, else to the primary — or,
        with fallback `unavailable`, to the standby whenever it gets there. With its standby
        position (0: the primary)."""
        conn, position = await self._long_read_connection(application_name, required)
        async with conn:
            yield conn, position

    async def _long_read_connection(
        self, application_name: str, required: int
    ) -> tuple[AsyncConnection, int]:
        while True:
            need = self.required(at_least=required)
            if await self._standby_has(need):
                try:
                    conn = await psycopg.AsyncConnection.connect(
                        self._standby_dsn, autocommit=True, application_name=application_name
                    )
                    position = await views.replayed(conn)  # the next statement's snapshot sees it
                    if position is not None and position >= need:
                        self._metrics.reads["standby"].inc()
                        return conn, position
                    await conn.close()
                except (psycopg.Error, OSError) as exc:
                    log.warning("connecting to the standby failed: %r", exc)
            if self.falls_back:
                self._metrics.reads["primary"].inc()
                conn = await psycopg.AsyncConnection.connect(
                    self._primary_dsn, autocommit=True, application_name=application_name
                )
                return conn, 0
            await asyncio.sleep(CATCH_UP_RETRY_S)

    async def _standby_has(self, lsn: int) -> bool:
        """Whether to read from the standby: usable, and it has replayed `lsn` — waiting for that
        at most the lag bound."""
        watch = self.standby
        if not watch.judged.is_set():  # just started: the watch's first answer is due in ms
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self._max_wait_s):
                    await watch.judged.wait()
        if not watch.usable:
            return False
        if watch.replayed is not None and watch.replayed >= lsn:
            return True
        started = perf_counter()
        reached = await watch.wait_for(lsn, self._max_wait_s)
        self._metrics.waits.observe(perf_counter() - started)
        return reached and watch.usable

    async def _from_primary(self, uids: Sequence[str]) -> tuple[list[views.Snapshot], int]:
        self._refuse_unless_falling_back()
        await self.served.wait()
        rows, flushed = await views.snapshots_then_flushed(self._primary_pool, uids)
        self._metrics.reads["primary"].inc()
        self.served.saw(_versions(rows))
        # These versions may be ahead of the standby: it must pass `flushed` to serve them again.
        self.learned([uid for uid, *_ in rows], flushed)
        return rows, 0

    def _refuse_unless_falling_back(self) -> None:
        if not self.falls_back:
            self._metrics.reads["refused"].inc()
            raise StandbyBehind()
