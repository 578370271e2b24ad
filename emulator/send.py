"""Sends emulator messages to Kafka at a given rate, with progress and a summary of what was sent."""

from __future__ import annotations

import asyncio
import signal
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import TextIO

from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError

from emulator.stream import Message
from orderview import kafka_clients
from orderview.settings import Settings

# Oversize messages must get past the client to reach the projector (which rejects them):
# the producer's request limit leaves room above the projector's message limit.
REQUEST_HEADROOM = 64 * 1024
MAX_IN_FLIGHT = 10_000
CODECS = ("none", "gzip", "snappy", "lz4", "zstd")


@dataclass
class Tally:
    """What was handed to Kafka and what the broker acknowledged, by kind and invalid reason."""

    started: float = field(default_factory=time.monotonic)
    queued: int = 0
    acked: Counter[str] = field(default_factory=Counter)
    acked_invalid: Counter[str] = field(default_factory=Counter)
    failed: Counter[str] = field(default_factory=Counter)

    def record(self, message: Message, error: BaseException | None) -> None:
        if error is not None:
            self.failed[f"{message.kind}: {type(error).__name__}"] += 1
            return
        self.acked[message.kind] += 1
        if message.reason is not None:
            self.acked_invalid[message.reason] += 1

    def progress(self) -> str:
        elapsed = max(time.monotonic() - self.started, 1e-9)
        done = sum(self.acked.values())
        failed = sum(self.failed.values())
        return (
            f"sent {done} ({done / elapsed:,.0f}/s), failed {failed}, in flight {self.queued - done - failed}"
        )

    def summary(self) -> str:
        elapsed = time.monotonic() - self.started
        total = sum(self.acked.values())
        lines = [
            f"sent {total} messages in {elapsed:.1f} s ({total / max(elapsed, 1e-9):,.0f}/s), acks=all, idempotent"
        ]
        lines += [
            f"  {kind:<8} {self.acked[kind]}"
            for kind in ("file", "new", "repeat", "version", "erase", "invalid")
        ]
        lines += [f"    {reason:<10} {n}" for reason, n in sorted(self.acked_invalid.items())]
        if self.failed:
            lines.append(f"  not sent {sum(self.failed.values())}:")
            lines += [f"    {what} {n}" for what, n in sorted(self.failed.items())]
        return "\n".join(lines)


async def send(
    messages: Iterable[Message],
    *,
    settings: Settings,
    topic: str,
    rate: float,
    max_bytes: int,
    tally: Tally,
    progress_to: TextIO = sys.stderr,
    compression: str | None = None,
) -> bool:
    """Send until `messages` ends or SIGINT/SIGTERM; True unless interrupted."""
    stop = asyncio.Event()
    _on_signals(stop.set)
    producer = kafka_clients.producer(
        settings,
        acks="all",
        linger_ms=20,
        max_request_size=max_bytes + REQUEST_HEADROOM,
        compression_type=compression,
    )
    try:
        await producer.start()
    except BaseException:
        await producer.stop()  # closes what start() opened before it failed
        raise
    reporter = asyncio.create_task(_report(tally, progress_to))
    try:
        await _produce(producer, topic, messages, rate, stop, tally)
        await producer.flush()
    finally:
        await producer.stop()
        reporter.cancel()
        _clear_line(progress_to)
    return not stop.is_set()


async def _produce(
    producer: AIOKafkaProducer,
    topic: str,
    messages: Iterable[Message],
    rate: float,
    stop: asyncio.Event,
    tally: Tally,
) -> None:
    loop = asyncio.get_running_loop()
    start = loop.time()
    in_flight: set[asyncio.Future] = set()
    for index, message in enumerate(messages):
        if stop.is_set():
            return
        delay = start + index / rate - loop.time() if rate else 0.0
        if delay > 0.001:
            await _sleep_unless(stop, delay)
        elif index % 1000 == 0:
            await asyncio.sleep(0)  # let progress and signal handlers run when sending flat out
        if len(in_flight) >= MAX_IN_FLIGHT:
            await asyncio.wait(in_flight, return_when=asyncio.FIRST_COMPLETED)
        tally.queued += 1
        try:
            delivery = await producer.send(topic, value=message.value, key=message.key)
        except KafkaError as exc:  # refused before it left, e.g. over the producer's size limit
            tally.record(message, exc)
            continue
        in_flight.add(delivery)
        delivery.add_done_callback(lambda done, m=message: _settle(done, m, tally, in_flight))


def _settle(done: asyncio.Future, message: Message, tally: Tally, in_flight: set[asyncio.Future]) -> None:
    in_flight.discard(done)
    tally.record(message, None if done.cancelled() else done.exception())


async def _sleep_unless(stop: asyncio.Event, seconds: float) -> None:
    try:
        await asyncio.wait_for(stop.wait(), seconds)
    except TimeoutError:
        pass


async def _report(tally: Tally, out: TextIO) -> None:
    """One updating line on a terminal; a line every few seconds elsewhere."""
    live = out.isatty()
    while True:
        await asyncio.sleep(0.5 if live else 5.0)
        out.write(f"\r\x1b[K{tally.progress()}" if live else f"{tally.progress()}\n")
        out.flush()


def _clear_line(out: TextIO) -> None:
    if out.isatty():
        out.write("\r\x1b[K")
        out.flush()


def _on_signals(callback: Callable[[], None]) -> None:
    """The first Ctrl-C (or SIGTERM) stops sending and flushes; a second one kills as usual."""
    loop = asyncio.get_running_loop()

    def handle() -> None:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
        callback()

    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, handle)
