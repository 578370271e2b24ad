"""python -m emulator: send seeded, realistic orders (and bad ones) to the orders topic.

python -m emulator --count 1000 --invalid-share 0.05 --repeat-share 0.1 --erase-share 0.01
python -m emulator --count 0 --rate 50 --file examples/order.json   # until Ctrl-C
python -m emulator --count 1000 --compression zstd
python -m emulator --count 100 --seed 7 --start 2026-03-01T09:00:00Z  # the same stream again
"""

from __future__ import annotations

import argparse
import asyncio
import random
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

from aiokafka.errors import KafkaConnectionError

from emulator.orders import order_uid_of
from emulator.send import CODECS, Tally, send
from emulator.stream import Message, check_arguments, stream
from orderview import cli
from orderview.settings import get_settings


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    settings = get_settings()
    parser = argparse.ArgumentParser(prog="python -m emulator", description=__doc__.split("\n")[0])
    parser.add_argument(
        "--count", type=int, default=1000, help="messages to send; 0 = until Ctrl-C (needs --rate)"
    )
    parser.add_argument(
        "--rate", type=float, default=0.0, help="messages per second; 0 = as fast as possible"
    )
    parser.add_argument("--invalid-share", type=float, default=0.05, help="share of invalid messages (0..1)")
    parser.add_argument(
        "--repeat-share", type=float, default=0.10, help="share of identical re-sends and new versions (0..1)"
    )
    parser.add_argument(
        "--erase-share",
        type=float,
        default=0.0,
        help="share of erasures: tombstones (key, no value) of orders sent before (0..1)",
    )
    parser.add_argument("--seed", type=int, default=None, help="same seed, same stream (default: random)")
    parser.add_argument(
        "--start",
        type=_utc_time,
        default=None,
        help="the stream's time at its first message, e.g. 2026-03-01T09:00:00Z: orders are dated "
        "at or before the stream's time (default: now; with the same seed, the same stream)",
    )
    parser.add_argument(
        "--file",
        type=Path,
        action="append",
        default=[],
        help="a JSON order to send first, bytes as is (repeatable)",
    )
    parser.add_argument(
        "--compression",
        choices=CODECS,
        default="none",
        help="compress the batches sent with this Kafka codec (the projector reads them all)",
    )
    parser.add_argument("--bootstrap", default=settings.kafka_bootstrap, help="Kafka bootstrap HOST:PORT")
    parser.add_argument("--topic", default=settings.orders_topic)
    parser.add_argument(
        "--max-bytes",
        type=int,
        default=settings.max_message_bytes,
        help="the projector's message size limit; oversize messages are one byte over it",
    )
    args = parser.parse_args(argv)
    if args.count < 0 or args.rate < 0:
        parser.error("--count and --rate must not be negative")
    if args.count == 0 and args.rate == 0:
        parser.error("--count 0 runs until interrupted: give it a --rate")
    try:
        check_arguments(args.count, args.invalid_share, args.repeat_share, args.max_bytes, args.erase_share)
    except ValueError as exc:
        parser.error(str(exc))
    if args.seed is None:
        args.seed = random.SystemRandom().randrange(2**32)
    if args.start is None:
        args.start = int(time.time())
    return args


def _utc_time(text: str) -> int:
    """An ISO 8601 time (Z or an offset; without one, UTC) as Unix seconds."""
    return cli.iso_time_ms(text) // 1000


def start_text(start: int) -> str:
    return datetime.fromtimestamp(start, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def file_messages(paths: Sequence[Path]) -> list[Message]:
    """The given files as messages, untouched, keyed by their order_uid."""
    messages = []
    for path in paths:
        value = path.read_bytes()
        uid = order_uid_of(value)
        messages.append(Message("file", uid.encode(), value, uid, None))
    return messages


def all_messages(args: argparse.Namespace, files: list[Message]) -> Iterator[Message]:
    yield from files
    yield from stream(
        args.count,
        seed=args.seed,
        invalid_share=args.invalid_share,
        repeat_share=args.repeat_share,
        erase_share=args.erase_share,
        max_bytes=args.max_bytes,
        start=args.start,
        rate=args.rate,
    )


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        files = file_messages(args.file)
    except (OSError, ValueError) as exc:
        print(f"emulator: {exc}", file=sys.stderr)
        return 2
    messages = all_messages(args, files)
    tally = Tally()
    print(f"emulator: seed {args.seed}, sending to {args.topic} at {args.bootstrap}", file=sys.stderr)
    try:
        asyncio.run(
            send(
                messages,
                settings=replace(get_settings(), kafka_bootstrap=args.bootstrap),
                topic=args.topic,
                rate=args.rate,
                max_bytes=args.max_bytes,
                tally=tally,
                compression=None if args.compression == "none" else args.compression,
            )
        )
    except KafkaConnectionError as exc:
        print(f"emulator: cannot reach Kafka at {args.bootstrap}: {exc}", file=sys.stderr)
        return 2
    print(tally.summary())
    again = f"--seed {args.seed} --start {start_text(args.start)}"
    print(f"  seed {args.seed}, start {start_text(args.start)} (pass {again} to send the same stream again)")
    return 1 if tally.failed else 0


if __name__ == "__main__":
    sys.exit(main())
