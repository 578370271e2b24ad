"""An order's version as a replica keeps it, and what a notification's version says about it.

A cached entry keeps its version (orderview/readmodel.py: (time, partition, offset), compared as
a tuple) as one int that compares the same way: the three columns' ranges (bigint, integer,
bigint) each shifted to start at 0 and laid side by side. One int is 48 bytes; the Version tuple
it stands for, 140 (tracemalloc), on every cached order.

A notification tells which version an order changed to. An entry at that version or a newer one
already holds the change and stays as it is; one that tells no version (an older projector's, or
UNKNOWN, which cannot tell one version from another) changes every cached entry, as before
versions were told.
"""

from __future__ import annotations

from collections.abc import Iterable

from orderview import readmodel
from orderview.readmodel import Version

_BIGINT = 1 << 63
_INTEGER = 1 << 31


def _fits(version: Version) -> bool:
    time, partition, offset = version
    return -_BIGINT <= time < _BIGINT and -_INTEGER <= partition < _INTEGER and -_BIGINT <= offset < _BIGINT


def key(version: Version) -> int:
    """The int that orders as `version` does, among versions the read model's columns can hold."""
    time, partition, offset = version
    return ((time + _BIGINT) << 96) | ((partition + _INTEGER) << 64) | (offset + _BIGINT)


UNKNOWN_KEY = key(readmodel.UNKNOWN)


def of_columns(time: int | None, partition: int | None, offset: int | None) -> int:
    """An order_snapshots row's version (version_time, version_partition, version_offset): NULL
    in any of them is UNKNOWN."""
    if time is None or partition is None or offset is None:
        return UNKNOWN_KEY
    return key(Version(time, partition, offset))


def told(version: Version | None) -> Version | None:
    """What a notified version says: None when it cannot tell one version from another."""
    if version is None or version == readmodel.UNKNOWN or not _fits(version):
        return None
    return version


def holds(cached: int, notified: Version | None) -> bool:
    """Whether an entry at version `cached` already holds the change a notification tells."""
    notified = told(notified)
    return notified is not None and key(notified) <= cached


def newest(first: Version | None, second: Version | None) -> Version | None:
    """What two changes of one order tell together: the newer, or nothing if either tells nothing."""
    first, second = told(first), told(second)
    if first is None or second is None:
        return None
    return max(first, second)


def changes(payloads: Iterable[str]) -> dict[str, Version | None]:
    """The orders a batch of notification payloads names, each with the version they tell of it."""
    found: dict[str, Version | None] = {}
    for payload in payloads:
        for uid, version in readmodel.decode_changes(payload):
            found[uid] = newest(found[uid], version) if uid in found else told(version)
    return found
