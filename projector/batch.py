"""One batch of messages from the orders topic → one PostgreSQL transaction.

Before the transaction, each message is judged alone (`prepare`): whatever goes wrong while
decoding, validating or explaining one message becomes that message's dead letter, so nothing
a message holds can raise out of the batch. Inside the transaction: lock and check the recorded
positions (projector/positions.py), dead-letter the bad messages (awaited, acks=all), write the
good ones, record the next positions and NOTIFY the changed orders. An outage of the database or
the broker rolls back and retries the same batch with capped, jittered backoff; any other error
propagates, and the worker stops (projector/faults.py).
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import psycopg

from orderview.settings import Settings
from projector import faults, store
from projector.dlq import DeadLetter, DeadLetterQueue
from projector.kafka import COMMIT_RETRY_S, KafkaLog
from projector.messages import Incoming
from projector.metrics import ProjectorMetrics, Readiness
from projector.positions import Plan, Positions
from projector.validate import Rejection, Validator

log = logging.getLogger("orderview.projector")


class Group(Protocol):
    """The worker's consumer group, as far as positions go."""

    async def commit(self, offsets: dict[int, int]) -> bool:
        """Whether the offsets were sent; False when the group cannot take them now."""
        ...

    async def seek(self, partition: int, offset: int) -> None: ...


@dataclass(frozen=True, slots=True)
class Prepared:
    """A batch judged ahead of its transaction (which may skip some as redeliveries)."""

    accepted: dict[tuple[int, int], store.Accepted]
    dead: dict[tuple[int, int], DeadLetter]


@dataclass(frozen=True, slots=True)
class BatchOutcome:
    applied: int
    changed: list[str]
    dead_letters: list[DeadLetter]
    skipped: int
    discarded: int
    recorded: dict[int, int]  # partition -> next offset recorded


def backoff_seconds(attempt: int, cap: float, base: float = 0.1) -> float:
    """Full jitter: uniform in [0, min(cap, base·2^attempt)]."""
    return random.uniform(0, min(cap, base * 2**attempt))


class BatchProjector:
    def __init__(
        self,
        settings: Settings,
        metrics: ProjectorMetrics | None = None,
        dlq: DeadLetterQueue | None = None,
        group: Group | None = None,
    ) -> None:
        self.settings = settings
        self.topic = settings.orders_topic
        self.metrics = metrics or ProjectorMetrics()
        self.readiness = Readiness(self.metrics)
        self.validator = Validator(max_bytes=settings.max_message_bytes)
        self.dlq = dlq or DeadLetterQueue(settings)
        self.kafka_log = KafkaLog(settings, settings.orders_topic)
        self.positions = Positions(settings.orders_topic, self.kafka_log)
        self.group = group
        self._conn: psycopg.AsyncConnection | None = None
        self._started = False
        self._to_commit: dict[int, int] = {}  # recorded positions not yet copied to the group
        self._committing: asyncio.Task | None = None
        # Dead letters already acknowledged by the broker for a batch still being
        # retried: a retry does not send them twice.
        self._sent: set[tuple[int, int]] = set()

    async def start(self) -> None:
        """Reach the broker and the database, waiting (not ready) while either is down."""
        attempt = 0
        while True:
            try:
                if not self._started:
                    await self.dlq.start()
                    await self.kafka_log.start()
                    self._started = True
                await self._connection()
                break
            except Exception as exc:
                await self._wait_out(exc, attempt := attempt + 1)
        self.readiness.set_ready()

    async def stop(self) -> None:
        if self._committing is not None:
            self._committing.cancel()
            await asyncio.gather(self._committing, return_exceptions=True)
        await self._close_connection()
        if self._started:
            self._started = False
            await self.kafka_log.stop()
            await self.dlq.stop()

    def prepare(self, batch: Sequence[Incoming]) -> Prepared:
        """Judge every message of a batch: pure CPU, done while the previous batch is written."""
        accepted: dict[tuple[int, int], store.Accepted] = {}
        dead: dict[tuple[int, int], DeadLetter] = {}
        for m in batch:
            verdict = self._judge(m)
            if isinstance(verdict, DeadLetter):
                dead[m.partition, m.offset] = verdict
            else:
                accepted[m.partition, m.offset] = verdict
        return Prepared(accepted, dead)

    def _judge(self, m: Incoming) -> store.Accepted | DeadLetter:
        """One message's verdict. Anything that goes wrong while judging it is its own fault and
        becomes its dead letter (`unprocessable`, with the exception's type): one message can
        never raise out of its batch, whatever it holds."""
        try:
            result = self.validator.check(m.value, m.key)
            if isinstance(result, Rejection):
                return DeadLetter(m, result.reason, result.error, result.path)
            body = store.compact_json(result)  # the bytes the API will serve
            return store.Accepted(result["order_uid"], body, m.partition, m.offset, result)
        except Exception as exc:
            return DeadLetter(m, "unprocessable", faults.describe(exc, limit=900), "$")

    async def process(self, batch: Sequence[Incoming], prepared: Prepared | None = None) -> BatchOutcome:
        """Apply the batch, retrying through outages until it is durable (or the task is
        cancelled); then commit the group's offsets to the positions it recorded."""
        prepared = prepared or self.prepare(batch)
        started = time.perf_counter()
        attempt = 0
        while True:
            try:
                conn = await self._connection()
                outcome, plan = await self._apply(conn, batch, prepared)
                break
            except Exception as exc:
                await self._close_connection()
                await self._wait_out(exc, attempt := attempt + 1)
                self.metrics.db_retries.inc()
        self._sent.clear()
        self.positions.settle(plan)
        await self._follow(plan, outcome)
        self.readiness.set_ready()
        self._record(batch, outcome, time.perf_counter() - started)
        return outcome

    async def _apply(
        self, conn: psycopg.AsyncConnection, batch: Sequence[Incoming], prepared: Prepared
    ) -> tuple[BatchOutcome, Plan]:
        async with conn.transaction():
            recorded = await self.positions.lock(conn, sorted({m.partition for m in batch}))
            plan = await self.positions.plan(batch, recorded)
            keys = [(m.partition, m.offset) for m in plan.fresh]
            accepted = [prepared.accepted[k] for k in keys if k in prepared.accepted]
            dead = [prepared.dead[k] for k in keys if k in prepared.dead]
            await self._dead_letter(dead)
            changed, rejected = await self._write(conn, accepted, plan.fresh)
            await self._dead_letter(rejected)
            next_offsets = await self.positions.record(conn, plan.fresh)
            await store.notify_changed(conn, self.settings.notify_channel, changed)
        outcome = BatchOutcome(
            applied=len(accepted) - len(rejected),
            changed=changed,
            dead_letters=dead + rejected,
            skipped=plan.skipped,
            discarded=plan.discarded,
            recorded=next_offsets,
        )
        return outcome, plan

    async def _follow(self, plan: Plan, outcome: BatchOutcome) -> None:
        """After the commit: read again from where the consumer skipped, and copy the recorded
        positions to the consumer group's offsets (in the background: a round trip to the
        group coordinator per batch cost 7% of the write's time)."""
        if self.group is None:
            return
        for partition, offset in plan.seeks.items():
            await self.group.seek(partition, offset)
        if self._committing is not None and self._committing.done():
            self._committing.result()  # a failed commit stops the worker here
            self._committing = None
        self._to_commit.update(self.positions.committed_offsets(outcome.recorded))
        if self._to_commit and self._committing is None:
            self._committing = asyncio.create_task(self._commit_group_offsets())

    async def _commit_group_offsets(self) -> None:
        """Commit the newest recorded positions until none is left: always ones a transaction
        already committed, and in order."""
        assert self.group is not None
        while self._to_commit:
            offsets, self._to_commit = self._to_commit, {}
            if not await self.group.commit(offsets):  # not taken now: again soon
                self._to_commit = {**offsets, **self._to_commit}
                await asyncio.sleep(COMMIT_RETRY_S)

    async def _write(
        self, conn: psycopg.AsyncConnection, accepted: list[store.Accepted], messages: Sequence[Incoming]
    ) -> tuple[list[str], list[DeadLetter]]:
        """Write all at once; if the database refuses, find the events it refuses."""
        try:
            async with conn.transaction():
                return await store.write_orders(conn, accepted), []
        except faults.EVENT_FAULTS:
            pass
        original = {(m.partition, m.offset): m for m in messages}
        changed: list[str] = []
        rejected: list[DeadLetter] = []
        for event in accepted:
            try:
                async with conn.transaction():
                    changed += await store.write_orders(conn, [event])
            except faults.EVENT_FAULTS as exc:
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

    async def _wait_out(self, exc: Exception, attempt: int) -> None:
        """Wait before another attempt if `exc` is an outage; re-raise anything else."""
        reason = faults.outage(exc)
        if reason is None:
            raise exc
        if reason != self.readiness.reason:  # once per cause, not once per attempt
            log.warning("cannot make progress, retrying", extra={"attempt": attempt, "reason": reason})
        self.readiness.set_not_ready(reason)
        await asyncio.sleep(backoff_seconds(attempt, self.settings.db_retry_max_s))

    def _record(self, batch: Sequence[Incoming], outcome: BatchOutcome, seconds: float) -> None:
        m = self.metrics
        m.consumed.inc(len(batch))
        m.projected.inc(outcome.applied)
        m.changed.inc(len(outcome.changed))
        m.redeliveries.inc(outcome.skipped)
        m.discarded.inc(outcome.discarded)
        for d in outcome.dead_letters:
            m.dead_lettered.labels(d.reason).inc()
        m.batch_size.observe(len(batch))
        m.batch_seconds.observe(seconds)
        for partition, next_offset in outcome.recorded.items():
            m.last_applied_offset.labels(str(partition)).set(next_offset - 1)

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
