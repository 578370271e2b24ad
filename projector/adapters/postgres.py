"""The read model in PostgreSQL, as the projector reads and writes it: positions, versions, rows,
history, redrives, losses and notifications. Every function runs in a transaction the caller owns.

Partitions are owned one writer at a time: `own` takes a session-level advisory lock per
partition (released by `release`, or by the server when the connection dies), so that a worker
of an older consumer generation still finishing a batch and its successor never interleave, also
while letters are sent outside any transaction.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Sequence

import orjson
import psycopg

from orderview import readmodel
from projector.adapters.rows import Rows, Stale
from projector.core.plan import Advance, Change, Fresh, Head, Plan, Position, decide
from projector.core.records import Record
from projector.core.verdicts import Order, compact_json
from projector.core.versions import UNKNOWN, Version
from projector.faults import EVENT_FAULTS

# -- owning partitions ------------------------------------------------------------------------

# Session locks keyed by (hash of the topic's name, partition): taken by workers and by rebuilds.
TRY_OWN = """
SELECT p, pg_try_advisory_lock(hashtext(%(topic)s), p) FROM unnest(%(partitions)s::int[]) AS p ORDER BY p
"""
RELEASE = "SELECT pg_advisory_unlock(hashtext(%(topic)s), p) FROM unnest(%(partitions)s::int[]) AS p"

# -- reading ----------------------------------------------------------------------------------

LOCK_POSITIONS = """
SELECT partition, next_offset, clock, last_timestamp, last_digest, topic_id FROM applied_offsets
WHERE topic = %(topic)s AND partition = ANY(%(partitions)s)
FOR UPDATE
"""

READ_POSITIONS_OF = readmodel.READ_POSITIONS + "AND partition = ANY(%(partitions)s)"

# The versions the read model holds of these orders, locked until the transaction ends: a worker
# writing the same order from another partition waits, then compares with what it wrote.
LOCK_HEADS = """
SELECT order_uid, body_json, version_time, version_partition, version_offset
FROM order_snapshots WHERE order_uid = ANY(%(uids)s)
FOR UPDATE
"""

SEEN_REDRIVES = "SELECT redrive_of FROM redrives WHERE redrive_of = ANY(%(ofs)s)"

# -- writing ----------------------------------------------------------------------------------

_SNAPSHOT_VALUES = """
unnest(%(uids)b::text[], %(bodies)b::text[], %(partitions)b::int[], %(offsets)b::bigint[],
       %(version_times)b::bigint[], %(version_partitions)b::int[], %(version_offsets)b::bigint[],
       %(record_timestamps)b::bigint[], %(timestamp_types)b::smallint[])
"""

# Orders the read model did not have (LOCK_HEADS found no row), COPYed: one that another worker
# inserted meanwhile collides with its primary key, and the batch is planned again.
COPY_SNAPSHOTS = """
COPY order_snapshots
    (order_uid, body_json, source_partition, source_offset, version_time, version_partition,
     version_offset, record_timestamp, timestamp_type)
FROM STDIN
"""
SNAPSHOT_KEY = "order_snapshots_pkey"
# What psycopg dumps COPY_SNAPSHOTS' values as (`_snapshot_row`; rows.copy_types says why).
SNAPSHOT_TYPES = ("text", "text", "int8", "int8", "int8", "int8", "int8", "int8", "int8")

REPLACE_SNAPSHOTS = f"""
UPDATE order_snapshots AS s
SET body_json = n.body_json, source_partition = n.source_partition, source_offset = n.source_offset,
    version_time = n.version_time, version_partition = n.version_partition,
    version_offset = n.version_offset, record_timestamp = n.record_timestamp,
    timestamp_type = n.timestamp_type, applied_at = now(), updated_at = now()
FROM {_SNAPSHOT_VALUES}
     AS n(order_uid, body_json, source_partition, source_offset, version_time, version_partition,
          version_offset, record_timestamp, timestamp_type)
WHERE s.order_uid = n.order_uid
"""

# The same order again with a newer version: only the version moves (it decides what comes later).
BUMP_VERSIONS = """
UPDATE order_snapshots AS s
SET version_time = n.version_time, version_partition = n.version_partition,
    version_offset = n.version_offset, updated_at = now()
FROM unnest(%(uids)s::text[], %(version_times)s::bigint[], %(version_partitions)s::int[],
            %(version_offsets)s::bigint[]) AS n(order_uid, version_time, version_partition, version_offset)
WHERE s.order_uid = n.order_uid
"""

# The version being replaced moves to the history (sql/006), before REPLACE_SNAPSHOTS overwrites it.
ARCHIVE_CURRENT = f"""
INSERT INTO order_history
    (order_uid, version_time, version_partition, version_offset, source_partition, source_offset,
     record_timestamp, timestamp_type, applied_at, body_json)
SELECT order_uid, coalesce(version_time, -1), coalesce(version_partition, -1), coalesce(version_offset, -1),
       source_partition, source_offset, record_timestamp, timestamp_type, applied_at, body_json
FROM order_snapshots WHERE order_uid = ANY(%(uids)s) AND {readmodel.LIVE}
ON CONFLICT DO NOTHING
"""

# Versions applied and replaced within one batch.
INSERT_HISTORY = """
INSERT INTO order_history
    (order_uid, version_time, version_partition, version_offset, source_partition, source_offset,
     record_timestamp, timestamp_type, applied_at, body_json)
SELECT u, vt, vp, vo, sp, so, rt, tt, now(), b
FROM unnest(%(uids)b::text[], %(version_times)b::bigint[], %(version_partitions)b::int[],
            %(version_offsets)b::bigint[], %(partitions)b::int[], %(offsets)b::bigint[],
            %(record_timestamps)b::bigint[], %(timestamp_types)b::smallint[], %(bodies)b::text[])
     AS h(u, vt, vp, vo, sp, so, rt, tt, b)
ON CONFLICT DO NOTHING
"""

# An erasure deletes the order's history: nothing of the customer stays.
CLEAR_HISTORY = "DELETE FROM order_history WHERE order_uid = ANY(%(uids)s)"

# A new version's normalized rows that differ from the old ones (projector/adapters/rows.py) are
# deleted here, then COPYed from the message like a new order's: a whole order (its deliveries,
# payments and items by cascade), or rows of the child tables by primary key.
DELETE_ORDERS = "DELETE FROM orders WHERE order_uid = ANY(%(uids)s)"
DELETE_DELIVERIES = "DELETE FROM deliveries WHERE order_uid = ANY(%(uids)s)"
DELETE_PAYMENTS = "DELETE FROM payments WHERE order_uid = ANY(%(uids)s)"
DELETE_ITEMS = """
DELETE FROM items AS i
USING unnest(%(uids)s::text[], %(positions)s::int[]) AS d(order_uid, position)
WHERE i.order_uid = d.order_uid AND i.position = d.position
"""

NOTE_REDRIVES = """
INSERT INTO redrives (redrive_of, record_partition, record_offset)
SELECT * FROM unnest(%(ofs)s::text[], %(partitions)s::int[], %(offsets)s::bigint[])
ON CONFLICT (redrive_of) DO NOTHING
"""

# Offsets the log deleted (retention, delete-records) before the projector applied them: a loss it
# could not prevent, kept for the audit (projector/audit.py).
RECORD_LOST = """
INSERT INTO lost_records (topic, partition, first_offset, end_offset)
SELECT %(topic)s, * FROM unnest(%(partitions)s::int[], %(firsts)s::bigint[], %(ends)s::bigint[])
ON CONFLICT (topic, partition, first_offset) DO UPDATE
SET end_offset = greatest(lost_records.end_offset, excluded.end_offset)
"""

# Positions only move forward; the clock, digest and timestamp are those of the record just before,
# the topic id that of the incarnation they were read from.
RECORD_POSITIONS = """
INSERT INTO applied_offsets AS a (topic, partition, next_offset, clock, last_timestamp, last_digest, topic_id)
SELECT %(topic)s, p.*, %(topic_id)s::uuid
FROM unnest(%(partitions)s::int[], %(next_offsets)s::bigint[], %(clocks)s::bigint[],
            %(timestamps)s::bigint[], %(digests)s::bytea[]) AS p
ON CONFLICT (topic, partition) DO UPDATE
SET next_offset = excluded.next_offset, clock = excluded.clock, last_timestamp = excluded.last_timestamp,
    last_digest = excluded.last_digest, topic_id = excluded.topic_id, updated_at = now()
WHERE a.next_offset < excluded.next_offset
"""

# All of a batch's payloads in one statement (one round trip); each names orders of its own.
NOTIFY = "SELECT pg_notify(%(channel)s, payload) FROM unnest(%(payloads)s::text[]) AS payload"

# The canary a refusal is checked against (`database_refuses_any_order`): a valid order of its own
# but for its order_uid, which the schema forbids (":"), so that no producer's order can hold it in
# the read model and make the canary collide with it.
CANARY = {
    "order_uid": "orderview:canary",
    "track_number": "CANARY",
    "entry": "WBIL",
    "delivery": {
        "name": "Canary",
        "phone": "+10000000000",
        "zip": "0",
        "city": "Canary",
        "address": "Canary 1",
        "region": "Canary",
        "email": "canary@example.com",
    },
    "payment": {
        "transaction": "orderview-canary",
        "request_id": "",
        "currency": "USD",
        "provider": "wbpay",
        "amount": 100,
        "payment_dt": 1637907727,
        "bank": "alpha",
        "delivery_cost": 0,
        "goods_total": 100,
        "custom_fee": 0,
    },
    "items": [
        {
            "chrt_id": 1,
            "track_number": "CANARY",
            "price": 100,
            "rid": "canary",
            "name": "Canary",
            "sale": 0,
            "size": "0",
            "total_price": 100,
            "nm_id": 1,
            "brand": "Canary",
            "status": 202,
        }
    ],
    "locale": "en",
    "internal_signature": "",
    "customer_id": "canary",
    "delivery_service": "meest",
    "shardkey": "9",
    "sm_id": 99,
    "date_created": "2021-11-26T06:22:19Z",
    "oof_shard": "1",
}


class Conflict(Exception):
    """Another worker inserted one of the batch's new orders meanwhile: plan again."""


async def own(
    conn: psycopg.AsyncConnection, topic: str, partitions: Sequence[int]
) -> tuple[list[int], dict[int, Position]]:
    """Take the partitions' advisory locks, and read where they stand (one round trip); return
    the partitions another session holds (none taken then), and the positions."""
    params = {"topic": topic, "partitions": sorted(partitions)}
    async with conn.pipeline():
        owned = await conn.execute(TRY_OWN, params)
        standing = await conn.execute(READ_POSITIONS_OF, params)
    rows = await owned.fetchall()
    positions = positions_of(await standing.fetchall())
    held = [p for p, taken in rows if not taken]
    if held:
        await release(conn, topic, [p for p, taken in rows if taken])
    return held, positions


async def release(conn: psycopg.AsyncConnection, topic: str, partitions: Sequence[int]) -> None:
    if partitions:
        await conn.execute(RELEASE, {"topic": topic, "partitions": list(partitions)})


async def lock(
    conn: psycopg.AsyncConnection,
    topic: str,
    partitions: Iterable[int],
    uids: Iterable[str],
    ofs: Iterable[str],
) -> tuple[dict[int, Position], dict[str, Head], set[str]]:
    """In one round trip: the partitions' positions and the orders' versions, locked until the
    transaction ends, and which of these redrives were taken before."""
    uids, ofs = sorted(set(uids)), sorted(set(ofs))
    async with conn.pipeline():
        positions = await conn.execute(LOCK_POSITIONS, {"topic": topic, "partitions": sorted(partitions)})
        heads = await conn.execute(LOCK_HEADS, {"uids": uids}) if uids else None
        seen = await conn.execute(SEEN_REDRIVES, {"ofs": ofs}) if ofs else None
    return (
        positions_of(await positions.fetchall()),
        {uid: Head(version_of(t, p, o), body) for uid, body, t, p, o in await heads.fetchall()}
        if heads
        else {},
        {of for (of,) in await seen.fetchall()} if seen else set(),
    )


async def read_positions(conn: psycopg.AsyncConnection, topic: str) -> dict[int, Position]:
    cur = await conn.execute(readmodel.READ_POSITIONS, {"topic": topic})
    return positions_of(await cur.fetchall())


def positions_of(rows: list[tuple]) -> dict[int, Position]:
    return {
        p: Position(offset, clock, ts, bytes(d) if d is not None else None, topic_id)
        for p, offset, clock, ts, d, topic_id in rows
    }


async def lock_heads(conn: psycopg.AsyncConnection, uids: Iterable[str]) -> dict[str, Head]:
    uids = sorted(set(uids))
    if not uids:
        return {}
    cur = await conn.execute(LOCK_HEADS, {"uids": uids})
    return {uid: Head(version_of(t, p, o), body) for uid, body, t, p, o in await cur.fetchall()}


def version_of(time: int | None, partition: int | None, offset: int | None) -> Version:
    if time is None or partition is None or offset is None:
        return UNKNOWN
    return Version(time, partition, offset)


async def write_changes(
    conn: psycopg.AsyncConnection, changes: Sequence[Change], history: bool = True
) -> None:
    """What the batch does to each order: snapshot, history (unless `history` is off: earlier
    versions are then not kept), normalized rows. Conflict if another worker inserted one of its
    new orders meanwhile."""
    await copy_snapshots(conn, [c for c in changes if not c.known])
    known = [c for c in changes if c.known]
    await _execute(conn, CLEAR_HISTORY, {"uids": [c.uid for c in changes if c.clear_history]})
    await _execute(conn, ARCHIVE_CURRENT, {"uids": [c.uid for c in known if c.archive and history]})
    pasts = [(c.uid, p) for c in changes for p in c.history] if history else []
    if pasts:
        await conn.execute(
            INSERT_HISTORY,
            {
                "uids": [uid for uid, _ in pasts],
                "version_times": [p.version.time for _, p in pasts],
                "version_partitions": [p.version.partition for _, p in pasts],
                "version_offsets": [p.version.offset for _, p in pasts],
                "partitions": [p.source.partition for _, p in pasts],
                "offsets": [p.source.offset for _, p in pasts],
                "record_timestamps": [p.source.timestamp_ms for _, p in pasts],
                "timestamp_types": [p.source.timestamp_type for _, p in pasts],
                "bodies": [p.body for _, p in pasts],
            },
        )
    replaced = [c for c in known if c.source is not None]
    if replaced:
        await conn.execute(REPLACE_SNAPSHOTS, _snapshots(replaced))
    bumped = [c for c in known if c.source is None]
    if bumped:
        await conn.execute(
            BUMP_VERSIONS,
            {
                "uids": [c.uid for c in bumped],
                "version_times": [c.version.time for c in bumped],
                "version_partitions": [c.version.partition for c in bumped],
                "version_offsets": [c.version.offset for c in bumped],
            },
        )
    rows, stale = Rows(), Stale()
    for c in changes:
        if c.rows_from is not None or c.document is not None:
            rows.replace(orjson.loads(c.rows_from) if c.rows_from is not None else None, c.document, stale)
    await delete_rows(conn, stale)
    await copy_rows(conn, rows)


async def record(
    conn: psycopg.AsyncConnection, topic: str, topic_id: uuid.UUID, plan: Plan, channel: str
) -> None:
    """The plan's redrives, losses and positions, and the notification of what changed."""
    if plan.redrives:
        await conn.execute(
            NOTE_REDRIVES,
            {
                "ofs": [of for of, _, _ in plan.redrives],
                "partitions": [p for _, p, _ in plan.redrives],
                "offsets": [o for _, _, o in plan.redrives],
            },
        )
    lost = plan.fresh.lost
    if lost:
        await conn.execute(
            RECORD_LOST,
            {
                "topic": topic,
                "partitions": [p for p, _, _ in lost],
                "firsts": [f for _, f, _ in lost],
                "ends": [e for _, _, e in lost],
            },
        )
    await record_positions(conn, topic, topic_id, list(plan.fresh.advances.values()))
    await notify(conn, channel, plan.notifications())


async def record_positions(
    conn: psycopg.AsyncConnection, topic: str, topic_id: uuid.UUID | None, advances: Sequence[Advance]
) -> None:
    if not advances:
        return
    await conn.execute(
        RECORD_POSITIONS,
        {
            "topic": topic,
            "partitions": [a.partition for a in advances],
            "next_offsets": [a.next_offset for a in advances],
            "clocks": [a.clock for a in advances],
            "timestamps": [a.last_timestamp for a in advances],
            "digests": [a.last_digest for a in advances],
            "topic_id": topic_id,
        },
    )


async def notify(conn: psycopg.AsyncConnection, channel: str, changes: Iterable[tuple[str, Version]]) -> None:
    """Delivered at commit, to every API replica listening (orderview/readmodel.py)."""
    payloads = list(readmodel.encode_changes(changes))
    if payloads:
        await conn.execute(NOTIFY, {"channel": channel, "payloads": payloads})


async def refused_changes(
    conn: psycopg.AsyncConnection, changes: Sequence[Change]
) -> dict[tuple[int, int], str]:
    """Which changes the database refuses, found by halving the batch the database refused, each
    part tried under a savepoint (all rolled back): source coordinates -> the database's words.
    A part refused whose halves both pass was refused together; what no single change explains is
    left out. One refused order in 2,000 costs about 22 tries instead of 2,000."""
    refused: dict[tuple[int, int], str] = {}

    async def refused_within(part: Sequence[Change]) -> None:
        if len(part) == 1:
            error = await _refusal(conn, part)
            where = part[0].source.where if part[0].source is not None else None
            if error is not None and where is not None:
                refused[where] = error.diag.message_primary or str(error)
            return
        for half in (part[: len(part) // 2], part[len(part) // 2 :]):
            if await _refusal(conn, half) is not None:
                await refused_within(half)

    if changes:
        await refused_within(changes)
    return refused


async def _refusal(conn: psycopg.AsyncConnection, changes: Sequence[Change]) -> psycopg.Error | None:
    """The database's refusal of these changes together, written under a savepoint and rolled
    back; None if it takes them."""
    try:
        async with conn.transaction(force_rollback=True):
            await write_changes(conn, changes)
    except EVENT_FAULTS as exc:
        return exc
    return None


async def database_refuses_any_order(conn: psycopg.AsyncConnection) -> psycopg.Error | None:
    """Whether the database refuses the canary, a valid order of its own, written under a
    savepoint and rolled back: then refusals are the database's fault, not the orders'."""
    canary = Change(
        uid=str(CANARY["order_uid"]),
        version=UNKNOWN,
        body="{}",
        source=None,
        document=CANARY,
        known=False,
        rows_from=None,
        archive=False,
        clear_history=False,
    )
    try:
        async with conn.transaction(force_rollback=True):
            await copy_snapshots(conn, [canary])  # the way new orders are written
            await copy_rows(conn, Rows.of([CANARY]))
    except EVENT_FAULTS as exc:
        return exc
    return None


async def copy_snapshots(conn: psycopg.AsyncConnection, new: Sequence[Change]) -> None:
    """The snapshots of orders new to the read model; Conflict if another worker inserted one of
    them meanwhile."""
    if not new:
        return
    try:
        async with conn.cursor() as cur, cur.copy(COPY_SNAPSHOTS) as copy:
            copy.set_types(SNAPSHOT_TYPES)
            for c in new:
                await copy.write_row(_snapshot_row(c))
    except psycopg.errors.UniqueViolation as exc:
        if exc.diag.constraint_name != SNAPSHOT_KEY:
            raise
        raise Conflict("an order new to this batch was inserted by another worker meanwhile") from exc


async def delete_rows(conn: psycopg.AsyncConnection, stale: Stale) -> None:
    """Delete the rows the changes' rows replace (and those of orders erased)."""
    await _execute(conn, DELETE_ORDERS, {"uids": stale.orders})
    await _execute(conn, DELETE_DELIVERIES, {"uids": stale.deliveries})
    await _execute(conn, DELETE_PAYMENTS, {"uids": stale.payments})
    if stale.items:
        await conn.execute(
            DELETE_ITEMS,
            {"uids": [uid for uid, _ in stale.items], "positions": [i for _, i in stale.items]},
        )


async def copy_rows(conn: psycopg.AsyncConnection, rows: Rows) -> None:
    """COPY normalized rows of orders that have none (new, or whose old rows were deleted)."""
    async with conn.cursor() as cur:
        for statement, types, table_rows in rows.by_statement():
            if not table_rows:
                continue
            async with cur.copy(statement) as copy:
                copy.set_types(types)
                for row in table_rows:
                    await copy.write_row(row)


async def _execute(conn: psycopg.AsyncConnection, statement: str, params: dict[str, list]) -> None:
    if params["uids"]:
        await conn.execute(statement, params)


# The parameters of _SNAPSHOT_VALUES, in the order of its columns (and of COPY_SNAPSHOTS').
SNAPSHOT_PARAMS = (
    "uids",
    "bodies",
    "partitions",
    "offsets",
    "version_times",
    "version_partitions",
    "version_offsets",
    "record_timestamps",
    "timestamp_types",
)


def _snapshot_row(c: Change) -> tuple:
    """A change's snapshot values, in the order of SNAPSHOT_PARAMS."""
    s = c.source
    return (
        c.uid,
        c.body,
        s.partition if s is not None else -1,
        s.offset if s is not None else -1,
        c.version.time,
        c.version.partition,
        c.version.offset,
        s.timestamp_ms if s is not None else None,
        s.timestamp_type if s is not None else None,
    )


def _snapshots(changes: Sequence[Change]) -> dict[str, list]:
    rows = [_snapshot_row(c) for c in changes]
    return {name: [row[i] for row in rows] for i, name in enumerate(SNAPSHOT_PARAMS)}


async def write_orders(
    conn: psycopg.AsyncConnection,
    orders: Sequence[tuple[int, dict]],
    partition: int = 0,
    time_ms: int | None = None,
) -> list[tuple[str, Version]]:
    """Orders written by the projector's own rules and writes, without Kafka (for seeding: tests,
    the bench): each (offset, order) is a record of `partition` at that offset, its version's time
    `time_ms` (the offset when None). Returns the changes to notify."""
    fresh = Fresh()
    verdicts: dict[tuple[int, int], Order] = {}
    for offset, order in orders:
        body = compact_json(order)
        time = offset if time_ms is None else time_ms
        record = Record(partition, offset, order["order_uid"].encode(), body.encode(), time)
        fresh.records.append((record, Version(time, partition, offset)))
        verdicts[record.where] = Order(order["order_uid"], body, order)
    heads = await lock_heads(conn, {v.uid for v in verdicts.values()})
    plan = decide(fresh, verdicts, heads, (), {})
    await write_changes(conn, plan.changes)
    return plan.notifications()
