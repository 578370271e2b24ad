"""The read side: plain queries against the read model, as the read-only API role."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from datetime import datetime
from typing import Any

from psycopg import AsyncConnection
from psycopg.rows import dict_row
from psycopg_pool import AsyncConnectionPool

from api.served import Position

# order_uid, the JSON the API serves (body_json), updated_at, and the partition and offset of the
# record its version came from (api/served.py; NULL for a version of unknown coordinates).
Snapshot = tuple[str, bytes, datetime, int | None, int | None]

# Snapshots are read in binary format, body_json as UTF-8 bytes (convert_to): the bytes the API
# serves arrive as one exact-size bytes object, with no str decoded and encoded again on the way.
SNAPSHOTS_BY_UID = """
SELECT order_uid, convert_to(body_json, 'UTF8'), updated_at, version_partition, version_offset
FROM order_snapshots
WHERE order_uid = ANY(%(uids)s)
"""

# Warm-up: the most recently changed orders first (index order_snapshots_recent).
RECENT_SNAPSHOTS = """
SELECT order_uid, convert_to(body_json, 'UTF8'), updated_at, version_partition, version_offset
FROM order_snapshots
ORDER BY updated_at DESC, order_uid DESC
LIMIT %(limit)s
"""

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


RECENT_ORDERS = _summaries("")
RECENT_ORDERS_BEFORE = _summaries("WHERE (updated_at, order_uid) < (%(updated_at)s, %(order_uid)s)")

# The primary's flushed WAL position as an integer (api/standby.py says why flushed), with now().
NOW_AND_FLUSHED = "SELECT now(), (pg_current_wal_flush_lsn() - '0/0'::pg_lsn)::bigint"
FLUSHED = "SELECT (pg_current_wal_flush_lsn() - '0/0'::pg_lsn)::bigint"
# A standby's replay position as an integer; NULL on a server that is not in recovery.
REPLAYED = "SELECT (pg_last_wal_replay_lsn() - '0/0'::pg_lsn)::bigint"
# The read model's recorded positions in the orders topic (api/served.py).
APPLIED_POSITIONS = (
    "SELECT partition, next_offset, topic_id::text FROM applied_offsets WHERE topic = %(topic)s"
)
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
    cur = await conn.execute(APPLIED_POSITIONS, {"topic": topic})
    return {
        partition: Position(next_offset, topic_id)
        for partition, next_offset, topic_id in await cur.fetchall()
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


async def current_user(pool: AsyncConnectionPool) -> str:
    async with pool.connection() as conn:
        cur = await conn.execute(CURRENT_USER)
        row = await cur.fetchone()
        assert row is not None
        return row[0]


async def ping(pool: AsyncConnectionPool) -> None:
    async with pool.connection() as conn:
        await conn.execute(PING)
