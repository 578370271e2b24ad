"""Cache misses, coalesced: one query for many order_uids, one future per order_uid.

A miss waits a short window (or for a free lookup slot), then every order_uid gathered so far is
read with a single `WHERE order_uid = ANY(...)`. Up to `max_in_flight` such lookups run at once,
so one slow query does not hold up every miss. Concurrent requests for the same order_uid share
one future (single flight). Every wait has a deadline: a request whose lookup has not answered by
then gets DatabaseTimeout (a 503), while the lookup itself is cancelled in the background.
Ids found absent are remembered for a while (api/missing.py).

A notification for an order whose lookup is in flight makes that lookup's result stale: it is
not cached, and requests arriving after the notification do not share it but start a new
lookup, which reads a version at least as new as the notification (api/reads.py).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable

from api.cache import CachedOrder, OrderCache
from api.errors import DatabaseTimeout, OrderNotFound
from api.metrics import ApiMetrics
from api.missing import MissingOrders
from api.reads import PrimaryReads, StandbyReads

log = logging.getLogger("orderview.api.loader")


def _mark_retrieved(future: asyncio.Future) -> None:
    # Every waiter may have gone away; the exception is theirs, not the loop's to report.
    if not future.cancelled():
        future.exception()


class _Lookup:
    """One query in flight: the futures of its order_uids, and those of them that changed meanwhile."""

    __slots__ = ("changed", "futures")

    def __init__(self, futures: dict[str, asyncio.Future[CachedOrder | None]]) -> None:
        self.futures = futures
        self.changed: set[str] = set()


class OrderLoader:
    def __init__(
        self,
        reads: PrimaryReads | StandbyReads,
        cache: OrderCache,
        missing: MissingOrders,
        metrics: ApiMetrics,
        window_s: float,
        max_batch: int,
        max_in_flight: int,
        deadline_s: float,
    ) -> None:
        self._reads = reads
        self._cache = cache
        self._missing = missing
        self._metrics = metrics
        self._window_s = window_s
        self._max_batch = max(1, max_batch)
        self._slots = asyncio.Semaphore(max(1, max_in_flight))
        self._deadline_s = deadline_s
        self._waiting: dict[str, asyncio.Future[CachedOrder | None]] = {}
        self._queue: list[str] = []
        self._worker: asyncio.Task | None = None
        self._lookups: dict[asyncio.Task, _Lookup] = {}
        # Off until the LISTEN connection is up: a result read before it could go stale unseen.
        self.fill_cache = False

    async def load(self, order_uid: str) -> CachedOrder:
        if self._missing.known(order_uid):
            raise OrderNotFound(order_uid)
        future = self._waiting.get(order_uid)
        if future is None:
            future = asyncio.get_running_loop().create_future()
            future.add_done_callback(_mark_retrieved)
            self._waiting[order_uid] = future
            self._queue.append(order_uid)
            if self._worker is None:
                self._worker = asyncio.create_task(self._drain(), name="orderview-api-lookups")
        try:
            async with asyncio.timeout(self._deadline_s):
                entry = await asyncio.shield(future)
        except TimeoutError:
            raise DatabaseTimeout() from None
        if entry is None:
            raise OrderNotFound(order_uid)
        return entry

    def listening(self, up: bool) -> None:
        """LISTEN is up (results can be kept: their changes will be heard) or down."""
        self.fill_cache = up or self.fill_cache  # the re-sync on reconnect covers cached orders
        self._missing.trust(up)

    def changed(self, order_uids: Iterable[str]) -> None:
        """Orders changed (a notification): they exist, and results in flight for them are stale:
        not cached, and not shared with requests that come after this."""
        uids = list(order_uids)
        self._missing.forget(uids)
        waiting = self._waiting
        for lookup in self._lookups.values():
            for uid in uids:
                future = lookup.futures.get(uid)
                if future is not None:
                    lookup.changed.add(uid)
                    if waiting.get(uid) is future:
                        del waiting[uid]

    async def close(self) -> None:
        tasks = [t for t in (self._worker, *self._lookups) if t is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for future in self._waiting.values():
            future.cancel()

    async def _drain(self) -> None:
        try:
            await asyncio.sleep(self._window_s)
            while self._queue:
                await self._slots.acquire()  # misses keep gathering while every slot is busy
                batch = self._queue[: self._max_batch]
                del self._queue[: self._max_batch]
                lookup = _Lookup({uid: self._waiting[uid] for uid in batch})
                task = asyncio.create_task(self._lookup(batch, lookup), name="orderview-api-lookup")
                self._lookups[task] = lookup
                task.add_done_callback(self._done)
        finally:
            self._worker = None

    def _done(self, task: asyncio.Task) -> None:
        del self._lookups[task]
        self._slots.release()

    def _resolved(self, uid: str, future: asyncio.Future[CachedOrder | None]) -> asyncio.Future:
        if self._waiting.get(uid) is future:
            del self._waiting[uid]
        return future

    async def _lookup(self, batch: list[str], lookup: _Lookup) -> None:
        fill_cache = self.fill_cache and self._cache.enabled
        epoch = self._missing.epoch
        self._metrics.db_queries["lookup"].inc()
        self._metrics.lookup_batch.observe(len(batch))
        try:
            async with asyncio.timeout(self._deadline_s):
                rows, position = await self._reads.snapshots(batch)
            found = {uid: CachedOrder.from_snapshot(uid, body, at, position) for uid, body, at, *_ in rows}
        except (Exception, asyncio.CancelledError) as exc:  # each waiter gets it: a 503
            log.warning("order lookup failed: %r", exc)
            failure = DatabaseTimeout() if isinstance(exc, TimeoutError | asyncio.CancelledError) else exc
            for uid, future in lookup.futures.items():
                self._resolved(uid, future)
                if not future.done():
                    future.set_exception(failure)
            if isinstance(exc, asyncio.CancelledError):
                raise
            return
        changed = lookup.changed
        self._missing.add((uid for uid in batch if uid not in found and uid not in changed), epoch)
        for uid in batch:
            entry = found.get(uid)
            if entry is not None and fill_cache and uid not in changed:
                self._cache.put(entry)
            future = self._resolved(uid, lookup.futures[uid])
            if not future.done():
                future.set_result(entry)
