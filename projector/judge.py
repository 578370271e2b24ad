"""Each message of a batch judged alone, before its transaction: an order to write, or a dead letter.

Pure CPU, done while the previous batch is written. Whatever goes wrong while decoding,
validating or explaining one message becomes that message's dead letter (`unprocessable`, with
the exception's type), so nothing a message holds can raise out of its batch.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from projector import faults, store
from projector.dlq import DeadLetter
from projector.messages import REDRIVE_EVENT, REDRIVE_OF, BadHeader, Incoming
from projector.validate import Rejection, Validator


@dataclass(frozen=True, slots=True)
class Prepared:
    """A batch judged ahead of its transaction (which may skip some as redeliveries)."""

    accepted: dict[tuple[int, int], store.Accepted]
    dead: dict[tuple[int, int], DeadLetter]
    redrives: dict[tuple[int, int], str]  # (partition, offset) -> the dead-lettered record it redrives


class Judge:
    def __init__(self, max_message_bytes: int) -> None:
        self.validator = Validator(max_bytes=max_message_bytes)

    def prepare(self, batch: Sequence[Incoming]) -> Prepared:
        accepted: dict[tuple[int, int], store.Accepted] = {}
        dead: dict[tuple[int, int], DeadLetter] = {}
        redrives: dict[tuple[int, int], str] = {}
        for m in batch:
            where = (m.partition, m.offset)
            try:
                of = m.redrive_of()
            except BadHeader as exc:
                dead[where] = DeadLetter(m, "decode", str(exc), f"$headers.{REDRIVE_OF}")
                continue
            if of is not None:
                redrives[where] = of
            verdict = self.judge(m)
            if isinstance(verdict, DeadLetter):
                dead[where] = verdict
            else:
                accepted[where] = verdict
        return Prepared(accepted, dead, redrives)

    def judge(self, m: Incoming) -> store.Accepted | DeadLetter:
        """One message's verdict; never raises."""
        try:
            result = self.validator.check(m.value, m.key)
            if isinstance(result, Rejection):
                return DeadLetter(m, result.reason, result.error, result.path)
            try:
                event = m.event()
            except BadHeader as exc:
                return DeadLetter(m, "decode", str(exc), f"$headers.{REDRIVE_EVENT}")
            body = store.compact_json(result)  # the bytes the API will serve
            return store.Accepted(result["order_uid"], body, m.partition, m.offset, result, event)
        except Exception as exc:
            return DeadLetter(m, "unprocessable", faults.describe(exc, limit=900), "$")
