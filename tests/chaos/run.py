"""One chaos run: set up, send the mix while faults happen, catch up, and check what is left.

The oracle is the log itself, read back at the end (committed records only): each record's
`chaos.tag` header says what should have become of it, whatever the producer thinks it sent
while the broker was restarting."""

from __future__ import annotations

import asyncio
import random
import time
import uuid
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

import aiohttp
import orjson
import psycopg
from aiokafka import AIOKafkaProducer, ConsumerRecord, TopicPartition
from aiokafka.admin import NewTopic
from aiokafka.errors import MessageSizeTooLargeError, OutOfOrderSequenceNumber

from harness import scratch
from harness.processes import LOGS, Projector
from orderview import kafka_clients
from orderview.bootstrap import create_database, drop_database
from orderview.settings import Settings
from projector.adapters.kafka import scan
from projector.audit import Audit, audit
from projector.core import versions
from projector.core.records import timestamp
from projector.core.versions import Version
from tests import logops
from tests.api_server import api_process
from tests.chaos.cluster import ClusterFaults, caught_up_line
from tests.chaos.mix import REFUSED_CITY_RULE, TAG, Mix, Outgoing
from tests.chaos.stalls import STALL_NOTE_S, Fault, Stall, explain, log_lines
from tests.pg_failover import FailoverCluster
from tests.readmodel import not_from_snapshots, ops

CODECS = (None, "gzip", "snappy", "lz4", "zstd")
DLQ_MAX_BYTES = 2 * 1024 * 1024
BROKER_MAX_BYTES = 4 * 1024 * 1024  # message.max.bytes of the broker ops/kafka.sh runs
RATE = 400  # messages per second, on average
STALL_LIMIT_S = 30.0
PARTITIONS = 3  # at the start; the run adds one
CATCH_UP_S = 240.0


@dataclass
class Report:
    seed: int
    duration: float
    sent: Counter[str] = field(default_factory=Counter)  # by kind, acknowledged by the broker
    tags: Counter[str] = field(default_factory=Counter)
    not_sent: Counter[str] = field(default_factory=Counter)  # refused by the client or the broker
    aborted: int = 0
    faults: list[tuple[float, str]] = field(default_factory=list)
    exits: Counter[int] = field(default_factory=Counter)  # worker exit statuses (-9: killed)
    failovers_lost: list[int] = field(default_factory=list)  # committed batches each promoted standby lacked
    longest_stall_s: float = 0.0
    longest_stall_after_faults_s: float = 0.0
    stalls: list[str] = field(default_factory=list)  # each stall of STALL_NOTE_S or more, explained
    caught_up_after_faults_s: float | None = None  # the last fault's end to every partition caught up
    audit: Audit | None = None
    problems: list[str] = field(default_factory=list)

    def text(self) -> str:
        a = self.audit
        lines = [
            f"chaos seed {self.seed}, {self.duration:.0f} s of traffic: "
            f"{sum(self.sent.values()):,} messages acknowledged, {self.aborted} in aborted transactions",
            "  sent by kind: " + ", ".join(f"{k} {n}" for k, n in sorted(self.sent.items())),
            "  by tag: " + ", ".join(f"{k} {n}" for k, n in sorted(self.tags.items())),
            "  refused before the log: "
            + (", ".join(f"{k} {n}" for k, n in sorted(self.not_sent.items())) or "none"),
            "  faults: " + ", ".join(f"{name} at {t:.0f}s" for t, name in self.faults),
            "  worker exits: "
            + (", ".join(f"status {k}: {n}" for k, n in sorted(self.exits.items())) or "none"),
            f"  longest stall: {self.longest_stall_s:.1f} s (after the last fault: {self.longest_stall_after_faults_s:.1f} s)",
            *(f"  stall: {line}" for line in self.stalls),
        ]
        if self.failovers_lost:
            lines.append(
                f"  failovers: {len(self.failovers_lost)}, the promoted standby lacking "
                + ", ".join(str(n) for n in self.failovers_lost)
                + " committed batches"
            )
        lines.append(caught_up_line(self.caught_up_after_faults_s))
        if a is not None:
            lines.append(
                f"  audit: {a.messages:,} messages of {a.value_bytes / 1e6:,.0f} MB in {a.seconds:.1f} s "
                f"({a.messages / a.seconds:,.0f}/s, {a.value_bytes / 1e6 / a.seconds:,.0f} MB/s), "
                + ", ".join(
                    f"{k} {a.total(k):,}"
                    for k in (
                        "applied",
                        "superseded",
                        "resent",
                        "dead_lettered",
                        "not_yet_applied",
                        "missing",
                        "lost",
                    )
                )
            )
        lines.append("  OK" if not self.problems else "  PROBLEMS:\n    " + "\n    ".join(self.problems))
        return "\n".join(lines)


async def run(
    base: Settings,
    seed: int,
    duration: float,
    keep: bool = False,
    say: Callable[[str], None] = print,
    cluster: ClusterFaults | None = None,
    failover: FailoverCluster | None = None,
) -> Report:
    """With `failover`, the run's database is on that primary, reached through its VIP, and the
    PostgreSQL restarts are failovers instead (tests/pg_failover.py)."""
    s = cluster.settings(base) if cluster else base
    s = _own_settings(failover.through_vip(s) if failover else s)
    report = Report(seed, duration)
    create_database(s)
    with psycopg.connect(s.dsn("owner"), autocommit=True) as conn:
        conn.execute(REFUSED_CITY_RULE)
    await _create_topics(s, cluster.replicas if cluster else 1)
    workers = Workers(s, 2, report, say)
    try:
        workers.start()
        for w in workers.procs:
            w.wait_ready(90)
        async with api_process(s, log_path=LOGS / "chaos-api.log") as api:
            progress = Progress(s)
            supervising = asyncio.create_task(workers.supervise())
            sampling = asyncio.create_task(progress.sample())
            try:
                traffic = Traffic(s, seed, duration, report, progress, workers, say, cluster, failover)
                await traffic.run()
                say("traffic over; waiting for the projectors to catch up")
                await progress.wait_caught_up(CATCH_UP_S)
                report.audit = await _audit_until_settled(s)
            finally:
                progress.stop = True
                await sampling
            report.longest_stall_s = progress.longest
            report.longest_stall_after_faults_s = progress.longest_after_faults
            lines = log_lines(workers.logs)
            report.stalls = [
                explain(stall, progress.faults, lines, traffic.started) for stall in progress.closed_stalls()
            ]
            if progress.caught_up_at is not None:
                report.caught_up_after_faults_s = progress.caught_up_at - progress.faults_over_at
            await _check(s, api.url, report, workers, traffic.trimmed)
            supervising.cancel()
    finally:
        for code in workers.stop():
            if code not in (0, None):
                report.problems.append(f"a worker stopped with status {code} on SIGTERM")
        if not keep:
            drop_database(s)
            await _delete_topics(s)
    return report


def _own_settings(base: Settings) -> Settings:
    fresh = scratch.topics_for_tests(base)
    return replace(
        fresh, pg_database=scratch.unique("orderview_chaos_"), orders_partitions=PARTITIONS, log_level="INFO"
    )


async def _create_topics(s: Settings, replicas: int) -> None:
    admin = kafka_clients.admin(s)
    in_sync = {"min.insync.replicas": "2" if replicas >= 3 else "1"}
    await admin.start()
    try:
        await admin.create_topics(
            [
                NewTopic(
                    s.orders_topic, PARTITIONS, replicas, topic_configs={"retention.ms": "-1", **in_sync}
                ),
                NewTopic(
                    s.dlq_topic,
                    1,
                    replicas,
                    topic_configs={"retention.ms": "-1", "max.message.bytes": str(DLQ_MAX_BYTES), **in_sync},
                ),
            ]
        )
    finally:
        await admin.close()


async def _delete_topics(s: Settings) -> None:
    admin = kafka_clients.admin(s)
    await admin.start()
    try:
        await admin.delete_topics([s.orders_topic, s.dlq_topic])
    finally:
        await admin.close()


class Workers:
    """Two projector workers, restarted a second after they stop, as `make run` does."""

    def __init__(self, s: Settings, n: int, report: Report, say: Callable[[str], None]) -> None:
        self.s, self.report, self.say = s, report, say
        self.starts = [0] * n
        self.logs: list[Path] = []  # every incarnation's log, for explaining stalls
        self.procs = [self._new(i) for i in range(n)]
        self.supervising = True
        self.killed: set[int] = set()  # workers this run killed, whose exit is expected

    def _new(self, i: int) -> Projector:
        self.starts[i] += 1
        worker = Projector(self.s, f"chaos-worker-{i}-{self.starts[i]}")
        self.logs.append(worker.log_path)
        return worker

    def start(self) -> None:
        for p in self.procs:
            p.start()

    async def supervise(self) -> None:
        while self.supervising:
            for i, p in enumerate(self.procs):
                code = p.proc.poll() if p.proc else None
                if code is not None:
                    self.report.exits[code] += 1
                    self.say(f"worker {i} exited with status {code}; restarting it in 1 s")
                    if not (code == -9 and i in self.killed):
                        why = next(
                            (line for line in reversed(p.log_text().splitlines()) if '"critical"' in line), ""
                        )
                        self.report.problems.append(
                            f"worker {i} exited with status {code}, which the run did not cause: {why[:600]}"
                        )
                    self.killed.discard(i)
                    await asyncio.sleep(1)
                    self.procs[i] = self._new(i).start()
            await asyncio.sleep(0.5)

    def kill9(self, i: int) -> None:
        p = self.procs[i]
        if p.proc and p.proc.poll() is None:
            self.killed.add(i)
            p.kill9()

    def stop(self) -> list[int | None]:
        self.supervising = False
        codes = []
        for p in self.procs:
            try:
                codes.append(p.terminate(timeout=30) if p.proc else None)
            except AssertionError:
                codes.append(-1)
        return codes


class Progress:
    """Samples each partition's recorded position against what was sent, to find stalls."""

    def __init__(self, s: Settings) -> None:
        self.s = s
        self.sent_up_to: dict[int, int] = {}  # partition -> highest offset acknowledged
        self.positions: dict[int, int] = {}
        self.changed_at: dict[int, float] = {}
        self.faults_over_at = 0.0
        self.caught_up_at: float | None = None  # the first sample after the faults with none behind
        self.longest = 0.0
        self.longest_after_faults = 0.0
        self.stalls: list[Stall] = []
        self.faults: list[Fault] = []
        self.stop = False

    def sent(self, partition: int, offset: int) -> None:
        self.sent_up_to[partition] = max(self.sent_up_to.get(partition, -1), offset)

    def behind(self) -> list[int]:
        return [p for p, o in self.sent_up_to.items() if self.positions.get(p, 0) <= o]

    async def sample(self) -> None:
        while not self.stop:
            try:
                positions = await asyncio.wait_for(asyncio.to_thread(self._read_positions), 5)
            except Exception:  # the database is being restarted: no sample
                positions = None
            now = time.monotonic()
            if positions is not None:
                behind = set(self.behind())
                for p, o in positions.items():
                    if o != self.positions.get(p):
                        if p in behind and now - self.changed_at.get(p, now) >= STALL_NOTE_S:
                            self.stalls.append(Stall(p, self.changed_at[p], now))
                        self.positions[p] = o
                        self.changed_at[p] = now
            if self.faults_over_at and self.caught_up_at is None and positions and not self.behind():
                self.caught_up_at = now
            for p in self.behind():
                since = self.changed_at.setdefault(p, now)
                self.longest = max(self.longest, now - since)
                if self.faults_over_at:
                    self.longest_after_faults = max(
                        self.longest_after_faults, now - max(since, self.faults_over_at)
                    )
            await asyncio.sleep(0.5)

    def closed_stalls(self) -> list[Stall]:
        """The stalls so far, with those still going ended now."""
        now = time.monotonic()
        still = [
            Stall(p, self.changed_at[p], now)
            for p in self.behind()
            if p in self.changed_at and now - self.changed_at[p] >= STALL_NOTE_S
        ]
        return sorted([*self.stalls, *still], key=lambda stall: stall.since)

    def _read_positions(self) -> dict[int, int]:
        with psycopg.connect(self.s.dsn("owner")) as conn:
            rows = conn.execute(
                "SELECT partition, next_offset FROM applied_offsets WHERE topic = %s", [self.s.orders_topic]
            )
            return dict(rows.fetchall())

    async def wait_caught_up(self, timeout: float) -> None:
        for _ in range(int(timeout / 0.5)):
            if not self.behind():
                return
            await asyncio.sleep(0.5)


class Traffic:
    """Sends the mix at about RATE messages a second for `duration`, with faults on a schedule."""

    def __init__(
        self, s: Settings, seed: int, duration: float, report: Report, progress: Progress, workers: Workers,
        say: Callable[[str], None], cluster: ClusterFaults | None = None,
        failover: FailoverCluster | None = None,
    ) -> None:  # fmt: skip
        self.s, self.duration, self.report, self.progress, self.workers, self.say = (
            s, duration, report, progress, workers, say,
        )  # fmt: skip
        self.cluster = cluster
        self.failover = failover
        self.rng = random.Random(seed)
        self.started = 0.0  # monotonic, when the traffic began
        self.mix = Mix(seed, s.max_message_bytes, DLQ_MAX_BYTES, BROKER_MAX_BYTES)
        self.producers: dict[str | None, AIOKafkaProducer] = {}
        self.retry: deque[Outgoing] = deque()
        self.trimmed: list[ConsumerRecord] = []  # records deleted by trim_applied, for the oracle
        self.faults = self._schedule()

    def _schedule(self) -> list[tuple[float, str]]:
        """Partitions are added first (the workers notice within their metadata refresh, 30 s),
        then process and service faults and trims of applied records, shuffled."""
        n = max(4, int(self.duration // 15))
        postgres = "fail_over" if self.failover is not None else "restart_postgres"
        kinds = ["kill_worker", postgres, "restart_broker", "trim_applied"]
        order = [kinds[i % len(kinds)] for i in range(n)]
        self.rng.shuffle(order)
        order = ["add_partitions", *order]
        if self.cluster is not None:  # a cluster's faults, in turn
            order = self.cluster.schedule(n)
        return [(self.duration * (i + 1) / (len(order) + 1), kind) for i, kind in enumerate(order)]

    async def run(self) -> None:
        started = self.started = time.monotonic()
        faults = asyncio.create_task(self._faults(started))
        sent = 0
        try:
            while (elapsed := time.monotonic() - started) < self.duration:
                if self.rng.random() < 0.03:
                    await self._aborted_transaction()
                sent += await self._chunk()
                ahead = sent / RATE - elapsed
                if ahead > 0:
                    await asyncio.sleep(ahead)
            await faults
            while self.retry:  # what the broker did not take during a restart, sent now
                await self._chunk()
        finally:
            faults.cancel()
            for producer in self.producers.values():
                await producer.stop()

    async def _faults(self, started: float) -> None:
        for at, kind in self.faults:
            await asyncio.sleep(max(0.0, started + at - time.monotonic()))
            began = time.monotonic()
            self.report.faults.append((began - started, kind))
            self.say(f"fault: {kind}")
            await self._inject(kind)
            self.progress.faults.append(Fault(kind, began, time.monotonic()))
        self.progress.faults_over_at = time.monotonic()

    async def _inject(self, kind: str) -> None:
        if self.cluster is not None:
            await self.cluster.inject(kind, self.s, self.rng, self.say)
        elif kind == "kill_worker":
            self.workers.kill9(self.rng.randrange(len(self.workers.procs)))
        elif kind == "add_partitions":
            await logops.add_partitions(self.s, PARTITIONS + 1)
        elif kind == "trim_applied":
            await self._trim_applied()
        elif kind == "fail_over":
            assert self.failover is not None
            lag_s = self.rng.uniform(1, 4)
            lost = await self.failover.fail_over(lag_s, decide_s=self.rng.uniform(0.5, 2))
            self.report.failovers_lost.append(lost)
            self.say(f"failed over to a standby {lag_s:.1f} s behind: it lacked {lost} committed batches")
        else:
            service = "postgres.sh" if kind == "restart_postgres" else "kafka.sh"
            await asyncio.to_thread(ops, service, "stop")
            await asyncio.sleep(self.rng.uniform(1, 5))
            await asyncio.to_thread(ops, service, "start")

    async def _trim_applied(self) -> None:
        """Delete, as retention would, the records of one partition that the projector applied
        (below its recorded position), keeping what they held for the oracle."""
        applied = await asyncio.to_thread(self.progress._read_positions)
        partition = self.rng.choice(sorted(applied) or [0])
        below = applied.get(partition, 0)
        self.trimmed += await _records_below(self.s, partition, below)
        await logops.delete_records(self.s, partition, below)
        self.say(f"deleted the records of partition {partition} below offset {below}")

    async def _chunk(self) -> int:
        first = self.retry.popleft() if self.retry else next(self.mix)
        if first.codec is not None:  # it needs its own batch and codec
            batch, codec = [first], first.codec
        else:
            batch = [first]
            while len(batch) < self.rng.randrange(10, 80):
                m = self.retry.popleft() if self.retry else next(self.mix)
                if m.codec is not None:
                    self.retry.appendleft(m)
                    break
                batch.append(m)
            codec = self.rng.choice(CODECS)
        return await self._send(batch, codec)

    async def _send(self, batch: list[Outgoing], codec: str | None) -> int:
        try:
            producer = await self._producer(codec)
            futures = []
            for m in batch:
                try:
                    futures.append(await producer.send(
                        self.s.orders_topic, value=m.value, key=m.key, headers=m.kafka_headers()
                    ))  # fmt: skip
                except MessageSizeTooLargeError:
                    futures.append(_failed(MessageSizeTooLargeError()))
            async with asyncio.timeout(30):
                results = await asyncio.gather(*futures, return_exceptions=True)
        except Exception as exc:  # the broker is away: send them all again later
            self.say(f"send failed ({type(exc).__name__}); will retry {len(batch)} messages")
            await self._drop_producer(codec)
            self.retry.extend(batch)
            await asyncio.sleep(1)
            return 0
        if any(isinstance(r, MessageSizeTooLargeError | OutOfOrderSequenceNumber) for r in results):
            # An idempotent producer goes on after a refused record only with a gap in its
            # sequence, which the broker refuses (as it does after a restart that lost the
            # producer's last sequence): a new producer sends what failed after it.
            await self._drop_producer(codec)
        delivered = 0
        for m, result in zip(batch, results, strict=True):
            if isinstance(result, MessageSizeTooLargeError):
                self.report.not_sent[m.kind] += 1
            elif isinstance(result, BaseException):
                self.retry.append(m)
            else:
                delivered += 1
                self.report.sent[m.kind] += 1
                self.report.tags[m.tag] += 1
                self.progress.sent(result.partition, result.offset)
        if delivered < len(batch):
            await asyncio.sleep(0.5)
        return delivered

    async def _aborted_transaction(self) -> None:
        """Valid orders, and new versions of sent ones, in a transaction that is then aborted."""
        orders = [self.mix.valid_order() for _ in range(self.rng.randrange(3, 15))]
        producer = kafka_clients.producer(
            self.s,
            transactional_id=f"chaos-{uuid.uuid4().hex[:8]}",
            request_timeout_ms=5000,
        )
        try:
            async with asyncio.timeout(30):
                await producer.start()
                await producer.begin_transaction()
                for o in orders:
                    await producer.send(
                        self.s.orders_topic,
                        orjson.dumps(o),
                        key=o["order_uid"].encode(),
                        headers=[(TAG, b"aborted")],
                    )
                await producer.abort_transaction()
            self.report.aborted += len(orders)
        except Exception as exc:  # the broker is away; the transaction is aborted by its timeout
            self.say(f"aborted transaction not sent ({type(exc).__name__})")
        finally:
            try:
                await producer.stop()
            except Exception:
                pass

    async def _producer(self, codec: str | None) -> AIOKafkaProducer:
        if codec not in self.producers:
            producer = kafka_clients.producer(
                self.s,
                acks="all",
                linger_ms=5,
                compression_type=codec,
                max_request_size=64 * 1024 * 1024,
                request_timeout_ms=5000,
            )
            try:
                async with asyncio.timeout(20):
                    await producer.start()
            except BaseException:
                await producer.stop()
                raise
            self.producers[codec] = producer
        return self.producers[codec]

    async def _drop_producer(self, codec: str | None) -> None:
        producer = self.producers.pop(codec, None)
        if producer is not None:
            try:
                async with asyncio.timeout(10):
                    await producer.stop()
            except Exception:
                pass


def _failed(exc: BaseException) -> asyncio.Future:
    future = asyncio.get_running_loop().create_future()
    future.set_exception(exc)
    return future


async def _audit_until_settled(s: Settings) -> Audit:
    """The audit, once nothing is pending (messages acknowledged after a send was thought lost
    may still be on their way through the projectors)."""
    deadline = time.monotonic() + 120
    while True:
        found = await audit(s)
        if found.total("not_yet_applied") == 0 or time.monotonic() > deadline:
            return found
        await asyncio.sleep(2)


async def _check(
    s: Settings, api_url: str, report: Report, workers: Workers, trimmed: list[ConsumerRecord]
) -> None:
    problems = report.problems
    found = report.audit
    assert found is not None
    if found.total("missing") or found.total("not_yet_applied") or found.total("lost"):
        problems.append(
            f"audit: {found.total('missing')} missing, {found.total('not_yet_applied')} not yet applied, "
            f"{found.total('lost')} lost; first missing {found.missing[:10]}"
        )
    oracle = await _oracle(s, trimmed)
    expected, hostile, refused, untagged = oracle.expected, oracle.hostile, oracle.refused, oracle.untagged
    letters = await _dead_letters(s)
    for coordinates in sorted(hostile - set(letters))[:10]:
        problems.append(f"hostile message {coordinates} has no dead letter")
    misjudged = [
        c
        for c in sorted(refused)
        if letters.get(c) not in ("db_rejected", "stale_version")
        and not (c in oracle.refused_older and c not in letters)
    ]
    for coordinates in misjudged[:10]:
        problems.append(
            f"refused message {coordinates}: dead letter {letters.get(coordinates)!r}, not db_rejected"
        )
    # An older version read after a newer one from another partition (partitions were added) is
    # dead-lettered as stale; the newest version of an order never is.
    stale = {c for c, reason in letters.items() if reason == "stale_version" and c in oracle.older}
    wrongly = set(letters) - hostile - refused - stale
    if wrongly:
        problems.append(
            f"{len(wrongly)} messages dead-lettered that should have been applied: {sorted(wrongly)[:10]}"
        )
    if untagged:
        problems.append(f"{untagged} records without a {TAG} header in the topic")
    with psycopg.connect(s.dsn("owner")) as conn:
        held = {
            uid
            for (uid,) in conn.execute("SELECT order_uid FROM order_snapshots WHERE body_json IS NOT NULL")
        }
    if held != set(expected):
        problems.append(
            f"read model orders != expected: {len(held - set(expected))} extra (e.g. {sorted(held - set(expected))[:3]}),"
            f" {len(set(expected) - held)} absent (e.g. {sorted(set(expected) - held)[:3]})"
        )
    differing = await asyncio.to_thread(not_from_snapshots, s)
    if differing:
        problems.append(
            f"{len(differing)} normalized rows are not their order's current version's, e.g. {differing[:3]}"
        )
    problems.extend(await _served_exactly(api_url, expected, oracle.erased))
    if report.longest_stall_after_faults_s > STALL_LIMIT_S:
        problems.append(
            f"a partition stood still {report.longest_stall_after_faults_s:.0f} s after the last fault"
        )
    for i, p in enumerate(workers.procs):
        if p.proc is None or p.proc.poll() is not None:
            problems.append(f"worker {i} is not running at the end")
            continue
        try:
            p.wait_ready(30)
        except AssertionError as exc:
            problems.append(f"worker {i} is not ready at the end: {exc}")


@dataclass
class Oracle:
    """What the log says should have become of each record."""

    expected: dict[str, dict] = field(default_factory=dict)  # order_uid -> its newest valid version
    erased: set[str] = field(default_factory=set)  # orders whose newest version is a tombstone
    hostile: set[tuple[int, int]] = field(default_factory=set)
    refused: set[tuple[int, int]] = field(default_factory=set)
    older: set[tuple[int, int]] = field(default_factory=set)  # valid, but not the newest of its order
    # Refused, but older than a valid version of the same order: superseded within a batch, it
    # may never be written, so never refused either.
    refused_older: set[tuple[int, int]] = field(default_factory=set)
    untagged: int = 0


async def _oracle(s: Settings, trimmed: list[ConsumerRecord]) -> Oracle:
    """From the log, and the records the run deleted from it: each order's newest valid version
    in the total order of versions (projector/core/versions.py), and where the hostile and
    refused are."""
    found = Oracle()
    newest: dict[str, tuple[Version, tuple[int, int]]] = {}
    refused: dict[tuple[int, int], tuple[str, Version]] = {}
    clocks: dict[int, int] = {}

    def take(r: ConsumerRecord) -> None:
        tag = next((v for k, v in r.headers if k == TAG), None)  # ours is the first
        where = (r.partition, r.offset)
        clock = clocks[r.partition] = versions.tick(clocks.get(r.partition, 0), timestamp(r.timestamp))
        version = Version(clock, r.partition, r.offset)
        if tag == b"valid":
            uid = r.key.decode()
            current = newest.get(uid)
            if current is None or version > current[0]:
                if current is not None:
                    found.older.add(current[1])
                newest[uid] = (version, where)
                if r.value is None:
                    found.expected.pop(uid, None)
                    found.erased.add(uid)
                else:
                    found.erased.discard(uid)
                    found.expected[uid] = orjson.loads(r.value)
            else:
                found.older.add(where)
        elif tag == b"hostile":
            found.hostile.add(where)
        elif tag == b"refused":
            found.refused.add(where)
            refused[where] = (r.key.decode(), version)
        else:
            found.untagged += 1

    for r in trimmed:
        take(r)
    async for _, records in scan(s, s.orders_topic):
        for r in records:
            take(r)
    for where, (uid, version) in refused.items():
        if uid in newest and newest[uid][0] > version:
            found.refused_older.add(where)
    return found


async def _records_below(s: Settings, partition: int, end: int) -> list[ConsumerRecord]:
    """The committed records a partition holds below `end`."""
    consumer = kafka_clients.consumer(
        s,
        enable_auto_commit=False,
        isolation_level="read_committed",
        max_partition_fetch_bytes=16 * 1024 * 1024,
    )
    await consumer.start()
    try:
        tp = TopicPartition(s.orders_topic, partition)
        consumer.assign([tp])
        await consumer.seek_to_beginning(tp)
        found: list[ConsumerRecord] = []
        while await consumer.position(tp) < end:
            fetched = await consumer.getmany(tp, timeout_ms=1000)
            found += [r for r in fetched.get(tp, []) if r.offset < end]
        return found
    finally:
        await consumer.stop()


async def _dead_letters(s: Settings) -> dict[tuple[int, int], str]:
    letters: dict[tuple[int, int], str] = {}
    async for _, records in scan(s, s.dlq_topic):
        for r in records:
            h = dict(r.headers)  # the original's own headers, any bytes, are there too
            letters[int(h["dlq.partition"]), int(h["dlq.offset"])] = h["dlq.reason"].decode()
    return letters


async def _served_exactly(api_url: str, expected: dict[str, dict], erased: set[str]) -> list[str]:
    """GET /order/<uid> of every expected order answers 200 with exactly its newest valid version,
    and of every erased one 404."""
    problems: list[str] = []
    queue: list[tuple[str, dict | None]] = [*expected.items(), *((uid, None) for uid in erased)]

    async def worker(client: aiohttp.ClientSession) -> None:
        while queue:
            uid, document = queue.pop()
            async with client.get(f"{api_url}/order/{uid}") as response:
                body = await response.read()
                if document is None:
                    if response.status != 404:
                        problems.append(f"GET /order/{uid}: {response.status}, not 404 for an erased order")
                elif response.status != 200 or orjson.loads(body) != document:
                    problems.append(f"GET /order/{uid}: {response.status}, not the last valid version")

    async with aiohttp.ClientSession() as client:
        await asyncio.gather(*(worker(client) for _ in range(16)))
    return problems[:20]
