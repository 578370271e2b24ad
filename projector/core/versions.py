"""The one total order of an order's versions: used live, in rebuilds, audits and redrives.

A version is (time, partition, offset), compared in that order. Its time is its partition's clock
at the record: the latest record timestamp of the partition up to and including this record
(CreateTime or LogAppendTime alike: the time the log gives the record; a record without a
timestamp takes the clock as it is). The clock never goes back, so within a partition the later
offset always wins, whatever the timestamps; across partitions the later time wins, and equal
times go to the higher partition. The order is total because it is the order of integer triples,
and the triple of a record is unique; it is computed from the record and its partition's clock
alone, so every interleaving of partitions and every choice of batches gives every record the same
version, live or rebuilt from the same log.

The projector records each partition's clock with its position (applied_offsets.clock), so the
next batch continues it. A redrive this deployment signed (projector/core/redrives.py) carries
the version of the record it redrives.
"""

from __future__ import annotations

from orderview.readmodel import UNKNOWN, Version

__all__ = ["UNKNOWN", "Version", "describe", "parse", "text", "tick"]


def tick(clock: int, timestamp_ms: int | None) -> int:
    """The partition's clock after a record with this timestamp."""
    return clock if timestamp_ms is None or timestamp_ms <= clock else timestamp_ms


def describe(version: Version) -> str:
    if version == UNKNOWN:
        return "a version of unknown coordinates"
    return f"time {version.time} ms, partition {version.partition}, offset {version.offset}"


def parse(text: str) -> Version:
    """`time:partition:offset`, as headers carry it; ValueError otherwise."""
    time, partition, offset = (int(part) for part in text.split(":"))
    if time < 0 or partition < 0 or offset < 0:
        raise ValueError(text)
    return Version(time, partition, offset)


def text(version: Version) -> str:
    return f"{version.time}:{version.partition}:{version.offset}"
