"""Mixed load: cached reads while the projector ingests at full speed, against the same reads idle.

The API runs as deployed (`python -m api`, its default replicas, nothing pinned) on the ingest
benchmark's database with every order cached; wrk reads them idle, then again while the running
projector drains a burst produced just before; same run, same ids, same wrk settings. Then the
same again with the API and wrk on a core of their own, and the projector's workers, PostgreSQL
and Kafka on the other: what a deployment that gives the API its own cores sees.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import os
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

from bench import data, wrk
from bench.env import say
from bench.produce import produce
from bench.profile import API_PARTS, API_REST, Profile
from bench.results import Results
from bench.scale import Scale
from bench.services import Service, Workers, cpu_seconds
from harness.metrics import scrape, total
from harness.ports import free_port
from harness.readiness import wait_until
from orderview.settings import Settings

SECTION = "mixed"
SEED = 606
PINNED_SEED = 607
API_CORE, OTHERS_CORE = "1", "0"  # the pinned pass: the API and wrk; the projector, PostgreSQL, Kafka
CONNECTIONS = 32
CACHE_BYTES = 2**34


@dataclasses.dataclass(frozen=True)
class Measured:
    idle: wrk.Load
    busy: wrk.Load  # while the projector ingests
    cpu_idle: tuple[float, float]  # cores: the API's replicas, the projector
    cpu_busy: tuple[float, float]
    rate: float  # orders/s the projector applied while the busy reads ran
    burst_done: bool  # the projector drained the burst before the reads ended
    misses: float
    profile: str  # py-spy of the API's replicas while ingesting


def run(
    results: Results, scale: Scale, settings: Settings, projector: Workers, wrk_path: str, ids: list[str]
) -> None:
    """`settings`: the ingest benchmark's database and topic; `projector` is running on them."""
    ids_file = data.ids_file("mixed_ids.txt", ids)
    existing = data.count_snapshots(settings)
    port = free_port()
    api_settings = dataclasses.replace(
        settings,
        api_port=port,
        cache_max_entries=existing + scale.mixed_orders,
        cache_max_bytes=CACHE_BYTES,  # every order, whatever the default bound holds
    )
    with Service("api", api_settings, "mixed-api", ("--port", str(port))) as api:
        api.wait_http("/readyz", port, timeout=600)
        _wait_all_cached(f"http://127.0.0.1:{port}", existing * api_settings.api_replicas, api)
        measured = _measure(scale, settings, api, port, projector, wrk_path, ids_file, SEED)
    _report(results, measured)
    if len(os.sched_getaffinity(0)) >= 2:
        _wait_drained(settings, existing + scale.mixed_orders, projector)
        say(f"mixed: the same with the API and wrk on core {API_CORE}, everything else on core {OTHERS_CORE}")
        cached = data.count_snapshots(settings)
        pinned_settings = dataclasses.replace(api_settings, cache_max_entries=cached + scale.mixed_orders)
        with (
            pinned(lambda: [*projector.pids(), *_service_pids()], {int(OTHERS_CORE)}),
            Service("api", pinned_settings, "mixed-api-pinned", ("--port", str(port)), cpus=API_CORE) as api,
        ):
            api.wait_http("/readyz", port, timeout=600)
            _wait_all_cached(f"http://127.0.0.1:{port}", cached * api_settings.api_replicas, api)
            on_own_core = _measure(
                scale, settings, api, port, projector, wrk_path, ids_file, PINNED_SEED, wrk_cpus=API_CORE
            )
        _report_pinned(results, on_own_core)
    results.settings[SECTION] = (
        f"`python -m api` with its default {api_settings.api_replicas} replicas, unpinned, every order of the "
        f"ingest database cached ({len(ids):,} ids read); wrk -t1 -c{CONNECTIONS} -d{scale.mixed_seconds}s -s "
        "bench/ids.lua after an unmeasured 1 s run, idle; then "
        f"{scale.mixed_orders:,} new orders produced to the topic of the running projector and the same wrk "
        "run while it ingests them; then the same (another burst) with the API started under taskset on core "
        f"{API_CORE} and wrk there too, every thread of the projector's workers, PostgreSQL and Kafka moved to "
        f"core {OTHERS_CORE} (sched_setaffinity) for the pass, and back after"
    )
    results.series[SECTION] = {
        "idle": (measured.idle.rps, measured.idle.p50_ms, measured.idle.p99_ms),
        "ingesting": (measured.busy.rps, measured.busy.p50_ms, measured.busy.p99_ms),
    }


def _measure(
    scale: Scale,
    settings: Settings,
    api: Service,
    port: int,
    projector: Workers,
    wrk_path: str,
    ids_file: Path,
    seed: int,
    wrk_cpus: str | None = None,
) -> Measured:
    """The same wrk reads of the warm API idle, then while the projector drains a new burst."""
    load = dict(threads=1, connections=CONNECTIONS, cpus=wrk_cpus)
    wrk.run(wrk_path, port, ids_file, 1, **load)  # unmeasured
    say(f"mixed: cached reads idle, {scale.mixed_seconds} s")
    cpu = _cpu(api, projector)
    idle = wrk.run(wrk_path, port, ids_file, scale.mixed_seconds, **load)
    cpu_idle = _cpu_since(cpu, api, projector, idle.seconds)
    say(f"mixed: producing {scale.mixed_orders:,} orders, then the same reads while they are ingested")
    before = _projected(projector)
    asyncio.run(produce(settings, data.valid_orders(scale.mixed_orders, seed=seed)))
    at_start = _projected(projector)
    started = time.perf_counter()
    cpu = _cpu(api, projector)
    with Profile(api.pid, "mixed-api", subprocesses=True) as profile:
        busy = wrk.run(wrk_path, port, ids_file, scale.mixed_seconds, **load)
    cpu_busy = _cpu_since(cpu, api, projector, busy.seconds)
    seconds = time.perf_counter() - started
    at_end = _projected(projector)
    misses = total(scrape(f"http://127.0.0.1:{port}/metrics"), "orderview_api_cache_misses_total") or 0.0
    return Measured(
        idle=idle,
        busy=busy,
        cpu_idle=cpu_idle,
        cpu_busy=cpu_busy,
        rate=(at_end - at_start) / seconds,
        burst_done=at_end >= before + scale.mixed_orders,
        misses=misses,
        profile=profile.describe(API_PARTS, API_REST),
    )


def _report(results: Results, m: Measured) -> None:
    idle, busy = m.idle, m.busy
    if m.burst_done:
        results.note(SECTION, "the projector finished the burst before the reads did: raise mixed_orders.")
    results.figure(SECTION, "idle: req/s", idle.rps, "req/s")
    results.figure(SECTION, "idle: p50", idle.p50_ms, "ms")
    results.figure(SECTION, "idle: p99", idle.p99_ms, "ms")
    results.figure(SECTION, "ingesting: req/s", busy.rps, "req/s")
    results.figure(SECTION, "ingesting: p50", busy.p50_ms, "ms")
    results.figure(SECTION, "ingesting: p99", busy.p99_ms, "ms")
    results.figure(
        SECTION, "projector while reads ran", m.rate, "orders/s", note="orders applied during the run"
    )
    results.ratio(
        SECTION,
        "cached-read p99 ingesting / idle",
        busy.p99_ms / idle.p99_ms,
        ("<=", 2.0),
        baseline=f"the same reads idle: p99 {idle.p99_ms:.2f} ms, {idle.rps:,.0f} req/s",
    )
    results.figure(SECTION, "idle: API replicas' CPU", m.cpu_idle[0], "cores", note="utime+stime / wall")
    results.figure(SECTION, "ingesting: API replicas' CPU", m.cpu_busy[0], "cores", note="utime+stime / wall")
    results.figure(SECTION, "ingesting: projector's CPU", m.cpu_busy[1], "cores", note="utime+stime / wall")
    results.note(
        SECTION,
        "Profile of the API replicas while ingesting (py-spy, CPU samples by part): " + m.profile + ".",
    )
    if m.misses or idle.errors or busy.errors:
        results.note(
            SECTION, f"{m.misses:.0f} cache misses, {idle.errors + busy.errors} errors during the runs."
        )


def _report_pinned(results: Results, m: Measured) -> None:
    idle, busy = m.idle, m.busy
    name = f"API on core {API_CORE}"
    results.figure(SECTION, f"{name}: idle p99", idle.p99_ms, "ms", note=f"{idle.rps:,.0f} req/s")
    results.figure(SECTION, f"{name}: ingesting p99", busy.p99_ms, "ms", note=f"{busy.rps:,.0f} req/s")
    results.figure(SECTION, f"{name}: projector while reads ran", m.rate, "orders/s")
    results.ratio(
        SECTION,
        f"{name}: cached-read p99 ingesting / idle",
        busy.p99_ms / idle.p99_ms,
        ("<=", 2.0),
        baseline=f"the same reads idle, API and wrk on core {API_CORE}: p99 {idle.p99_ms:.2f} ms",
        note=f"the projector's workers, PostgreSQL and Kafka on core {OTHERS_CORE}",
    )
    results.figure(SECTION, f"{name}: ingesting: API replicas' CPU", m.cpu_busy[0], "cores")
    results.figure(SECTION, f"{name}: ingesting: projector's CPU", m.cpu_busy[1], "cores")


@contextlib.contextmanager
def pinned(pids: Callable[[], Iterable[int]], cores: set[int]) -> Iterator[None]:
    """Every thread of these processes on `cores` for the block (processes they start meanwhile
    inherit it), then on every core again, those started meanwhile too."""
    everywhere = os.sched_getaffinity(0)
    _set_affinity(pids(), cores)
    try:
        yield
    finally:
        _set_affinity(pids(), everywhere)


def _set_affinity(pids: Iterable[int], cores: set[int]) -> None:
    for pid in pids:
        try:
            tasks = [int(t.name) for t in Path(f"/proc/{pid}/task").iterdir()]
        except OSError:
            continue  # ended meanwhile
        for tid in tasks:
            with contextlib.suppress(OSError):
                os.sched_setaffinity(tid, cores)


def _service_pids() -> list[int]:
    """PostgreSQL's processes and Kafka's broker (a JVM whose command line names Kafka)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            comm = (entry / "comm").read_text().strip()
            if comm == "postgres" or (comm == "java" and b"kafka" in (entry / "cmdline").read_bytes()):
                found.append(int(entry.name))
        except OSError:
            continue
    return found


def _wait_drained(settings: Settings, count: int, projector: Workers, timeout: float = 600.0) -> None:
    """Until the read model holds `count` orders: the burst is in, the machine idle again."""
    wait_until(
        lambda: data.count_snapshots(settings) >= count,
        timeout,
        f"the projector did not drain the mixed burst; see {projector.log_path}",
        1.0,
    )


def _cpu(api: Service, projector: Workers) -> tuple[float, float]:
    """CPU seconds used so far by the API's replicas (and supervisor), and by the projector's workers."""
    return sum(cpu_seconds(pid) for pid in api.pids()), sum(cpu_seconds(pid) for pid in projector.pids())


def _cpu_since(
    before: tuple[float, float], api: Service, projector: Workers, seconds: float
) -> tuple[float, float]:
    """Cores used on average since `before`, by the API and by the projector."""
    now = _cpu(api, projector)
    return (now[0] - before[0]) / seconds, (now[1] - before[1]) / seconds


def _projected(projector: Workers) -> float:
    projected = projector.projected()
    if projected is None:
        raise RuntimeError(f"a projector worker does not answer on /metrics; see {projector.log_path}")
    return projected


def _wait_all_cached(base: str, entries: int, api: Service, timeout: float = 300.0) -> None:
    """Every replica warm: /readyz reaches one replica, the merged metrics count them all."""

    def cached() -> bool:
        return (total(scrape(f"{base}/metrics"), "orderview_api_cache_entries") or 0) >= entries

    def running() -> None:
        if not api.alive():
            raise RuntimeError(f"the API exited; see {api.log_path}")

    wait_until(
        cached,
        timeout,
        f"the replicas did not cache {entries:,} entries in all after {timeout:.0f}s",
        check=running,
    )
