"""Streaming standbys and per-replica coherence, for the standby tests and the bench.

- `Standby`: a streaming standby of the test's primary, made and driven by `ops/postgres.sh
  standby` (the script users run), on a port of its own.
- `CommitLog`: when each version of each order was committed on the primary, as a LISTEN on the
  primary sees it (the version read from the primary as soon as its notification arrives).
- `poll_replica`: every answer one replica gives for a set of orders, polled directly on its own
  port (each replica runs as `python -m api --replicas 1`), one order after another per worker.
- `judge`: from those, per replica, whether an order ever went back to an older version, whether
  each answer was at least the version committed `within_s` before it was asked, and the delay
  from each commit to the first answer that carried it.

An order's version is carried in its `customer_id` (`version-<n>`), so any answer names it.
"""

from __future__ import annotations

import asyncio
import copy
import os
import subprocess
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from time import monotonic

import aiohttp
import orjson
import psycopg
from psycopg import sql

from harness import ROOT
from harness.orders import reference_order
from harness.ports import free_port
from harness.scratch import unique
from orderview import readmodel
from orderview.settings import Settings

VERSIONS_BY_UID = "SELECT order_uid, body_json FROM order_snapshots WHERE order_uid = ANY(%(uids)s)"
PAUSE_REPLAY = "SELECT pg_wal_replay_pause()"
RESUME_REPLAY = "SELECT pg_wal_replay_resume()"
REPLAYED = "SELECT (pg_last_wal_replay_lsn() - '0/0'::pg_lsn)::bigint"
FLUSHED = "SELECT (pg_current_wal_flush_lsn() - '0/0'::pg_lsn)::bigint"


def versioned(order: dict, version: int) -> dict:
    new = copy.deepcopy(order)
    new["customer_id"] = f"version-{version}"
    return new


def version_of(body: bytes | str | dict) -> int:
    order = body if isinstance(body, dict) else orjson.loads(body)
    return int(order["customer_id"].removeprefix("version-"))


def new_orders(prefix: str, count: int) -> list[dict]:
    orders = []
    for _ in range(count):
        order = reference_order()
        order["order_uid"] = unique(prefix)
        orders.append(order)
    return orders


class Standby:
    """A streaming standby of `settings`' primary on its own port (ORDERVIEW_PG_READ_PORT)."""

    def __init__(self, settings: Settings, port: int | None = None) -> None:
        self.port = port or free_port()
        self.settings = replace(settings, pg_read_host="127.0.0.1", pg_read_port=self.port)

    def _ops(self, action: str) -> str:
        env = {**os.environ, **self.settings.to_env()}
        done = subprocess.run(
            ["bash", "ops/postgres.sh", "standby", action], cwd=ROOT, env=env, capture_output=True, text=True
        )
        assert done.returncode == 0, f"ops/postgres.sh standby {action} failed: {done.stderr}"
        return done.stdout.strip()

    def start(self) -> Standby:
        self._ops("start")
        return self

    def stop(self) -> None:
        self._ops("stop")

    def destroy(self) -> None:
        self._ops("destroy")

    def status(self) -> str:
        return self._ops("status")

    def _admin(self) -> psycopg.Connection:
        s = self.settings
        on_standby = replace(s, pg_host=s.pg_read_host, pg_port=self.port, pg_target_session_attrs="any")
        dsn = on_standby.admin_dsn_for(s.pg_database)
        return psycopg.connect(dsn, autocommit=True)

    def pause_replay(self) -> None:
        with self._admin() as conn:
            conn.execute(PAUSE_REPLAY)

    def resume_replay(self) -> None:
        with self._admin() as conn:
            conn.execute(RESUME_REPLAY)

    def caught_up(self) -> bool:
        """Whether the standby has replayed everything the primary had flushed a moment ago."""
        with psycopg.connect(self.settings.admin_dsn_for(self.settings.pg_database)) as primary:
            flushed = primary.execute(FLUSHED).fetchone()[0]  # type: ignore[index]
        with self._admin() as conn:
            return conn.execute(REPLAYED).fetchone()[0] >= flushed  # type: ignore[index]


@dataclass
class CommitLog:
    """Per order_uid, (monotonic time seen, version) for each newer version the primary shows.

    The time is when the LISTEN connection received the notification: a few ms after the commit
    at most, so a delay measured from it is short of the true one by that much."""

    commits: dict[str, list[tuple[float, int]]] = field(default_factory=lambda: defaultdict(list))

    def latest(self, uid: str, at_or_before: float) -> int:
        """The newest version committed at or before `at_or_before` (0: none yet)."""
        version = 0
        for seen, v in self.commits.get(uid, ()):
            if seen > at_or_before:
                break
            version = v
        return version

    def record(self, uid: str, seen: float, version: int) -> None:
        versions = self.commits[uid]
        if not versions or version > versions[-1][1]:
            versions.append((seen, version))

    @property
    def count(self) -> int:
        return sum(len(v) for v in self.commits.values())


async def watch_commits(settings: Settings, log: CommitLog, ready: asyncio.Event) -> None:
    """Until cancelled: LISTEN on the primary, and on each notification read its orders' versions."""
    async with (
        await psycopg.AsyncConnection.connect(settings.dsn("api"), autocommit=True) as listen,
        await psycopg.AsyncConnection.connect(settings.dsn("api"), autocommit=True) as reader,
    ):
        await listen.execute(sql.SQL("LISTEN {}").format(sql.Identifier(settings.notify_channel)))
        ready.set()
        while True:
            uids: set[str] = set()
            async for notify in listen.notifies(timeout=1.0, stop_after=1):
                uids.update(uid for uid, _ in readmodel.decode_changes(notify.payload))
            if not uids:
                continue
            seen = monotonic()
            cur = await reader.execute(VERSIONS_BY_UID, {"uids": list(uids)})
            for uid, body in await cur.fetchall():
                log.record(uid, seen, version_of(body))


@dataclass(frozen=True)
class Answer:
    uid: str
    asked: float
    answered: float
    status: int
    version: int  # 0 for a 404, -1 for anything but 200 and 404


async def poll_replica(
    url: str, uids: Sequence[str], stop: asyncio.Event, workers: int = 4, pause_s: float = 0.0
) -> list[Answer]:
    """Ask one replica for these orders over and over until `stop`; each order by one worker,
    so an order's answers follow one another."""
    answers: list[Answer] = []

    async def worker(mine: Sequence[str], client: aiohttp.ClientSession) -> None:
        while not stop.is_set():
            for uid in mine:
                asked = monotonic()
                async with client.get(f"{url}/order/{uid}") as response:
                    body = await response.read()
                    status = response.status
                version = version_of(body) if status == 200 else (0 if status == 404 else -1)
                answers.append(Answer(uid, asked, monotonic(), status, version))
                if pause_s:
                    await asyncio.sleep(pause_s)

    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=workers)) as client:
        await asyncio.gather(*(worker(uids[i::workers], client) for i in range(workers)))
    return answers


@dataclass
class Verdict:
    went_back: list[tuple[Answer, int]]  # an answer older than one given before it, with that version
    late: list[tuple[Answer, int]]  # an answer older than the version committed within_s before it was asked
    failed: list[Answer]  # neither 200 nor 404
    delays: list[float]  # commit (as the LISTEN saw it) → first answer carrying it or newer, in s
    answers: int


def judge(log: CommitLog, answers: Iterable[Answer], within_s: float) -> Verdict:
    """Per replica: `answers` are one replica's."""
    went_back: list[tuple[Answer, int]] = []
    late: list[tuple[Answer, int]] = []
    failed: list[Answer] = []
    by_uid: dict[str, list[Answer]] = defaultdict(list)
    count = 0
    for answer in answers:
        by_uid[answer.uid].append(answer)
        count += 1
    delays: list[float] = []
    for uid, mine in by_uid.items():
        mine.sort(key=lambda a: a.asked)
        newest = 0
        for answer in mine:
            if answer.version < 0:
                failed.append(answer)
                continue
            if answer.version < newest:
                went_back.append((answer, newest))
            newest = max(newest, answer.version)
            wanted = log.latest(uid, answer.asked - within_s)
            if answer.version < wanted:
                late.append((answer, wanted))
        for seen, version in log.commits.get(uid, ()):
            first = next((a for a in mine if a.answered >= seen and a.version >= version), None)
            if first is not None:
                delays.append(max(0.0, first.answered - seen))
    return Verdict(went_back, late, failed, delays, count)


def percentile(values: Sequence[float], p: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]
