"""The commit protocol: how one batch of the orders topic becomes durable.

`Checkpoint.write` applies a batch in one PostgreSQL transaction, in these steps:

1. Lock: the positions of the batch's partitions, FOR UPDATE; a worker of an older consumer
   generation still writing the same partitions waits instead of interleaving.
2. Plan: which messages are fresh (projector/positions.py): from the recorded position on, each
   offset once and in order; redeliveries below it are skipped; a position the log cannot have
   produced, or a record the consumer skipped, stops here (UntrustedPosition, SkippedRecords).
3. Redrives: a redriven dead letter seen before is skipped; the first copy of each is noted.
4. Rows: the fresh valid orders, written where they are newer than the read model's versions
   (projector/store.py); an older version is stale; an order the database refuses is found
   alone under a savepoint. N refusals in a row with the same error stop the worker: that is
   the database's fault, not the orders' (SystemicRefusal), and nothing of the batch is sent.
5. Dead letters: every fresh message that is not applied — invalid, stale, refused — is sent to
   the DLQ and acknowledged by the broker (acks=all), each once (projector/dlq.py). If they
   cannot be sent, what precedes the first of them in each partition may be applied alone
   (LettersBlocked): a missing DLQ holds back no order that comes before a bad message.
6. Position: per partition, the next offset and what the record before it was (positions.record).
7. Notify: the changed order_uids, delivered to the API replicas at commit.
8. Commit: rows, positions and notifications together, or nothing.
Then, after the commit (`settle`, `follow`):
9. Group offsets: the recorded positions are copied to the consumer group, trailing them.

Why no recorded or committed offset passes a message whose effect is not durable: a position is
written in step 6 only, for the fresh messages of step 2, inside the transaction that holds their
rows (step 4) and after their dead letters were acknowledged (step 5); it commits with them in
step 8 or not at all. Group offsets (step 9) are copies of committed positions. Any exception
before step 8 rolls the transaction back: nothing of the batch is recorded.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

import psycopg

from orderview.settings import Settings
from projector import faults, queries, store
from projector.dlq import DeadLetter, DeadLetterQueue
from projector.judge import Prepared
from projector.kafka import COMMIT_RETRY_S
from projector.messages import Incoming
from projector.positions import Plan, Positions

log = logging.getLogger("orderview.projector")


class Group(Protocol):
    """The worker's consumer group, as far as positions go."""

    async def commit(self, offsets: dict[int, int]) -> bool:
        """Whether the offsets were sent; False when the group cannot take them now."""
        ...

    async def seek(self, partition: int, offset: int) -> None: ...


class LettersBlocked(Exception):
    """Dead letters could not be sent (`cause`: the DLQ topic missing, the broker away). `cut`
    gives, per partition, the first offset that needs one: what is below can be applied alone."""

    def __init__(self, cause: Exception, cut: dict[int, int]) -> None:
        super().__init__(str(cause))
        self.cause = cause
        self.cut = cut


@dataclass(frozen=True, slots=True)
class Refusals:
    """Valid orders the database refused in a row, and with which error."""

    error: tuple | None = None
    count: int = 0
    example: str = ""

    def after(self, exc: psycopg.Error) -> Refusals:
        diag = exc.diag
        error = (exc.sqlstate, diag.table_name, diag.column_name, diag.constraint_name)
        example = f"SQLSTATE {exc.sqlstate}: {diag.message_primary or faults.describe(exc)}"
        return Refusals(error, self.count + 1 if error == self.error else 1, example)


@dataclass(frozen=True, slots=True)
class Outcome:
    applied: int
    changed: list[str]
    dead_letters: list[DeadLetter]
    stale: int
    skipped: int  # redeliveries
    discarded: int
    redrives_skipped: int
    recorded: dict[int, int]  # partition -> next offset recorded
    refusals: Refusals = field(default_factory=Refusals)


class Checkpoint:
    def __init__(
        self, settings: Settings, positions: Positions, dlq: DeadLetterQueue, group: Group | None = None
    ) -> None:
        self.settings = settings
        self.positions = positions
        self.dlq = dlq
        self.group = group
        self.refusals = Refusals()  # as of the last committed batch
        self._to_commit: dict[int, int] = {}  # recorded positions not yet copied to the group
        self._committing: asyncio.Task | None = None

    async def write(
        self,
        conn: psycopg.AsyncConnection,
        batch: Sequence[Incoming],
        prepared: Prepared,
        cut: dict[int, int] | None = None,
    ) -> tuple[Outcome, Plan]:
        """Steps 1 to 8. With `cut`, only the messages below it (per partition) are applied."""
        if cut is not None:
            batch = [m for m in batch if m.offset < cut.get(m.partition, m.offset + 1)]
        async with conn.transaction():
            # 1. Lock
            recorded = await self.positions.lock(conn, sorted({m.partition for m in batch}))
            # 2. Plan
            plan = await self.positions.plan(batch, recorded)
            # 3. Redrives
            fresh, redrives_skipped = await self._first_redrives(conn, plan.fresh, prepared)
            # 4. Rows
            by_source = {(m.partition, m.offset): m for m in fresh}
            accepted = [prepared.accepted[k] for k in by_source if k in prepared.accepted]
            written, refused, refusals = await self._write_rows(conn, accepted, by_source)
            # 5. Dead letters
            letters = [prepared.dead[k] for k in by_source if k in prepared.dead] + refused
            letters += [
                DeadLetter(by_source[s.event.partition, s.event.offset], "stale_version", s.reason(), "$")
                for s in written.stale
            ]
            await self._send(letters)
            # 6. Position
            next_offsets = await self.positions.record(conn, plan)
            # 7. Notify
            await store.notify_changed(conn, self.settings.notify_channel, written.changed)
        # 8. Commit: leaving the transaction's block without an exception.
        outcome = Outcome(
            applied=len(accepted) - len(refused) - len(written.stale),
            changed=written.changed,
            dead_letters=letters,
            stale=len(written.stale),
            skipped=plan.skipped,
            discarded=plan.discarded,
            redrives_skipped=redrives_skipped,
            recorded=next_offsets,
            refusals=refusals,
        )
        return outcome, plan

    def settle(self, plan: Plan, outcome: Outcome) -> None:
        """The batch is durable: keep what its steps learned."""
        self.positions.settle(plan)
        self.dlq.settle(outcome.recorded)
        self.refusals = outcome.refusals

    async def follow(self, plan: Plan, outcome: Outcome) -> None:
        """9. Group offsets: read again from where the consumer skipped, and copy the recorded
        positions to the consumer group's offsets (in the background: a round trip to the group
        coordinator per batch cost 7% of the write's time)."""
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

    async def _first_redrives(
        self, conn: psycopg.AsyncConnection, fresh: list[Incoming], prepared: Prepared
    ) -> tuple[list[Incoming], int]:
        """The fresh messages minus redriven letters processed before (here or in this batch)."""
        redriven = {
            (m.partition, m.offset): prepared.redrives[m.partition, m.offset]
            for m in fresh
            if (m.partition, m.offset) in prepared.redrives
        }
        if not redriven:
            return fresh, 0
        first: dict[str, tuple[int, int]] = {}
        for where, of in redriven.items():
            first.setdefault(of, where)
        cur = await conn.execute(
            queries.NOTE_REDRIVES,
            {
                "redrives": list(first),
                "partitions": [p for p, _ in first.values()],
                "offsets": [o for _, o in first.values()],
            },
        )
        new = {of for (of,) in await cur.fetchall()}
        keep = {first[of] for of in new}
        kept = [
            m for m in fresh if (m.partition, m.offset) not in redriven or (m.partition, m.offset) in keep
        ]
        return kept, len(fresh) - len(kept)

    async def _write_rows(
        self,
        conn: psycopg.AsyncConnection,
        accepted: list[store.Accepted],
        by_source: dict[tuple[int, int], Incoming],
    ) -> tuple[store.Written, list[DeadLetter], Refusals]:
        """Write all at once; if the database refuses, find the events it refuses, one by one."""
        try:
            async with conn.transaction():
                written = await store.write_versions(conn, accepted)
            return written, [], Refusals() if accepted else self.refusals
        except faults.EVENT_FAULTS:
            pass
        changed: list[str] = []
        stale: list[store.Stale] = []
        refused: list[DeadLetter] = []
        refusals = self.refusals
        for event in accepted:
            try:
                async with conn.transaction():
                    one = await store.write_versions(conn, [event])
            except faults.EVENT_FAULTS as exc:
                refusals = refusals.after(exc)
                if refusals.count >= self.settings.db_refusals_in_a_row:
                    raise faults.SystemicRefusal(
                        f"the database refused {refusals.count} valid orders in a row with the same "
                        f"error ({refusals.example}): a change to the database refuses every order, "
                        "not the orders themselves; none of them is dead-lettered. Fix the database "
                        "and start the worker again: it goes on from the recorded position"
                    ) from exc
                error = exc.diag.message_primary or str(exc)
                refused.append(
                    DeadLetter(by_source[event.partition, event.offset], "db_rejected", error, "$")
                )
                continue
            refusals = Refusals()
            changed += one.changed
            stale += one.stale
        return store.Written(list(dict.fromkeys(changed)), stale), refused, refusals

    async def _send(self, letters: list[DeadLetter]) -> None:
        try:
            await self.dlq.send(letters)
        except Exception as exc:
            if faults.outage(exc) is None:
                raise
            cut: dict[int, int] = {}
            for d in letters:
                cut[d.message.partition] = min(
                    d.message.offset, cut.get(d.message.partition, d.message.offset)
                )
            raise LettersBlocked(exc, cut) from exc
        for d in letters:
            log.info(
                "dead-lettered",
                extra={
                    "partition": d.message.partition,
                    "offset": d.message.offset,
                    "reason": d.reason,
                    "path": d.path,
                },
            )
