"""One record of the orders topic, as the broker gave it, and what identifies it."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

Headers = tuple[tuple[str, bytes], ...]

# Kafka's timestamp types: the producer's clock, or the broker's when it appended the record.
CREATE_TIME = 0
LOG_APPEND_TIME = 1
TIMESTAMP_TYPES = {CREATE_TIME: "CreateTime", LOG_APPEND_TIME: "LogAppendTime"}


@dataclass(frozen=True, slots=True)
class Record:
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    timestamp_ms: int | None = None  # None: the record has none (Kafka's -1)
    timestamp_type: int = CREATE_TIME
    headers: Headers = ()
    # (partition, offset): what identifies the record, kept rather than made at each of the ten or
    # so times a batch's planning asks (about 2 % of a worker's CPU as a property).
    where: tuple[int, int] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "where", (self.partition, self.offset))

    def digest(self) -> bytes:
        return digest(self.key, self.value)

    def header(self, name: str) -> bytes | None:
        """The last value of a header (Kafka allows repeats; a later one overrides)."""
        found = None
        for key, value in self.headers:
            if key == name:
                found = value
        return found


@dataclass(frozen=True, slots=True)
class LogRecord:
    """What identifies a record in the log: its offset, timestamp and digest."""

    offset: int
    timestamp_ms: int | None
    digest: bytes


def timestamp(raw: int | None) -> int | None:
    """A record's timestamp in ms, None when it has none (Kafka says -1)."""
    return raw if raw is not None and raw >= 0 else None


def digest(key: bytes | None, value: bytes | None) -> bytes:
    """SHA-256 of a record's key and value, each length-prefixed so that no two records of
    different keys and values share the input (and null differs from empty)."""
    h = hashlib.sha256()
    for part in (key, value):
        if part is None:
            h.update(b"\xff" * 8)
        else:
            h.update(len(part).to_bytes(8, "big"))
            h.update(part)
    return h.digest()
