"""Publish chosen dead letters to the orders topic again, once the cause is mended.

    python -m projector.redrive --reason db_rejected [--since 2026-11-26T10:00] [--until …] [--dry-run]
    python -m projector.redrive --at 2:1834 --at 0:77        (the originals' partition:offset)
    python -m projector.redrive --all --dry-run              (counts of everything it holds)

A letter is chosen when it matches every filter given: its reason, the time it was dead-lettered
(its record timestamp in the DLQ, from --since inclusive to --until exclusive; ISO 8601, UTC when
no zone is given), the coordinates of its original in the orders topic. It is published to the
orders topic with its original key, value and headers, and three headers of ours, signed with
ORDERVIEW_REDRIVE_SECRET (projector/core/redrives.py): what it is a redrive of
(`orderview.redrive.of`, the original's topic:partition:offset), the original's version
(`orderview.redrive.version`, kept through redrives of redrives) and the signature. The projector
applies each original once however often it is redriven, and orders it by the original's version:
a redrive never replaces a newer version of its order. A redrive is a new record with a timestamp
of its own (when it reached the log), so lag and age metrics see it as the new arrival it is.

Truncated letters (dead-lettered as a prefix for their size) cannot be redriven: the command says
so for each and counts them; the original is still in the orders topic at its coordinates.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field

from aiokafka import ConsumerRecord

from orderview import cli, jsonlog, kafka_clients
from orderview.settings import Settings, get_settings
from projector.adapters.dead_letters import ORIGINAL_HEADER, letters_of
from projector.core import redrives, versions
from projector.core.records import Record
from projector.core.redrives import OURS, REDRIVE_OF, REDRIVE_SIGNATURE, REDRIVE_VERSION, Claim
from projector.core.versions import Version


@dataclass(frozen=True)
class Choice:
    """Which letters to redrive; an empty field does not filter."""

    reasons: frozenset[str] = frozenset()
    since_ms: int | None = None
    until_ms: int | None = None
    at: frozenset[tuple[int, int]] = frozenset()

    def takes(self, letter: Letter) -> bool:
        return (
            (not self.reasons or letter.reason in self.reasons)
            and (self.since_ms is None or letter.timestamp_ms >= self.since_ms)
            and (self.until_ms is None or letter.timestamp_ms < self.until_ms)
            and (not self.at or letter.source in self.at)
        )


@dataclass(frozen=True)
class Letter:
    """A dead letter of the orders topic, as the DLQ holds it."""

    record: ConsumerRecord
    headers: dict[str, bytes]
    reason: str
    source: tuple[int, int]  # the original's partition and offset

    @property
    def timestamp_ms(self) -> int:
        return self.record.timestamp

    @property
    def truncated(self) -> bool:
        return self.headers.get("dlq.truncated") == b"true"

    def version(self, secret: bytes) -> Version:
        """The original's version: carried from an earlier redrive when its signature verifies,
        else the one the letter recorded (its original's coordinates and timestamp for a letter
        older than that)."""
        carried = self.carried(secret)
        if carried is not None:
            return carried.version
        recorded = self.headers.get("dlq.version")
        if recorded is not None:
            try:
                return versions.parse(recorded.decode())
            except ValueError:
                pass
        stamp = self.headers.get("dlq.timestamp")
        return Version(int(stamp) if stamp else self.timestamp_ms, *self.source)

    def carried(self, secret: bytes) -> Claim | None:
        """The redrive the original was, if it was one this deployment signed."""
        names = (REDRIVE_OF, REDRIVE_VERSION, REDRIVE_SIGNATURE)
        if not all(ORIGINAL_HEADER + name in self.headers for name in names):
            return None
        original = Record(
            *self.source,
            self.record.key,
            self.record.value,
            headers=tuple((name, self.headers[ORIGINAL_HEADER + name]) for name in names),
        )
        claim = redrives.claim(original, secret)
        return claim if isinstance(claim, Claim) else None

    def original_headers(self) -> list[tuple[str, bytes]]:
        return [
            (name.removeprefix(ORIGINAL_HEADER), value)
            for name, value in self.record.headers
            if name.startswith(ORIGINAL_HEADER) and name.removeprefix(ORIGINAL_HEADER) not in OURS
        ]


@dataclass
class Report:
    chosen: Counter[str] = field(default_factory=Counter)  # by reason
    redriven: int = 0
    truncated: list[tuple[int, int]] = field(default_factory=list)
    duplicates: int = 0  # letters of an original already chosen (a DLQ is at-least-once)
    seconds: float = 0.0

    def text(self, topic: str, dry_run: bool) -> str:
        verb = "would redrive" if dry_run else "redrove"
        lines = [
            f"{sum(self.chosen.values()):,} letters chosen"
            + (
                f" ({', '.join(f'{r} {n:,}' for r, n in sorted(self.chosen.items()))})" if self.chosen else ""
            ),
            f"{verb} {self.redriven:,} to {topic} in {self.seconds:.1f} s",
        ]
        if self.duplicates:
            lines.append(f"{self.duplicates:,} letters of an original already chosen were left out")
        for p, o in self.truncated[:20]:
            lines.append(
                f"cannot redrive the letter of {topic}[{p}]@{o}: it is truncated; the original is at those coordinates"
            )
        if len(self.truncated) > 20:
            lines.append(f"… and {len(self.truncated) - 20:,} more truncated letters")
        return "\n".join(lines)


async def chosen_letters(settings: Settings, choice: Choice, report: Report) -> list[Letter]:
    """The letters of the orders topic that the choice takes, one per original."""
    chosen: dict[tuple[int, int], Letter] = {}
    async for record, headers, source in letters_of(settings):
        try:
            reason = headers["dlq.reason"].decode()
        except (KeyError, UnicodeDecodeError):
            continue
        letter = Letter(record, headers, reason, source)
        if not choice.takes(letter):
            continue
        if source in chosen:
            report.duplicates += 1
            continue
        chosen[source] = letter
    return list(chosen.values())


async def redrive(settings: Settings, choice: Choice, dry_run: bool = False) -> Report:
    report = Report()
    started = time.perf_counter()
    letters = await chosen_letters(settings, choice, report)
    for letter in letters:
        report.chosen[letter.reason] += 1
    ready = [letter for letter in letters if not letter.truncated]
    report.truncated = sorted(letter.source for letter in letters if letter.truncated)
    if not dry_run and ready:
        await _publish(settings, ready)
    report.redriven = len(ready)
    report.seconds = time.perf_counter() - started
    return report


async def _publish(settings: Settings, letters: Sequence[Letter]) -> None:
    producer = kafka_clients.producer(
        settings, linger_ms=20, max_request_size=64 * 1024 * 1024
    )  # acks=all, idempotent
    secret = settings.redrive_secret.encode()
    await producer.start()
    try:
        futures = []
        for letter in letters:
            p, o = letter.source
            key, value = letter.record.key, letter.record.value
            of = f"{settings.orders_topic}:{p}:{o}"
            headers = [
                *letter.original_headers(),
                *redrives.headers(secret, of, letter.version(secret), key, value),
            ]
            futures.append(await producer.send(settings.orders_topic, value=value, key=key, headers=headers))
        await asyncio.gather(*futures)
    finally:
        await producer.stop()


def _coordinates(text: str) -> tuple[int, int]:
    try:
        p, o = (int(x) for x in text.split(":"))
        if p < 0 or o < 0:
            raise ValueError
    except ValueError:
        raise argparse.ArgumentTypeError(f"not PARTITION:OFFSET: {text!r}") from None
    return p, o


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m projector.redrive",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--reason", action="append", default=[], help="a dlq.reason to redrive (repeat for more)"
    )
    parser.add_argument(
        "--since", type=cli.iso_time_ms, help="dead-lettered at or after this time (ISO 8601)"
    )
    parser.add_argument("--until", type=cli.iso_time_ms, help="dead-lettered before this time (ISO 8601)")
    parser.add_argument(
        "--at",
        action="append",
        type=_coordinates,
        default=[],
        metavar="P:O",
        help="the original's partition:offset",
    )
    parser.add_argument("--all", action="store_true", help="every letter of the orders topic")
    parser.add_argument(
        "--dry-run", action="store_true", help="count what would be redriven, publish nothing"
    )
    args = parser.parse_args(argv)
    choice = Choice(frozenset(args.reason), args.since, args.until, frozenset(args.at))
    if choice == Choice() and not args.all:
        parser.error("say which letters: --reason, --since/--until, --at, or --all")
    settings = get_settings()
    jsonlog.setup("WARNING")
    report = asyncio.run(redrive(settings, choice, dry_run=args.dry_run))
    print(report.text(settings.orders_topic, args.dry_run))
    sys.exit(0)


if __name__ == "__main__":
    main()
