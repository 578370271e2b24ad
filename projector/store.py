"""Writes accepted orders into the read model, inside a transaction the caller owns."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass

import orjson
import psycopg

from projector import queries
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

    def same_version(self, other: Accepted) -> bool:
        """The same JSON, as the database compares them (order_snapshots.body_json)."""
        return self.body == other.body

    def parsed(self) -> dict:
        return self.document if self.document is not None else orjson.loads(self.body)


def compact_json(order: dict) -> str:
    """An accepted order as stored and served: compact JSON in the sender's key order."""
    return orjson.dumps(order).decode()


def latest_versions(events: Sequence[Accepted]) -> list[Accepted]:
    """Per order_uid, the event that made its last version: an identical re-send
    does not replace it, so the source offset is the same in whatever batches the
    events arrive (live or in a rebuild)."""
    latest: dict[str, Accepted] = {}
    for e in events:
        kept = latest.get(e.order_uid)
        if kept is None or not kept.same_version(e):
            latest[e.order_uid] = e
    return list(latest.values())


async def write_orders(conn: psycopg.AsyncConnection, events: Sequence[Accepted]) -> list[str]:
    """Upsert the snapshots and, for the orders that changed, write their normalized rows.

    Events must be in offset order; for an order_uid seen twice the later one wins.
    Returns the order_uids whose content changed.
    """
    latest = latest_versions(events)
    if not latest:
        return []
    cur = await conn.execute(
        queries.UPSERT_SNAPSHOTS,
        {
            "uids": [e.order_uid for e in latest],
            "bodies": [e.body for e in latest],
            "partitions": [e.partition for e in latest],
            "offsets": [e.offset for e in latest],
        },
    )
    changed = await cur.fetchall()
    replaced = [uid for uid, inserted in changed if not inserted]
    if replaced:
        await conn.execute(queries.DELETE_NORMALIZED, {"uids": replaced})
    if changed:
        uids = {uid for uid, _ in changed}
        await copy_rows(conn, Rows.of(e.parsed() for e in latest if e.order_uid in uids))
    return [uid for uid, _ in changed]


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
