"""The read model written by hand as a projector that tells versions writes it: snapshot rows
with their version, and in the same transaction the NOTIFY of each change with the codec both
sides use (orderview/readmodel.py). No projector code: what the API must understand, only."""

from __future__ import annotations

import time
from collections.abc import Sequence

import orjson
import psycopg

from orderview.readmodel import Version, encode_changes
from orderview.settings import Settings
from tests import support

UPSERT_SNAPSHOT = """
INSERT INTO order_snapshots AS s
    (order_uid, body_json, source_partition, source_offset, version_time, version_partition, version_offset)
VALUES (%(uid)s, %(body)s, %(partition)s, %(offset)s, %(time)s, %(partition)s, %(offset)s)
ON CONFLICT (order_uid) DO UPDATE
SET body_json = excluded.body_json, source_partition = excluded.source_partition,
    source_offset = excluded.source_offset, version_time = excluded.version_time,
    version_partition = excluded.version_partition, version_offset = excluded.version_offset,
    updated_at = now(), applied_at = now()
"""


def next_versions(n: int) -> list[Version]:
    """Versions of partition 0 newer than any given before (the clock: now, in ms)."""
    now_ms = time.time_ns() // 1_000_000
    return [Version(now_ms, 0, offset) for offset in support.later_offsets(n)]


async def write(
    settings: Settings,
    orders: Sequence[dict],
    versions: Sequence[Version] | None = None,
    tell_versions: bool = True,
) -> list[Version]:
    """Each order as its snapshot, at these versions (by default newer ones than any before), and
    the notification of each change telling its version (or, `tell_versions=False`, its order_uid
    alone, as an older projector does); returns the versions."""
    versions = list(versions) if versions is not None else next_versions(len(orders))
    async with await psycopg.AsyncConnection.connect(settings.dsn("projector")) as conn:
        for order, version in zip(orders, versions, strict=True):
            await conn.execute(
                UPSERT_SNAPSHOT,
                {
                    "uid": order["order_uid"],
                    "body": orjson.dumps(order).decode(),
                    "time": version.time,
                    "partition": version.partition,
                    "offset": version.offset,
                },
            )
        changes = [(order["order_uid"], version) for order, version in zip(orders, versions, strict=True)]
        if tell_versions:
            await notify(conn, settings, changes)
        else:
            payload = ",".join(uid for uid, _ in changes)
            await conn.execute("SELECT pg_notify(%s, %s)", [settings.notify_channel, payload])
        await conn.commit()
    return versions


async def notify(
    conn: psycopg.AsyncConnection, settings: Settings, changes: Sequence[tuple[str, Version]]
) -> None:
    """NOTIFY these changes (delivered when `conn` commits)."""
    for payload in encode_changes(changes):
        await conn.execute("SELECT pg_notify(%s, %s)", [settings.notify_channel, payload])


async def notify_again(settings: Settings, changes: Sequence[tuple[str, Version]]) -> None:
    """The notification of changes already written, alone (a projector's re-delivery)."""
    async with await psycopg.AsyncConnection.connect(settings.dsn("projector"), autocommit=True) as conn:
        await notify(conn, settings, changes)
