"""Versions, histories and erasures written into the read model with SQL, as the projector writes
them (sql/006_history_and_erasure.sql), and notified as it notifies them (orderview/readmodel.py).

The API's tests (and the bench's history reads) need orders with many versions and erased
orders before the projector makes them; these helpers write exactly the rows the contract
describes, nothing more:
- an order's current version is its `order_snapshots` row, every earlier one a row of
  `order_history`, all with their version (time, partition, offset), source coordinates, record
  timestamp and type, and when they were applied;
- an erased order keeps its snapshot row with `body_json` NULL and the erasure's version; its
  normalized rows and its history rows are deleted.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import orjson
import psycopg

from orderview import readmodel
from orderview.settings import Settings

INSERT_HISTORY = """
INSERT INTO order_history (order_uid, version_time, version_partition, version_offset, source_partition,
                           source_offset, record_timestamp, timestamp_type, applied_at, body_json)
VALUES (%(uid)s, %(time)s, %(partition)s, %(offset)s, %(source_partition)s, %(source_offset)s,
        %(record_timestamp)s, %(timestamp_type)s, %(applied_at)s, %(body)s)
"""

UPSERT_SNAPSHOT = """
INSERT INTO order_snapshots AS s (order_uid, body_json, source_partition, source_offset, version_time,
                                  version_partition, version_offset, record_timestamp, timestamp_type,
                                  applied_at, updated_at)
VALUES (%(uid)s, %(body)s, %(source_partition)s, %(source_offset)s, %(time)s, %(partition)s, %(offset)s,
        %(record_timestamp)s, %(timestamp_type)s, %(applied_at)s, now())
ON CONFLICT (order_uid) DO UPDATE
SET body_json = excluded.body_json, source_partition = excluded.source_partition,
    source_offset = excluded.source_offset, version_time = excluded.version_time,
    version_partition = excluded.version_partition, version_offset = excluded.version_offset,
    record_timestamp = excluded.record_timestamp, timestamp_type = excluded.timestamp_type,
    applied_at = excluded.applied_at, updated_at = now()
"""

DELETE_HISTORY = "DELETE FROM order_history WHERE order_uid = %(uid)s"
DELETE_NORMALIZED = "DELETE FROM orders WHERE order_uid = %(uid)s"  # the rest by cascade
NOTIFY = "SELECT pg_notify(%(channel)s, %(payload)s)"

_last_time = 0


def later_times(n: int) -> list[int]:
    """Version times (ms) later than any given before in this process: each order's versions in
    the order they are asked for, every one newer than what was written before it."""
    global _last_time
    first = max(time.time_ns() // 1_000_000, _last_time + 1)
    _last_time = first + n - 1
    return list(range(first, first + n))


@dataclass(frozen=True)
class Version:
    """One version of an order as the read model keeps it; `order` None is an erasure."""

    order: dict | None
    time: int  # the version's time (ms): its partition's clock at the record
    partition: int = 0
    offset: int = 0
    source_partition: int | None = None  # where the record is; None: the version's own
    source_offset: int | None = None
    record_timestamp: int | None = field(default=None)  # None: the version's time
    timestamp_type: int | None = 0  # 0 CreateTime, 1 LogAppendTime, None unknown
    applied_at: datetime | None = None  # None: the version's time

    def params(self, uid: str) -> dict:
        applied = self.applied_at or datetime.fromtimestamp(self.time / 1000, UTC) + timedelta(
            milliseconds=40
        )
        return {
            "uid": uid,
            "body": None if self.order is None else orjson.dumps(self.order).decode(),
            "time": self.time,
            "partition": self.partition,
            "offset": self.offset,
            "source_partition": self.partition if self.source_partition is None else self.source_partition,
            "source_offset": self.offset if self.source_offset is None else self.source_offset,
            "record_timestamp": self.time if self.record_timestamp is None else self.record_timestamp,
            "timestamp_type": self.timestamp_type,
            "applied_at": applied,
        }

    def readmodel_version(self) -> readmodel.Version:
        return readmodel.Version(self.time, self.partition, self.offset)


def versions_of(orders: Sequence[dict], partition: int = 0, first_offset: int = 0) -> list[Version]:
    """The orders as successive versions on one partition, each newer than anything written before."""
    times = later_times(len(orders))
    return [
        Version(order, t, partition, first_offset + i)
        for i, (order, t) in enumerate(zip(orders, times, strict=True))
    ]


async def _notify(conn: psycopg.AsyncConnection, settings: Settings, uid: str, version: Version) -> None:
    for payload in readmodel.encode_changes([(uid, version.readmodel_version())]):
        await conn.execute(NOTIFY, {"channel": settings.notify_channel, "payload": payload})


async def write_history(settings: Settings, uid: str, versions: Sequence[Version]) -> None:
    """The order's versions, oldest first, replacing what the read model held of it: the last
    one current (its snapshot), the others its history. NOTIFYed at commit, as the projector does."""
    *earlier, current = versions
    async with await psycopg.AsyncConnection.connect(settings.dsn("projector")) as conn:
        await conn.execute(DELETE_HISTORY, {"uid": uid})
        for version in earlier:
            await conn.execute(INSERT_HISTORY, version.params(uid))
        await conn.execute(UPSERT_SNAPSHOT, current.params(uid))
        await _notify(conn, settings, uid, current)
        await conn.commit()


async def erase(
    settings: Settings,
    uid: str,
    at: Version | None = None,
    before_commit: Callable[[], Awaitable[object]] | None = None,
) -> Version:
    """A tombstone applied: the order's snapshot keeps only its uid and the erasure's version,
    its normalized rows and history are deleted. `before_commit` runs with the rows written and
    not yet committed. Returns the erasure's version."""
    erasure = at or Version(None, later_times(1)[0])
    async with await psycopg.AsyncConnection.connect(settings.dsn("projector")) as conn:
        await conn.execute(DELETE_NORMALIZED, {"uid": uid})
        await conn.execute(DELETE_HISTORY, {"uid": uid})
        await conn.execute(UPSERT_SNAPSHOT, erasure.params(uid))
        await _notify(conn, settings, uid, erasure)
        if before_commit is not None:
            await before_commit()
        await conn.commit()
    return erasure


def snapshot_row(settings: Settings, uid: str) -> tuple | None:
    """(body_json, version_time) of the order's snapshot row, or None without one."""
    with psycopg.connect(settings.dsn("owner")) as conn:
        return conn.execute(
            "SELECT body_json, version_time FROM order_snapshots WHERE order_uid = %s", [uid]
        ).fetchone()
