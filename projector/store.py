"""Writes accepted orders into the read model, inside a transaction the caller owns."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass

import orjson
import psycopg

from projector import queries

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
        if self.document is not None and other.document is not None:
            return self.document == other.document
        return self.body == other.body


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
    """Upsert the snapshots and, for the orders that changed, their normalized rows.

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
    rows = await cur.fetchall()
    new = {uid for uid, inserted in rows if inserted}
    if new:
        await copy_new_orders(conn, [e for e in latest if e.order_uid in new])
    updated = [uid for uid, inserted in rows if not inserted]
    if updated:
        await upsert_from_snapshots(conn, updated)
    return [uid for uid, _ in rows]


async def copy_new_orders(conn: psycopg.AsyncConnection, events: Sequence[Accepted]) -> None:
    """COPY the normalized rows of orders the read model did not have: nothing to replace."""
    docs = [(e.order_uid, e.document if e.document is not None else orjson.loads(e.body)) for e in events]
    async with conn.cursor() as cur:
        async with cur.copy(queries.COPY_ORDERS) as copy:
            for _, d in docs:
                await copy.write_row([d[c] for c in queries.ORDER_COLUMNS])
        async with cur.copy(queries.COPY_DELIVERIES) as copy:
            for uid, d in docs:
                delivery = d["delivery"]
                await copy.write_row([uid, *(delivery[c] for c in queries.DELIVERY_COLUMNS)])
        async with cur.copy(queries.COPY_PAYMENTS) as copy:
            for uid, d in docs:
                payment = d["payment"]
                await copy.write_row([uid, *(payment[c] for c in queries.PAYMENT_COLUMNS)])
        async with cur.copy(queries.COPY_ITEMS) as copy:
            for uid, d in docs:
                for position, item in enumerate(d["items"]):
                    await copy.write_row([uid, position, *(item[c] for c in queries.ITEM_COLUMNS)])


async def upsert_from_snapshots(conn: psycopg.AsyncConnection, order_uids: list[str]) -> None:
    """A new version of known orders: their rows are derived again from the snapshot."""
    params = {"uids": order_uids}
    async with conn.pipeline():
        for statement in (
            queries.UPSERT_ORDERS,
            queries.UPSERT_DELIVERIES,
            queries.UPSERT_PAYMENTS,
            queries.DELETE_ITEMS,
            queries.INSERT_ITEMS,
        ):
            await conn.execute(statement, params)


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
