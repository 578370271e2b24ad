"""What a replica that reads from a streaming standby knows about the primary's WAL and the
standby's replay of it, and so when a read from the standby is recent enough.

Positions are WAL positions (LSNs) as integers. The replica learns the primary's position from
its LISTEN connection, which is on the primary: after every batch of notifications and at every
heartbeat it asks for `pg_current_wal_flush_lsn()`. The projector commits synchronously, so a
commit is flushed before its notification is sent: the position asked for after receiving a
notification is at or past the commit of every change it names. A read from the standby may
serve those orders only once the standby's `pg_last_wal_replay_lsn()` has passed that position.

Three things decide how recent a standby read must be (`required`):
- `RecentChanges`: per order_uid, the primary's position when this replica learned it changed
  (a notification, or a read from the primary that may be ahead of the standby);
- `PrimaryPositions.floor`: the primary's position `max_lag_s` ago — a standby behind it lags
  more than the bound;
- a caller's own (the warm-up and the re-sync need the standby at least where the primary was
  when LISTEN started).
A change learned more than `max_lag_s` ago needs no entry of its own any more: the floor covers
it. So both structures stay small: what a replica learns within the bound.

Positions belong to one timeline. After a failover the new primary writes another, forked where
the promoted standby had replayed to, below what the old one had flushed: remembered positions may
lie past everything the new timeline has for a long while. The replica forgets them when LISTEN
reaches a primary on another timeline (`StandbyReads.on_timeline`); the new primary's position
at that moment is past the fork, so it asks at least as much of a standby as they did below it.

`StandbyWatch` polls the standby's replay position on a connection of its own, computes the lag
(how long ago the primary had flushed WAL that the standby has not replayed), says whether the
standby may be read, and wakes readers waiting for a position.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import logging
from collections import OrderedDict, deque
from collections.abc import Iterable
from time import monotonic

import psycopg

from api import views
from orderview.settings import Settings

log = logging.getLogger("orderview.api.standby")

WATCH_APPLICATION_NAME = "orderview-api-standby-watch"
POLL_S = 0.1  # how often the watch asks the standby, while nobody waits
WAITING_POLL_S = 0.002  # ... and while a read waits for a position
MAX_SAMPLES = 10_000
FIRST_RETRY_S = 0.1


class PrimaryPositions:
    """The primary's flushed WAL positions, each with the monotonic time this replica learned it."""

    def __init__(self, window_s: float, max_samples: int = MAX_SAMPLES) -> None:
        self.window_s = window_s
        self.max_samples = max(2, max_samples)
        self._samples: deque[tuple[float, int]] = deque()

    def __len__(self) -> int:
        return len(self._samples)

    @property
    def newest(self) -> int:
        return self._samples[-1][1] if self._samples else 0

    def learned(self, lsn: int, at: float | None = None) -> None:
        at = monotonic() if at is None else at
        samples = self._samples
        if samples and lsn <= samples[-1][1]:
            return  # an earlier sample already says the primary was there
        samples.append((at, lsn))
        if len(samples) > self.max_samples:
            del samples[1]  # the oldest stays: it dates the lag

    def floor(self, now: float) -> int:
        """Where the primary was `window_s` ago (as far as known): a standby behind it lags more."""
        cutoff = now - self.window_s
        found = 0
        for at, lsn in self._samples:
            if at > cutoff:
                break
            found = lsn
        return found

    def behind_since(self, replayed: int) -> float | None:
        """When the primary had first flushed WAL past `replayed` (None: nothing known past it)."""
        for at, lsn in self._samples:
            if lsn > replayed:
                return at
        return None

    def forget(self) -> None:
        """Another timeline: these positions name WAL the new primary may never write."""
        self._samples.clear()

    def prune(self, replayed: int, now: float) -> None:
        """Forget samples the standby has replayed, except the one `floor` still needs."""
        samples, cutoff = self._samples, now - self.window_s
        while len(samples) >= 2 and samples[1][0] <= cutoff and samples[0][1] <= replayed:
            samples.popleft()


class RecentChanges:
    """order_uid → the primary's position when this replica learned the order changed, kept for
    `window_s` (after that, `PrimaryPositions.floor` is at least as demanding)."""

    def __init__(self, window_s: float) -> None:
        self.window_s = window_s
        self._learned: OrderedDict[str, tuple[float, int]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._learned)

    def changed(self, order_uids: Iterable[str], lsn: int, at: float | None = None) -> None:
        at = monotonic() if at is None else at
        learned = self._learned
        for uid in order_uids:
            before = learned.get(uid)
            learned[uid] = (at, lsn if before is None else max(lsn, before[1]))
            learned.move_to_end(uid)

    def forget(self) -> None:
        self._learned.clear()

    def required(self, order_uids: Iterable[str], now: float) -> int:
        self.prune(now)
        learned = self._learned
        return max((learned[uid][1] for uid in order_uids if uid in learned), default=0)

    def prune(self, now: float) -> None:
        learned, cutoff = self._learned, now - self.window_s
        while learned:
            uid, (at, _) = next(iter(learned.items()))
            if at > cutoff:
                return
            del learned[uid]


class StandbyWatch:
    """Polls the standby: its replay position, its lag, whether reads may go there."""

    def __init__(self, settings: Settings, dsn: str, positions: PrimaryPositions) -> None:
        self._settings = settings
        self._dsn = dsn
        self.positions = positions
        self.max_lag_s = settings.api_standby_max_lag_s
        self.replayed: int | None = None  # as of the last answer
        self.answered = False  # the last poll got an answer
        self.in_recovery = True
        self._answered_at = monotonic()  # a standby never heard from lags since the replica started
        self.usable = False
        self.problem: str | None = "the standby has not answered yet"
        self._waiters: list[tuple[int, int, asyncio.Future[None]]] = []
        self._order = itertools.count()
        self._wake = asyncio.Event()
        self.judged = asyncio.Event()  # set once the first poll has answered or failed

    def lag_s(self, now: float | None = None) -> float:
        """How long ago the primary had flushed WAL this standby has not replayed (as far as known);
        while the standby does not answer, at least how long it has been silent."""
        now = monotonic() if now is None else now
        behind = self.positions.behind_since(self.replayed) if self.replayed is not None else None
        lag = 0.0 if behind is None else now - behind
        if not self.answered or not self.in_recovery:
            lag = max(lag, now - self._answered_at)
        return max(0.0, lag)

    async def wait_for(self, lsn: int, timeout: float) -> bool:
        """True once the standby has replayed `lsn` (as the watch sees it), False after `timeout`."""
        if self.replayed is not None and self.replayed >= lsn and self.answered:
            return True
        future = asyncio.get_running_loop().create_future()
        heapq.heappush(self._waiters, (lsn, next(self._order), future))
        self._wake.set()
        try:
            async with asyncio.timeout(timeout):
                await future
            return True
        except TimeoutError:
            return False
        finally:
            if not future.done():
                future.cancel()

    async def run(self) -> None:
        """Forever: connect to the standby, poll it; reconnect with capped backoff."""
        delay = FIRST_RETRY_S
        while True:
            try:
                async with await psycopg.AsyncConnection.connect(
                    self._dsn, autocommit=True, application_name=WATCH_APPLICATION_NAME
                ) as conn:
                    delay = FIRST_RETRY_S
                    while True:
                        await self._poll(conn)
                        await self._pause()
            except Exception as exc:  # whatever it was, the loop must go on
                if self.answered:
                    log.warning("the standby stopped answering: %r", exc)
                self.answered = False
                self._judge(monotonic())
            await asyncio.sleep(delay)
            delay = min(delay * 2, self._settings.api_listen_retry_max_s)

    async def _poll(self, conn: psycopg.AsyncConnection) -> None:
        deadline = max(1.0, self.max_lag_s)
        async with asyncio.timeout(deadline):  # a silently dropped connection would block forever
            replayed = await views.replayed(conn)
        now = monotonic()
        self.answered, self.in_recovery = True, replayed is not None
        self._answered_at = now
        if replayed is not None:
            self.replayed = replayed
            self.positions.prune(replayed, now)
            self._release(replayed)
        self._judge(now)

    async def _pause(self) -> None:
        if self._waiters:
            await asyncio.sleep(WAITING_POLL_S)
            return
        self._wake.clear()
        try:
            async with asyncio.timeout(POLL_S):
                await self._wake.wait()
        except TimeoutError:
            pass

    def _release(self, replayed: int) -> None:
        waiters = self._waiters
        while waiters and (waiters[0][0] <= replayed or waiters[0][2].done()):
            _, _, future = heapq.heappop(waiters)
            if not future.done():
                future.set_result(None)

    def _judge(self, now: float) -> None:
        """Usable or not, and why not: off past the bound, on again within half of it."""
        lag = self.lag_s(now)
        if not self.answered:
            problem = "the standby does not answer"
        elif not self.in_recovery:
            problem = "the read server is not a standby (not in recovery)"
        elif lag > self.max_lag_s or (not self.usable and lag > self.max_lag_s / 2):
            problem = f"the standby lags {lag:.1f} s behind the primary (bound {self.max_lag_s:g} s)"
        else:
            problem = None
        if (problem is None) != self.usable:
            if problem is None:
                log.info("the standby is back within %.1f s of the primary", lag)
            else:
                log.warning("not reading from the standby: %s", problem)
        self.usable = problem is None
        self.problem = problem
        self.judged.set()
