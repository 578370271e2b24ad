"""The Faust worker: takes batches from the orders topic and hands them to BatchProjector.
The only module that imports Faust.

    python -m projector            (a worker; run several for more partitions in parallel)

Positions: the agent never acknowledges an event, so Faust commits nothing; after each batch's
transaction, the worker copies the positions it recorded to the consumer group's offsets
(projector/checkpoint.py says why that cannot pass a record whose effect is not durable). When
partitions are assigned, the consumer seeks each to the position the read model recorded
(projector/assignment.py), not to the group's offset.

Faust's private parts used, each here only, as faust-streaming 0.15.3 and aiokafka 0.14.0 have them:
- `App._new_transport`: the transport is given (`_Transport`), not looked up in Faust's global
  registry by URL scheme.
- `AIOKafkaConsumerThread._create_worker_consumer` and aiokafka's `AIOKafkaConsumer._isolation_level`:
  read_committed (Faust asks for it only in its exactly-once mode, which would also make it
  produce and commit in transactions we do not use; without it, records of an aborted Kafka
  transaction would be projected as real orders).
- `Service.wait_first` as the fetcher's `Consumer._drain_messages` calls it for each message
  (projector/adapters/delivery.py).
- `Consumer._new_consumer_thread`, `Consumer._seek` (through the thread's `seek_wait`),
  `Consumer.perform_seek` and `Consumer._commit`.

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
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, NoReturn

import faust
from aiokafka import AIOKafkaConsumer
from faust.sensors import Monitor
from faust.transport.drivers import aiokafka as faust_aiokafka
from faust.types import TP
from mode import CrashingSupervisor, Service
from mode.utils.trees import NodeT
from prometheus_client import generate_latest

from orderview import jsonlog, kafka_clients
from orderview.settings import Settings
from projector import faults
from projector.adapters.delivery import ImmediateDelivery
from projector.adapters.kafka import READ_COMMITTED, KafkaLog, partitions_of
from projector.assignment import seek_targets
from projector.batch import BatchProjector, Verdicts
from projector.checkpoint import COMMIT_RETRY_S
from projector.core.records import CREATE_TIME, Record, timestamp
from projector.lag import LagSampler

log = logging.getLogger("orderview.projector")

# prometheus_client's CONTENT_TYPE_LATEST names a charset, which aiohttp wants apart.
PROMETHEUS_TEXT = "text/plain; version=0.0.4"
# After SIGTERM, a worker still running this much later exits anyway: whatever it was waiting
# for (a lost database, a broker) is not worth more, and nothing unrecorded is committed.
SHUTDOWN_DEADLINE_S = 15.0


def broker_url(bootstrap: str) -> str:
    """Faust's broker URL for a comma-separated bootstrap list: `kafka://h1:p1;h2:p2`."""
    return "kafka://" + ";".join(a.strip() for a in bootstrap.split(",") if a.strip())


def create_app(settings: Settings) -> faust.App:
    """A projector worker: the Faust app, its agent, its pages, and the BatchProjector it feeds,
    which its consumer is handed to ask where to seek."""
    group = FaustGroup(settings.orders_topic)
    projector = BatchProjector(settings, group=group)
    app = _App(
        settings.consumer_group,
        transport=_transport(projector),
        broker=broker_url(settings.kafka_bootstrap),
        broker_credentials=kafka_clients.faust_credentials(settings),
        store="memory://",
        autodiscover=False,
        topic_allow_declare=False,
        topic_disable_leader=True,
        # Positions are always set explicitly (projector/assignment.py). A position that leaves the
        # log under the consumer is reset to the log's start and checked there (projector/core/plan.py:
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
        # Partitions added to the topic, or the topic recreated, are noticed within 5 s, not 5 min:
        # in chaos runs an added partition stood unassigned for 23 s of a 30 s refresh. One
        # metadata request per worker every 5 s costs the broker nothing.
        consumer_metadata_max_age_ms=5_000,
        web_port=settings.projector_port,
        web_bind=settings.projector_host,
        web_host=settings.projector_host,
        logging_config=jsonlog.logging_config(settings.log_level),
        Monitor=QuietMonitor,
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
    group.app = app
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


class _ReadCommittedConsumerThread(faust_aiokafka.AIOKafkaConsumerThread):
    logger = faust_aiokafka.logger  # Faust's, whose level the logging configuration sets

    def _create_worker_consumer(self, transport: Any) -> AIOKafkaConsumer:
        consumer = super()._create_worker_consumer(transport)
        # aiokafka hands this to its fetcher when the consumer starts, which is after this.
        consumer._isolation_level = READ_COMMITTED
        return consumer


class _Consumer(ImmediateDelivery, faust_aiokafka.Consumer):
    logger = faust_aiokafka.logger
    projector: BatchProjector  # given by `_transport`

    def _new_consumer_thread(self) -> faust_aiokafka.AIOKafkaConsumerThread:
        return _ReadCommittedConsumerThread(self, loop=self.loop, beacon=self.beacon)

    async def _seek(self, partition: TP, offset: int) -> None:
        # Faust's own seek calls aiokafka from this thread while the consumer's thread fetches;
        # both delete from the fetcher's buffers, and the race crashed the fetcher (KeyError).
        # seek_wait seeks on the consumer's thread.
        await self._thread.seek_wait({partition: offset})

    async def perform_seek(self) -> None:
        """Faust calls this once partitions are assigned, to seek them to the group's offsets.
        The read model is the source of truth: seek each to the position it recorded (the start
        for a partition it has none for), once what the position points to is verified. If the
        database or the broker cannot be asked now, the group's offsets stand (the start where
        there is none), and positions are checked when the first batch is written.

        Every partition gets an explicit position: the consumer resets none by itself
        (auto_offset_reset "none"), so a position that leaves the log under it — a topic
        truncated or recreated between two metadata refreshes — stops the worker instead of
        being quietly moved."""
        await super().perform_seek()
        settings = self.projector.settings
        assigned = {tp.partition: tp for tp in self.assignment() if tp.topic == settings.orders_topic}
        if not assigned:
            return
        kafka_log = KafkaLog(settings, settings.orders_topic)
        try:
            await kafka_log.start()
            existing = await partitions_of(settings, settings.orders_topic)
            targets = await seek_targets(
                settings,
                kafka_log,
                sorted(assigned),
                existing,
                self.projector.checkpoint.applied_record_deleted,
            )
        except faults.UntrustedPosition as exc:
            faults.stop_worker(str(exc), status=faults.EXIT_UNTRUSTED_POSITION)
        except Exception as exc:
            if faults.outage(exc) is None:
                raise
            log.warning("cannot check the recorded positions now; starting from the group's offsets: %s", exc)
            committed = await self.seek_to_committed()
            for tp in assigned.values():
                if not committed.get(tp):
                    await self.seek(tp, 0)
            # Compared with the database's positions once it answers (BatchProjector.reconcile).
            self.projector.checkpoint.known.update(
                {tp.partition: committed.get(tp) or 0 for tp in assigned.values()}
            )
            return
        finally:
            await kafka_log.stop()
        self.projector.checkpoint.known.update(targets)
        sought = {assigned[p]: offset for p, offset in targets.items()}
        for tp, offset in sought.items():
            await self.seek(tp, offset)
        self._copy_to_group(sought)

    async def _commit(self, offsets: Mapping[TP, int]) -> bool:
        """Commit to the group, or False if it cannot take the offsets now (try again later).

        Not while the group rebalances: a commit that reaches the coordinator after the group's
        generation moved on fails with IllegalGeneration, and aiokafka answers that by making
        this member join again, which moves the generation on again, and so on (a CI run of the
        chaos test showed three such rebalances in a row after a kill -9). The offsets are a
        copy of the database's positions: they can wait.

        Never moving a partition back from an offset this worker sent: the copy of the
        positions sought and the first batch's commit may cross. Only partitions still assigned:
        a partition that left this worker is its new owner's to copy (and Faust's commit crashes
        the consumer on offsets left empty by that filter)."""
        if self.app.rebalancing:
            return False
        sent: dict[TP, int] = self.__dict__.setdefault("_sent_offsets", {})
        assigned = self.assignment()
        ahead = {tp: o for tp, o in offsets.items() if o > sent.get(tp, -1) and tp in assigned}
        if not ahead:
            return True
        before = {tp: sent.get(tp, -1) for tp in ahead}
        sent.update(ahead)  # before sending: a commit that starts later sees it
        done = False
        try:
            done = await super()._commit(ahead)
        finally:
            for tp, o in ahead.items():
                if not done and sent.get(tp) == o:  # not sent after all
                    sent[tp] = before[tp]
        return done

    def _copy_to_group(self, offsets: dict[TP, int]) -> None:
        """The group's offsets say the same as the positions sought (for tools that show lag),
        once the group takes them (`_commit`)."""
        previous = getattr(self, "_copying", None)
        if previous is not None:
            previous.cancel()

        async def copy() -> None:
            while not await self._commit(offsets):  # noqa: ASYNC110 (a retry, not a wait for a flag)
                await asyncio.sleep(COMMIT_RETRY_S)

        self._copying = asyncio.ensure_future(copy())


class Transport(faust_aiokafka.Transport):
    Consumer = _Consumer


def _transport(projector: BatchProjector) -> type[faust_aiokafka.Transport]:
    """Faust's Kafka transport, whose consumer asks this projector where to seek."""

    class Consumer(_Consumer):
        pass

    Consumer.projector = projector

    class Transport(faust_aiokafka.Transport):
        pass

    Transport.Consumer = Consumer
    return Transport


class QuietMonitor(Monitor):
    """Faust's monitor without its statistics of each message and event, which nothing here reads
    (the worker's own metrics are projector/metrics.py): about 2 % of a worker's CPU while
    ingesting. It still notes when a stream last took an event, which Faust's consumer reads to
    say that a partition's stream is stuck."""

    def on_message_in(self, tp: TP, offset: int, message: faust.types.tuples.Message) -> None:
        pass

    def on_stream_event_in(self, tp: TP, offset: int, stream: object, event: object) -> None:
        self.stream_inbound_time[tp] = time.monotonic()

    def on_stream_event_out(
        self, tp: TP, offset: int, stream: object, event: object, state: dict | None = None
    ) -> None:
        pass

    def on_message_out(self, tp: TP, offset: int, message: faust.types.tuples.Message) -> None:
        pass


class _App(faust.App):
    def __init__(self, *args: Any, transport: type[faust_aiokafka.Transport], **kwargs: Any) -> None:
        self._transport_class = transport
        super().__init__(*args, **kwargs)

    def _new_transport(self) -> faust_aiokafka.Transport:
        return self._transport_class(self.conf.broker_consumer, self)


class FaustGroup:
    """The worker's consumer group, through Faust's consumer (which runs on its own thread)."""

    def __init__(self, topic: str) -> None:
        self.topic = topic
        self.app: faust.App | None = None  # the app is made with the projector that commits here

    async def commit(self, offsets: dict[int, int]) -> bool:
        # Consumer._commit is the step Faust's own commit() ends in; commit() itself would
        # commit acknowledged events, and this worker acknowledges none. Ours refuses while
        # the group rebalances (`_Consumer._commit`).
        assert self.app is not None
        return await self.app.consumer._commit({TP(self.topic, p): o for p, o in offsets.items()})

    async def seek(self, partition: int, offset: int) -> None:
        assert self.app is not None
        await self.app.consumer.seek(TP(self.topic, partition), offset)


def record(message: faust.types.tuples.Message) -> Record:
    return Record(
        message.partition,
        message.offset,
        message.key,
        message.value,
        timestamp(round(message.timestamp * 1000)),
        message.timestamp_type if message.timestamp_type is not None else CREATE_TIME,
        tuple(message.headers or ()),
    )


def fail(exc: BaseException) -> NoReturn:
    """Stop the worker for a failure of the agent or of a batch being written."""
    if isinstance(exc, faults.UntrustedPosition):
        faults.stop_worker(str(exc), status=faults.EXIT_UNTRUSTED_POSITION)
    if isinstance(exc, faults.SystemicRefusal | faults.FatesBroken):
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
                batch = [record(e.message) for e in events]
                verdicts = projector.prepare(batch)
                if writing is not None:
                    await writing
                writing = asyncio.create_task(self.write(batch, verdicts))
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

    async def write(self, batch: list[Record], verdicts: Verdicts) -> None:
        await self.projector.process(batch, verdicts)


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
    half alive. A thread, so that it acts even when the event loop is stuck; once a second, as
    walking Faust's services holds the interpreter (every 0.2 s it took about 3 % of the worker's
    CPU while ingesting)."""

    def __init__(self, faust_app: faust.App, interval_s: float = 1.0) -> None:
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
