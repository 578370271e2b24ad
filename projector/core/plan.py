"""What a batch does, decided from plain data: the rules of the commit protocol, with no I/O.

Three steps, each a pure function; the shell (projector/checkpoint.py) reads what each needs.

1. `freshness(batch, positions, facts)`: per partition, from its recorded position on, each offset
   once and in offset order. Below the position: redeliveries, skipped. Where offsets jump, the
   log is asked whether a committed record lies in between (a `Gap` fact); none (transaction
   markers, aborted or compacted records) or deleted by retention (LOST, reported): the jump is
   explained. A committed record in between means the consumer is ahead of the position: what
   follows is discarded and the partition read again from there (a seek), whatever the reason
   (a rebalance, a promoted database holding older positions). Each fresh record gets its
   version from its partition's clock (projector/core/versions.py). The topic must be the
   incarnation the positions were recorded in, and a batch that goes back below a position must
   find there the record applied: otherwise UntrustedPosition.
2. `decide(fresh, verdicts, heads, seen, refused)`: the fresh records in the order they came,
   each against its order's version as it stands (the read model's, or the batch's so far): a
   newer version is applied (an erasure is a version too), an older one is stale (dead-lettered),
   the same order again (or the same version) is resent and changes nothing but the version, a
   redrive whose original was taken before is skipped, a rejected record or one the database
   refused is dead-lettered. The fold is sequential, so the read model ends as the newest version
   of each order however the batches are cut, and as the same one however partitions interleave.
3. `check(plan, positions, acknowledged)`: before any position is recorded, every offset below it
   has exactly one fate (or the log holds no committed record there), and every letter is
   acknowledged. A failed check stops the worker.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum

from projector.core import versions
from projector.core.records import LogRecord, Record
from projector.core.verdicts import Erase, Order, Rejected, Verdict
from projector.core.versions import UNKNOWN, Version

REBUILD = "python -m projector.rebuild --keep"


class UntrustedPosition(Exception):
    """A recorded position that the log cannot have produced: the topic was recreated or
    truncated, or the read model belongs to another log."""


class FatesBroken(Exception):
    """A position would pass an offset without exactly one fate: a bug; nothing is recorded."""


class Fate(StrEnum):
    APPLIED = "applied"  # became its order's version
    SUPERSEDED = "superseded"  # applied, then replaced within the same batch (it is history)
    RESENT = "resent"  # the same order as the version it met: changes nothing but the version
    REDRIVE_SEEN = "redrive_seen"  # a redrive of a record taken before
    DEAD_LETTERED = "dead_lettered"  # rejected, stale, forged or refused: its letter is acknowledged


@dataclass(frozen=True, slots=True)
class Position:
    """Where the read model stands in a partition: the next offset to apply, the partition's clock,
    what the record just before was, and the topic incarnation it was read from."""

    next_offset: int = 0
    clock: int = 0
    last_timestamp: int | None = None
    last_digest: bytes | None = None
    topic_id: uuid.UUID | None = None


@dataclass(frozen=True, slots=True)
class Head:
    """An order's version in the read model; no body: erased."""

    version: Version
    body: str | None


@dataclass(frozen=True, slots=True)
class Gap:
    """What the log says from an offset on: its first committed record there (None: none) and
    the partition's first offset still held."""

    first: int | None
    start: int


@dataclass(frozen=True, slots=True)
class Last:
    """What the log holds where a position's last record was: the first committed record at or
    after that offset, and the partition's bounds."""

    record: LogRecord | None
    start: int
    end: int


@dataclass
class Facts:
    """What the log says, gathered by the shell outside any transaction."""

    topic_id: uuid.UUID
    gaps: dict[tuple[int, int], Gap] = field(default_factory=dict)  # (partition, offset) -> Gap
    last: dict[tuple[int, int], Last] = field(default_factory=dict)  # (partition, offset) -> Last


@dataclass(frozen=True, slots=True)
class Ask:
    """A fact the plan lacks: `kind` "gap" or "last", at (partition, offset)."""

    kind: str
    partition: int
    offset: int


@dataclass(frozen=True, slots=True)
class Letter:
    record: Record
    reason: str
    error: str
    path: str
    version: Version | None = None  # the record's version, for a redrive of it

    @property
    def source(self) -> tuple[int, int]:
        return self.record.where


@dataclass(frozen=True, slots=True)
class Advance:
    """A partition's new position: after `record`, with the clock there."""

    partition: int
    next_offset: int
    clock: int
    last_timestamp: int | None
    last_digest: bytes | None


@dataclass(frozen=True, slots=True)
class Past:
    """A version applied and replaced within the batch: a history row."""

    version: Version
    source: Record
    body: str


@dataclass
class Change:
    """What the batch does to one order in the read model."""

    uid: str
    version: Version
    body: str | None  # None: erased
    source: Record | None  # None: only the version moved (the same order again, newer)
    document: dict | None
    known: bool  # the read model has a row for it (update, not insert)
    rows_from: str | None  # the body the read model's normalized rows were made from (None: none)
    archive: bool  # the read model's version moves to history
    clear_history: bool  # erased within the batch: its history is deleted
    history: list[Past] = field(default_factory=list)  # oldest first, after any erasure

    @property
    def changed(self) -> bool:
        """Whether what the API serves changes (a notification is due)."""
        return self.source is not None


@dataclass
class Fresh:
    """Step 1's result: the records to decide, in the order they came, with their versions."""

    records: list[tuple[Record, Version]] = field(default_factory=list)
    advances: dict[int, Advance] = field(default_factory=dict)
    lost: list[tuple[int, int, int]] = field(default_factory=list)  # (partition, first, end)
    absent: list[tuple[int, int, int]] = field(default_factory=list)  # no committed record there
    seeks: dict[int, int] = field(default_factory=dict)  # partition -> offset to read again from
    redeliveries: int = 0
    discarded: int = 0
    applied_deleted: list[tuple[int, int, str]] = field(default_factory=list)  # (p, offset, reason)
    asks: list[Ask] = field(default_factory=list)


@dataclass
class Plan:
    fresh: Fresh
    fates: dict[tuple[int, int], Fate] = field(default_factory=dict)
    letters: list[Letter] = field(default_factory=list)
    changes: list[Change] = field(default_factory=list)
    redrives: list[tuple[str, int, int]] = field(default_factory=list)  # (of, partition, offset)
    # Versions applied and replaced within the batch that leave no row: an erasure replaced by a
    # newer version, or versions whose history a later erasure deleted.
    dropped: set[tuple[int, int]] = field(default_factory=set)

    def notifications(self) -> list[tuple[str, Version]]:
        return [(c.uid, c.version) for c in self.changes if c.changed]

    def count(self, fate: Fate) -> int:
        return sum(1 for f in self.fates.values() if f is fate)


# --- 1. freshness ----------------------------------------------------------------------------


def freshness(batch: Sequence[Record], positions: Mapping[int, Position], facts: Facts) -> Fresh:
    """Which records of the batch are fresh, in the order they came, and what the positions become;
    `asks` lists the facts it lacks (plan again with them)."""
    fresh = Fresh()
    order = {r.where: i for i, r in reversed(list(enumerate(batch)))}  # first delivery of each
    by_partition: dict[int, list[Record]] = {}
    for r in batch:
        by_partition.setdefault(r.partition, []).append(r)
    kept: dict[tuple[int, int], Version] = {}
    for partition, records in by_partition.items():
        position = positions.get(partition, Position())
        _trust(partition, position, records, facts, fresh)
        kept.update(_walk(partition, sorted(records, key=lambda r: r.offset), position, facts, fresh))
    if fresh.asks:
        return fresh
    fresh.records = sorted(((batch[order[w]], v) for w, v in kept.items()), key=lambda rv: order[rv[0].where])
    return fresh


def _trust(partition: int, position: Position, records: list[Record], facts: Facts, fresh: Fresh) -> None:
    """UntrustedPosition unless the positions belong to this incarnation of the topic, and a batch
    that goes back below the position finds there the record that was applied."""
    same_incarnation(partition, position, facts.topic_id)
    if not any(r.offset < position.next_offset for r in records):
        return
    at = position.next_offset - 1
    here = next((r for r in records if r.offset == at), None)
    if here is not None:
        last = Last(LogRecord(at, here.timestamp_ms, here.digest()), at, at + 1)
    elif (partition, at) in facts.last:
        last = facts.last[partition, at]
    else:
        fresh.asks.append(Ask("last", partition, at))
        return
    deleted = verify(partition, position, last)
    if deleted is not None:
        fresh.applied_deleted.append((partition, at, deleted))


def same_incarnation(partition: int, position: Position, topic_id: uuid.UUID) -> None:
    """UntrustedPosition unless the position was recorded from this incarnation of the topic."""
    if position.topic_id is not None and position.topic_id != topic_id:
        untrusted(
            partition,
            f"the topic was deleted and created again (its id is {topic_id}; the read model was "
            f"built from {position.topic_id})",
        )


def verify(partition: int, position: Position, last: Last) -> str | None:
    """Whether the record before the position is the one applied; None when it is, the reason it
    is gone when compaction or retention deleted it (expected), UntrustedPosition otherwise."""
    if position.next_offset == 0 or position.last_digest is None:  # nothing applied, or before digests
        return None
    at = position.next_offset - 1
    found = last.record
    if found is not None and found.offset == at:
        if found.digest == position.last_digest and found.timestamp_ms == position.last_timestamp:
            return None
        untrusted(partition, f"its record at offset {at} is not the one applied there")
    if last.end <= at:
        untrusted(partition, f"it ends before offset {at}, the last one applied")
    return "retention" if last.start > at else "compaction"


def _walk(
    partition: int, records: list[Record], position: Position, facts: Facts, fresh: Fresh
) -> dict[tuple[int, int], Version]:
    """From the position on, each offset once and in order, none past a record the consumer did
    not deliver."""
    expected, clock = position.next_offset, position.clock
    kept: dict[tuple[int, int], Version] = {}
    last: Record | None = None
    for i, r in enumerate(records):
        if r.offset < expected:  # below the position, or a second delivery within the batch
            fresh.redeliveries += 1
            continue
        if r.offset > expected:
            gap = facts.gaps.get((partition, expected))
            if gap is None:
                fresh.asks.append(Ask("gap", partition, expected))
                return {}
            if gap.first is None or gap.first < r.offset:  # a committed record was not delivered
                fresh.seeks[partition] = expected
                fresh.discarded += len(records) - i
                break
            lost_end = min(max(gap.start, expected), r.offset)
            if lost_end > expected:
                fresh.lost.append((partition, expected, lost_end))
            if r.offset > lost_end:
                fresh.absent.append((partition, lost_end, r.offset))
        clock = versions.tick(clock, r.timestamp_ms)
        kept[r.where] = Version(clock, partition, r.offset)
        expected, last = r.offset + 1, r
    if last is not None:
        fresh.advances[partition] = Advance(partition, expected, clock, last.timestamp_ms, last.digest())
    return kept


def restrict(batch: Sequence[Record], cut: Mapping[int, int]) -> list[Record]:
    """The records of the batch below `cut` (partition -> first offset left out)."""
    return [r for r in batch if r.offset < cut.get(r.partition, r.offset + 1)]


def untrusted(partition: int, what: str) -> None:
    raise UntrustedPosition(
        f"partition {partition} of the orders topic does not hold what the read model recorded: "
        f"{what}. The read model belongs to another log (a topic recreated, a broker that lost "
        f"records, another cluster). Stop every projector and rebuild it: {REBUILD}."
    )


# --- 2. decide -------------------------------------------------------------------------------


@dataclass
class _Order:
    """One order as the fold goes through the batch."""

    uid: str
    read_model: Head | None
    head: Head | None
    source: Record | None = None  # the batch's record the head came from
    document: dict | None = None
    erased_in_batch: bool = False
    history: list[Past] = field(default_factory=list)
    bumped: bool = False


def decide(
    fresh: Fresh,
    verdicts: Mapping[tuple[int, int], Verdict],
    heads: Mapping[str, Head],
    seen: Iterable[str],
    refused: Mapping[tuple[int, int], str],
) -> Plan:
    """Each fresh record's fate, and what the batch changes in the read model (see the module)."""
    plan = Plan(fresh)
    taken = set(seen)
    orders: dict[str, _Order] = {}
    for record, version in fresh.records:
        where = record.where
        verdict = verdicts[where]
        if isinstance(verdict, Rejected):
            _dead(plan, record, verdict.reason, verdict.error, verdict.path, version)
            continue
        if where in refused:
            _dead(plan, record, "db_rejected", refused[where], "$", version)
            continue
        claim = verdict.claim
        if claim is not None:
            if claim.of in taken:
                plan.fates[where] = Fate.REDRIVE_SEEN
                continue
            version = claim.version
            taken.add(claim.of)
            plan.redrives.append((claim.of, *where))
        order = orders.get(verdict.uid)
        if order is None:
            head = heads.get(verdict.uid)
            order = orders[verdict.uid] = _Order(verdict.uid, head, head)
        _apply(plan, order, record, version, verdict)
    plan.changes = [change for order in orders.values() if (change := _change(order)) is not None]
    return plan


def rejections(
    fresh: Fresh, verdicts: Mapping[tuple[int, int], Verdict], refused: Mapping[tuple[int, int], str]
) -> list[Letter]:
    """The letters of the fresh records that `decide` dead-letters whatever the read model holds:
    rejected, or refused by the database."""
    letters = []
    for record, version in fresh.records:
        verdict = verdicts[record.where]
        if isinstance(verdict, Rejected):
            letters.append(Letter(record, verdict.reason, verdict.error, verdict.path, version))
        elif record.where in refused:
            letters.append(Letter(record, "db_rejected", refused[record.where], "$", version))
    return letters


def _apply(plan: Plan, order: _Order, record: Record, version: Version, verdict: Order | Erase) -> None:
    head = order.head
    body = verdict.body if isinstance(verdict, Order) else None
    if head is not None and version < head.version:
        _dead(
            plan,
            record,
            "stale_version",
            f"order {order.uid}: this version ({versions.describe(version)}) is older than the one "
            f"applied ({versions.describe(head.version)}); versions are ordered by time, then "
            "partition, then offset (README: An order's versions)",
            "$",
            version,
        )
        return
    if head is not None and (version == head.version or body == head.body):
        plan.fates[record.where] = Fate.RESENT
        if version > head.version:
            order.head = Head(version, head.body)
            order.bumped = True
        return
    if order.source is not None:  # the batch's previous version of it: replaced at once
        plan.fates[order.source.where] = Fate.SUPERSEDED
        if head is not None and head.body is not None:
            order.history.append(Past(head.version, order.source, head.body))
        else:
            plan.dropped.add(order.source.where)
    if body is None:
        order.erased_in_batch = True
        plan.dropped.update(past.source.where for past in order.history)
        order.history.clear()
    plan.fates[record.where] = Fate.APPLIED
    order.head = Head(version, body)
    order.source = record
    order.document = verdict.document if isinstance(verdict, Order) else None


def _change(order: _Order) -> Change | None:
    head, read_model = order.head, order.read_model
    if head is None or (order.source is None and not order.bumped):
        return None
    had_body = read_model is not None and read_model.body is not None
    changed = order.source is not None
    # A version of unknown coordinates is what `rebuild --keep` kept from before: the log's versions
    # replace it and its history, which they make again (the same history a rebuild from empty
    # tables makes); an order the log no longer holds keeps both.
    rebuilt = read_model is not None and read_model.version == UNKNOWN
    return Change(
        uid=order.uid,
        version=head.version,
        body=head.body,
        source=order.source,
        document=order.document,
        known=read_model is not None,
        rows_from=read_model.body if changed and read_model is not None else None,
        archive=changed and had_body and not order.erased_in_batch and not rebuilt,
        clear_history=order.erased_in_batch or rebuilt,
        history=order.history,
    )


def _dead(plan: Plan, record: Record, reason: str, error: str, path: str, version: Version) -> None:
    plan.fates[record.where] = Fate.DEAD_LETTERED
    plan.letters.append(Letter(record, reason, error, path, version))


# --- 3. check --------------------------------------------------------------------------------


def check(plan: Plan, positions: Mapping[int, Position], acknowledged: Iterable[tuple[int, int]]) -> None:
    """FatesBroken unless every offset from each recorded position to the new one has exactly one
    fate or lies where the log holds no committed record, and every letter was acknowledged."""
    fresh = plan.fresh
    gaps: dict[int, list[tuple[int, int]]] = {}
    for partition, first, end in (*fresh.lost, *fresh.absent):
        gaps.setdefault(partition, []).append((first, end))
    offsets: dict[int, list[int]] = {}
    for partition, offset in plan.fates:
        offsets.setdefault(partition, []).append(offset)
    for partition in set(offsets) - set(fresh.advances):
        _broken(f"partition {partition} has fates but no new position")
    for partition, advance in fresh.advances.items():
        spans = sorted([(o, o + 1) for o in offsets.get(partition, [])] + gaps.get(partition, []))
        at = positions.get(partition, Position()).next_offset
        for first, end in spans:
            if first > at:
                _broken(f"partition {partition}: offsets {at} to {first - 1} have no fate")
            if first < at:
                _broken(f"partition {partition}: offset {first} has two fates")
            at = end
        if at != advance.next_offset:
            _broken(
                f"partition {partition}: the position {advance.next_offset} is not where the fates end ({at})"
            )
    unsent = {letter.source for letter in plan.letters} - set(acknowledged)
    if unsent:
        _broken(f"the letters of {sorted(unsent)[:5]} are not acknowledged")
    written = {c.source.where for c in plan.changes if c.source is not None} | plan.dropped
    written |= {past.source.where for c in plan.changes for past in c.history}
    for where, fate in plan.fates.items():
        if fate in (Fate.APPLIED, Fate.SUPERSEDED) and where not in written:
            _broken(f"{where} is {fate} but written nowhere")


def _broken(what: str) -> None:
    raise FatesBroken(f"refusing to record positions: {what}")
