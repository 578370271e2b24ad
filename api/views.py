"""The read side: plain queries against the read model, as the read-only API role."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from datetime import datetime
from typing import Any, NamedTuple

from psycopg import AsyncConnection
from psycopg.rows import dict_row
from psycopg_pool import AsyncConnectionPool

from api.served import Position
from orderview import readmodel

# order_uid, the JSON the API serves (body_json), updated_at, and the version's columns
# (version_time, version_partition, version_offset; NULL: unknown): what a cached entry is made of.
Snapshot = tuple[str, bytes, datetime, int | None, int | None, int | None]

# An erased order keeps its snapshot row without a body: every read of orders takes
# readmodel.LIVE (orderview/readmodel.py), so such a row is absent to the API.
#
# Snapshots are read in binary format, body_json as UTF-8 bytes (convert_to): the bytes the API
# serves arrive as one exact-size bytes object, with no str decoded and encoded again on the way.
# Each comes with its version: a replica keeps it, so a notification of a version it already holds
# changes nothing (api/versions.py).
SNAPSHOTS_BY_UID = f"""
SELECT order_uid, convert_to(body_json, 'UTF8'), updated_at, version_time, version_partition, version_offset
FROM order_snapshots
WHERE order_uid = ANY(%(uids)s) AND {readmodel.LIVE}
"""

# Warm-up: the most recently changed orders first (index order_snapshots_recent).
RECENT_SNAPSHOTS = f"""
SELECT order_uid, convert_to(body_json, 'UTF8'), updated_at, version_time, version_partition, version_offset
FROM order_snapshots
WHERE {readmodel.LIVE}
ORDER BY updated_at DESC, order_uid DESC
LIMIT %(limit)s
"""

# The orders changed since a time, erased ones included: a re-sync re-reads those it has cached,
# and SNAPSHOTS_BY_UID not finding an erased one is what evicts it (api/freshness.py).
CHANGED_SINCE = "SELECT order_uid FROM order_snapshots WHERE updated_at > %(since)s"


def _summaries(where: str) -> str:
    """A page of order summaries, newest first; only the page's rows are parsed (body_json)."""
    return f"""
SELECT order_uid,
       body ->> 'date_created' AS date_created,
       body ->> 'customer_id' AS customer_id,
       body -> 'delivery' ->> 'name' AS name,
       body -> 'delivery' ->> 'city' AS city,
       (body -> 'payment' ->> 'amount')::bigint AS amount,
       body -> 'payment' ->> 'currency' AS currency,
       jsonb_array_length(body -> 'items') AS items_count,
       updated_at
FROM (SELECT order_uid, body_json::jsonb AS body, updated_at FROM order_snapshots
      {where}
      ORDER BY updated_at DESC, order_uid DESC
      LIMIT %(limit)s) AS page
ORDER BY updated_at DESC, order_uid DESC
"""


RECENT_ORDERS = _summaries(f"WHERE {readmodel.LIVE}")
RECENT_ORDERS_BEFORE = _summaries(
    f"WHERE {readmodel.LIVE} AND (updated_at, order_uid) < (%(updated_at)s, %(order_uid)s)"
)

# An order's history (README: History): its versions are its rows in order_history (the earlier
# ones) and its snapshot (the current one). One statement, so one snapshot of the database: a
# version applied meanwhile cannot show twice (as current and as moved to the history) or not at
# all. The first row is the current version, with the count of the order's history rows and of
# those older than the cursor; the body only on the first page (%(first)s). Then the newest
# %(earlier)s history rows older than the cursor (the primary key's order). No row: no such
# order, or an erased one. A current version of unknown coordinates (NULL, kept by
# `rebuild --keep`) reads as -1, like a history row's.
HISTORY_PAGE = f"""
WITH current AS (
    SELECT coalesce(version_time, -1) AS version_time, coalesce(version_partition, -1) AS version_partition,
           coalesce(version_offset, -1) AS version_offset, source_partition, source_offset,
           record_timestamp, timestamp_type, applied_at, body_json
    FROM order_snapshots
    WHERE order_uid = %(order_uid)s AND {readmodel.LIVE}
)
SELECT true, version_time, version_partition, version_offset, source_partition, source_offset,
       record_timestamp, timestamp_type, applied_at,
       CASE WHEN %(first)s THEN convert_to(body_json, 'UTF8') END,
       (SELECT count(*) FROM order_history WHERE order_uid = %(order_uid)s),
       (SELECT count(*) FROM order_history
        WHERE order_uid = %(order_uid)s
          AND (version_time, version_partition, version_offset) < (%(time)s, %(partition)s, %(offset)s))
FROM current
UNION ALL
(SELECT false, version_time, version_partition, version_offset, source_partition, source_offset,
        record_timestamp, timestamp_type, applied_at, convert_to(body_json, 'UTF8'), NULL, NULL
 FROM order_history
 WHERE order_uid = %(order_uid)s AND EXISTS (SELECT FROM current)
   AND (version_time, version_partition, version_offset) < (%(time)s, %(partition)s, %(offset)s)
 ORDER BY version_time DESC, version_partition DESC, version_offset DESC
 LIMIT %(earlier)s)
"""

# The primary's flushed WAL position as an integer (api/standby.py says why flushed), with now().
NOW_AND_FLUSHED = "SELECT now(), (pg_current_wal_flush_lsn() - '0/0'::pg_lsn)::bigint"
FLUSHED = "SELECT (pg_current_wal_flush_lsn() - '0/0'::pg_lsn)::bigint"
# A standby's replay position as an integer; NULL on a server that is not in recovery.
REPLAYED = "SELECT (pg_last_wal_replay_lsn() - '0/0'::pg_lsn)::bigint"
# Which history of WAL the primary writes: its cluster, and its timeline (the first 8 hex digits
# of a WAL file's name), with its flushed position. A promoted standby writes a new timeline.
TIMELINE = """
SELECT (SELECT system_identifier FROM pg_control_system()),
       pg_walfile_name(pg_current_wal_flush_lsn()),
       (pg_current_wal_flush_lsn() - '0/0'::pg_lsn)::bigint
"""
CURRENT_USER = "SELECT current_user"
PING = "SELECT 1"


async def snapshots_by_uid(pool: AsyncConnectionPool, uids: Sequence[str]) -> list[Snapshot]:
    async with pool.connection() as conn:
        cur = await conn.execute(SNAPSHOTS_BY_UID, {"uids": list(uids)}, binary=True)
        return await cur.fetchall()


async def replayed_then_snapshots(
    pool: AsyncConnectionPool, uids: Sequence[str]
) -> tuple[int | None, list[Snapshot]]:
    """On a standby, in one round trip: its replay position, then the snapshots. The second
    statement's snapshot is taken after the first answered, so it holds at least that position."""
    async with pool.connection() as conn:
        async with conn.pipeline():
            position = await conn.execute(REPLAYED)
            snapshots = await conn.execute(SNAPSHOTS_BY_UID, {"uids": list(uids)}, binary=True)
        row = await position.fetchone()
        return (row[0] if row else None), await snapshots.fetchall()


async def snapshots_then_flushed(
    pool: AsyncConnectionPool, uids: Sequence[str]
) -> tuple[list[Snapshot], int]:
    """On the primary, in one round trip: the snapshots, then a WAL position at or past every
    commit they show."""
    async with pool.connection() as conn:
        async with conn.pipeline():
            snapshots = await conn.execute(SNAPSHOTS_BY_UID, {"uids": list(uids)}, binary=True)
            position = await conn.execute(FLUSHED)
        row = await position.fetchone()
        assert row is not None
        return await snapshots.fetchall(), row[0]


async def replayed(conn: AsyncConnection) -> int | None:
    cur = await conn.execute(REPLAYED)
    row = await cur.fetchone()
    return row[0] if row else None


async def now_and_flushed(conn: AsyncConnection) -> tuple[datetime, int]:
    cur = await conn.execute(NOW_AND_FLUSHED)
    row = await cur.fetchone()
    assert row is not None
    return row[0], row[1]


async def applied_positions(conn: AsyncConnection, topic: str) -> dict[int, Position]:
    cur = await conn.execute(readmodel.READ_POSITIONS, {"topic": topic})
    return {
        partition: Position(next_offset, str(topic_id) if topic_id is not None else None)
        for partition, next_offset, _, _, _, topic_id in await cur.fetchall()
    }


async def timeline(conn: AsyncConnection) -> tuple[tuple[int, int], int]:
    """On the primary: (its cluster's system identifier, its timeline), and its flushed position."""
    cur = await conn.execute(TIMELINE)
    row = await cur.fetchone()
    assert row is not None
    system, wal_file, flushed = row
    return (system, int(wal_file[:8], 16)), flushed


async def recent_snapshots(conn: AsyncConnection, limit: int, chunk: int) -> AsyncIterator[list[Snapshot]]:
    """Stream through a server-side cursor, `chunk` rows per round trip."""
    async with conn.transaction():
        cur = conn.cursor(name="orderview_warm_up", binary=True)
        await cur.execute(RECENT_SNAPSHOTS, {"limit": limit})
        while rows := await cur.fetchmany(chunk):
            yield rows


async def changed_since(conn: AsyncConnection, since: datetime, chunk: int) -> AsyncIterator[list[str]]:
    async with conn.transaction():
        cur = conn.cursor(name="orderview_resync")
        await cur.execute(CHANGED_SINCE, {"since": since})
        while rows := await cur.fetchmany(chunk):
            yield [row[0] for row in rows]


async def recent_orders(
    pool: AsyncConnectionPool, limit: int, before: tuple[datetime, str] | None
) -> list[dict[str, Any]]:
    async with pool.connection() as conn:
        cur = conn.cursor(row_factory=dict_row)
        if before is None:
            await cur.execute(RECENT_ORDERS, {"limit": limit})
        else:
            await cur.execute(
                RECENT_ORDERS_BEFORE, {"limit": limit, "updated_at": before[0], "order_uid": before[1]}
            )
        return await cur.fetchall()


class StoredVersion(NamedTuple):
    """One version of an order as the read model keeps it (sql/006)."""

    time: int  # the version, compared as (time, partition, offset); -1 in each: unknown
    partition: int
    offset: int
    source_partition: int  # where its record is in the topic; -1: unknown
    source_offset: int
    record_timestamp: int | None  # ms
    timestamp_type: int | None  # 0 CreateTime, 1 LogAppendTime
    applied_at: datetime
    body: bytes | None  # the order's JSON; None for the current version past the first page


class HistoryRows(NamedTuple):
    current: StoredVersion
    earlier: list[StoredVersion]  # newest first
    history_rows: int  # all of the order's history rows
    older: int  # its history rows older than the cursor


# Older than any version: a page asked without a cursor.
NEWEST = (2**63 - 1, 2**31 - 1, 2**63 - 1)


async def order_history(
    pool: AsyncConnectionPool, order_uid: str, earlier: int, before: tuple[int, int, int] | None
) -> HistoryRows | None:
    """The current version (its body when `before` is None), and the newest `earlier` history
    rows older than `before`; None for an unknown or erased order."""
    time, partition, offset = NEWEST if before is None else before
    params = {
        "order_uid": order_uid,
        "first": before is None,
        "time": time,
        "partition": partition,
        "offset": offset,
        "earlier": earlier,
    }
    async with pool.connection() as conn:
        cur = await conn.execute(HISTORY_PAGE, params, binary=True)
        rows = await cur.fetchall()
    current = next((row for row in rows if row[0]), None)
    if current is None:
        return None
    older = sorted((StoredVersion(*row[1:10]) for row in rows if not row[0]), reverse=True)
    return HistoryRows(StoredVersion(*current[1:10]), older, current[10], current[11])


async def current_user(pool: AsyncConnectionPool) -> str:
    async with pool.connection() as conn:
        cur = await conn.execute(CURRENT_USER)
        row = await cur.fetchone()
        assert row is not None
        return row[0]


async def ping(pool: AsyncConnectionPool) -> None:
    async with pool.connection() as conn:
        await conn.execute(PING)
