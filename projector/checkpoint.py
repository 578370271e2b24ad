"""The commit protocol: how one batch of the orders topic becomes durable.

`Checkpoint.commit` takes a batch whose records were judged (projector/core/verdicts.py) and
applies it in these steps. Every decision is the pure core's (projector/core/plan.py); this module
reads what the core needs, and executes and writes what it decides.

0. Own: the batch's partitions' advisory locks (projector/adapters/postgres.py): one writer per
   partition, also while letters are sent outside any transaction.
1. Facts: the topic's incarnation now, asked of the broker after the batch was fetched.
Then, until the plan lacks nothing:
2. Fresh: in a transaction, lock the partitions' positions and plan which records are fresh. A fact
   it lacks (what lies in a gap of offsets, the record before a position) is asked of the log
   after leaving the transaction, and planning starts again.
3. Decide: lock the versions of the fresh records' orders and the redrives seen; decide each
   record's fate and what changes.
4. Letters: if the plan needs letters the DLQ has not acknowledged (acks=all), leave the
   transaction, send them, plan again. If they cannot be sent, what comes before the first of
   them in each partition is applied alone, and the rest waits (`Outcome.rest`).
5. Write: the changes, under a savepoint. Rows the database refuses are found by halving the batch and, if
   the database takes a valid order of its own (the canary), planned again as refused (a letter
   each); if it refuses that too, the worker stops (SystemicRefusal) with nothing sent.
6. Check: every offset below each new position has exactly one fate, every letter is acknowledged
   (FatesBroken otherwise: the worker stops).
7. Record: redrives taken, records lost, positions; notify the API replicas of what changed.
8. Commit.
9. After the commit: release the partitions, read again from where the plan seeks, and copy the
   positions to the consumer group's offsets (in the background: they trail, never lead).

Why no recorded position passes a record whose effect is not durable: positions are written in
step 7 only, inside the transaction that writes the batch's changes (step 5), after step 6
checked that each record below them is applied, superseded, resent, a redrive seen, or has its
dead letter acknowledged (step 4, before the transaction); they commit with the changes in step 8
or not at all. No broker round trip happens inside a transaction: each leaves it first.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from types import ModuleType
from typing import Protocol

import psycopg

from orderview.settings import Settings
from projector import faults
from projector.adapters import postgres
from projector.adapters.dead_letters import DeadLetterQueue
from projector.adapters.kafka import KafkaLog
from projector.core import plan as core
from projector.core.plan import Ask, Facts, Plan
from projector.core.records import Record
from projector.core.verdicts import Rejected, Verdict
from projector.metrics import ProjectorMetrics

log = logging.getLogger("orderview.projector")

COMMIT_RETRY_S = 0.5  # a group commit refused while the group rebalances is tried again after this
SEEK_AGAIN_AFTER_S = 1.0  # a partition sought to the same offset is not sought again sooner


class Group(Protocol):
    """The worker's consumer group, as far as positions go."""

    async def commit(self, offsets: dict[int, int]) -> bool:
        """Whether the offsets were sent; False when the group cannot take them now."""
        ...

    async def seek(self, partition: int, offset: int) -> None: ...


@dataclass
class Outcome:
    plan: Plan | None  # None: nothing of the batch was fresh
    recorded: dict[int, int] = field(default_factory=dict)  # partition -> next offset recorded
    rest: list[Record] = field(default_factory=list)  # not applied: their letters cannot be sent now
    blocked: Exception | None = None  # why not


class _Leave(Exception):
    """Leave the transaction (rolled back) to do what the plan lacks."""


def _subjects(batch: Sequence[Record], verdicts: dict[tuple[int, int], Verdict]) -> tuple[set[str], set[str]]:
    """The orders a batch's records are of, and the redrives they claim to be."""
    judged = [verdicts[r.where] for r in batch]
    uids = {v.uid for v in judged if not isinstance(v, Rejected)}
    return uids, {v.claim.of for v in judged if not isinstance(v, Rejected) and v.claim is not None}


def _again(
    early: core.Fresh | None, positions: dict[int, core.Position], standing: dict[int, core.Position]
) -> core.Fresh | None:
    """The freshness found before the transaction, when step 2 would find it again: freshness is
    a pure function of the batch, the positions and the facts, and `early` is given only for the
    same batch, with facts that lacked nothing (so none were added since), and used once."""
    if early is not None and not early.asks and positions == standing:
        return early
    return None


class Checkpoint:
    def __init__(
        self,
        settings: Settings,
        kafka_log: KafkaLog,
        dlq: DeadLetterQueue,
        metrics: ProjectorMetrics,
        group: Group | None = None,
        store: ModuleType = postgres,
    ) -> None:
        self.settings = settings
        self.store = store  # projector/adapters/postgres.py; the generated histories give a fake
        self.topic = settings.orders_topic
        self.log = kafka_log
        self.dlq = dlq
        self.metrics = metrics
        self.group = group
        self.refused: dict[tuple[int, int], str] = {}  # rows the database refused, until recorded
        self._said: set[tuple[str, int, int]] = set()
        self._sought: dict[int, tuple[int, float]] = {}
        self.seek_again_after_s = SEEK_AGAIN_AFTER_S
        # Per partition, the position this worker last knew the database to hold: sought at
        # assignment (projector/assignment.py) or recorded since.
        self.known: dict[int, int] = {}
        self._to_commit: dict[int, int] = {}  # recorded positions not yet copied to the group
        self._committing: asyncio.Task | None = None

    async def commit(
        self, conn: psycopg.AsyncConnection, batch: Sequence[Record], verdicts: dict[tuple[int, int], Verdict]
    ) -> Outcome:
        """Steps 0 to 9 (the module says why they keep the invariant)."""
        partitions = sorted({r.partition for r in batch})
        try:
            # 0. Own, and 1. Facts: at once, the partitions' locks with where they stand, and the
            # topic's incarnation from the broker.
            (held, standing), topic_id = await asyncio.gather(
                self.store.own(conn, self.topic, partitions), self.log.topic_id()
            )
            if held:
                raise faults.PartitionBusy(held)
            if topic_id is None:
                raise faults.TopicMissing(self.topic, "orders")
            facts = Facts(topic_id)
            # The letters the records need whatever the read model holds, sent before any
            # transaction (the partitions are this worker's: where they stand cannot move).
            early = core.freshness(batch, standing, facts)
            sent, rest, blocked = await self._send(batch, self._known_letters(early, verdicts))
            if sent is not batch:
                batch, early = sent, None
            uids, ofs = _subjects(batch, verdicts)
            while True:
                lacking: list[Ask] = []
                unsent: list[core.Letter] = []
                try:
                    async with conn.transaction():
                        # 2. Fresh
                        positions, heads, seen = await self.store.lock(
                            conn, self.topic, partitions, uids, ofs
                        )
                        fresh = _again(early, positions, standing) or core.freshness(batch, positions, facts)
                        early = None
                        if fresh.asks:
                            lacking = fresh.asks
                            raise _Leave
                        # 3. Decide
                        plan = core.decide(fresh, verdicts, heads, seen, self.refused)
                        # 4. Letters
                        unsent = [d for d in plan.letters if d.source not in self.dlq.acknowledged]
                        if unsent:
                            raise _Leave
                        # 5. Write
                        if not await self._write(conn, plan):
                            raise _Leave
                        # 6. Check
                        core.check(plan, positions, self.dlq.acknowledged)
                        # 7. Record
                        await self.store.record(
                            conn, self.topic, topic_id, plan, self.settings.notify_channel
                        )
                    # 8. Commit: the transaction's block ended without an exception.
                    break
                except _Leave:
                    pass
                except self.store.Conflict:
                    continue
                if lacking:
                    await self._ask(facts, lacking)
                elif unsent:
                    batch, left, cause = await self._send(batch, unsent)
                    rest, blocked = left + rest, cause or blocked
        finally:
            await self.store.release(conn, self.topic, partitions)
        # 9. After the commit
        recorded = {p: a.next_offset for p, a in plan.fresh.advances.items()}
        # What the database holds now: the positions found in step 2, or those recorded over them.
        # A batch of redeliveries only (no advance) still tells where the database stands, which a
        # later failover's reconcile compares with.
        self.known.update({p: positions[p].next_offset for p in partitions if p in positions})
        self.known.update(recorded)
        self._settle(plan, recorded)
        await self._follow(plan, recorded)
        return Outcome(plan, recorded, rest, blocked)

    def _known_letters(
        self, fresh: core.Fresh, verdicts: dict[tuple[int, int], Verdict]
    ) -> list[core.Letter]:
        return [] if fresh.asks else core.rejections(fresh, verdicts, self.refused)

    async def _send(
        self, batch: Sequence[Record], letters: list[core.Letter]
    ) -> tuple[Sequence[Record], list[Record], Exception | None]:
        """Send the letters not acknowledged yet. If they cannot be sent, what precedes the first
        of them in each partition goes alone: (what goes, what waits, why); `batch` itself goes
        when nothing waits."""
        unsent = [d for d in letters if d.source not in self.dlq.acknowledged]
        if not unsent:
            return batch, [], None
        try:
            await self.dlq.send(unsent)
            return batch, [], None
        except Exception as exc:
            if faults.outage(exc) is None:
                raise
            cut: dict[int, int] = {}
            for letter in unsent:
                p, o = letter.source
                cut[p] = min(o, cut.get(p, o))
            kept = core.restrict(batch, cut)
            if not kept:
                raise
            return kept, [r for r in batch if r.offset >= cut.get(r.partition, r.offset + 1)], exc

    async def reconcile(self, conn: psycopg.AsyncConnection) -> None:
        """On a new connection: a database that holds older positions than this worker knew lost
        commits (a failover to an asynchronous standby that lacked them). Read those partitions
        again from its positions; a batch that comes meanwhile finds the consumer ahead, as the
        plan expects (projector/core/plan.py)."""
        if not self.known or self.group is None:
            return
        positions = await self.store.read_positions(conn, self.topic)
        for partition, mine in sorted(self.known.items()):
            theirs = positions.get(partition, core.Position()).next_offset
            if theirs < mine:
                log.warning(
                    "the database holds an older position than this worker recorded (a failover to a "
                    "standby that lacked the last commits); reading again from it",
                    extra={"partition": partition, "recorded": mine, "found": theirs},
                )
                self.known[partition] = theirs
                self._to_commit.pop(partition, None)
                await self.group.seek(partition, theirs)

    async def _write(self, conn: psycopg.AsyncConnection, plan: Plan) -> bool:
        """Write the plan's changes; False, with `refused` grown, when the database refused rows."""
        try:
            async with conn.transaction():
                await self.store.write_changes(conn, plan.changes, self.settings.history == "keep")
            return True
        except faults.EVENT_FAULTS as exc:
            refused = await self.store.refused_changes(conn, plan.changes)
            if not refused:  # refused together, taken alone: not the orders' fault
                raise
            canary = await self.store.database_refuses_any_order(conn)
            if canary is not None:
                raise faults.SystemicRefusal(
                    f"the database refuses every order, a valid order of the projector's own too "
                    f"(SQLSTATE {canary.sqlstate}: {canary.diag.message_primary or faults.describe(canary)}): "
                    "a change to the database, not the orders; none of them is dead-lettered. Fix the "
                    "database and start the worker again: it goes on from the recorded position"
                ) from exc
            self.refused.update(refused)
            return False

    async def _ask(self, facts: Facts, asks: list[Ask]) -> None:
        """What the log says, outside any transaction."""
        for ask in asks:
            if ask.kind == "gap":
                facts.gaps[ask.partition, ask.offset] = await self.log.gap(ask.partition, ask.offset)
            else:
                facts.last[ask.partition, ask.offset] = await self.log.last(ask.partition, ask.offset)

    def _settle(self, plan: Plan, recorded: dict[int, int]) -> None:
        """The batch is durable: forget what it needed, say once what it found."""
        self.dlq.settle(recorded)
        self.refused = {(p, o): e for (p, o), e in self.refused.items() if o >= recorded.get(p, 0)}
        for partition, first, end in plan.fresh.lost:
            self._once(
                ("lost", partition, end),
                logging.ERROR,
                "records deleted from the log before they were applied: they are lost to the read "
                "model; the partition goes on from the first record the log still holds",
                **{"partition": partition, "from": first, "to": end, "records": end - first},
            )
            self.metrics.lost(partition, first, end)
        for partition, offset, reason in plan.fresh.applied_deleted:
            self.applied_record_deleted(partition, offset, reason)

    def applied_record_deleted(self, partition: int, offset: int, reason: str) -> None:
        """The last record applied is gone (compaction, retention): expected; said once."""
        if self._once(
            ("deleted", partition, offset),
            logging.INFO,
            f"the last record applied was deleted from the log since ({reason}); the position stands",
            partition=partition,
            offset=offset,
            reason=reason,
        ):
            self.metrics.applied_record_deleted(partition, reason)

    def _once(self, key: tuple[str, int, int], level: int, message: str, **extra: object) -> bool:
        if key in self._said:
            return False
        self._said.add(key)
        log.log(level, message, extra=extra)
        return True

    async def _follow(self, plan: Plan, recorded: dict[int, int]) -> None:
        """9. Read again from where the plan seeks, and copy the recorded positions to the group."""
        if self.group is None:
            return
        now = time.monotonic()
        for partition, offset in plan.fresh.seeks.items():
            last = self._sought.get(partition)
            if last is not None and last[0] == offset and now - last[1] < self.seek_again_after_s:
                continue  # the seek is on its way; what was fetched before it is still coming
            log.warning(
                "the consumer delivered records past ones it skipped; reading again from the position",
                extra={"partition": partition, "next_offset": offset},
            )
            self._sought[partition] = (offset, now)
            await self.group.seek(partition, offset)
        if self._committing is not None and self._committing.done():
            self._committing.result()  # a failed commit stops the worker here
            self._committing = None
        self._to_commit.update(recorded)
        if self._to_commit and self._committing is None:
            self._committing = asyncio.create_task(self._commit_group_offsets())

    async def stop(self) -> None:
        if self._committing is not None:
            self._committing.cancel()
            await asyncio.gather(self._committing, return_exceptions=True)
            self._committing = None

    async def _commit_group_offsets(self) -> None:
        """Commit the newest recorded positions until none is left: always ones a transaction
        already committed, and in order."""
        assert self.group is not None
        while self._to_commit:
            offsets, self._to_commit = self._to_commit, {}
            if not await self.group.commit(offsets):  # not taken now: again soon
                self._to_commit = {**offsets, **self._to_commit}
                await asyncio.sleep(COMMIT_RETRY_S)
