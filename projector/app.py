"""The Faust worker: takes batches from the orders topic and hands them to BatchProjector.

    python -m projector            (a worker; run several for more partitions in parallel)

Offsets: Faust commits what the agent acknowledged. A batch is acknowledged only
after BatchProjector made it durable (see `hold` and `release`); a batch interrupted
by a crash or shutdown is never acknowledged, so the next owner of the partition
reads it again, and the applied offsets in PostgreSQL skip what was already written.
"""

from __future__ import annotations

import asyncio
import tempfile
from collections.abc import Sequence
from pathlib import Path

import faust
from prometheus_client import generate_latest

from orderview import jsonlog
from orderview.settings import get_settings
from projector.batch import BatchProjector, Prepared, last_offsets
from projector.dlq import Incoming

settings = get_settings()
# prometheus_client's CONTENT_TYPE_LATEST names a charset, which aiohttp wants apart.
PROMETHEUS_TEXT = "text/plain; version=0.0.4"

app = faust.App(
    settings.consumer_group,
    broker=f"kafka://{settings.kafka_bootstrap}",
    store="memory://",
    autodiscover=False,
    topic_allow_declare=False,
    topic_disable_leader=True,
    consumer_auto_offset_reset="earliest",
    producer_acks=-1,
    # A killed worker's partitions move to the others after 10 s, not Faust's default 60 s.
    broker_session_timeout=10.0,
    broker_heartbeat_interval=2.0,
    broker_commit_every=settings.batch_size,
    broker_commit_interval=1.0,
    # On SIGTERM, do not wait for a batch that may be retrying against a lost database:
    # it is cancelled, left unacknowledged, and read again by the next owner.
    stream_wait_empty=False,
    stream_buffer_maxsize=max(4096, settings.batch_size * 4),
    consumer_max_fetch_size=8 * 1024 * 1024,
    web_port=settings.projector_port,
    web_bind=settings.projector_host,
    web_host=settings.projector_host,
    logging_config=jsonlog.logging_config(settings.log_level),
    # Nothing of ours is kept on disk (the read model is in PostgreSQL); Faust wants a folder anyway.
    datadir=str(Path(tempfile.gettempdir()) / "orderview-faust" / settings.consumer_group),
)

orders = app.topic(
    settings.orders_topic,
    key_type=bytes,
    value_type=bytes,
    key_serializer="raw",
    value_serializer="raw",
    partitions=settings.orders_partitions,
)

Path(app.conf.datadir).parent.mkdir(parents=True, exist_ok=True)
projector = BatchProjector(settings)


def hold(events: Sequence[faust.types.EventT]) -> None:
    """Keep Faust from acknowledging these events when the next batch is taken.

    Faust's take_events acknowledges a batch as soon as the agent asks for the next one
    (and also when the agent is cancelled). Marking the messages as acknowledged already
    makes that a no-op; `release` acknowledges them for real once the batch is durable.
    A batch never released is never committed: the next owner of its partitions reads
    it again."""
    for event in events:
        event.message.acked = True


def release(events: Sequence[faust.types.EventT]) -> None:
    for event in events:
        event.message.acked = False
        event.message.ack(app.consumer)


async def apply(events: Sequence[faust.types.EventT], batch: list[Incoming], prepared: Prepared) -> None:
    await projector.process(batch, prepared)
    release(events)
    update_lag(batch)


@app.agent(orders, concurrency=1)
async def project(stream: faust.StreamT) -> None:
    """One batch is written while the next is taken and validated: PostgreSQL and Python
    work at the same time, and batches still commit (and are acknowledged) in order."""
    await projector.start()
    writing: asyncio.Task | None = None
    try:
        async for events in stream.take_events(settings.batch_size, within=settings.batch_wait_s):
            hold(events)
            batch = [
                Incoming(e.message.partition, e.message.offset, e.message.key, e.message.value)
                for e in events
            ]
            prepared = projector.prepare(batch)
            if writing is not None:
                await writing
            writing = asyncio.create_task(apply(events, batch, prepared))
        if writing is not None:
            await writing
    finally:
        if writing is not None and not writing.done():
            writing.cancel()
            await asyncio.gather(writing, return_exceptions=True)
        await projector.stop()


def update_lag(batch: Sequence[Incoming]) -> None:
    for partition, offset in last_offsets(batch).items():
        tp = faust.types.TP(settings.orders_topic, partition)
        highwater = app.consumer.highwater(tp)
        if highwater is not None:
            projector.metrics.lag.labels(str(partition)).set(max(0, highwater - offset - 1))


@app.page("/metrics")
async def metrics(web: faust.web.Web, request: faust.web.Request) -> faust.web.Response:
    return web.bytes(generate_latest(projector.metrics.registry), content_type=PROMETHEUS_TEXT)


@app.page("/readyz")
async def readyz(web: faust.web.Web, request: faust.web.Request) -> faust.web.Response:
    reason = projector.readiness.reason
    if reason is None:
        return web.json({"status": "ready"})
    return web.json({"status": "not ready", "reason": reason}, status=503)


@app.page("/healthz")
async def healthz(web: faust.web.Web, request: faust.web.Request) -> faust.web.Response:
    return web.json({"status": "alive"})
