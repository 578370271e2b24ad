"""The contract between the projector and the API: what a version is, and how a change is told.

The projector writes the read model and, in the same transaction, notifies every API replica of
the orders that changed (PostgreSQL NOTIFY on `Settings.notify_channel`). Each change names the
order and the version it changed to, so that a replica holding that version, or a newer one,
keeps it (a miss may have read it before the notification arrived).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import NamedTuple

# An erased order keeps its snapshot row without its body (sql/006): every read of orders takes
# this condition, so such a row is absent, as an order never seen is.
LIVE = "body_json IS NOT NULL"

# Where the read model stands in each partition of a topic: the next offset to apply, the
# partition's clock there, the record before it (timestamp, digest), the topic's incarnation.
# The projector writes them; the API reads them after a failover (api/served.py); tools too.
READ_POSITIONS = """
SELECT partition, next_offset, clock, last_timestamp, last_digest, topic_id FROM applied_offsets
WHERE topic = %(topic)s
"""

# PostgreSQL refuses NOTIFY payloads of 8000 bytes or more.
NOTIFY_PAYLOAD_LIMIT = 7900


class Version(NamedTuple):
    """An order's version, in the one total order of versions (projector/core/versions.py):
    compared as (time, partition, offset)."""

    time: int
    partition: int
    offset: int


# A version whose coordinates are not known (kept by `rebuild --keep`): older than any other.
UNKNOWN = Version(-1, -1, -1)


def encode_changes(
    changes: Iterable[tuple[str, Version]], limit: int = NOTIFY_PAYLOAD_LIMIT
) -> Iterator[str]:
    """Payloads of `uid:time:partition:offset` entries, comma-separated, each under `limit`
    (an order_uid is [A-Za-z0-9_-], so neither separator occurs in it)."""
    chunk: list[str] = []
    size = 0
    for uid, version in changes:
        entry = f"{uid}:{version.time}:{version.partition}:{version.offset}"
        if chunk and size + 1 + len(entry) > limit:
            yield ",".join(chunk)
            chunk, size = [], 0
        size += len(entry) + (1 if chunk else 0)
        chunk.append(entry)
    if chunk:
        yield ",".join(chunk)


def decode_changes(payload: str) -> list[tuple[str, Version | None]]:
    """The changes one payload tells; an entry without a version (an older projector's) has None."""
    changes: list[tuple[str, Version | None]] = []
    for entry in payload.split(","):
        if not entry:
            continue
        uid, *rest = entry.split(":")
        try:
            version = Version(*(int(part) for part in rest)) if len(rest) == 3 else None
        except ValueError:
            version = None
        changes.append((uid, version))
    return changes
