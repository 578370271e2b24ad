"""Generated histories against the commit protocol: the real Checkpoint (projector/checkpoint.py)
and the pure core under it, driven by Hypothesis through random streams over several partitions
with in-memory stand-ins for the log, the read model and the dead-letter topic.

A history mixes versions of a few orders with random timestamps (going back too), identical
re-sends, tombstones, bad records, records the database refuses, redrives (signed, and forged),
random batches across partitions, a consumer that skips records or runs ahead of an older
database (a promoted standby that lost the last commits), compaction and trims of the log,
rebalances, an outage of the dead-letter topic, and a crash between any two steps of the protocol
followed by a restart from what was durable. After every step: no position passes an offset
without exactly one fate, every letter of a dead-lettered fate is in the DLQ, nothing is applied
twice, and the read model is the newest version of each order among the records with a fate (the
reference fold, in the total order of versions). At the end the log is read to its end: nothing
is left without a fate but what the log deleted first, and a rebuild from the log equals the live
read model when the log deleted nothing.

The real-service tests (tests/integration) are the proof that the shell does with PostgreSQL and
Kafka what these stand-ins do.
"""

from __future__ import annotations

import asyncio
import copy
import random
import uuid
from contextlib import asynccontextmanager
from dataclasses import dataclass, field, replace

import psycopg
from aiokafka.errors import KafkaTimeoutError
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from orderview.settings import Settings
from projector import faults
from projector.checkpoint import Checkpoint
from projector.core import redrives, versions
from projector.core.plan import Change, Fate, Gap, Head, Last, Letter, Plan, Position
from projector.core.records import LogRecord, Record
from projector.core.verdicts import Erase, Order, Rejected, Verdict
from projector.core.versions import UNKNOWN, Version
from projector.metrics import ProjectorMetrics

PARTITIONS = 3
UIDS = ("a", "b", "c", "d")
SECRET = b"histories"
TOPIC_ID = uuid.UUID(int=7)
SETTINGS = replace(Settings(), redrive_secret=SECRET.decode())


class Crash(BaseException):
    """The process dies here: nothing after it runs, nothing volatile survives."""


# --- what a record means ----------------------------------------------------------------------
# A value `order:<uid>:<n>` is a valid order (`:refuse` when the database refuses its rows), None
# a tombstone, `bad` a rejected record.


def judge(record: Record) -> Verdict:
    claim = redrives.claim(record, SECRET)
    if isinstance(claim, redrives.Forged):
        return Rejected("forged_redrive", claim.why, "$headers")
    if record.value is None:
        return Erase(record.key.decode(), claim)
    parts = record.value.decode().split(":")
    if parts[0] != "order":
        return Rejected("decode", "not an order", "$")
    return Order(parts[1], record.value.decode(), {"order_uid": parts[1]}, claim)


# --- the stand-ins ----------------------------------------------------------------------------


class Fuse:
    """Counts the protocol's steps and crashes the process at the chosen one."""

    def __init__(self) -> None:
        self.left: int | None = None

    def tick(self) -> None:
        if self.left is not None:
            self.left -= 1
            if self.left < 0:
                self.left = None
                raise Crash


class Log:
    """The orders topic: each partition's records by offset; deleted ones are gone."""

    def __init__(self, fuse: Fuse) -> None:
        self.fuse = fuse
        self.records: dict[int, dict[int, Record]] = {p: {} for p in range(PARTITIONS)}
        self.ever: dict[tuple[int, int], Record] = {}  # deleted ones too
        self.ends = dict.fromkeys(range(PARTITIONS), 0)
        self.starts = dict.fromkeys(range(PARTITIONS), 0)

    def append(self, partition: int, key: bytes, value: bytes | None, ts: int, headers=()) -> Record:
        record = Record(partition, self.ends[partition], key, value, ts, 0, tuple(headers))
        self.records[partition][record.offset] = record
        self.ever[record.where] = record
        self.ends[partition] += 1
        return record

    def held(self, partition: int, offset: int) -> list[Record]:
        return [
            r for o, r in sorted(self.records[partition].items()) if o >= max(offset, self.starts[partition])
        ]

    async def topic_id(self) -> uuid.UUID:
        self.fuse.tick()
        return TOPIC_ID

    async def gap(self, partition: int, offset: int) -> Gap:
        self.fuse.tick()
        found = self.held(partition, offset)
        return Gap(found[0].offset if found else None, self.starts[partition])

    async def last(self, partition: int, offset: int) -> Last:
        self.fuse.tick()
        found = self.held(partition, offset)
        record = LogRecord(found[0].offset, found[0].timestamp_ms, found[0].digest()) if found else None
        return Last(record, self.starts[partition], self.ends[partition])


@dataclass
class State:
    """What the read model holds; what commits and rolls back as one."""

    positions: dict[int, Position] = field(default_factory=dict)
    heads: dict[str, tuple[Head, tuple[int, int] | None]] = field(default_factory=dict)
    history: dict[str, list[tuple[Version, tuple[int, int]]]] = field(default_factory=dict)
    redrives: set[str] = field(default_factory=set)
    # The test's own bookkeeping, committed with the batch: each offset's fate, and what the log
    # held nothing at (deleted before it was applied, or never a record).
    fates: dict[tuple[int, int], Fate] = field(default_factory=dict)
    gaps: list[tuple[int, int, int]] = field(default_factory=list)


class Database:
    """The read model; a transaction works on a copy, committed by replacing the state."""

    def __init__(self, fuse: Fuse) -> None:
        self.fuse = fuse
        self.state = State()
        self.refusing = False  # the database refuses every order (a migration gone wrong)

    @asynccontextmanager
    async def transaction(self, force_rollback: bool = False):
        self.fuse.tick()
        before = self.state
        self.state = copy.deepcopy(before)
        try:
            yield
        except BaseException:
            self.state = before
            raise
        if force_rollback:
            self.state = before
            return
        self.fuse.tick()  # a crash here is a crash before the commit
        # committed: the copy stays


class Store:
    """projector/adapters/postgres.py, in memory."""

    Conflict = type("Conflict", (Exception,), {})

    def __init__(self, db: Database) -> None:
        self.db = db

    async def own(self, conn, topic, partitions):
        self.db.fuse.tick()
        return [], {p: pos for p, pos in self.db.state.positions.items() if p in set(partitions)}

    async def lock(self, conn, topic, partitions, uids, ofs):
        self.db.fuse.tick()
        state = self.db.state
        return (
            {p: pos for p, pos in state.positions.items() if p in set(partitions)},
            {uid: state.heads[uid][0] for uid in uids if uid in state.heads},
            {of for of in ofs if of in state.redrives},
        )

    async def release(self, conn, topic, partitions):
        return None

    async def read_positions(self, conn, topic):
        return dict(self.db.state.positions)

    async def write_changes(self, conn, changes: list[Change], history: bool = True) -> None:
        self.db.fuse.tick()
        for change in changes:
            if (
                change.source is not None
                and change.body is not None
                and (self.db.refusing or change.body.endswith(":refuse"))
            ):
                raise psycopg.DataError(f"refused {change.uid}")
        state = self.db.state
        for change in changes:
            head, source = state.heads.get(change.uid, (None, None))
            past = state.history.setdefault(change.uid, [])
            if change.clear_history:
                past.clear()
            if change.archive and head is not None and head.body is not None:
                past.append((head.version, source))
            past.extend((p.version, p.source.where) for p in change.history)
            if change.source is None:
                state.heads[change.uid] = (Head(change.version, head.body), source)
            else:
                state.heads[change.uid] = (Head(change.version, change.body), change.source.where)

    async def refused_changes(self, conn, changes):
        return {
            c.source.where: "refused"
            for c in changes
            if c.source is not None
            and c.body is not None
            and (self.db.refusing or c.body.endswith(":refuse"))
        }

    async def database_refuses_any_order(self, conn):
        return psycopg.DataError("refused every order") if self.db.refusing else None

    async def record(self, conn, topic, topic_id, plan: Plan, channel) -> None:
        self.db.fuse.tick()
        state = self.db.state
        for where, fate in plan.fates.items():
            assert where not in state.fates, f"{where} got a second fate ({state.fates[where]}, then {fate})"
            state.fates[where] = fate
        state.gaps += plan.fresh.lost + plan.fresh.absent
        state.redrives |= {of for of, _, _ in plan.redrives}
        for p, a in plan.fresh.advances.items():
            if a.next_offset > state.positions.get(p, Position()).next_offset:
                state.positions[p] = Position(
                    a.next_offset, a.clock, a.last_timestamp, a.last_digest, topic_id
                )


class DeadLetters:
    """The dead-letter topic (durable) and what this process knows was acknowledged."""

    def __init__(self, fuse: Fuse) -> None:
        self.fuse = fuse
        self.letters: list[Letter] = []
        self.acknowledged: set[tuple[int, int]] = set()
        self.down = False

    async def send(self, letters: list[Letter]) -> None:
        for letter in letters:
            if letter.source in self.acknowledged:
                continue
            if self.down:
                raise KafkaTimeoutError("the dead-letter topic cannot be written")
            self.fuse.tick()
            self.letters.append(letter)
            self.fuse.tick()  # a crash here: written, but the process never learns it
            self.acknowledged.add(letter.source)

    def settle(self, recorded: dict[int, int]) -> None:
        self.acknowledged = {(p, o) for p, o in self.acknowledged if o >= recorded.get(p, 0)}


class Group:
    """The consumer group: offsets committed (trailing the positions), and the consumer's."""

    def __init__(self) -> None:
        self.committed: dict[int, int] = {}
        self.fetch = dict.fromkeys(range(PARTITIONS), 0)

    async def commit(self, offsets: dict[int, int]) -> bool:
        self.committed.update(offsets)
        return True

    async def seek(self, partition: int, offset: int) -> None:
        self.fetch[partition] = offset


# --- the machine ------------------------------------------------------------------------------


class Histories(RuleBasedStateMachine):
    @initialize()
    def start(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.fuse = Fuse()
        self.log = Log(self.fuse)
        self.db = Database(self.fuse)
        self.dlq = DeadLetters(self.fuse)
        self.group = Group()
        self.now = 1_800_000_000_000
        self.sent: dict[str, int] = dict.fromkeys(UIDS, 0)
        self.unsafe = False  # a crash or a lost commit happened: letters may repeat
        self.deleted = False  # the log deleted records (compaction, trims)
        self.pending: list[Record] = []  # a batch the worker retries (an outage)
        self.checkpoint = self.new_checkpoint(self.db)

    def new_checkpoint(self, db: Database, group: Group | None = None) -> Checkpoint:
        checkpoint = Checkpoint(
            SETTINGS, self.log, self.dlq, ProjectorMetrics(), group or self.group, Store(db)
        )  # type: ignore[arg-type]
        checkpoint.seek_again_after_s = 0.0  # nothing fetched before a seek arrives after it here
        return checkpoint

    def teardown(self) -> None:
        try:
            self.drain(self.checkpoint, self.db, self.group)
            self.the_read_model_is_the_reference_fold()
            self.every_record_has_a_fate_or_was_deleted_first()
            if not self.deleted:
                self.rebuild_equals_live()
        finally:
            self.loop.close()

    # -- producing ---------------------------------------------------------------------------

    @rule(
        partition=st.integers(0, PARTITIONS - 1),
        uid=st.sampled_from(UIDS),
        drift=st.integers(-5_000, 5_000),
        refuse=st.booleans(),
    )
    def an_order_version(self, partition, uid, drift, refuse):
        self.now += 100
        self.sent[uid] += 1
        value = f"order:{uid}:{self.sent[uid]}{':refuse' if refuse and self.sent[uid] % 4 == 0 else ''}"
        self.log.append(partition, uid.encode(), value.encode(), self.now + drift)

    @rule(partition=st.integers(0, PARTITIONS - 1), uid=st.sampled_from(UIDS))
    def the_same_order_again(self, partition, uid):
        self.now += 100
        self.log.append(partition, uid.encode(), f"order:{uid}:{self.sent[uid]}".encode(), self.now)

    @rule(
        partition=st.integers(0, PARTITIONS - 1), uid=st.sampled_from(UIDS), drift=st.integers(-5_000, 5_000)
    )
    def a_tombstone(self, partition, uid, drift):
        self.now += 100
        self.log.append(partition, uid.encode(), None, self.now + drift)

    @rule(partition=st.integers(0, PARTITIONS - 1))
    def a_bad_record(self, partition):
        self.log.append(partition, b"x", b"bad", self.now)

    @rule(data=st.data(), forged=st.booleans())
    def a_redrive(self, data, forged):
        if not self.dlq.letters:
            return
        letter = data.draw(st.sampled_from(self.dlq.letters))
        original = letter.record
        of = f"orders:{original.partition}:{original.offset}"
        version = letter.version or Version(0, *original.where)
        headers = redrives.headers(
            b"not the secret" if forged else SECRET, of, version, original.key, original.value
        )
        value = original.value.replace(b":refuse", b"") if original.value else original.value
        if not forged and value != original.value:  # the database was mended: signed again for it
            headers = redrives.headers(SECRET, of, version, original.key, value)
        self.log.append(data.draw(st.integers(0, PARTITIONS - 1)), original.key, value, self.now, headers)

    # -- consuming ---------------------------------------------------------------------------

    @rule(
        sizes=st.lists(st.integers(0, 6), min_size=PARTITIONS, max_size=PARTITIONS),
        skip=st.none() | st.integers(0, 5),
        fuse=st.none() | st.integers(0, 40),
        random=st.randoms(use_true_random=False),
    )
    def a_batch(self, sizes, skip, fuse, random):
        self.fuse.left = fuse
        try:
            self.step(self.checkpoint, self.group, sizes, skip, random)
        except Crash:
            event("a crash within the protocol, and a restart")
            self.restart()
        finally:
            self.fuse.left = None

    def step(self, checkpoint: Checkpoint, group: Group, sizes, skip, random) -> None:
        """What the worker does next: the batch it retries, or a new one (projector/batch.py)."""
        batch = self.pending or self.fetch(group, sizes, skip, random)
        self.pending = []
        if not batch:
            return
        conn = checkpoint.store.db  # type: ignore[attr-defined]
        verdicts = {r.where: judge(r) for r in batch}
        try:
            outcome = self.loop.run_until_complete(checkpoint.commit(conn, batch, verdicts))
        except KafkaTimeoutError:  # an outage: the same batch again, later
            self.pending = batch
            return
        except faults.SystemicRefusal:  # the worker stops; its restart reads again from the positions
            raise Crash from None
        self.pending = outcome.rest
        if outcome.plan is not None:
            for fate in set(outcome.plan.fates.values()):
                event(f"a batch with a record {fate}")
            if outcome.plan.fresh.seeks:
                event("a batch that sought back (the consumer ahead of the positions)")
            if outcome.plan.fresh.lost:
                event("a batch that found records lost")

    def fetch(self, group: Group, sizes, skip, random) -> list[Record]:
        """What the consumer delivers: each partition from where it reads, in offset order (one
        record left out now and then), the partitions interleaved."""
        queues = []
        for partition, size in enumerate(sizes):
            records = self.log.held(partition, group.fetch[partition])[:size]
            if records:
                group.fetch[partition] = records[-1].offset + 1
            if skip is not None and skip < len(records) - 1:
                del records[skip]
            queues.append(records)
        batch = []
        while any(queues):
            batch.append(random.choice([q for q in queues if q]).pop(0))
        return batch

    def restart(self) -> None:
        """After a crash or a rebalance: what was volatile is gone; the consumer reads from the
        recorded positions (the assignment), or from the group's trailing offsets when those could
        not be read."""
        self.unsafe = True
        self.pending = []
        self.dlq.acknowledged = set()
        self.checkpoint = self.new_checkpoint(self.db)
        for p in range(PARTITIONS):
            recorded = self.db.state.positions.get(p, Position()).next_offset
            self.group.fetch[p] = self.checkpoint.known[p] = max(recorded, self.log.starts[p])

    @rule(from_group=st.booleans())
    def a_rebalance(self, from_group):
        self.restart()
        if from_group:  # the database could not be asked at the assignment
            for p in range(PARTITIONS):
                self.group.fetch[p] = self.checkpoint.known[p] = self.group.committed.get(p, 0)
            self.loop.run_until_complete(self.checkpoint.reconcile(self.db))  # its first connection

    @rule(data=st.data())
    def the_database_loses_its_last_commits(self, data):
        """A promoted asynchronous standby: an older read model, while the consumer runs ahead."""
        if not hasattr(self, "snapshots"):
            self.snapshots: list[State] = []
        if self.snapshots:
            self.db.state = copy.deepcopy(data.draw(st.sampled_from(self.snapshots)))
            self.unsafe = True
            # The worker's connection died with the old primary; its new one finds older positions.
            self.loop.run_until_complete(self.checkpoint.reconcile(self.db))

    @rule()
    def a_standby_copy(self):
        if not hasattr(self, "snapshots"):
            self.snapshots = []
        self.snapshots = [*self.snapshots[-3:], copy.deepcopy(self.db.state)]

    @rule(down=st.booleans())
    def the_dead_letter_topic(self, down):
        self.dlq.down = down

    @rule(refusing=st.booleans())
    def a_migration_that_refuses_every_order(self, refusing):
        self.db.refusing = refusing

    # -- what operators do to the log ----------------------------------------------------------

    @rule(partition=st.integers(0, PARTITIONS - 1), upto=st.integers(0, 100))
    def compaction(self, partition, upto):
        """Records below `upto` with a later record of the same key go (tombstones stay)."""
        records = self.log.records[partition]
        last = {r.key: o for o, r in sorted(records.items())}
        for offset in [o for o in records if o < upto and last[records[o].key] != o]:
            del records[offset]
            self.deleted = True

    @rule(partition=st.integers(0, PARTITIONS - 1), count=st.integers(1, 5))
    def a_trim(self, partition, count):
        start = min(self.log.starts[partition] + count, self.log.ends[partition])
        if start > self.log.starts[partition]:
            self.log.starts[partition] = start
            self.deleted = True

    # -- what must hold ------------------------------------------------------------------------

    @invariant()
    def no_position_passes_an_offset_without_exactly_one_fate(self) -> None:
        check_coverage(self.db.state)

    @invariant()
    def every_dead_lettered_fate_has_its_letter(self) -> None:
        sent: dict[tuple[int, int], int] = {}
        for letter in self.dlq.letters:
            sent[letter.source] = sent.get(letter.source, 0) + 1
        for where, fate in self.db.state.fates.items():
            if fate is Fate.DEAD_LETTERED:
                assert where in sent, f"{where} was dead-lettered, and the DLQ lacks its letter"
        if not self.unsafe:
            assert all(n == 1 for n in sent.values()), f"a letter sent twice without a crash: {sent}"

    @invariant()
    def nothing_is_applied_twice(self) -> None:
        for uid, past in self.db.state.history.items():
            sources = [source for _, source in past]
            assert len(sources) == len(set(sources)), f"{uid}'s history holds a version twice"

    def the_read_model_is_the_reference_fold(self, db: Database | None = None) -> None:
        state = (db or self.db).state
        expected = reference_fold(self.log, state)
        for uid in UIDS:
            head = state.heads.get(uid, (None, None))[0]
            want = expected.get(uid)
            if want is None:
                assert head is None or head.version == UNKNOWN, f"{uid}: {head} with nothing applied"
                continue
            assert head is not None and head.version == want[0], f"{uid}: {head} is not the newest {want}"
            assert head.body == want[1], f"{uid}: {head.body!r} is not the newest version's {want[1]!r}"

    def every_record_has_a_fate_or_was_deleted_first(self) -> None:
        state = self.db.state
        for p in range(PARTITIONS):
            for r in self.log.held(p, 0):
                assert r.where in state.fates, f"{r.where} is in the log and has no fate"

    def drain(self, checkpoint: Checkpoint, db: Database, group: Group) -> None:
        """Read to the end of the log, with everything up again."""
        self.dlq.down = False
        db.refusing = False
        for _ in range(300):
            if not self.pending and all(
                not self.log.held(p, db.state.positions.get(p, Position()).next_offset)
                for p in range(PARTITIONS)
            ):
                return
            self.step(checkpoint, group, [5] * PARTITIONS, None, random.Random(0))
        raise AssertionError("the log was not read to its end")

    def rebuild_equals_live(self) -> None:
        db = Database(Fuse())
        group = Group()
        checkpoint = self.new_checkpoint(db, group)
        self.dlq.acknowledged = {letter.source for letter in self.dlq.letters}  # held: not sent again
        self.pending = []
        self.drain(checkpoint, db, group)
        live = {uid: h[0] for uid, h in self.db.state.heads.items()}
        rebuilt = {uid: h[0] for uid, h in db.state.heads.items()}
        assert rebuilt == live, f"a rebuild differs from live: {rebuilt} != {live}"


def check_coverage(state: State) -> None:
    """Every offset below each position has exactly one fate, or the log held no record there."""
    spans: dict[int, list[tuple[int, int]]] = {}
    for p, o in state.fates:
        spans.setdefault(p, []).append((o, o + 1))
    for p, first, end in state.gaps:
        spans.setdefault(p, []).append((first, end))
    for p, position in state.positions.items():
        at = 0
        for first, end in sorted(spans.get(p, [])):
            assert first == at, (
                f"partition {p}: offset {min(first, at)} has {'no' if first > at else 'two'} fates"
            )
            at = end
        assert at == position.next_offset, (
            f"partition {p}: position {position.next_offset}, fates end at {at}"
        )


def reference_fold(log: Log, state: State) -> dict[str, tuple[Version, str | None]]:
    """The newest version of each order among the records with a fate, by the total order: each
    partition's clock over its records with a fate, in offset order."""
    best: dict[str, tuple[Version, str | None]] = {}
    by_partition: dict[int, list[int]] = {}
    for p, o in state.fates:
        by_partition.setdefault(p, []).append(o)
    for p, offsets in by_partition.items():
        clock = 0
        for o in sorted(offsets):
            record = log.ever[p, o]
            clock = versions.tick(clock, record.timestamp_ms)
            verdict = judge(record)
            if isinstance(verdict, Rejected) or (record.value or b"").endswith(b":refuse"):
                continue
            version = verdict.claim.version if verdict.claim is not None else Version(clock, p, o)
            body = verdict.body if isinstance(verdict, Order) else None
            if verdict.uid not in best or version > best[verdict.uid][0]:
                best[verdict.uid] = (version, body)
    return best


class Copy:
    """What the failover rule draws from `st.data()`: the standby copy at `index`."""

    def __init__(self, copies: list[State], index: int) -> None:
        self.copy = copies[index]

    def draw(self, strategy: st.SearchStrategy) -> State:
        return self.copy


@settings(max_examples=1, database=None)
@given(st.just(None))
def test_a_record_redelivered_to_a_newer_copy_is_read_again_after_a_failover_to_an_older_one(_) -> None:
    """Found by the histories. A worker applies a record; the database fails over to an empty copy
    (the worker reads the partition again), then to a copy that has the record (the batch read
    again is all redeliveries), then to the empty copy again. The worker must read the record a
    third time: it knew where the database stood from the redelivered batch, not only from the
    positions it recorded itself."""
    machine = Histories()
    machine.start()
    machine.a_standby_copy()  # empty
    machine.an_order_version(drift=0, partition=1, refuse=False, uid="a")
    machine.a_batch(fuse=None, random=random.Random(0), sizes=[0, 1, 0], skip=None)
    machine.a_standby_copy()  # the record applied
    machine.the_database_loses_its_last_commits(Copy(machine.snapshots, 0))
    machine.the_database_loses_its_last_commits(Copy(machine.snapshots, 1))
    machine.a_batch(fuse=None, random=random.Random(0), sizes=[0, 1, 0], skip=None)  # redelivered
    machine.the_database_loses_its_last_commits(Copy(machine.snapshots, 0))
    machine.teardown()  # reads to the end of the log, then checks the read model


TestHistories = Histories.TestCase
TestHistories.settings = settings(
    max_examples=300,
    stateful_step_count=50,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
