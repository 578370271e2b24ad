"""Reconcile every message of the orders topic with the read model and the dead-letter topic.

    python -m projector.audit [--json] [--show N]

Each offset of the topic (committed records only, up to the end when the command starts) is:
- applied: the current version of its order, or superseded by a later version of the same order,
  or an identical re-send of the current version;
- dead-lettered: the DLQ holds a letter with its coordinates (and the same SHA-256, when the
  letter carries one);
- pending: at or after the position the read model recorded for its partition (not yet read);
- MISSING: none of these. Exit status 1 if there is any.
Read-only: safe to run beside live projectors (what they apply meanwhile may show as pending).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, TextIO

import orjson
import psycopg

from orderview import jsonlog
from orderview.settings import Settings, get_settings
from projector import store
from projector.dlq import dead_lettered, holds
from projector.kafka import scan
from projector.messages import Incoming
from projector.positions import read_positions

SNAPSHOT_SOURCES = "SELECT order_uid, source_partition, source_offset FROM order_snapshots"
SNAPSHOT_BODIES = "SELECT order_uid, body_json FROM order_snapshots WHERE order_uid = ANY(%(uids)s)"
KINDS = ("applied", "superseded", "resent", "dead_lettered", "pending", "missing")


@dataclass
class Audit:
    """What was found, per partition and kind; the first missing coordinates."""

    counts: dict[int, Counter[str]] = field(default_factory=dict)
    missing: list[tuple[int, int]] = field(default_factory=list)
    messages: int = 0
    seconds: float = 0.0

    def add(self, partition: int, offset: int, kind: str) -> None:
        self.counts.setdefault(partition, Counter())[kind] += 1
        if kind == "missing":
            self.missing.append((partition, offset))

    def total(self, kind: str) -> int:
        return sum(c[kind] for c in self.counts.values())

    def as_json(self, topic: str, show: int) -> dict[str, Any]:
        return {
            "topic": topic,
            "messages": self.messages,
            "seconds": round(self.seconds, 3),
            "messages_per_s": round(self.messages / self.seconds) if self.seconds else None,
            "totals": {kind: self.total(kind) for kind in KINDS},
            "partitions": {str(p): {kind: c[kind] for kind in KINDS} for p, c in sorted(self.counts.items())},
            "missing": [{"partition": p, "offset": o} for p, o in self.missing[:show]],
        }


async def audit(settings: Settings, progress: TextIO | None = None) -> Audit:
    started = time.perf_counter()
    # Positions first: whatever is below a position read now had its dead letter acknowledged
    # and its rows committed before, so live projectors cannot make a message look missing.
    positions = {p: position.next_offset for p, position in (await read_positions(settings)).items()}
    letters, sources = await asyncio.gather(
        dead_lettered(settings),
        _snapshot_sources(settings),
    )
    found = Audit()
    tally: Counter[tuple[int, str]] = Counter()
    resends: list[Incoming] = []  # later than their order's current version: same content?
    async for ends, records in scan(settings, settings.orders_topic):
        kinds = [
            _classify(r.partition, r.offset, r.key, r.value, positions, letters, sources) for r in records
        ]
        tally.update(zip([r.partition for r in records], kinds, strict=True))
        for r, kind in zip(records, kinds, strict=True):
            if kind == "missing":
                found.missing.append((r.partition, r.offset))
            elif kind == "resent?":
                resends.append(Incoming(r.partition, r.offset, r.key, r.value))
        found.messages += len(records)
        if progress is not None:
            _show_progress(progress, found.messages, sum(ends.values()), time.perf_counter() - started)
    for (partition, kind), n in tally.items():
        if kind != "resent?":
            found.counts.setdefault(partition, Counter())[kind] += n
    for m, kind in await _judge_resends(settings, resends):
        found.add(m.partition, m.offset, kind)
    found.missing.sort()
    found.seconds = time.perf_counter() - started
    if progress is not None:
        progress.write("\r\x1b[K")
    return found


def _classify(
    partition: int,
    offset: int,
    key: bytes | None,
    value: bytes | None,
    positions: dict[int, int],
    letters: dict[tuple[int, int], str | None],
    sources: dict[bytes, tuple[int, int]],
) -> str:
    """Per message of the topic: kept lean, it runs for every one."""
    if offset >= positions.get(partition, 0):
        return "pending"
    if (partition, offset) in letters and holds(letters, Incoming(partition, offset, key, value)):
        return "dead_lettered"
    source = sources.get(key) if key is not None else None  # type: ignore[arg-type]
    if source is None:
        return "missing"
    if source[0] == partition:
        if source[1] == offset:
            return "applied"
        if source[1] > offset:
            return "superseded"
    return "resent?"


async def _snapshot_sources(settings: Settings) -> dict[bytes, tuple[int, int]]:
    """order_uid (as the Kafka key it must be) -> where its current version came from."""
    sources: dict[bytes, tuple[int, int]] = {}
    async with await psycopg.AsyncConnection.connect(_read_only(settings)) as conn:
        cur = conn.cursor(name="orderview_audit")  # server side: a million rows come in chunks
        async with conn.transaction():
            await cur.execute(SNAPSHOT_SOURCES)
            while rows := await cur.fetchmany(50_000):
                sources.update((uid.encode(), (p, o)) for uid, p, o in rows)
    return sources


async def _judge_resends(settings: Settings, resends: list[Incoming]) -> Iterable[tuple[Incoming, str]]:
    """A message after its order's current version was applied only if it is the same version
    (an identical re-send changes nothing and keeps the earlier source offset)."""
    if not resends:
        return []
    async with await psycopg.AsyncConnection.connect(_read_only(settings)) as conn:
        cur = await conn.execute(SNAPSHOT_BODIES, {"uids": sorted({m.key.decode() for m in resends})})  # type: ignore[union-attr]
        bodies = dict(await cur.fetchall())
    judged = []
    for m in resends:
        try:
            # An identical re-send is the same JSON as stored, as the projector compares them.
            same = store.compact_json(orjson.loads(m.value)) == bodies.get(m.key.decode())  # type: ignore[arg-type, union-attr]
        except orjson.JSONDecodeError:
            same = False
        judged.append((m, "resent" if same else "missing"))
    return judged


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
        f"audit of {topic}: {found.messages:,} messages in {found.seconds:.1f} s"
        f" ({found.messages / found.seconds if found.seconds else 0:,.0f}/s)"
    ]
    header = f"  {'partition':>9}" + "".join(f"{kind:>15}" for kind in KINDS)
    lines.append(header)
    for p, c in sorted(found.counts.items()):
        lines.append(f"  {p:>9}" + "".join(f"{c[kind]:>15,}" for kind in KINDS))
    lines.append(f"  {'all':>9}" + "".join(f"{found.total(kind):>15,}" for kind in KINDS))
    missing = found.total("missing")
    if missing:
        shown = ", ".join(f"{p}:{o}" for p, o in found.missing[:show])
        lines.append(f"MISSING {missing:,} (partition:offset): {shown}{' …' if missing > show else ''}")
    else:
        lines.append("nothing missing: every message is applied, dead-lettered or still pending")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m projector.audit",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--json", action="store_true", help="print the result as one JSON object")
    parser.add_argument("--show", type=int, default=20, metavar="N", help="list at most N missing offsets")
    args = parser.parse_args(argv)
    settings = get_settings()
    jsonlog.setup("WARNING")
    found = asyncio.run(audit(settings, progress=sys.stderr if sys.stderr.isatty() else None))
    if args.json:
        print(orjson.dumps(found.as_json(settings.orders_topic, args.show)).decode())
    else:
        print(report(found, settings.orders_topic, args.show))
    sys.exit(1 if found.total("missing") else 0)


if __name__ == "__main__":
    main()
