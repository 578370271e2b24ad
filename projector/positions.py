"""Where the projector stands in each partition of the orders topic, and why that can be trusted.

The database is the source of truth for positions, as in the exactly-once sinks of Kafka
Connect: `applied_offsets` holds, per partition, the next offset to apply and what the record
just before it was. The consumer group's offsets in Kafka are a copy, kept for tools that show
lag; the projector never trusts them over the database.

The invariant — no recorded or committed offset ever passes a message whose effect is not
durable — rests on four rules, kept in this module (the seek of rule 4 is done by the consumer
in projector/kafka.py):

1. Recorded: `record` is the only writer of applied_offsets. It runs inside a batch's
   transaction, after every dead letter of the batch was acknowledged by the broker (acks=all)
   and with the batch's rows, so the position and the effects commit, or roll back, as one.
2. Committed: `committed_offsets` gives the group offsets to commit, which are the positions a
   transaction recorded, and the worker commits them only after that transaction committed.
   Faust commits nothing itself: the agent takes events with `noack_take` and never
   acknowledges them. A crash between the two commits leaves Kafka behind, never ahead.
3. Trusted: before a partition's messages are applied or skipped — on its first batch in each
   consumer generation, whenever its offsets go backwards, and every VERIFY_EVERY_S — `plan`
   checks what the recorded position points to. The topic must be the incarnation the position
   was recorded in (Kafka's topic id), and the record just before the position must be the one
   applied (same timestamp, same SHA-256 of key and value), or gone: compaction and retention
   delete records without changing the offsets of the others, which is expected (logged once and
   counted). Another topic id, another record at that offset, or a log that ends before it, and
   the worker stops with what to do (UntrustedPosition): a position is never a reason to skip
   blindly.
4. Sought: when partitions are assigned, the consumer seeks each to its recorded position
   (projector/kafka.py), whatever the group's offsets say. If the database could not be read at
   that moment and the consumer starts past the recorded position while the log still holds
   records in between, `plan` seeks back, and what was fetched meanwhile is discarded until the
   first record after the position arrives again.

5. Unbroken: a batch is applied from the recorded position on, each offset once, in order, and
   never past a record the consumer did not deliver. Offsets may jump over what read_committed
   does not return (transaction markers, aborted records); when they jump, the log is asked
   whether a committed record lies in between, and if one does, the worker stops (SkippedRecords)
   and reads again from the recorded position when restarted, whatever made the consumer skip.

Messages below the recorded position are redeliveries (a batch fetched before a rebalance, a
start while the database was unreachable): skipped and counted. Records deleted by retention (or
the admin API's delete-records) before they were applied are a loss the projector cannot prevent:
the partition goes on from the first record the log still holds, and the loss is logged and
counted (`Observer.lost`) wherever it is found — at assignment, or where offsets jump.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import NoReturn, Protocol

import psycopg

from orderview.settings import Settings
from projector import queries
from projector.faults import SkippedRecords, TopicMissing, UntrustedPosition
from projector.messages import Incoming

log = logging.getLogger("orderview.projector")

REBUILD = (
    "python -m projector.rebuild --keep replays the topic over the read model and keeps the orders "
    "whose records the log no longer holds; --truncate starts from empty tables, losing those "
    "orders, and refuses while the log no longer starts at offset 0 of every partition"
)
# A partition's position is checked again at least this often: a topic deleted and created again
# between two metadata refreshes causes no rebalance.
VERIFY_EVERY_S = 30.0


@dataclass(frozen=True, slots=True)
class Position:
    """What applied_offsets says of one partition."""

    next_offset: int = 0
    last_timestamp: int | None = None
    last_digest: bytes | None = None  # None: nothing applied, or recorded before digests were
    topic_id: uuid.UUID | None = None  # the topic's incarnation; None: recorded before ids were


@dataclass(frozen=True, slots=True)
class LogRecord:
    offset: int
    timestamp_ms: int | None
    digest: bytes


class Log(Protocol):
    """The orders topic, read by offset (committed records only)."""

    async def first_record(self, partition: int, offset: int) -> LogRecord | None: ...

    async def start_offset(self, partition: int) -> int: ...

    async def end_offset(self, partition: int) -> int: ...

    async def topic_id(self) -> uuid.UUID | None:
        """The incarnation of the topic now (None: it does not exist)."""
        ...


class Observer(Protocol):
    """Told of what the log deleted (projector/metrics.py counts it)."""

    def lost(self, partition: int, first: int, end: int) -> None:
        """Offsets [first, end) were deleted before they were applied."""
        ...

    def applied_record_deleted(self, partition: int, reason: str) -> None:
        """The last record applied was deleted afterwards ("compaction" or "retention")."""
        ...


@dataclass
class Said:
    """Deletions already logged and counted, once each: (partition, offset applied) and
    (partition, end of a loss). Shared by the checks of one worker."""

    deleted: set[tuple[int, int]] = field(default_factory=set)
    lost: set[tuple[int, int]] = field(default_factory=set)


class Quiet:
    """An Observer that counts nothing (tools that do not export metrics)."""

    def lost(self, partition: int, first: int, end: int) -> None:
        pass

    def applied_record_deleted(self, partition: int, reason: str) -> None:
        pass


@dataclass
class Plan:
    """What to do with a batch, partition by partition, given the recorded positions."""

    fresh: list[Incoming] = field(default_factory=list)  # to apply, in offset order
    skipped: int = 0  # redeliveries: below the recorded position
    discarded: int = 0  # fetched before a seek back: they come again
    seeks: dict[int, int] = field(default_factory=dict)  # partition -> offset to read from
    # What the projector knows once the batch is durable (`Positions.settle`); a batch rolled
    # back and retried is planned again from the same knowledge.
    verified: dict[int, tuple[object, float]] = field(default_factory=dict)  # partition -> (generation, when)
    last_seen: dict[int, int] = field(default_factory=dict)  # partition -> highest offset
    awaiting: dict[int, int] = field(default_factory=dict)  # partition -> first offset after a seek
    arrived: set[int] = field(default_factory=set)  # partitions no longer awaiting
    lost: list[tuple[int, int, int]] = field(
        default_factory=list
    )  # (partition, first, end) deleted unapplied


_UNSEEN = object()


async def read_positions(settings: Settings) -> dict[int, Position]:
    """The positions the read model recorded for the partitions of the orders topic."""
    async with await psycopg.AsyncConnection.connect(settings.dsn("projector")) as conn:
        cur = await conn.execute(queries.READ_POSITIONS, {"topic": settings.orders_topic})
        return _positions(await cur.fetchall())


def _positions(rows: list[tuple]) -> dict[int, Position]:
    return {
        p: Position(offset, ts, bytes(d) if d is not None else None, topic_id)
        for p, offset, ts, d, topic_id in rows
    }


async def seek_targets(
    settings: Settings,
    kafka_log: Log,
    assigned: Sequence[int],
    existing: Sequence[int],
    observer: Observer | None = None,
    said: Said | None = None,
) -> dict[int, int]:
    """Where each assigned partition is to be read from: its recorded position, once verified
    (UntrustedPosition if it cannot be, or if the read model has positions for partitions the
    topic does not have). Records deleted by retention before they were applied are gone: the
    partition is read from its first record still held, and that is reported as the loss it is."""
    recorded = await read_positions(settings)
    checker = Positions(settings.orders_topic, kafka_log, observer, said)
    gone = sorted(set(recorded) - set(existing))
    if gone:
        checker.untrusted(gone[0], "the topic has no such partition any more")
    targets = {}
    for partition in assigned:
        position = recorded.get(partition, Position())
        await checker.verify(partition, position)
        start = await kafka_log.start_offset(partition)
        checker.report_lost(partition, position.next_offset, start)
        targets[partition] = max(position.next_offset, start)
    return targets


class Positions:
    def __init__(
        self, topic: str, log: Log, observer: Observer | None = None, said: Said | None = None
    ) -> None:
        self.topic = topic
        self.log = log
        self.observer = observer or Quiet()
        self.said = said or Said()
        self.topic_id: uuid.UUID | None = None  # the incarnation verified last; recorded with positions
        self._verified: dict[int, tuple[object, float]] = {}  # partition -> (generation, when)
        self._last_seen: dict[int, int] = {}  # partition -> highest offset planned
        self._awaiting: dict[int, int] = {}  # partition -> first offset expected after a seek

    async def lock(self, conn: psycopg.AsyncConnection, partitions: Sequence[int]) -> dict[int, Position]:
        """The recorded positions, locked until the transaction ends: a worker of an older
        generation still writing the same partition waits instead of interleaving."""
        cur = await conn.execute(
            queries.LOCK_POSITIONS, {"topic": self.topic, "partitions": list(partitions)}
        )
        return _positions(await cur.fetchall())

    async def plan(self, batch: Sequence[Incoming], recorded: dict[int, Position]) -> Plan:
        plan = Plan()
        for partition, messages in _by_partition(batch).items():
            await self._plan_partition(plan, partition, messages, recorded.get(partition, Position()))
        return plan

    async def record(self, conn: psycopg.AsyncConnection, plan: Plan) -> dict[int, int]:
        """Record, inside the batch's transaction, the position after its last fresh message in
        each partition, and the records the plan found deleted before they were applied (for the
        audit); return the next offsets recorded."""
        if plan.lost:
            await conn.execute(
                queries.RECORD_LOST,
                {
                    "topic": self.topic,
                    "partitions": [p for p, _, _ in plan.lost],
                    "firsts": [f for _, f, _ in plan.lost],
                    "ends": [e for _, _, e in plan.lost],
                },
            )
        last = {m.partition: m for m in plan.fresh}  # fresh is in offset order per partition
        if not last:
            return {}
        await conn.execute(
            queries.RECORD_POSITIONS,
            {
                "topic": self.topic,
                "partitions": list(last),
                "next_offsets": [m.offset + 1 for m in last.values()],
                "timestamps": [m.timestamp_ms for m in last.values()],
                "digests": [m.digest() for m in last.values()],
                "topic_id": self.topic_id,
            },
        )
        return {p: m.offset + 1 for p, m in last.items()}

    def settle(self, plan: Plan) -> None:
        """The batch planned is durable: keep what its planning learned."""
        self._verified.update(plan.verified)
        self._last_seen.update(plan.last_seen)
        for partition in plan.arrived:
            self._awaiting.pop(partition, None)
        for partition, offset in plan.awaiting.items():
            self._awaiting[partition] = offset
            self._last_seen.pop(partition, None)

    @staticmethod
    def committed_offsets(recorded: dict[int, int]) -> dict[int, int]:
        """The group offsets to commit once the transaction that recorded these committed."""
        return dict(recorded)

    async def _plan_partition(
        self, plan: Plan, partition: int, messages: list[Incoming], position: Position
    ) -> None:
        expected = self._awaiting.get(partition)
        if expected is not None:
            start = next((i for i, m in enumerate(messages) if m.offset == expected), None)
            plan.discarded += len(messages) if start is None else start
            if start is None:
                return
            plan.arrived.add(partition)
            messages = messages[start:]
        first = messages[0].offset
        went_back_from = first if expected is None else None
        if self._needs_verifying(partition, messages[0].generation, went_back_from):
            await self.verify(partition, position, messages)
            if first > position.next_offset and await self._seek_back(plan, partition, position, first):
                plan.discarded += len(messages)
                return
            plan.verified[partition] = (messages[0].generation, time.monotonic())
        plan.last_seen[partition] = max(m.offset for m in messages)
        fresh = await self._unbroken(plan, partition, messages, position.next_offset)
        plan.skipped += len(messages) - len(fresh)
        plan.fresh += fresh

    async def _unbroken(
        self, plan: Plan, partition: int, messages: list[Incoming], next_offset: int
    ) -> list[Incoming]:
        """The messages to apply (rule 5): from `next_offset` on, each offset once and in order
        (a batch can hold a redelivery beside the first delivery), none past a skipped record."""
        fresh: list[Incoming] = []
        expected = next_offset
        for m in messages:
            if m.offset < expected:
                continue
            if m.offset > expected:
                record = await self.log.first_record(partition, expected)
                if record is None or record.offset != m.offset:
                    raise SkippedRecords(
                        f"the consumer delivered offset {m.offset} of partition {partition} of "
                        f"{self.topic!r} without the records from offset {expected} (the log "
                        f"holds {'none' if record is None else f'offset {record.offset}'} there); "
                        f"nothing of the batch is recorded, and the next start reads again from "
                        f"offset {next_offset}"
                    )
                # Nothing committed in between: transaction markers, aborted or compacted records
                # (a later record of the same key follows those), or records retention deleted.
                end = min(await self.log.start_offset(partition), m.offset)
                if end > expected:
                    plan.lost.append((partition, expected, end))
                    self.report_lost(partition, expected, end)
            fresh.append(m)
            expected = m.offset + 1
        return fresh

    def _needs_verifying(self, partition: int, generation: int | None, first: int | None) -> bool:
        """On the first batch of a consumer generation, when offsets go backwards (`first` is
        None right after a seek back, when they do on purpose), and every VERIFY_EVERY_S."""
        verified_in, at = self._verified.get(partition, (_UNSEEN, 0.0))
        return (
            verified_in != generation
            or (first is not None and first <= self._last_seen.get(partition, -1))
            or time.monotonic() - at > VERIFY_EVERY_S
        )

    async def verify(self, partition: int, position: Position, messages: Sequence[Incoming] = ()) -> None:
        """The topic must be the incarnation the position was recorded in, and the record before
        the position the one applied, or deleted since (looked up in `messages` first, then in the
        log); UntrustedPosition otherwise."""
        await self._verify_incarnation(partition, position)
        if position.next_offset == 0:
            return
        if position.last_digest is None:
            log.warning(
                "position recorded without a digest, not verified",
                extra={"partition": partition, "next_offset": position.next_offset},
            )
            return
        at = position.next_offset - 1
        here = next((m for m in messages if m.offset == at), None)
        found = (
            LogRecord(at, here.timestamp_ms, here.digest())
            if here is not None
            else await self.log.first_record(partition, at)
        )
        if found is not None and found.offset == at:
            if found.digest == position.last_digest and found.timestamp_ms == position.last_timestamp:
                return
            self.untrusted(partition, f"its record at offset {at} is not the one applied there")
        if await self.log.end_offset(partition) <= at:
            self.untrusted(partition, f"it ends before offset {at}, the last one applied")
        retention = await self.log.start_offset(partition) > at
        self._applied_record_deleted(partition, at, "retention" if retention else "compaction")

    async def _verify_incarnation(self, partition: int, position: Position) -> None:
        current = await self.log.topic_id()
        if current is None:
            raise TopicMissing(self.topic, "orders")
        if position.topic_id is not None and position.topic_id != current:
            self.untrusted(
                partition,
                f"the topic was deleted and created again (its id is {current}; the read model "
                f"was built from {position.topic_id})",
            )
        self.topic_id = current

    def _applied_record_deleted(self, partition: int, at: int, reason: str) -> None:
        """The record at `at` was applied and is gone: compaction (a newer record of the same key
        came after it) or retention deleted it. Expected; said once."""
        if (partition, at) in self.said.deleted:
            return
        self.said.deleted.add((partition, at))
        log.info(
            f"the last record applied was deleted from the log since ({reason}); the position stands",
            extra={"partition": partition, "offset": at, "reason": reason},
        )
        self.observer.applied_record_deleted(partition, reason)

    def report_lost(self, partition: int, first: int, end: int) -> None:
        """Offsets [first, end) were deleted (retention, delete-records) before they were applied."""
        if end <= first or (partition, end) in self.said.lost:
            return
        self.said.lost.add((partition, end))
        log.error(
            "records deleted from the log before they were applied: they are lost to the read "
            "model; the partition goes on from the first record the log still holds",
            extra={"partition": partition, "from": first, "to": end, "records": end - first},
        )
        self.observer.lost(partition, first, end)

    async def _seek_back(self, plan: Plan, partition: int, position: Position, first: int) -> bool:
        """Whether the consumer skipped records after the recorded position; if so, plan to
        read again from there."""
        record = await self.log.first_record(partition, position.next_offset)
        if record is None or record.offset >= first:
            return False
        log.warning(
            "the consumer started past the recorded position; seeking back to it",
            extra={"partition": partition, "next_offset": position.next_offset, "first_fetched": first},
        )
        plan.seeks[partition] = position.next_offset
        plan.awaiting[partition] = record.offset
        return True

    def untrusted(self, partition: int, what: str) -> NoReturn:
        raise UntrustedPosition(
            f"partition {partition} of topic {self.topic!r} does not hold what the read model "
            f"recorded: {what}. The read model belongs to another log (a topic recreated, a broker "
            f"that lost records, another cluster). Stop every projector and rebuild it: {REBUILD}."
        )


def _by_partition(batch: Sequence[Incoming]) -> dict[int, list[Incoming]]:
    parts: dict[int, list[Incoming]] = {}
    for m in batch:
        parts.setdefault(m.partition, []).append(m)
    return parts
