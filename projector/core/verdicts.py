"""One record judged alone, before any transaction: an order, an erasure, or why it is neither.

Pure CPU, done while the previous batch is written. The faults a record can hold are anticipated
and each becomes its rejection (bad bytes, the schema, the invariants, the size, a tombstone
without a valid key, redrive headers that do not verify). Anything else a judge raises is a bug of
ours, not the record's: it propagates, and the worker stops (projector/faults.py), so that a
regression never dead-letters the stream.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import orjson

from projector.core import redrives
from projector.core.records import Record
from projector.core.redrives import Claim, Forged
from projector.core.validate import Rejection, Validator

# The order_uid the schema allows; a tombstone's key must be one (schemas/order.schema.json).
ORDER_UID = re.compile(rb"[A-Za-z0-9_-]{1,64}\Z")


@dataclass(frozen=True, slots=True)
class Order:
    """A valid order: its uid, the compact JSON the API serves, and the parsed document."""

    uid: str
    body: str
    document: dict
    claim: Claim | None = None


@dataclass(frozen=True, slots=True)
class Erase:
    """A tombstone (the order's key, no value): Kafka's delete of the key."""

    uid: str
    claim: Claim | None = None


@dataclass(frozen=True, slots=True)
class Rejected:
    reason: str
    error: str
    path: str


Verdict = Order | Erase | Rejected


class Judge:
    def __init__(self, max_message_bytes: int, redrive_secret: bytes) -> None:
        self.validator = Validator(max_bytes=max_message_bytes)
        self.secret = redrive_secret

    def __call__(self, record: Record) -> Verdict:
        claim = redrives.claim(record, self.secret)
        if isinstance(claim, Forged):
            return Rejected("forged_redrive", claim.why, "$headers")
        if record.value is None:
            return self._tombstone(record, claim)
        result = self.validator.check(record.value, record.key)
        if isinstance(result, Rejection):
            return Rejected(result.reason, result.error, result.path)
        return Order(result["order_uid"], compact_json(result), result, claim)

    @staticmethod
    def _tombstone(record: Record, claim: Claim | None) -> Erase | Rejected:
        if record.key is None:
            return Rejected("decode", "the message has neither key nor value: a tombstone erases a key", "$")
        if not ORDER_UID.match(record.key):
            return Rejected(
                "invariant",
                "a tombstone's key must be an order_uid (1 to 64 of A-Z a-z 0-9 _ -) to erase that order",
                "$key",
            )
        return Erase(record.key.decode(), claim)


def compact_json(order: dict) -> str:
    """An accepted order as stored and served: compact JSON in the sender's key order."""
    return orjson.dumps(order).decode()
