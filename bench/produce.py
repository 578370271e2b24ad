"""Producing the bench's orders to its topic: as fast as possible (setup, bursts) or paced at a
rate with each send time recorded (produce → visible). Shared by ingest, mixed and redrive."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence

from aiokafka import AIOKafkaProducer

from bench import data
from orderview import kafka_clients
from orderview.settings import Settings


def producer(settings: Settings, linger_ms: int) -> AIOKafkaProducer:
    return kafka_clients.producer(
        settings,
        acks="all",
        linger_ms=linger_ms,
        max_batch_size=512 * 1024,
        max_request_size=16 * 1024 * 1024,
    )


async def produce(settings: Settings, orders: Sequence[data.Order]) -> float:
    """Send every order (linger 20 ms), wait for all acks; orders/s."""
    p = producer(settings, linger_ms=20)
    await p.start()
    try:
        started = time.perf_counter()
        futures = [await p.send(settings.orders_topic, o.value, key=o.uid.encode()) for o in orders]
        await asyncio.gather(*futures)
        return len(orders) / (time.perf_counter() - started)
    finally:
        await p.stop()


async def paced(
    settings: Settings, orders: Sequence[data.Order], rate: float | None
) -> tuple[dict[str, float], float]:
    """Send at `rate` orders/s (None: as fast as possible); return uid → send time, and the rate."""
    p = producer(settings, linger_ms=5)
    await p.start()
    sent: dict[str, float] = {}
    futures = []
    try:
        started = time.perf_counter()
        i = 0
        while i < len(orders):
            due = (
                len(orders)
                if rate is None
                else min(len(orders), int((time.perf_counter() - started) * rate) + 1)
            )
            while i < due:
                o = orders[i]
                sent[o.uid] = time.time()
                futures.append(await p.send(settings.orders_topic, o.value, key=o.uid.encode()))
                i += 1
            if rate is not None:
                await asyncio.sleep(0.002)
        await asyncio.gather(*futures)
        achieved = len(orders) / (time.perf_counter() - started)
    finally:
        await p.stop()
    return sent, achieved
