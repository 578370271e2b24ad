"""One message of the orders topic, as the broker gave it, and what identifies it."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

# Headers a redriven dead letter carries (projector/redrive.py writes them): which dead-lettered
# record it is a redrive of, and the coordinates of the event it was, so that a redrive is
# applied once and orders its version as the original event (projector/versions.py).
REDRIVE_OF = "orderview.redrive.of"  # <orders topic>:<partition>:<offset>
REDRIVE_EVENT = "orderview.redrive.event"  # <partition>:<offset>:<timestamp ms>

Headers = tuple[tuple[str, bytes], ...]


class BadHeader(ValueError):
    """A header of ours that does not say what it must: the message's own fault."""


@dataclass(frozen=True, slots=True)
class Incoming:
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    timestamp_ms: int | None = None
    # The consumer group generation it was fetched in (None outside a group, e.g. a rebuild).
    generation: int | None = None
    headers: Headers = ()

    def digest(self) -> bytes:
        return digest(self.key, self.value)

    def header(self, name: str) -> bytes | None:
        """The last value of a header (Kafka allows repeats; a later one overrides)."""
        found = None
        for key, value in self.headers:
            if key == name:
                found = value
        return found

    def redrive_of(self) -> str | None:
        """The dead-lettered record this one is a redrive of, if it is one."""
        raw = self.header(REDRIVE_OF)
        if raw is None:
            return None
        try:
            topic, partition, offset = raw.decode().rsplit(":", 2)
            if not topic or int(partition) < 0 or int(offset) < 0:
                raise ValueError
        except ValueError:
            raise BadHeader(f"header {REDRIVE_OF} is not <topic>:<partition>:<offset>") from None
        return f"{topic}:{int(partition)}:{int(offset)}"

    def event(self) -> Event:
        """The event this record carries: itself, or for a redrive, the original record."""
        raw = self.header(REDRIVE_EVENT)
        if raw is None:
            return Event(self.partition, self.offset, self.timestamp_ms)
        try:
            partition, offset, timestamp = (int(part) for part in raw.decode().split(":"))
            if partition < 0 or offset < 0:
                raise ValueError
        except ValueError:
            raise BadHeader(f"header {REDRIVE_EVENT} is not <partition>:<offset>:<timestamp ms>") from None
        return Event(partition, offset, timestamp)


@dataclass(frozen=True, slots=True)
class Event:
    """Where an order event was first read: what orders its versions."""

    partition: int
    offset: int
    timestamp_ms: int | None

    def header_value(self) -> bytes:
        return f"{self.partition}:{self.offset}:{self.timestamp_ms or 0}".encode()


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
