"""One batch of the orders topic → one PostgreSQL transaction, retried until durable.

Each record is judged alone before the transaction (projector/core/verdicts.py); the transaction
follows the commit protocol (projector/checkpoint.py). An outage of the database or the broker, a
missing topic, or a partition another projector still writes rolls back and retries the same
batch with capped, jittered backoff, saying what is wrong in /readyz (once a minute in the log).
While dead letters cannot be sent, what comes before the first of them in each partition is
applied and the rest waits: one rule, whether the dead-letter topic is missing at start or goes
away later. Any other error propagates, and the worker stops (projector/faults.py).
"""

from __future__ import annotations

import asyncio
import gc
import logging
import random
import time
from collections.abc import Sequence

import psycopg

from orderview.jsonlog import OncePer
from orderview.settings import Settings
from projector import faults
from projector.adapters import topics
from projector.adapters.dead_letters import DeadLetterQueue
from projector.adapters.kafka import KafkaLog
from projector.checkpoint import Checkpoint, Group, Outcome
from projector.core.plan import Fate
from projector.core.records import Record
from projector.core.verdicts import Judge, Verdict
from projector.metrics import ProjectorMetrics, Readiness

log = logging.getLogger("orderview.projector")

# How often a running worker asks whether its topics still exist (for /readyz; every batch asks
# for the orders topic's incarnation itself).
TOPIC_CHECK_EVERY_S = 10.0

Verdicts = dict[tuple[int, int], Verdict]

# The cyclic GC's youngest generation is collected after this many allocations, not Python's 700.
# A batch keeps thousands of containers alive until it is written (an order is a dozen dicts and
# lists), so at 700 the young collections kept traversing and promoting them: 10-20 % of a
# worker's CPU while ingesting (bench/findings.md). Memory is unchanged: objects are freed by
# their reference counts; only cycles wait for the collector.
GC_YOUNG_THRESHOLD = 50_000


def collect_less_often() -> None:
    """For a process that projects batches (a worker, a rebuild)."""
    gc.set_threshold(GC_YOUNG_THRESHOLD, *gc.get_threshold()[1:])


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
        self.metrics = metrics or ProjectorMetrics()
        self.readiness = Readiness(self.metrics)
        self.judge = Judge(settings.max_message_bytes, settings.redrive_secret.encode())
        self.dlq = dlq or DeadLetterQueue(settings)
        self.kafka_log = KafkaLog(settings, settings.orders_topic)
        self.checkpoint = Checkpoint(settings, self.kafka_log, self.dlq, self.metrics, group)
        self._conn: psycopg.AsyncConnection | None = None
        self._started = False
        self._watching: asyncio.Task | None = None
        self._say = OncePer(60.0)

    async def start(self) -> None:
        """Reach the broker and the database, waiting (not ready) while either is away; then keep
        an eye on the topics."""
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

    def prepare(self, batch: Sequence[Record]) -> Verdicts:
        """Judge every record of a batch: pure CPU, done while the previous batch is written."""
        judge = self.judge
        return {r.where: judge(r) for r in batch}

    async def process(self, batch: Sequence[Record], verdicts: Verdicts | None = None) -> Outcome:
        """Apply the batch, retrying through outages until it is durable (or the task is cancelled)."""
        verdicts = verdicts if verdicts is not None else self.prepare(batch)
        started = time.perf_counter()
        attempt = 0
        while True:
            try:
                outcome = await self.checkpoint.commit(await self._connection(), batch, verdicts)
            except Exception as exc:
                if not isinstance(exc, faults.TopicMissing | faults.PartitionBusy):
                    await self._close_connection()
                await self._wait_out(exc, attempt := attempt + 1)
                self.metrics.db_retries.inc()
                continue
            self._record(len(batch) - len(outcome.rest), outcome, time.perf_counter() - started)
            if outcome.blocked is None:
                self.readiness.set_ready()
                return outcome
            batch = outcome.rest
            await self._wait_out(outcome.blocked, attempt := attempt + 1)

    async def check_topics(self) -> None:
        """TopicMissing for the orders or the dead-letter topic if either does not exist."""
        names = {self.settings.orders_topic: "orders", self.settings.dlq_topic: "dead-letter"}
        found = await self.kafka_log.describe_topics(list(names))
        missing = [name for name in names if not topics.usable(found[name])]
        for name in names:
            self.metrics.topic_missing.labels(name).set(1 if name in missing else 0)
        if missing:
            raise faults.TopicMissing(missing[0], names[missing[0]])

    async def _watch_topics(self) -> None:
        """A missing topic is said in /readyz and once a minute in the log, at start and later."""
        while True:
            try:
                await self.check_topics()
            except faults.TopicMissing as exc:
                self.readiness.set_not_ready(str(exc), "topics")
                if self._say(str(exc)):
                    log.error("%s", exc, extra={"topic": exc.topic})
            except Exception as exc:  # an outage: said by whatever waits for it
                if self._say(("topics", type(exc))):
                    log.warning("could not check the topics: %s", faults.describe(exc))
            else:
                self.readiness.set_ready("topics")
            await asyncio.sleep(TOPIC_CHECK_EVERY_S)

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
        m.batch_size.observe(consumed)
        m.batch_seconds.observe(seconds)
        plan = outcome.plan
        if plan is None:
            return
        m.redeliveries.inc(plan.fresh.redeliveries)
        m.discarded.inc(plan.fresh.discarded)
        m.projected.inc(plan.count(Fate.APPLIED) + plan.count(Fate.SUPERSEDED))
        m.resent.inc(plan.count(Fate.RESENT))
        m.redrives_skipped.inc(plan.count(Fate.REDRIVE_SEEN))
        m.changed.inc(sum(1 for c in plan.changes if c.changed))
        m.erased.inc(sum(1 for c in plan.changes if c.changed and c.body is None))
        if self.settings.history == "keep":
            m.history_rows.inc(sum(len(c.history) + c.archive for c in plan.changes))
        for letter in plan.letters:
            m.dead_lettered.labels(letter.reason).inc()
            if letter.reason == "stale_version":
                m.stale_versions.inc()
            log.info(
                "dead-lettered",
                extra={
                    "partition": letter.record.partition,
                    "offset": letter.record.offset,
                    "reason": letter.reason,
                    "path": letter.path,
                },
            )
        for partition, next_offset in outcome.recorded.items():
            m.last_applied_offset.labels(str(partition)).set(next_offset - 1)

    async def _connection(self) -> psycopg.AsyncConnection:
        if self._conn is None or self._conn.closed:
            # Autocommit: the partitions' advisory locks are taken outside transactions
            # (projector/checkpoint.py); each batch's transaction is explicit.
            conn = await psycopg.AsyncConnection.connect(self.settings.dsn("projector"), autocommit=True)
            # A new connection may reach another server (a failover): it may hold older positions.
            await self.checkpoint.reconcile(conn)
            self._conn = conn
        return self._conn

    async def _close_connection(self) -> None:
        if self._conn is not None:
            conn, self._conn = self._conn, None
            await faults.close_quietly(conn)
