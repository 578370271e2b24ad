"""The Faust worker: takes batches from the orders topic and hands them to BatchProjector.

    python -m projector            (a worker; run several for more partitions in parallel)

Positions: the agent never acknowledges an event, so Faust commits nothing; after each batch's
transaction, the worker copies the positions it recorded to the consumer group's offsets
(projector/positions.py says why that cannot pass a message whose effect is not durable).

Failures: see projector/faults.py. Anything that is neither one message's fault nor an outage
stops the process (no agent restart inside it: a restarted agent would take later batches past
the one it lost); so does a crashed Faust service, which would leave the agent waiting for
messages that never come (`Watchdog`).
"""

from __future__ import annotations

import asyncio
import logging
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import NoReturn

import faust
from faust.types import TP
from mode import CrashingSupervisor, Service
from mode.utils.trees import NodeT
from prometheus_client import generate_latest

from orderview import jsonlog, kafka_clients
from orderview.settings import Settings
from projector import faults
from projector.batch import BatchProjector
from projector.judge import Prepared
from projector.kafka import broker_url
from projector.lag import LagSampler
from projector.messages import Incoming

log = logging.getLogger("orderview.projector")

# prometheus_client's CONTENT_TYPE_LATEST names a charset, which aiohttp wants apart.
PROMETHEUS_TEXT = "text/plain; version=0.0.4"
# After SIGTERM, a worker still running this much later exits anyway: whatever it was waiting
# for (a lost database, a broker) is not worth more, and nothing unrecorded is committed.
SHUTDOWN_DEADLINE_S = 15.0


def create_app(settings: Settings) -> faust.App:
    """A projector worker: the Faust app, its agent, its pages, and the BatchProjector it feeds
    (`app.projector`, which the consumer asks where to seek, projector/kafka.py)."""
    app = faust.App(
        settings.consumer_group,
        broker=broker_url(settings.kafka_bootstrap),
        broker_credentials=kafka_clients.faust_credentials(settings),
        store="memory://",
        autodiscover=False,
        topic_allow_declare=False,
        topic_disable_leader=True,
        # Positions are always set explicitly (projector/kafka.py). A position that leaves the log
        # under the consumer is reset to the log's start and checked there (projector/positions.py:
        # records deleted before they were applied are reported; another incarnation stops).
        consumer_auto_offset_reset="earliest",
        producer_acks=-1,
        # A killed worker's partitions move to the others after 10 s, not Faust's default 60 s.
        broker_session_timeout=10.0,
        broker_heartbeat_interval=2.0,
        # On SIGTERM, do not wait for a batch that may be retrying against a lost database:
        # it is cancelled, unrecorded, and read again by the next owner.
        stream_wait_empty=False,
        stream_buffer_maxsize=max(4096, settings.batch_size * 4),
        consumer_max_fetch_size=8 * 1024 * 1024,
        # Partitions added to the topic, or the topic recreated, are noticed within 30 s, not 5 min.
        consumer_metadata_max_age_ms=30_000,
        web_port=settings.projector_port,
        web_bind=settings.projector_host,
        web_host=settings.projector_host,
        logging_config=jsonlog.logging_config(settings.log_level),
        # Nothing of ours is kept on disk (the read model is in PostgreSQL); Faust wants a folder anyway.
        datadir=str(Path(tempfile.gettempdir()) / "orderview-faust" / settings.consumer_group),
    )
    Path(app.conf.datadir).parent.mkdir(parents=True, exist_ok=True)
    orders = app.topic(
        settings.orders_topic,
        key_type=bytes,
        value_type=bytes,
        key_serializer="raw",
        value_serializer="raw",
        partitions=settings.orders_partitions,
    )
    projector = BatchProjector(settings, group=FaustGroup(app, settings.orders_topic))
    app.projector = projector
    app.agent(orders, name="project", concurrency=1, supervisor_strategy=CrashingSupervisor)(
        Agent(app, projector).run
    )
    setup_pages(app, projector)
    lag = LagSampler(
        settings,
        projector.metrics.registry,
        lambda: [tp.partition for tp in app.consumer.assignment() if tp.topic == settings.orders_topic],
    )

    @app.task
    async def sample_lag() -> None:
        await lag.run()

    @app.on_worker_init.connect
    def start_watchdog(_app: faust.App, **_kwargs: object) -> None:
        if not any(isinstance(t, Watchdog) for t in threading.enumerate()):  # the signal comes twice
            Watchdog(app).start()

    return app


class FaustGroup:
    """The worker's consumer group, through Faust's consumer (which runs on its own thread)."""

    def __init__(self, faust_app: faust.App, topic: str) -> None:
        self.app = faust_app
        self.topic = topic

    async def commit(self, offsets: dict[int, int]) -> bool:
        # Consumer._commit is the step Faust's own commit() ends in; commit() itself would
        # commit acknowledged events, and this worker acknowledges none. Ours refuses while
        # the group rebalances (projector/kafka.py).
        return await self.app.consumer._commit({TP(self.topic, p): o for p, o in offsets.items()})

    async def seek(self, partition: int, offset: int) -> None:
        await self.app.consumer.seek(TP(self.topic, partition), offset)


def incoming(message: faust.types.tuples.Message) -> Incoming:
    return Incoming(
        message.partition,
        message.offset,
        message.key,
        message.value,
        round(message.timestamp * 1000),
        message.generation_id,
        tuple(message.headers or ()),
    )


def fail(exc: BaseException) -> NoReturn:
    """Stop the worker for a failure of the agent or of a batch being written."""
    if isinstance(exc, faults.UntrustedPosition):
        faults.stop_worker(str(exc), status=faults.EXIT_UNTRUSTED_POSITION)
    if isinstance(exc, faults.SystemicRefusal | faults.SkippedRecords):
        faults.stop_worker(str(exc), exc)
    faults.stop_worker("a batch could not be projected", exc)


def _fail_if_failed(task: asyncio.Task) -> None:
    # At once, not when the agent next awaits the task: no more messages may ever come.
    if not task.cancelled() and task.exception() is not None:
        fail(task.exception())


class Agent:
    """The agent's body: one batch is written while the next is taken and judged, so PostgreSQL
    and Python work at the same time, and batches still commit in order."""

    def __init__(self, app: faust.App, projector: BatchProjector) -> None:
        self.app = app
        self.projector = projector

    async def run(self, stream: faust.StreamT) -> None:
        projector, settings = self.projector, self.projector.settings
        writing: asyncio.Task | None = None
        try:
            await projector.start()
            async for events in stream.noack_take(settings.batch_size, within=settings.batch_wait_s):
                batch = [incoming(e.message) for e in events]
                prepared = projector.prepare(batch)
                if writing is not None:
                    await writing
                writing = asyncio.create_task(self.write(batch, prepared))
                writing.add_done_callback(_fail_if_failed)
            if writing is not None:
                await writing
        except asyncio.CancelledError:
            raise
        except BaseException as exc:
            fail(exc)
        finally:
            projector.readiness.set_not_ready("the projector agent is not running", "agent")
            if writing is not None and not writing.done():
                writing.remove_done_callback(_fail_if_failed)
                writing.cancel()
                await asyncio.gather(writing, return_exceptions=True)
            await projector.stop()

    async def write(self, batch: list[Incoming], prepared: Prepared) -> None:
        await self.projector.process(batch, prepared)


def setup_pages(app: faust.App, projector: BatchProjector) -> None:
    """/metrics, /readyz and /healthz on the worker's own port."""

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


class Watchdog(threading.Thread):
    """Stops the worker when Faust no longer delivers or does not shut down.

    A Faust service that crashed (a fetcher that died on a record it could not read, a consumer
    thread that failed) leaves the agent waiting for messages that never come, and the process
    half alive. A thread, so that it acts even when the event loop is stuck."""

    def __init__(self, faust_app: faust.App, interval_s: float = 0.2) -> None:
        super().__init__(name="orderview-watchdog", daemon=True)
        self.app = faust_app
        self.interval_s = interval_s

    def run(self) -> None:
        stopping_since: float | None = None
        while True:
            time.sleep(self.interval_s)
            crashed = self._crashed_service()
            if crashed is not None:
                faults.stop_worker(f"Faust's {crashed.label} crashed", crashed.crash_reason)
            if stopping_since is None and self.app.should_stop:
                stopping_since = time.monotonic()
            if stopping_since is not None and time.monotonic() - stopping_since > SHUTDOWN_DEADLINE_S:
                log.warning("shutdown took over %.0f s; exiting without waiting more", SHUTDOWN_DEADLINE_S)
                faults.stop_worker("shutdown deadline passed", status=0)

    def _crashed_service(self) -> Service | None:
        try:
            for service in _services(self.app):
                # A crash marks every service of the tree crashed; the one with a reason is where
                # it happened. A clean stop leaves no reason anywhere.
                if service.crashed and service.crash_reason is not None:
                    return service
        except RuntimeError:  # the tree changed while walked from this thread: next time
            pass
        return None


def _services(faust_app: faust.App) -> Iterator[Service]:
    for item in faust_app.beacon.traverse():
        service = item.data if isinstance(item, NodeT) else item
        if isinstance(service, Service):
            yield service
