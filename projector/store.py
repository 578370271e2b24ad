"""Writes accepted orders into the read model, inside a transaction the caller owns."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass

import orjson
import psycopg

from projector import queries, versions
from projector.messages import Event
from projector.rows import Rows

# PostgreSQL refuses NOTIFY payloads of 8000 bytes or more.
NOTIFY_PAYLOAD_LIMIT = 7900


@dataclass(frozen=True, slots=True)
class Accepted:
    """A valid order event and where it came from."""

    order_uid: str
    body: str  # the order as compact JSON text, keys in the sender's order
    partition: int
    offset: int
    document: dict | None = None  # the parsed body, when the caller has it
    # The event this version is (projector/versions.py); None: the record itself, time unknown.
    event: Event | None = None

    def same_version(self, other: Accepted | Current) -> bool:
        """The same JSON, as the database compares them (order_snapshots.body_json)."""
        return self.body == other.body

    def parsed(self) -> dict:
        return self.document if self.document is not None else orjson.loads(self.body)

    def version(self) -> Event:
        return self.event if self.event is not None else Event(self.partition, self.offset, None)


@dataclass(frozen=True, slots=True)
class Current:
    """An order's version in the read model, locked for the transaction."""

    body: str
    event: Event | None


@dataclass(frozen=True, slots=True)
class Stale:
    """A version not applied: the read model holds a newer one (`current`)."""

    event: Accepted
    current: Event | None

    def reason(self) -> str:
        mine = self.event.version()
        return (
            f"order {self.event.order_uid}: this version ({versions.describe(mine)}) is older than the "
            f"one applied ({versions.describe(self.current)}); within a partition the later offset "
            "wins, across partitions the later record timestamp"
        )


@dataclass(frozen=True, slots=True)
class Written:
    changed: list[str]  # order_uids whose JSON changed: inserted, or replaced by a newer version
    stale: list[Stale]  # versions older than the one in the read model, not applied


def compact_json(order: dict) -> str:
    """An accepted order as stored and served: compact JSON in the sender's key order."""
    return orjson.dumps(order).decode()


def latest_versions(events: Sequence[Accepted]) -> list[Accepted]:
    """Per order_uid, the newest version among `events` (projector/versions.py); an identical
    re-send does not replace it, so the source offset is the same in whatever batches the events
    arrive (live or in a rebuild). The others are superseded within the batch, as if applied in
    order: not stale, which is what arrives after a newer version was applied."""
    latest: dict[str, Accepted] = {}
    for e in events:
        kept = latest.get(e.order_uid)
        if kept is None or (not kept.same_version(e) and versions.newer(e.version(), kept.version())):
            latest[e.order_uid] = e
    return list(latest.values())


async def write_orders(conn: psycopg.AsyncConnection, events: Sequence[Accepted]) -> list[str]:
    """`write_versions`, for callers that only need the order_uids that changed."""
    return (await write_versions(conn, events)).changed


async def write_versions(conn: psycopg.AsyncConnection, events: Sequence[Accepted]) -> Written:
    """Write the newest version of each order among `events` where it is newer than the read
    model's: a new order is inserted, a newer version replaces the snapshot and the normalized
    rows, an identical re-send changes nothing, an older version is returned as stale.

    New orders (the common case) cost one statement; known ones a locking read and an update."""
    latest = latest_versions(events)
    if not latest:
        return Written([], [])
    cur = await conn.execute(queries.INSERT_NEW_SNAPSHOTS, _snapshot_params(latest))
    inserted = {uid for (uid,) in await cur.fetchall()}
    known = [e for e in latest if e.order_uid not in inserted]
    replaced, stale = await _newer_than_current(conn, known)
    if replaced:
        await conn.execute(queries.REPLACE_SNAPSHOTS, _snapshot_params(replaced))
        await conn.execute(queries.DELETE_NORMALIZED, {"uids": [e.order_uid for e in replaced]})
    written = [e for e in latest if e.order_uid in inserted] + replaced
    if written:
        await copy_rows(conn, Rows.of(e.parsed() for e in written))
    return Written([e.order_uid for e in written], stale)


async def _newer_than_current(
    conn: psycopg.AsyncConnection, known: list[Accepted]
) -> tuple[list[Accepted], list[Stale]]:
    """Of versions of orders the read model has: those newer than its (to replace it), and
    those older (stale). Identical re-sends are neither."""
    if not known:
        return [], []
    cur = await conn.execute(queries.LOCK_CURRENT_VERSIONS, {"uids": [e.order_uid for e in known]})
    current = {
        uid: Current(body, Event(p, o, ts) if p is not None and o is not None else None)
        for uid, body, p, o, ts in await cur.fetchall()
    }
    replaced: list[Accepted] = []
    stale: list[Stale] = []
    for e in known:
        now = current[e.order_uid]
        if e.same_version(now) and now.event is not None:  # unknown: take this log's coordinates
            continue
        if versions.newer(e.version(), now.event):
            replaced.append(e)
        else:
            stale.append(Stale(e, now.event))
    return replaced, stale


def _snapshot_params(events: Sequence[Accepted]) -> dict[str, list]:
    versions_ = [e.version() for e in events]
    return {
        "uids": [e.order_uid for e in events],
        "bodies": [e.body for e in events],
        "partitions": [e.partition for e in events],
        "offsets": [e.offset for e in events],
        "version_partitions": [v.partition for v in versions_],
        "version_offsets": [v.offset for v in versions_],
        "version_timestamps": [v.timestamp_ms for v in versions_],
    }


async def copy_rows(conn: psycopg.AsyncConnection, rows: Rows) -> None:
    """COPY normalized rows of orders that have none (new, or whose old rows were deleted)."""
    async with conn.cursor() as cur:
        for statement, table_rows in rows.by_statement():
            async with cur.copy(statement) as copy:
                for row in table_rows:
                    await copy.write_row(row)


async def notify_changed(conn: psycopg.AsyncConnection, channel: str, order_uids: Iterable[str]) -> None:
    """Delivered at commit, to every API replica listening: comma-separated uids."""
    for payload in notify_payloads(order_uids):
        await conn.execute(queries.NOTIFY, {"channel": channel, "payload": payload})


def notify_payloads(order_uids: Iterable[str], limit: int = NOTIFY_PAYLOAD_LIMIT) -> Iterator[str]:
    """Comma-joined uids in chunks under the payload limit (uids are ASCII, no commas)."""
    chunk: list[str] = []
    size = 0
    for uid in order_uids:
        if chunk and size + 1 + len(uid) > limit:
            yield ",".join(chunk)
            chunk, size = [], 0
        size += len(uid) + (1 if chunk else 0)
        chunk.append(uid)
    if chunk:
        yield ",".join(chunk)
