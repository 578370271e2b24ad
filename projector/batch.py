"""One batch of messages from the orders topic → one PostgreSQL transaction, retried until durable.

Each message is judged alone before the transaction (projector/judge.py); the transaction follows
the commit protocol (projector/checkpoint.py). An outage of the database or the broker, or a
missing topic, rolls back and retries the same batch with capped, jittered backoff, saying what
is wrong in /readyz (once a minute in the log); any other error propagates, and the worker stops
(projector/faults.py).
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Sequence

import psycopg

from orderview.jsonlog import OncePer
from orderview.settings import Settings
from projector import faults, topics
from projector.checkpoint import Checkpoint, Group, LettersBlocked, Outcome
from projector.dlq import DeadLetterQueue
from projector.judge import Judge, Prepared
from projector.kafka import KafkaLog
from projector.messages import Incoming
from projector.metrics import ProjectorMetrics, Readiness
from projector.positions import Positions

log = logging.getLogger("orderview.projector")

# How often a running worker asks whether its topics still exist.
TOPIC_CHECK_EVERY_S = 10.0


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
        self.judge = Judge(settings.max_message_bytes)
        self.dlq = dlq or DeadLetterQueue(settings)
        self.kafka_log = KafkaLog(settings, settings.orders_topic)
        self.positions = Positions(settings.orders_topic, self.kafka_log, self.metrics)
        self.checkpoint = Checkpoint(settings, self.positions, self.dlq, group)
        self._conn: psycopg.AsyncConnection | None = None
        self._started = False
        self._watching: asyncio.Task | None = None
        self._say = OncePer(60.0)

    async def start(self) -> None:
        """Reach the broker, the database and both topics, waiting (not ready) while any is
        missing; then keep an eye on the topics."""
        attempt = 0
        while True:
            try:
                if not self._started:
                    await self.dlq.start()
                    await self.kafka_log.start()
                    self._started = True
                await self._connection()
                await self.check_topics()
                break
            except Exception as exc:
                await self._wait_out(exc, attempt := attempt + 1, source="start")
        self.readiness.set_ready("start")
        self._watching = asyncio.create_task(self._watch_topics())

    async def stop(self) -> None:
        if self._watching is not None:
            self._watching.cancel()
            await asyncio.gather(self._watching, return_exceptions=True)
            self._watching = None
        await self.checkpoint.stop()
        await self._close_connection()
        if self._started:
            self._started = False
            await self.kafka_log.stop()
            await self.dlq.stop()

    def prepare(self, batch: Sequence[Incoming]) -> Prepared:
        """Judge every message of a batch: pure CPU, done while the previous batch is written."""
        return self.judge.prepare(batch)

    async def check_topics(self) -> None:
        """TopicMissing for the orders or the dead-letter topic if either does not exist (a DLQ
        without a partition to write to counts as missing)."""
        names = {self.settings.orders_topic: "orders", self.settings.dlq_topic: "dead-letter"}
        found = await self.kafka_log.describe_topics(list(names))
        missing = [name for name in names if not topics.usable(found[name])]
        for name in names:
            self.metrics.topic_missing.labels(name).set(1 if name in missing else 0)
        if missing:
            raise faults.TopicMissing(missing[0], names[missing[0]])

    async def process(self, batch: Sequence[Incoming], prepared: Prepared | None = None) -> Outcome:
        """Apply the batch, retrying through outages until it is durable (or the task is
        cancelled). While dead letters cannot be sent, what comes before the first of them in
        each partition is applied, and the rest waits."""
        prepared = prepared or self.prepare(batch)
        started = time.perf_counter()
        attempt = 0
        cut: dict[int, int] | None = None
        blocked: LettersBlocked | None = None
        while True:
            try:
                conn = await self._connection()
                outcome, plan = await self.checkpoint.write(conn, batch, prepared, cut)
            except LettersBlocked as exc:
                if cut is None and any(m.offset < exc.cut.get(m.partition, m.offset + 1) for m in batch):
                    cut, blocked = exc.cut, exc  # what precedes the first dead letters: at once
                    continue
                cut = None
                await self._wait_out(exc.cause, attempt := attempt + 1)
                continue
            except Exception as exc:
                await self._close_connection()
                cut = None
                await self._wait_out(exc, attempt := attempt + 1)
                self.metrics.db_retries.inc()
                continue
            self.checkpoint.settle(plan, outcome)
            await self.checkpoint.follow(plan, outcome)
            if cut is None:
                self._record(len(batch), outcome, time.perf_counter() - started)
                self.readiness.set_ready()
                return outcome
            rest = [m for m in batch if m.partition in cut and m.offset >= cut[m.partition]]
            self._record(len(batch) - len(rest), outcome, time.perf_counter() - started)
            batch, cut = rest, None
            assert blocked is not None
            await self._wait_out(blocked.cause, attempt := attempt + 1)

    async def _watch_topics(self) -> None:
        """A topic deleted while the worker runs is said in /readyz and once a minute in the log."""
        while True:
            await asyncio.sleep(TOPIC_CHECK_EVERY_S)
            try:
                await self.check_topics()
            except faults.TopicMissing as exc:
                self.readiness.set_not_ready(str(exc), "topics")
                if self._say(str(exc)):
                    log.error("%s", exc, extra={"topic": exc.topic})
                continue
            except Exception as exc:  # an outage: said by whatever waits for it
                if self._say(("topics", type(exc))):
                    log.warning("could not check the topics: %s", faults.describe(exc))
                continue
            self.readiness.set_ready("topics")

    async def _wait_out(self, exc: Exception, attempt: int, source: str = "batch") -> None:
        """Wait before another attempt if `exc` is an outage; re-raise anything else."""
        reason = faults.outage(exc)
        if reason is None:
            raise exc
        self.readiness.set_not_ready(reason, source)
        if self._say(reason):
            log.warning("cannot make progress, retrying", extra={"attempt": attempt, "reason": reason})
        await asyncio.sleep(backoff_seconds(attempt, self.settings.db_retry_max_s))

    def _record(self, consumed: int, outcome: Outcome, seconds: float) -> None:
        m = self.metrics
        m.consumed.inc(consumed)
        m.projected.inc(outcome.applied)
        m.changed.inc(len(outcome.changed))
        m.redeliveries.inc(outcome.skipped)
        m.discarded.inc(outcome.discarded)
        m.stale_versions.inc(outcome.stale)
        m.redrives_skipped.inc(outcome.redrives_skipped)
        for d in outcome.dead_letters:
            m.dead_lettered.labels(d.reason).inc()
        m.batch_size.observe(consumed)
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
            await faults.close_quietly(conn)
