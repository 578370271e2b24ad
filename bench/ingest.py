"""Ingest: the real projector (`python -m projector`) draining a topic of valid orders, against a raw
batched COPY of the same rows and a raw aiokafka consume of the same messages; then how long an
order takes from produce to visible (LISTEN on the projector's NOTIFY channel)."""

from __future__ import annotations

import asyncio
import dataclasses
import gc
import json
import math
import os
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Sequence

import psycopg
from psycopg import sql

from bench import data, mixed
from bench.env import say
from bench.produce import paced, produce
from bench.profile import PROJECTOR_PARTS, PROJECTOR_REST, Profile
from bench.results import Results
from bench.scale import Scale
from bench.services import Service, Workers
from harness import ROOT
from harness.scratch import truncate_read_model
from orderview import kafka_clients, readmodel
from orderview.settings import Settings
from projector.audit import audit
from projector.batch import collect_less_often
from projector.core.validate import Validator
from projector.rebuild import rebuild

SECTION = "ingest"
LATENCY = "latency"
SEED = 202
LATENCY_SEED = 303
BURST_SEED = 404
VERSIONS_SEED = 505
COPY_BATCH = 500
VALIDATION_SAMPLE = 50_000


@dataclasses.dataclass(frozen=True)
class Peer:
    rate: float  # orders/s, first batch visible → all visible
    total_s: float  # process start → all visible


@dataclasses.dataclass(frozen=True)
class Baselines:
    """What the same topic and rows cost without the projector, in orders/s."""

    consume: float  # raw aiokafka consume
    copy: float  # raw COPY
    write: float  # the projector's write path alone
    validate: float  # the validator alone
    replay: float  # BatchProjector without Faust (projector.rebuild)
    peer: Peer  # Quix Streams' PostgreSQLSink


def run(results: Results, scale: Scale, settings: Settings, copy_settings: Settings, wrk_path: str) -> None:
    """`settings`: the projector's database and topics, created by the caller;
    `copy_settings`: an empty database of the same schema for the raw COPY baseline (and the
    Quix peer's table)."""
    orders = _produce_setup(results, scale, settings)
    n = len(orders)
    baselines = _baselines(scale, settings, copy_settings, orders)
    projector = Workers.as_make_run(settings, "ingest-projector")
    say(f"ingest: projector, {len(projector)} workers as make run starts them")
    with projector:
        rate, total_s = _drain(results, projector, n)
        _check_drained(results, settings, n, baselines.consume)
        _report_baselines(results, n, baselines)
        _report_projector(results, baselines, rate, total_s)
        _report_shares(results, baselines, rate)
        _versions(results, settings, projector, orders, baselines)
        _latency(results, scale, settings, rate)
        say("ingest: cached reads idle and while the projector ingests")
        mixed.run(results, scale, settings, projector, wrk_path, [o.uid for o in orders])
    _describe(results, scale, settings, n)


# --- the steps of run(), in order --------------------------------------------------------------


def _produce_setup(results: Results, scale: Scale, settings: Settings) -> list[data.Order]:
    """The valid orders every measurement drains, produced to the topic before any is measured."""
    say(f"ingest: producing {scale.ingest_orders:,} orders")
    orders = data.valid_orders(scale.ingest_orders, seed=SEED)
    produce_rate = asyncio.run(produce(settings, orders))
    results.figure(
        SECTION,
        "produce (setup)",
        produce_rate,
        "orders/s",
        note="aiokafka, acks=all, idempotent, linger 20 ms",
    )
    return orders


def _baselines(
    scale: Scale, settings: Settings, copy_settings: Settings, orders: list[data.Order]
) -> Baselines:
    """Each part of the projector's work alone, and the peer, on the same topic and rows."""
    n = len(orders)
    say("ingest: raw consume")
    consume_rate = asyncio.run(raw_consume(settings, n))
    say("ingest: raw COPY")
    copy_rate = raw_copy(copy_settings, orders)
    say("ingest: the projector's write path and validator alone")
    truncate_read_model(copy_settings)
    write_rate = write_path(copy_settings, orders)
    validate_rate = validation(orders[:VALIDATION_SAMPLE])
    say("ingest: BatchProjector without Faust (projector.rebuild)")
    replay_rate = replay(
        dataclasses.replace(copy_settings, orders_topic=settings.orders_topic, dlq_topic=settings.dlq_topic),
        n,
    )
    say("ingest: Quix Streams' PostgreSQLSink on the same topic")
    peer = quix(copy_settings, settings.orders_topic, n, scale.quix_commit_interval_s)
    return Baselines(consume_rate, copy_rate, write_rate, validate_rate, replay_rate, peer)


def _drain(results: Results, projector: Workers, n: int) -> tuple[float, float]:
    """The projector draining the topic, profiled: (orders/s, seconds from process start)."""
    with Profile(projector.pid, "ingest-projector") as profile:
        rate, total_s = watch_projector(projector, n)
    results.note(
        SECTION,
        f"Profile of the projector while measured (py-spy, CPU samples by part, worker 1 of {len(projector)}): "
        + profile.describe(PROJECTOR_PARTS, PROJECTOR_REST)
        + ".",
    )
    return rate, total_s


def _check_drained(results: Results, settings: Settings, n: int, consume_rate: float) -> None:
    """Every order in the read model, and the audit of the topic agreeing; the audit's rate."""
    count = data.count_snapshots(settings)
    if count != n:
        raise RuntimeError(f"the projector made {count} snapshots of {n} orders")
    say("ingest: the audit of the topic the projector drained")
    audited = asyncio.run(audit(settings))
    if audited.total("missing") or audited.messages != n:
        raise RuntimeError(f"the audit found {audited.total('missing')} missing of {audited.messages}")
    audit_rate = audited.messages / audited.seconds
    results.figure(
        SECTION,
        "audit (python -m projector.audit)",
        audit_rate,
        "messages/s",
        (">=", 50_000),
        note=f"{n:,} messages reconciled with the read model and the DLQ, none missing",
    )
    results.ratio(
        SECTION,
        "audit / raw consume",
        audit_rate / consume_rate,
        baseline=f"raw aiokafka consume of the same topic, {consume_rate:,.0f} orders/s",
    )


def _report_baselines(results: Results, n: int, b: Baselines) -> None:
    results.figure(SECTION, "raw aiokafka consume", b.consume, "orders/s")
    results.figure(SECTION, "raw COPY (500/transaction)", b.copy, "orders/s")
    results.figure(
        SECTION,
        "write path alone",
        b.write,
        "orders/s",
        note="store.write_orders, 500/transaction, no Kafka",
    )
    results.figure(
        SECTION,
        "validation alone",
        b.validate,
        "orders/s",
        note=f"Validator.check, one core, {min(n, VALIDATION_SAMPLE):,} messages",
    )


def _report_projector(results: Results, b: Baselines, rate: float, total_s: float) -> None:
    """The projector's figures and its targets against raw COPY and the Quix peer."""
    results.figure(SECTION, "projector", rate, "orders/s", note="first batch visible → all visible")
    results.figure(SECTION, "projector: process start → all visible", total_s, "s")
    results.figure(
        SECTION,
        "Quix Streams PostgreSQLSink",
        b.peer.rate,
        "orders/s",
        note="first batch visible → all visible; one JSONB table, no validation",
    )
    results.figure(SECTION, "Quix: process start → all visible", b.peer.total_s, "s")
    _against_targets(results, "projector", rate, b, "the same rows", "same topic")
    results.ratio(SECTION, "projector / raw consume", rate / b.consume)


def _against_targets(results: Results, name: str, rate: float, b: Baselines, rows: str, peer: str) -> None:
    """`name` / raw COPY (of `rows`) and `name` / Quix PostgreSQLSink (`peer`), each against 0.7."""
    results.ratio(
        SECTION,
        f"{name} / raw COPY",
        rate / b.copy,
        (">=", 0.7),
        baseline=f"raw COPY of {rows}, {b.copy:,.0f} orders/s",
    )
    results.ratio(
        SECTION,
        f"{name} / Quix PostgreSQLSink",
        rate / b.peer.rate,
        (">=", 0.7),
        baseline=f"Quix Streams PostgreSQLSink, {peer}, {b.peer.rate:,.0f} orders/s",
    )


def _report_shares(results: Results, b: Baselines, rate: float) -> None:
    """Where the gap to raw COPY goes: SQL, Faust, Kafka and validation; the chart's series."""
    results.figure(
        SECTION,
        "BatchProjector without Faust",
        b.replay,
        "orders/s",
        note="projector.rebuild: plain aiokafka + BatchProjector.process, same topic, empty database",
    )
    results.ratio(SECTION, "write path alone / raw COPY", b.write / b.copy, note="the SQL's share of the gap")
    results.ratio(SECTION, "projector / BatchProjector without Faust", rate / b.replay, note="Faust's share")
    results.ratio(
        SECTION,
        "projector / write path alone",
        rate / b.write,
        note="Kafka, Faust and validation's share",
    )
    serial = 1 / (1 / b.write + 1 / b.validate + 1 / b.consume)
    results.figure(
        SECTION,
        "serial sum of the parts",
        serial,
        "orders/s",
        note="1 / (1/write + 1/validation + 1/consume): the rate if they run one after another",
    )
    results.series["ingest"] = {
        "raw consume": b.consume,
        "validation alone": b.validate,
        "raw COPY": b.copy,
        "write path alone": b.write,
        "without Faust": b.replay,
        "Quix PostgreSQLSink": b.peer.rate,
        "projector": rate,
    }


def _versions(
    results: Results, settings: Settings, projector: Workers, orders: list[data.Order], b: Baselines
) -> None:
    """The same running projector given a new version of each order it holds: what a live shop
    mostly sends (statuses, corrections), each replacing an order's rows and archiving its snapshot."""
    n = len(orders)
    say(f"ingest: a new version of each of the {n:,} orders")
    asyncio.run(produce(settings, data.new_versions(orders, VERSIONS_SEED)))
    rate, _ = watch_projector(projector, 2 * n, after=n)
    results.figure(
        SECTION,
        "projector: new versions",
        rate,
        "orders/s",
        note=f"a new version of each of the {n:,} orders in the read model, first batch → all applied",
    )
    _against_targets(
        results, "projector, new versions", rate, b, "the new orders' rows", "upserting the same orders"
    )
    results.series["ingest"]["projector: new versions"] = rate


def _latency(results: Results, scale: Scale, settings: Settings, rate: float) -> None:
    """Produce → visible on the running projector: paced at half its rate, then a burst."""
    half = rate / 2
    say(f"ingest: produce → visible at {half:,.0f} orders/s, then a burst")
    seconds = scale.latency_seconds
    lat = produce_to_visible(settings, count=int(half * seconds), rate=half, seed=LATENCY_SEED)
    _report_latency(
        results,
        "half rate",
        lat,
        f"{half:,.0f} orders/s for {seconds:g} s",
        target_p99=1000,
        baseline=f"sent at half the projector's rate, {half:,.0f} orders/s",
    )
    burst = produce_to_visible(settings, count=scale.burst_orders, rate=None, seed=BURST_SEED)
    _report_latency(results, "full speed", burst, f"a burst of {scale.burst_orders:,} orders, unpaced")
    results.series["latency"] = {"half rate": lat.latencies_ms, "full speed": burst.latencies_ms}


def _describe(results: Results, scale: Scale, settings: Settings, n: int) -> None:
    """What the ingest and latency sections ran with, for the report."""
    results.settings[SECTION] = (
        f"{n:,} valid emulator orders produced to a fresh topic of {settings.orders_partitions} partitions before "
        f"measuring; projector: {settings.orders_partitions} workers `python -m projector` (one per partition, "
        f"as `make run` starts them) with batch_size={settings.batch_size}, "
        f"batch_wait_s={settings.batch_wait_s}; its rate from the workers' /metrics orderview_projector_projected_total "
        "summed, polled every 0.5 s and every 50 ms over the last 5 % (from the first batch to the last); "
        f"raw COPY into an empty database of the same schema, {COPY_BATCH} orders per transaction, rows built "
        "before timing, psycopg text COPY with the columns' dumpers named (set_types) into order_snapshots, "
        "orders, deliveries, payments, items, as the projector role; raw consume: aiokafka "
        "without a group from the earliest offset, no processing; Quix Streams "
        "`python -m bench.quix_peer` (quixstreams[postgresql], PostgreSQLSink upserting one row per order_uid "
        f"with the order in a JSONB column, commit_interval={scale.quix_commit_interval_s:g} s) on the same "
        "topic with a group of its own, rate from its own record of each sink write (first batch visible → "
        "all visible, as for the projector)"
    )
    results.settings[LATENCY] = (
        "the same running projector; orders produced (acks=all, idempotent, linger 5 ms) with their send time "
        "recorded; a separate connection LISTENs on the projector's NOTIFY channel (sent at commit) and "
        "records when each order_uid arrives; latency = arrival − send"
    )


# --- producing and raw consuming -----------------------------------------------------------------


async def raw_consume(settings: Settings, count: int, timeout: float = 120.0) -> float:
    """Messages/s of a bare aiokafka consumer reading the topic from the start in batches of
    settings.batch_size (as the projector takes them), from the first fetch to the last message."""
    consumer = kafka_clients.consumer(
        settings,
        settings.orders_topic,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        fetch_max_bytes=64 * 1024 * 1024,
        max_partition_fetch_bytes=16 * 1024 * 1024,
    )
    await consumer.start()
    try:
        seen = 0
        deadline = time.monotonic() + timeout
        started = time.perf_counter()
        while seen < count:
            if time.monotonic() > deadline:
                raise RuntimeError(f"raw consume read {seen} of {count} messages in {timeout:.0f}s")
            batch = await consumer.getmany(timeout_ms=500, max_records=settings.batch_size)
            seen += sum(len(records) for records in batch.values())
        return seen / (time.perf_counter() - started)
    finally:
        await consumer.stop()


def raw_copy(settings: Settings, orders: Sequence[data.Order]) -> float:
    """Orders/s of COPY into the five tables, COPY_BATCH orders per transaction, no checks."""
    rows = [data.rows_of(batch, i * COPY_BATCH) for i, batch in enumerate(data.batches(orders, COPY_BATCH))]
    with psycopg.connect(settings.dsn("projector")) as conn:
        started = time.perf_counter()
        for batch in rows:
            with conn.transaction():
                data.copy_rows(conn, batch)
        seconds = time.perf_counter() - started
    return len(orders) / seconds


def write_path(settings: Settings, orders: Sequence[data.Order]) -> float:
    """Orders/s of the projector's own SQL (store.write_orders), COPY_BATCH per transaction, no Kafka."""
    started = time.perf_counter()
    asyncio.run(data.load_through_projector(settings, orders, COPY_BATCH))
    return len(orders) / (time.perf_counter() - started)


def replay(settings: Settings, count: int) -> float:
    """Orders/s of projector.rebuild (BatchProjector fed by plain aiokafka) into an emptied database,
    with the collector tuned as `python -m projector.rebuild` tunes it."""
    thresholds = gc.get_threshold()
    collect_less_often()
    try:
        started = time.perf_counter()
        replayed = asyncio.run(rebuild(settings, truncate=True))
        seconds = time.perf_counter() - started
    finally:
        gc.set_threshold(*thresholds)
    if replayed != count:
        raise RuntimeError(f"projector.rebuild replayed {replayed} of {count} messages")
    return count / seconds


def quix(settings: Settings, topic: str, count: int, commit_interval: float) -> Peer:
    """Quix Streams' PostgreSQLSink draining `topic` into a table of `settings`' database."""
    command = [sys.executable, "-m", "bench.quix_peer", "--topic", topic, "--table", "orders_quix"]
    command += ["--group", f"{settings.consumer_group}-quix", "--count", str(count)]
    command += ["--commit-interval", str(commit_interval)]
    env = {**os.environ, **settings.to_env()}
    started = time.perf_counter()
    done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    if done.returncode != 0:
        raise RuntimeError(f"the Quix peer failed: {done.stderr[-2000:]}")
    wall = time.perf_counter() - started
    figures = json.loads(done.stdout.strip().splitlines()[-1])
    writes = figures["writes"]
    rows = sum(n for _, n in writes)
    if rows < count or len(writes) < 2:
        raise RuntimeError(f"the Quix peer wrote {rows} rows of {count} in {len(writes)} batches")
    (first_at, first_rows), (last_at, _) = writes[0], writes[-1]
    return Peer(rate=(rows - first_rows) / (last_at - first_at), total_s=min(wall, last_at))


def validation(orders: Sequence[data.Order]) -> float:
    validator = Validator()
    check = validator.check
    started = time.perf_counter()
    for o in orders:
        check(o.value, o.uid.encode())
    return len(orders) / (time.perf_counter() - started)


# --- the projector ---------------------------------------------------------------------------------


def watch_projector(projector: Service | Workers, count: int, after: int = 0) -> tuple[float, float]:
    """(orders/s from the first applied batch after `after` applied to the last, seconds from
    process start to `count` applied). Polled every 0.5 s, and every 50 ms over the last 5 %: each
    poll is a scrape of every worker's /metrics, which at 10 Hz took about 4 % of the workers' CPU
    from the drain measured. A sample's time and count are
    taken together, so only the last one's lateness biases the rate, and it is at most 50 ms."""
    samples = projected_samples(projector, count, interval=0.5, fine=0.05, fine_within=0.05)
    first = next(s for s in samples if s[1] > after)
    last = samples[-1]
    return (last[1] - first[1]) / (last[0] - first[0]), last[0] - projector.started_at


def projected_samples(
    projector: Service | Workers,
    count: int,
    interval: float = 0.1,
    fine: float | None = None,
    fine_within: float = 0.0,
) -> list[tuple[float, float]]:
    """(time, orders projected) from the workers' /metrics every `interval` until `count` are;
    every `fine` s once within `fine_within` (a share) of `count`."""
    workers = projector if isinstance(projector, Workers) else Workers([projector])
    deadline = time.monotonic() + max(120.0, count / 300)
    samples: list[tuple[float, float]] = []
    while time.monotonic() < deadline:
        if not workers.alive():
            raise RuntimeError(f"a projector worker exited; see {workers.log_path}")
        projected = workers.projected()
        if projected is not None:
            samples.append((time.perf_counter(), projected))
            if projected >= count:
                return samples
        near = projected is not None and projected >= count * (1 - fine_within)
        time.sleep(fine if fine is not None and near else interval)
    raise RuntimeError(f"the projector did not apply {count} orders in time; see {projector.log_path}")


# --- produce → visible ----------------------------------------------------------------------------


@dataclasses.dataclass
class Latency:
    latencies_ms: list[float]
    sent: int
    missing: int
    rate: float  # achieved send rate


class Listener(threading.Thread):
    """LISTENs on the notify channel and records when each order_uid is first announced."""

    def __init__(self, settings: Settings) -> None:
        super().__init__(name="bench-listen", daemon=True)
        self.seen: dict[str, float] = {}
        self.stopping = threading.Event()
        self.ready = threading.Event()
        self.conn = psycopg.connect(settings.dsn("api"), autocommit=True)
        self.conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(settings.notify_channel)))

    def run(self) -> None:
        seen = self.seen
        self.ready.set()
        while not self.stopping.is_set():
            for notify in self.conn.notifies(timeout=0.2):
                now = time.time()
                for uid, _ in readmodel.decode_changes(notify.payload):
                    seen.setdefault(uid, now)

    def close(self) -> None:
        self.stopping.set()
        self.join(5)
        self.conn.close()


def produce_to_visible(
    settings: Settings, count: int, rate: float | None, seed: int, wait: float = 60.0
) -> Latency:
    orders = data.valid_orders(count, seed=seed)
    listener = Listener(settings)
    listener.start()
    listener.ready.wait(5)
    try:
        sent, achieved = asyncio.run(paced(settings, orders, rate))
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline and any(uid not in listener.seen for uid in sent):
            time.sleep(0.05)
    finally:
        listener.close()
    latencies = sorted((listener.seen[uid] - at) * 1000 for uid, at in sent.items() if uid in listener.seen)
    return Latency(latencies, len(sent), len(sent) - len(latencies), achieved)


def _report_latency(
    results: Results,
    label: str,
    lat: Latency,
    how: str,
    target_p99: float | None = None,
    baseline: str = "",
) -> None:
    if not lat.latencies_ms:
        raise RuntimeError(f"produce→visible ({label}): no order became visible")
    values = lat.latencies_ms
    results.figure(LATENCY, f"{label}: p50", _percentile(values, 50), "ms")
    results.figure(
        LATENCY,
        f"{label}: p99",
        _percentile(values, 99),
        "ms",
        ("<=", target_p99) if target_p99 is not None else None,
        baseline=baseline,
    )
    results.figure(LATENCY, f"{label}: max", values[-1], "ms")
    results.figure(LATENCY, f"{label}: send rate", lat.rate, "orders/s")
    results.note(
        LATENCY,
        f"{label}: {how}; {lat.sent:,} sent, {len(values):,} seen"
        + (f", {lat.missing} never announced within the wait" if lat.missing else "")
        + f"; mean {statistics.mean(values):.1f} ms.",
    )


def _percentile(sorted_values: Sequence[float], p: float) -> float:
    """Nearest-rank percentile of sorted values."""
    k = max(0, min(len(sorted_values) - 1, math.ceil(p / 100 * len(sorted_values)) - 1))
    return sorted_values[k]
