"""One message of the orders topic, as the broker gave it, and what identifies it."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Incoming:
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    timestamp_ms: int | None = None
    # The consumer group generation it was fetched in (None outside a group, e.g. a rebuild).
    generation: int | None = None

    def digest(self) -> bytes:
        return digest(self.key, self.value)


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
