"""Cache misses, coalesced: one query for many order_uids, one future per order_uid.

A miss waits a short window (or for the query in flight to finish), then every order_uid
gathered so far is read with a single `WHERE order_uid = ANY(...)`. Concurrent requests for
the same order_uid share one future (single flight).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable

from psycopg_pool import AsyncConnectionPool

from api import views
from api.cache import CachedOrder, OrderCache
from api.errors import OrderNotFound
from api.metrics import ApiMetrics

log = logging.getLogger("orderview.api.loader")


def _mark_retrieved(future: asyncio.Future) -> None:
    # Every waiter may have gone away; the exception is theirs, not the loop's to report.
    if not future.cancelled():
        future.exception()


class OrderLoader:
    def __init__(
        self,
        pool: AsyncConnectionPool,
        cache: OrderCache,
        metrics: ApiMetrics,
        window_s: float,
        max_batch: int,
    ) -> None:
        self._pool = pool
        self._cache = cache
        self._metrics = metrics
        self._window_s = window_s
        self._max_batch = max(1, max_batch)
        self._waiting: dict[str, asyncio.Future[CachedOrder | None]] = {}
        self._queue: list[str] = []
        self._worker: asyncio.Task | None = None
        self._in_flight: frozenset[str] = frozenset()
        self._changed_in_flight: set[str] = set()
        # Off until the LISTEN connection is up: a result read before it could go stale unseen.
        self.fill_cache = False

    async def load(self, order_uid: str) -> CachedOrder:
        future = self._waiting.get(order_uid)
        if future is None:
            future = asyncio.get_running_loop().create_future()
            future.add_done_callback(_mark_retrieved)
            self._waiting[order_uid] = future
            self._queue.append(order_uid)
            if self._worker is None:
                self._worker = asyncio.create_task(self._drain(), name="orderview-api-lookups")
        entry = await asyncio.shield(future)
        if entry is None:
            raise OrderNotFound(order_uid)
        return entry

    def changed(self, order_uids: Iterable[str]) -> None:
        """Orders changed (a notification): results of the query in flight for them are stale."""
        if self._in_flight:
            self._changed_in_flight.update(uid for uid in order_uids if uid in self._in_flight)

    async def close(self) -> None:
        if self._worker is not None:
            self._worker.cancel()
            await asyncio.gather(self._worker, return_exceptions=True)
        for future in self._waiting.values():
            future.cancel()

    async def _drain(self) -> None:
        try:
            await asyncio.sleep(self._window_s)
            while self._queue:
                batch = self._queue[: self._max_batch]
                del self._queue[: self._max_batch]
                await self._lookup(batch)
        finally:
            self._worker = None

    async def _lookup(self, batch: list[str]) -> None:
        self._in_flight = frozenset(batch)
        self._changed_in_flight.clear()
        fill_cache = self.fill_cache and self._cache.enabled
        self._metrics.db_queries["lookup"].inc()
        self._metrics.lookup_batch.observe(len(batch))
        try:
            rows = await views.snapshots_by_uid(self._pool, batch)
            found = {uid: CachedOrder.from_snapshot(uid, body, at) for uid, body, at in rows}
        except Exception as exc:  # each waiter gets it; api/answers.py turns it into a 503
            log.warning("order lookup failed: %s", exc)
            for uid in batch:
                future = self._waiting.pop(uid)
                if not future.done():
                    future.set_exception(exc)
            return
        finally:
            self._in_flight = frozenset()
        for uid in batch:
            entry = found.get(uid)
            if entry is not None and fill_cache and uid not in self._changed_in_flight:
                self._cache.put(entry)
            future = self._waiting.pop(uid)
            if not future.done():
                future.set_result(entry)
