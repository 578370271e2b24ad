"""Which of two versions of an order is the newer: the one rule, used live, in rebuilds and audits.

Kafka keeps the order of a key's records within a partition only. Within a partition, the later
offset wins. Across partitions (a topic given more partitions moves a key to another one; a
producer may pick partitions itself) offsets say nothing, and the later record timestamp wins;
on a tie, what is there stays. A version that is not newer than the one applied is never applied
over it: the order never goes back in time (projector/store.py dead-letters it as stale).
"""

from __future__ import annotations

from projector.messages import Event


def newer(candidate: Event, current: Event | None) -> bool:
    """Whether `candidate` is a later version than `current` (None: unknown, anything is later)."""
    if current is None:
        return True
    if candidate.partition == current.partition:
        return candidate.offset > current.offset
    if current.timestamp_ms is None:
        return True
    return candidate.timestamp_ms is not None and candidate.timestamp_ms > current.timestamp_ms


def describe(event: Event | None) -> str:
    if event is None:
        return "an event of unknown coordinates"
    return f"partition {event.partition} offset {event.offset} (timestamp {event.timestamp_ms})"
