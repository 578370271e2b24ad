"""Reads on a streaming standby, against the primary in the same run.

1. Cache-miss reads: one API replica with the cache off (every GET /order reads PostgreSQL,
   coalesced), first on the primary, then on a standby made by `ops/postgres.sh standby`, under
   the same wrk load: the standby's req/s over the primary's.
2. Coherence delay: orders change on the primary (a transaction of the projector's write path
   every 50 ms, NOTIFY as the projector does); two replicas, each polled on its own port, and
   the delay from each commit (as a LISTEN on the primary sees it) to the first answer that
   carries it: replicas on the standby, and the same on the primary as the baseline. The delay
   includes the poll period of each order (a few ms). Any answer older than one given before
   it is counted (it must be 0).
"""

from __future__ import annotations

import asyncio
import dataclasses
import random
import statistics
import time
from contextlib import AsyncExitStack
from pathlib import Path

import psycopg

from bench import data, wrk
from bench.env import say
from bench.results import Results
from bench.scale import Scale
from bench.services import Service
from harness import replication
from harness.ports import free_port
from harness.readiness import wait_until
from orderview.settings import Settings
from projector.adapters import postgres

SECTION = "standby"
SEED = 303
SERVER_CPU = "0"
WRK_CPU = "1"
CHANGING_ORDERS = 20
CHANGE_EVERY_S = 0.05
CHANGED_PER_COMMIT = 5


def run(results: Results, scale: Scale, wrk_path: str, settings: Settings) -> None:
    ids = _load(scale, settings)
    ids_file = data.ids_file("standby_ids.txt", ids)
    rounds = 2 if scale.name == "full" else 1
    say("standby: copying the primary into a standby (ops/postgres.sh standby start)")
    started = time.perf_counter()
    standby = replication.Standby(settings).start()
    try:
        made = time.perf_counter() - started
        _wait_caught_up(standby)
        places = (("primary", settings), ("standby", standby.settings))
        loads = _miss_rounds(places, rounds, scale, wrk_path, ids_file)
        say("standby: coherence delay, replicas on the primary, then on the standby")
        delays = {where: asyncio.run(_coherence(s, scale)) for where, s in places}
    finally:
        standby.destroy()
    _report_misses(results, loads)
    _report_coherence(results, delays)
    _describe(results, scale, made, delays, len(ids), rounds)


# --- the steps of run(), in order --------------------------------------------------------------


def _load(scale: Scale, settings: Settings) -> list[str]:
    """The orders read, written on the primary through the projector's write path; their ids, shuffled."""
    say(f"standby: writing {scale.read_orders:,} orders through the projector's write path")
    orders = data.valid_orders(scale.read_orders, seed=SEED)
    asyncio.run(data.load_through_projector(settings, orders))
    ids = [o.uid for o in orders]
    random.Random(SEED).shuffle(ids)
    return ids


def _miss_rounds(
    places: tuple[tuple[str, Settings], ...], rounds: int, scale: Scale, wrk_path: str, ids_file: Path
) -> dict[str, list[wrk.Load]]:
    """Cache-miss reads on each place in turn, `rounds` times."""
    loads: dict[str, list[wrk.Load]] = {where: [] for where, _ in places}
    for _ in range(rounds):
        for where, s in places:
            say(f"standby: cache-miss reads on the {where}")
            loads[where].append(_miss_reads(f"standby-miss-{where}", s, scale, wrk_path, ids_file))
    return loads


def _report_misses(results: Results, loads: dict[str, list[wrk.Load]]) -> None:
    primary_rps = statistics.mean(load.rps for load in loads["primary"])
    standby_rps = statistics.mean(load.rps for load in loads["standby"])
    for where in ("primary", "standby"):
        results.figure(
            SECTION,
            f"cache-miss reads on the {where}: req/s",
            statistics.mean(x.rps for x in loads[where]),
            "req/s",
        )
        results.figure(
            SECTION,
            f"cache-miss reads on the {where}: p50",
            statistics.median(x.p50_ms for x in loads[where]),
            "ms",
        )
        results.figure(
            SECTION,
            f"cache-miss reads on the {where}: p99",
            statistics.median(x.p99_ms for x in loads[where]),
            "ms",
        )
    results.ratio(
        SECTION,
        "cache-miss reads: standby / primary req/s",
        standby_rps / primary_rps,
        note="each miss on the standby also asks its replay position (same round trip)",
        baseline=f"the same API on the primary: {primary_rps:,.0f} req/s",
    )


def _report_coherence(results: Results, delays: dict[str, dict[str, float]]) -> None:
    for where in ("primary", "standby"):
        measured = delays[where]
        results.figure(SECTION, f"coherence delay, replicas on the {where}: p50", measured["p50"], "ms")
        results.figure(SECTION, f"coherence delay, replicas on the {where}: p99", measured["p99"], "ms")
        results.figure(
            SECTION,
            f"answers older than one given before, on the {where}",
            measured["went_back"],
            "answers",
            note=f"of {measured['answers']:,.0f}",
        )
    results.figure(
        SECTION,
        "coherence delay on the standby: p99",
        delays["standby"]["p99"],
        "ms",
        ("<=", 1000.0),
        note="commit on the primary → new version served by a replica on the standby",
        baseline=f"replicas on the primary: p99 {delays['primary']['p99']:.0f} ms",
    )


def _describe(
    results: Results, scale: Scale, made: float, delays: dict[str, dict[str, float]], ids: int, rounds: int
) -> None:
    """How the standby was made, how coherence was measured, and what the section ran with."""
    results.note(
        SECTION,
        f"The standby: pg_basebackup of the bench's primary and start in {made:.1f} s "
        f"({scale.read_orders:,} orders besides what else the cluster holds).",
    )
    results.note(
        SECTION,
        f"Coherence: {delays['standby']['commits']:,.0f} commits seen on the standby run, each changing "
        f"{CHANGED_PER_COMMIT} of {CHANGING_ORDERS} orders every {CHANGE_EVERY_S * 1000:.0f} ms; the delay is "
        "measured to the end of the first answer carrying the version, so it includes that order's poll period.",
    )
    results.settings[SECTION] = (
        f"API as `python -m api --port P --replicas 1` with ORDERVIEW_CACHE_MAX_ENTRIES=0 pinned to CPU "
        f"{SERVER_CPU}, wrk -t{scale.wrk_threads} -c{scale.wrk_connections} -d{scale.wrk_seconds}s over "
        f"{ids:,} ids on CPU {WRK_CPU} after an unmeasured {scale.wrk_warm_seconds}s run, {rounds} "
        "round(s) of primary → standby; the standby on the same machine (ops/postgres.sh standby); "
        f"coherence: two replicas with the cache on, {scale.latency_seconds:.0f} s of changes, each replica "
        "polled by 4 workers over the changing orders"
    )


def _wait_caught_up(standby: replication.Standby, timeout: float = 120.0) -> None:
    wait_until(standby.caught_up, timeout, f"the standby did not catch up within {timeout:.0f} s")


def _miss_reads(name: str, settings: Settings, scale: Scale, wrk_path: str, ids_file: Path) -> wrk.Load:
    port = free_port()
    api = dataclasses.replace(settings, api_port=port, api_replicas=1, cache_max_entries=0)
    server = Service("api", api, name, ("--port", str(port), "--replicas", "1"), cpus=SERVER_CPU)
    common = dict(threads=scale.wrk_threads, connections=scale.wrk_connections, cpus=WRK_CPU)
    with server:
        server.wait_http("/readyz", port)
        wrk.run(wrk_path, port, ids_file, scale.wrk_warm_seconds, **common)
        return wrk.run(wrk_path, port, ids_file, scale.wrk_seconds, **common)


async def _coherence(settings: Settings, scale: Scale) -> dict[str, float]:
    orders = replication.new_orders("coherence", CHANGING_ORDERS)
    uids = [o["order_uid"] for o in orders]
    await _write(settings, [replication.versioned(o, 1) for o in orders])
    log, listening = replication.CommitLog(), asyncio.Event()
    watcher = asyncio.create_task(replication.watch_commits(settings, log, listening))
    servers: list[Service] = []
    try:
        await asyncio.wait_for(listening.wait(), 10)
        async with AsyncExitStack() as stack:
            ports = []
            for i in range(2):
                port = free_port()
                s = dataclasses.replace(settings, api_port=port, api_replicas=1)
                server = stack.enter_context(
                    Service("api", s, f"standby-coherence-{i}", ("--port", str(port), "--replicas", "1"))
                )
                servers.append(server)
                ports.append(port)
            for server, port in zip(servers, ports, strict=True):
                await asyncio.to_thread(server.wait_http, "/readyz", port)
            urls = [f"http://127.0.0.1:{port}" for port in ports]
            stop = asyncio.Event()
            polls = [asyncio.create_task(replication.poll_replica(url, uids, stop)) for url in urls]
            await _change(settings, orders, scale.latency_seconds)
            await asyncio.sleep(1.0)
            stop.set()
            answers = await asyncio.gather(*polls)
    finally:
        watcher.cancel()
        await asyncio.gather(watcher, return_exceptions=True)
    verdicts = [replication.judge(log, mine, 1.0) for mine in answers]
    delays = [d * 1000 for v in verdicts for d in v.delays]
    return {
        "p50": replication.percentile(delays, 50),
        "p99": replication.percentile(delays, 99),
        "went_back": float(sum(len(v.went_back) for v in verdicts)),
        "answers": float(sum(v.answers for v in verdicts)),
        "commits": float(log.count),
    }


async def _write(settings: Settings, orders: list[dict], offset: int = 0) -> None:
    async with await psycopg.AsyncConnection.connect(settings.dsn("projector")) as conn:
        changes = await postgres.write_orders(conn, [(offset + i, o) for i, o in enumerate(orders)])
        await postgres.notify(conn, settings.notify_channel, changes)
        await conn.commit()


async def _change(settings: Settings, orders: list[dict], seconds: float) -> None:
    rng = random.Random(SEED)
    versions = {o["order_uid"]: 1 for o in orders}
    deadline = time.monotonic() + seconds
    offset = len(orders)
    while time.monotonic() < deadline:
        chosen = rng.sample(orders, CHANGED_PER_COMMIT)
        for o in chosen:
            versions[o["order_uid"]] += 1
        await _write(settings, [replication.versioned(o, versions[o["order_uid"]]) for o in chosen], offset)
        offset += len(chosen)
        await asyncio.sleep(CHANGE_EVERY_S)
