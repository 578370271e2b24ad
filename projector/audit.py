"""Reconcile every message of the orders topic with the read model and the dead-letter topic.

    python -m projector.audit [--json] [--strict] [--show N]

Each record of the topic (committed records only, up to the end when the command starts) is, from
the log, the tables and the DLQ — never from the projector's position alone:
- applied: the record the current version of its order came from (the snapshot's source);
- erased: the tombstone the order's erasure came from;
- superseded: the read model holds a later version of its order, by the version order of
  projector/core/versions.py (the audit keeps each partition's clock as the projector does);
- resent: the same order again (the read model's version is this record's), or a redriven dead
  letter seen again after its first copy;
- dead-lettered: the DLQ holds a letter with its coordinates (and the same SHA-256);
- not yet applied: none of these, at or after the position the projector recorded for its
  partition (it has not got there yet);
- MISSING: none of these, before that position: the read model lost it.
Per partition it also gives the lag (log end minus position) and the records LOST: deleted from the
log (retention, delete-records) before the projector applied them, as the projector recorded
them, and any the log deleted below it since.

Exit status 1 if anything is missing; with --strict, also while anything is not yet applied or
lost. Read-only: safe to run beside live projectors (what they apply meanwhile may show as not
yet applied).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, TextIO

import orjson
import psycopg
from aiokafka import ConsumerRecord

from orderview import jsonlog
from orderview.settings import Settings, get_settings
from projector.adapters import postgres
from projector.adapters.dead_letters import dead_lettered, holds
from projector.adapters.kafka import KafkaLog, partitions_of, scan
from projector.core import redrives, versions
from projector.core.records import Record, timestamp
from projector.core.redrives import Claim
from projector.core.versions import Version

SNAPSHOT_SOURCES = """
SELECT order_uid, source_partition, source_offset, version_time, version_partition, version_offset,
       body_json IS NULL
FROM order_snapshots
"""
REDRIVEN = "SELECT redrive_of, record_partition, record_offset FROM redrives"
LOST = "SELECT partition, first_offset, end_offset FROM lost_records WHERE topic = %(topic)s"
KINDS = ("applied", "erased", "superseded", "resent", "dead_lettered", "not_yet_applied", "missing")


@dataclass(frozen=True, slots=True)
class Source:
    """Where an order's current version came from, which version it is, and whether it is an
    erasure."""

    partition: int
    offset: int
    version: Version
    erased: bool


@dataclass
class Audit:
    """What was found, per partition and kind; the first missing coordinates."""

    counts: dict[int, Counter[str]] = field(default_factory=dict)
    missing: list[tuple[int, int]] = field(default_factory=list)
    lost: dict[int, int] = field(default_factory=dict)  # partition -> offsets deleted unapplied
    lag: dict[int, int] = field(default_factory=dict)  # partition -> log end minus position
    messages: int = 0
    value_bytes: int = 0  # of the messages read: a topic of large ones audits at fewer a second
    seconds: float = 0.0

    def add(self, partition: int, offset: int, kind: str) -> None:
        self.counts.setdefault(partition, Counter())[kind] += 1
        if kind == "missing":
            self.missing.append((partition, offset))

    def total(self, kind: str) -> int:
        if kind == "lost":
            return sum(self.lost.values())
        if kind == "lag":
            return sum(self.lag.values())
        return sum(c[kind] for c in self.counts.values())

    def partitions(self) -> list[int]:
        return sorted(set(self.counts) | set(self.lost) | set(self.lag))

    def failed(self, strict: bool) -> bool:
        if self.total("missing"):
            return True
        return strict and bool(self.total("not_yet_applied") or self.total("lost"))

    def as_json(self, topic: str, show: int) -> dict[str, Any]:
        def row(p: int) -> dict[str, int]:
            c = self.counts.get(p, Counter())
            return {
                **{kind: c[kind] for kind in KINDS},
                "lost": self.lost.get(p, 0),
                "lag": self.lag.get(p, 0),
            }

        return {
            "topic": topic,
            "messages": self.messages,
            "value_bytes": self.value_bytes,
            "seconds": round(self.seconds, 3),
            "messages_per_s": round(self.messages / self.seconds) if self.seconds else None,
            "totals": {kind: self.total(kind) for kind in (*KINDS, "lost", "lag")},
            "partitions": {str(p): row(p) for p in self.partitions()},
            "missing": [{"partition": p, "offset": o} for p, o in self.missing[:show]],
        }


async def audit(settings: Settings, progress: TextIO | None = None) -> Audit:
    started = time.perf_counter()
    # Positions first: whatever is below a position read now had its dead letter acknowledged
    # and its rows committed before, so live projectors cannot make a message look missing.
    async with await psycopg.AsyncConnection.connect(settings.dsn("projector")) as conn:
        positions = {
            p: pos.next_offset
            for p, pos in (await postgres.read_positions(conn, settings.orders_topic)).items()
        }
    letters, (sources, redriven, lost) = await asyncio.gather(dead_lettered(settings), _read_model(settings))
    found = Audit()
    await _bounds(settings, positions, lost, found)
    classify = _Classifier(positions, letters, sources, redriven, settings.redrive_secret.encode())
    tally: Counter[tuple[int, str]] = Counter()
    async for ends, records in scan(settings, settings.orders_topic):
        for r in records:
            kind = classify(r)
            tally[r.partition, kind] += 1
            if kind == "missing":
                found.missing.append((r.partition, r.offset))
        found.messages += len(records)
        found.value_bytes += sum(len(r.value) for r in records if r.value is not None)
        if progress is not None:
            _show_progress(progress, found.messages, sum(ends.values()), time.perf_counter() - started)
    for (partition, kind), n in tally.items():
        found.counts.setdefault(partition, Counter())[kind] += n
    found.missing.sort()
    found.seconds = time.perf_counter() - started
    if progress is not None:
        progress.write("\r\x1b[K")
    return found


class _Classifier:
    """Each record's kind, in log order per partition (it keeps the partitions' clocks)."""

    def __init__(
        self,
        positions: dict[int, int],
        letters: dict[tuple[int, int], str | None],
        sources: dict[bytes, Source],
        redriven: dict[str, tuple[int, int]],
        secret: bytes,
    ) -> None:
        self.positions = positions
        self.letters = letters
        self.sources = sources
        self.redriven = redriven
        self.secret = secret
        self.clocks: dict[int, int] = {}

    def __call__(self, r: ConsumerRecord) -> str:
        """Kept lean: it runs for every record."""
        partition, offset = r.partition, r.offset
        clock = self.clocks[partition] = versions.tick(self.clocks.get(partition, 0), timestamp(r.timestamp))
        if (partition, offset) in self.letters and holds(
            self.letters, Record(partition, offset, r.key, r.value)
        ):
            return "dead_lettered"
        source = self.sources.get(r.key) if r.key is not None else None
        if source is not None and source.partition == partition and source.offset == offset:
            return "erased" if source.erased else "applied"
        if offset >= self.positions.get(partition, 0):
            return "not_yet_applied"
        if source is None:
            return "missing"
        version = Version(clock, partition, offset)
        if r.headers:
            claim = redrives.claim(
                Record(partition, offset, r.key, r.value, headers=tuple(r.headers)), self.secret
            )
            if isinstance(claim, Claim):
                if self.redriven.get(claim.of, (partition, offset)) != (partition, offset):
                    return "resent"
                version = claim.version
        if version < source.version:
            return "superseded"
        if version == source.version:
            return "resent"
        return "missing"


async def _bounds(settings: Settings, positions: dict[int, int], lost: dict[int, int], found: Audit) -> None:
    """Per partition: the lag, and the offsets deleted before they were applied — those the
    projector recorded, and any the log deleted below its position since it last read."""
    kafka_log = KafkaLog(settings, settings.orders_topic)
    await kafka_log.start()
    try:
        for p in await partitions_of(settings, settings.orders_topic):
            position = positions.get(p, 0)
            start, end = await kafka_log.start_offset(p), await kafka_log.end_offset(p)
            found.lag[p] = max(0, end - position)
            found.lost[p] = lost.get(p, 0) + max(0, start - position)
    finally:
        await kafka_log.stop()


async def _read_model(
    settings: Settings,
) -> tuple[dict[bytes, Source], dict[str, tuple[int, int]], dict[int, int]]:
    """order_uid (as the Kafka key it must be) -> its current version's source; redriven letters;
    offsets recorded lost, per partition."""
    sources: dict[bytes, Source] = {}
    async with await psycopg.AsyncConnection.connect(_read_only(settings)) as conn:
        cur = conn.cursor(name="orderview_audit")  # server side: a million rows come in chunks
        async with conn.transaction():
            await cur.execute(SNAPSHOT_SOURCES)
            while rows := await cur.fetchmany(50_000):
                for uid, p, o, vt, vp, vo, erased in rows:
                    sources[uid.encode()] = Source(p, o, postgres.version_of(vt, vp, vo), erased)
        redriven = {letter: (p, o) for letter, p, o in await (await conn.execute(REDRIVEN)).fetchall()}
        lost: dict[int, int] = {}
        for p, first, end in await (await conn.execute(LOST, {"topic": settings.orders_topic})).fetchall():
            lost[p] = lost.get(p, 0) + end - first
    return sources, redriven, lost


def _read_only(settings: Settings) -> str:
    """The API's read-only role, without its per-request deadline: an audit reads everything."""
    return settings.dsn("api", statement_timeout=0)


def _show_progress(out: TextIO, done: int, total: int, seconds: float) -> None:
    width = 30
    filled = width * done // max(total, 1)
    rate = done / seconds if seconds else 0
    out.write(f"\r\x1b[Kaudit [{'#' * filled}{'.' * (width - filled)}] {done:,}/{total:,} {rate:,.0f} msg/s")
    out.flush()


def report(found: Audit, topic: str, show: int) -> str:
    lines = [
        f"audit of {topic}: {found.messages:,} messages ({found.value_bytes / 1e6:,.1f} MB) in"
        f" {found.seconds:.1f} s ({found.messages / found.seconds if found.seconds else 0:,.0f}/s)"
    ]
    columns = (*KINDS, "lost", "lag")
    lines.append(f"  {'partition':>9}" + "".join(f"{kind:>16}" for kind in columns))
    for p in found.partitions():
        c = found.counts.get(p, Counter())
        values = [c[kind] for kind in KINDS] + [found.lost.get(p, 0), found.lag.get(p, 0)]
        lines.append(f"  {p:>9}" + "".join(f"{v:>16,}" for v in values))
    lines.append(f"  {'all':>9}" + "".join(f"{found.total(kind):>16,}" for kind in columns))
    missing, lost, waiting = found.total("missing"), found.total("lost"), found.total("not_yet_applied")
    if missing:
        shown = ", ".join(f"{p}:{o}" for p, o in found.missing[:show])
        lines.append(f"MISSING {missing:,} (partition:offset): {shown}{' …' if missing > show else ''}")
    else:
        lines.append(
            "nothing missing: every record is applied, erased, superseded, resent, dead-lettered or not yet applied"
        )
    if lost:
        lines.append(
            f"LOST {lost:,} records: the log deleted them (retention, delete-records) before the projector applied them"
        )
    if waiting:
        lines.append(f"{waiting:,} records not yet applied (the projector has not reached them)")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m projector.audit",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--json", action="store_true", help="print the result as one JSON object")
    parser.add_argument(
        "--strict", action="store_true", help="exit 1 also while anything is not yet applied or was lost"
    )
    parser.add_argument("--show", type=int, default=20, metavar="N", help="list at most N missing offsets")
    args = parser.parse_args(argv)
    settings = get_settings()
    jsonlog.setup("WARNING")
    found = asyncio.run(audit(settings, progress=sys.stderr if sys.stderr.isatty() else None))
    if args.json:
        print(orjson.dumps(found.as_json(settings.orders_topic, args.show)).decode())
    else:
        print(report(found, settings.orders_topic, args.show))
    sys.exit(1 if found.failed(args.strict) else 0)


if __name__ == "__main__":
    main()
