"""One batch of messages from the orders topic → one PostgreSQL transaction.

Inside the transaction: skip redeliveries (offsets already applied), validate,
dead-letter the bad messages (awaited, acks=all), write the good ones, record the
next offset per partition and NOTIFY the changed orders. A database or broker
failure rolls back and retries the same batch with capped, jittered backoff: the
batch is never acknowledged before it is durable.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Sequence
from dataclasses import dataclass

import orjson
import psycopg
from aiokafka.errors import KafkaError

from orderview.settings import Settings
from projector import store
from projector.dlq import DeadLetter, DeadLetterQueue, Incoming
from projector.metrics import ProjectorMetrics, Readiness
from projector.validate import Rejection, Validator

log = logging.getLogger("orderview.projector")

# A value the database refuses (NUL in text, a number too big for its column...)
# is that event's fault, not the batch's.
EVENT_FAULTS = (psycopg.DataError, psycopg.IntegrityError)


@dataclass(frozen=True, slots=True)
class Prepared:
    """A batch validated ahead of its transaction (which may skip some as redeliveries)."""

    accepted: dict[tuple[int, int], store.Accepted]
    dead: dict[tuple[int, int], DeadLetter]


@dataclass(frozen=True, slots=True)
class BatchOutcome:
    applied: int
    changed: list[str]
    dead_letters: list[DeadLetter]
    skipped: int


def last_offsets(batch: Sequence[Incoming]) -> dict[int, int]:
    """The last offset of each partition in a batch (batches are in offset order)."""
    return {m.partition: m.offset for m in batch}


def backoff_seconds(attempt: int, cap: float, base: float = 0.1) -> float:
    """Full jitter: uniform in [0, min(cap, base·2^attempt)]."""
    return random.uniform(0, min(cap, base * 2**attempt))


class BatchProjector:
    def __init__(
        self,
        settings: Settings,
        metrics: ProjectorMetrics | None = None,
        dlq: DeadLetterQueue | None = None,
    ) -> None:
        self.settings = settings
        self.topic = settings.orders_topic
        self.metrics = metrics or ProjectorMetrics()
        self.readiness = Readiness(self.metrics)
        self.validator = Validator(max_bytes=settings.max_message_bytes)
        self.dlq = dlq or DeadLetterQueue(settings.kafka_bootstrap, settings.dlq_topic, settings.orders_topic)
        self._conn: psycopg.AsyncConnection | None = None
        # Dead letters already acknowledged by the broker for a batch still being
        # retried: a retry does not send them twice.
        self._sent: set[tuple[int, int]] = set()

    async def start(self) -> None:
        """Connect to the broker and the database, waiting (not ready) while either is down."""
        await self.dlq.start()
        attempt = 0
        while True:
            try:
                await self._connection()
                break
            except (psycopg.Error, OSError) as exc:
                attempt += 1
                self._not_ready(exc, attempt)
                await asyncio.sleep(backoff_seconds(attempt, self.settings.db_retry_max_s))
        self.readiness.set_ready()

    async def stop(self) -> None:
        await self._close_connection()
        await self.dlq.stop()

    def prepare(self, batch: Sequence[Incoming]) -> Prepared:
        """Validate a batch: pure CPU, done while the previous batch is being written."""
        accepted, dead = self._validate(batch)
        return Prepared(
            {(a.partition, a.offset): a for a in accepted},
            {(d.message.partition, d.message.offset): d for d in dead},
        )

    async def process(self, batch: Sequence[Incoming], prepared: Prepared | None = None) -> BatchOutcome:
        """Apply the batch, retrying until it is durable (or the task is cancelled)."""
        prepared = prepared or self.prepare(batch)
        started = time.perf_counter()
        attempt = 0
        while True:
            try:
                conn = await self._connection()
                outcome = await self._apply(conn, batch, prepared)
                break
            except (psycopg.Error, KafkaError, OSError) as exc:
                attempt += 1
                self.metrics.db_retries.inc()
                self._not_ready(exc, attempt)
                await self._close_connection()
                await asyncio.sleep(backoff_seconds(attempt, self.settings.db_retry_max_s))
        self._sent.clear()
        self.readiness.set_ready()
        self._record(batch, outcome, time.perf_counter() - started)
        return outcome

    async def _apply(
        self, conn: psycopg.AsyncConnection, batch: Sequence[Incoming], prepared: Prepared
    ) -> BatchOutcome:
        async with conn.transaction():
            applied = await store.lock_applied_offsets(conn, self.topic, sorted({m.partition for m in batch}))
            fresh = [m for m in batch if m.offset >= applied.get(m.partition, 0)]
            positions = [(m.partition, m.offset) for m in fresh]
            accepted = [prepared.accepted[p] for p in positions if p in prepared.accepted]
            dead = [prepared.dead[p] for p in positions if p in prepared.dead]
            await self._dead_letter(dead)
            changed, rejected = await self._write(conn, accepted, fresh)
            await self._dead_letter(rejected)
            next_offsets: dict[int, int] = {}
            for m in fresh:
                next_offsets[m.partition] = max(next_offsets.get(m.partition, 0), m.offset + 1)
            if next_offsets:
                await store.save_applied_offsets(conn, self.topic, next_offsets)
            await store.notify_changed(conn, self.settings.notify_channel, changed)
        return BatchOutcome(
            applied=len(accepted) - len(rejected),
            changed=changed,
            dead_letters=dead + rejected,
            skipped=len(batch) - len(fresh),
        )

    def _validate(self, messages: Sequence[Incoming]) -> tuple[list[store.Accepted], list[DeadLetter]]:
        accepted: list[store.Accepted] = []
        dead: list[DeadLetter] = []
        check = self.validator.check
        for m in messages:
            result = check(m.value, m.key)
            if isinstance(result, Rejection):
                dead.append(DeadLetter(m, result.reason, result.error, result.path))
            else:
                body = orjson.dumps(result).decode()  # compact: the bytes the API will serve
                accepted.append(store.Accepted(result["order_uid"], body, m.partition, m.offset, result))
        return accepted, dead

    async def _write(
        self, conn: psycopg.AsyncConnection, accepted: list[store.Accepted], messages: Sequence[Incoming]
    ) -> tuple[list[str], list[DeadLetter]]:
        """Write all at once; if the database refuses, find the events it refuses."""
        try:
            async with conn.transaction():
                return await store.write_orders(conn, accepted), []
        except EVENT_FAULTS:
            pass
        original = {(m.partition, m.offset): m for m in messages}
        changed: list[str] = []
        rejected: list[DeadLetter] = []
        for event in accepted:
            try:
                async with conn.transaction():
                    changed += await store.write_orders(conn, [event])
            except EVENT_FAULTS as exc:
                error = exc.diag.message_primary or str(exc)
                rejected.append(
                    DeadLetter(original[event.partition, event.offset], "db_rejected", error, "$")
                )
        return list(dict.fromkeys(changed)), rejected

    async def _dead_letter(self, letters: list[DeadLetter]) -> None:
        todo = [d for d in letters if (d.message.partition, d.message.offset) not in self._sent]
        await self.dlq.send(todo)
        for d in todo:
            self._sent.add((d.message.partition, d.message.offset))
            log.info(
                "dead-lettered",
                extra={
                    "partition": d.message.partition,
                    "offset": d.message.offset,
                    "reason": d.reason,
                    "path": d.path,
                },
            )

    def _not_ready(self, exc: BaseException, attempt: int) -> None:
        what = "broker" if isinstance(exc, KafkaError) else "database"
        reason = f"{what} unavailable: {type(exc).__name__}: {str(exc).strip()[:200]}"
        self.readiness.set_not_ready(reason)
        log.warning("cannot make progress, retrying", extra={"attempt": attempt, "reason": reason})

    def _record(self, batch: Sequence[Incoming], outcome: BatchOutcome, seconds: float) -> None:
        m = self.metrics
        m.consumed.inc(len(batch))
        m.projected.inc(outcome.applied)
        m.changed.inc(len(outcome.changed))
        m.redeliveries.inc(outcome.skipped)
        for d in outcome.dead_letters:
            m.dead_lettered.labels(d.reason).inc()
        m.batch_size.observe(len(batch))
        m.batch_seconds.observe(seconds)
        for partition, offset in last_offsets(batch).items():
            m.last_applied_offset.labels(str(partition)).set(offset)

    async def _connection(self) -> psycopg.AsyncConnection:
        if self._conn is None or self._conn.closed:
            self._conn = await psycopg.AsyncConnection.connect(self.settings.dsn("projector"))
        return self._conn

    async def _close_connection(self) -> None:
        if self._conn is not None:
            conn, self._conn = self._conn, None
            try:
                await conn.close()
            except Exception:  # a dead connection may fail to close; it is gone either way
                pass
