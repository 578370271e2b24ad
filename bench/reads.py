"""Reads: GET /order/{uid} served from the cache (hits), from PostgreSQL (misses), and by a bare
aiohttp handler (the baseline), each one process under the same wrk load."""

from __future__ import annotations

import asyncio
import dataclasses
import random
import statistics
import time
import timeit
import tracemalloc
from dataclasses import dataclass
from pathlib import Path

import aiohttp
from aiohttp import hdrs, web
from multidict import CIMultiDict, CIMultiDictProxy

from api.encoding import strong_etag
from api.handlers import HIT_HEADERS, SERVER_TIMING, TIMING_HIT
from bench import data, wrk
from bench.env import say
from bench.profile import API_PARTS, API_REST, Profile
from bench.results import Results
from bench.scale import Scale
from bench.services import Service, cpu_seconds
from harness.metrics import scrape, total
from harness.ports import free_port
from harness.readiness import http_get
from orderview.settings import Settings

SECTION = "reads"
SEED = 101
SERVER_CPU = "0"  # the server under test on one core, wrk on the other
WRK_CPU = "1"
KINDS = ("baseline", "hit", "miss")


@dataclass
class Measured:
    load: wrk.Load  # the saturating run (-c connections)
    single: wrk.Load  # one connection: latency without queueing
    cpu_us_per_request: float  # the server process's CPU time per request of the saturating run
    lookups: float = 0.0  # DB lookup queries during the saturating run (API only)
    misses: float = 0.0  # cache misses during the saturating run (API only)
    profile: str = ""  # py-spy of the server during the saturating run


def run(results: Results, scale: Scale, wrk_path: str, settings: Settings) -> None:
    """`settings` name the bench's own database, created and migrated by the caller."""
    ids, ids_file = _load(results, scale, settings)
    rounds = 2 if scale.name == "full" else 1
    measured: dict[str, list[Measured]] = {k: [] for k in KINDS}
    for _ in range(rounds):
        for kind in KINDS:
            say(f"reads: {kind}")
            measured[kind].append(_measure(kind, settings, scale, wrk_path, ids_file, ids[0]))

    combined = {kind: _combine([m.load for m in ms]) for kind, ms in measured.items()}
    single = {kind: _combine([m.single for m in ms]) for kind, ms in measured.items()}
    cpu = {kind: statistics.mean(m.cpu_us_per_request for m in ms) for kind, ms in measured.items()}
    _report_kinds(results, combined, single, cpu)
    _report_ratios(results, combined, single, cpu)
    _report_misses(results, measured)
    _header_costs(results, cpu["hit"])
    hit_misses = sum(m.misses for m in measured["hit"])
    if hit_misses:
        results.note(SECTION, f"the warmed cache missed {hit_misses:.0f} times during the hit runs.")
    _describe(results, scale, len(ids), rounds)
    results.series["reads"] = {k: (combined[k].rps, combined[k].p50_ms, combined[k].p99_ms) for k in KINDS}
    say("reads: a flood of random unknown ids")
    _flood(results, settings, scale, wrk_path)


# --- the steps of run(), in order --------------------------------------------------------------


def _load(results: Results, scale: Scale, settings: Settings) -> tuple[list[str], Path]:
    """The orders read, written through the projector's write path; their ids, shuffled, in a file for wrk."""
    say(f"reads: writing {scale.read_orders:,} orders through the projector's write path")
    started = time.perf_counter()
    orders = data.valid_orders(scale.read_orders, seed=SEED)
    asyncio.run(data.load_through_projector(settings, orders))
    results.note(
        SECTION,
        f"{len(orders):,} emulator orders written with projector.store.write_orders, 500 per transaction, "
        f"in {time.perf_counter() - started:.1f} s; mean message {statistics.mean(len(o.value) for o in orders):,.0f} B.",
    )
    ids = [o.uid for o in orders]
    random.Random(SEED).shuffle(ids)
    return ids, data.ids_file("read_ids.txt", ids)


def _report_kinds(
    results: Results, combined: dict[str, wrk.Load], single: dict[str, wrk.Load], cpu: dict[str, float]
) -> None:
    """Each kind of server's rate, latencies and CPU per request."""
    for kind in KINDS:
        f = combined[kind]
        results.figure(SECTION, f"{kind} req/s", f.rps, "req/s")
        results.figure(SECTION, f"{kind} p50", f.p50_ms, "ms")
        results.figure(SECTION, f"{kind} p99", f.p99_ms, "ms")
        results.figure(
            SECTION, f"{kind} server CPU per request", cpu[kind], "µs", note="utime+stime / requests"
        )
        results.figure(SECTION, f"{kind} p50, 1 connection", single[kind].p50_ms, "ms")
        errors = f.errors + single[kind].errors
        if errors:
            results.note(SECTION, f"{kind}: {errors} socket errors or non-2xx answers under load.")


def _report_ratios(
    results: Results, combined: dict[str, wrk.Load], single: dict[str, wrk.Load], cpu: dict[str, float]
) -> None:
    """Hits against the bare baseline and against misses: the section's targets."""
    hit, miss, base = combined["hit"], combined["miss"], combined["baseline"]
    results.ratio(
        SECTION,
        "hit / baseline req/s",
        hit.rps / base.rps,
        (">=", 0.9),
        baseline=f"a bare aiohttp handler returning the same bytes: {base.rps:,.0f} req/s",
    )
    results.ratio(
        SECTION,
        "hit / miss req/s",
        hit.rps / miss.rps,
        (">=", 5),
        baseline=f"cache off: {miss.rps:,.0f} req/s",
    )
    results.ratio(
        SECTION,
        "miss p50 / hit p50",
        miss.p50_ms / hit.p50_ms,
        (">=", 5),
        "target: hit p50 ≤ 1/5 of miss p50",
        baseline=f"cache off: p50 {miss.p50_ms:.2f} ms",
    )
    results.ratio(
        SECTION,
        "miss p50 / hit p50, 1 connection",
        single["miss"].p50_ms / single["hit"].p50_ms,
        note="the same without queueing (wrk -c1): what one miss costs a client",
    )
    results.ratio(SECTION, "baseline / hit CPU per request", cpu["baseline"] / cpu["hit"])
    results.ratio(SECTION, "hit / miss CPU per request", cpu["hit"] / cpu["miss"])


def _report_misses(results: Results, measured: dict[str, list[Measured]]) -> None:
    """How misses coalesce into DB lookups; the servers' profiles."""
    queries = sum(m.lookups for m in measured["miss"])
    requests = sum(m.load.requests for m in measured["miss"])
    results.figure(SECTION, "miss run: requests", requests, "requests")
    results.figure(
        SECTION,
        "miss run: DB lookup queries",
        queries,
        "queries",
        note='orderview_api_db_queries{kind="lookup"}',
    )
    results.ratio(
        SECTION,
        "miss requests per DB lookup query",
        requests / queries if queries else float("inf"),
        note="coalescing: > 1 means concurrent misses shared queries",
    )
    for kind in ("baseline", "hit"):
        results.note(
            SECTION,
            f"Profile of the {kind} server during its last measured run (py-spy, CPU samples by part): "
            f"{measured[kind][-1].profile}.",
        )


def _describe(results: Results, scale: Scale, ids: int, rounds: int) -> None:
    """What the section ran with, for the report."""
    results.settings[SECTION] = (
        f"wrk -t{scale.wrk_threads} -c{scale.wrk_connections} -d{scale.wrk_seconds}s -s bench/ids.lua over "
        f"{ids:,} ids (round robin from a random start) after an unmeasured "
        f"{scale.wrk_warm_seconds}s run, then wrk -c1 -d{max(2, scale.wrk_seconds // 3)}s; server pinned to "
        f"CPU {SERVER_CPU}, wrk to CPU {WRK_CPU}; {rounds} round(s) of baseline → hit → miss "
        "(req/s: mean of rounds; percentiles: median of rounds); API as `python -m api --port P --replicas 1`, "
        "hit with the cache holding every order, miss with ORDERVIEW_CACHE_MAX_ENTRIES=0; baseline "
        "`python -m bench.baseline_server` (same uvloop, reuse_port, no access log, same bodies and headers)"
    )


def _header_costs(results: Results, hit_cpu_us: float) -> None:
    """What the cache's byte saving costs a hit: its answer headers built per answer (shared
    ones, then ETag and Server-Timing) against a header map prebuilt and kept per entry."""
    body = b"x" * 1160
    etag = strong_etag(body)
    prebuilt = CIMultiDict(HIT_HEADERS)
    prebuilt[hdrs.ETAG] = etag
    prebuilt[SERVER_TIMING] = TIMING_HIT + "0.004"
    proxy = CIMultiDictProxy(prebuilt)

    def per_answer() -> None:
        headers = web.Response(body=body, headers=HIT_HEADERS).headers
        headers[hdrs.ETAG] = etag
        headers[SERVER_TIMING] = f"{TIMING_HIT}{0.004:.3f}"

    def per_entry() -> None:
        web.Response(body=body, headers=proxy)

    n = 20_000
    built = min(timeit.repeat(per_answer, number=n, repeat=5)) / n * 1e6
    kept = min(timeit.repeat(per_entry, number=n, repeat=5)) / n * 1e6
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    maps = [CIMultiDictProxy(CIMultiDict(prebuilt)) for _ in range(1000)]
    per_map = (tracemalloc.get_traced_memory()[0] - before) / len(maps)
    tracemalloc.stop()
    results.figure(
        SECTION, "hit answer: headers built per answer", built, "µs", note="shared + ETag + Server-Timing"
    )
    results.figure(
        SECTION, "hit answer: header map prebuilt per entry", kept, "µs", note="the baseline's way"
    )
    results.figure(SECTION, "bytes a prebuilt header map costs an entry", per_map, "B", note="tracemalloc")
    results.note(
        SECTION,
        f"The cache keeps no header map per entry: {per_map:,.0f} B saved per cached order, for "
        f"{built - kept:.2f} µs more per hit answer ({(built - kept) / hit_cpu_us:.1%} of the "
        f"{hit_cpu_us:.0f} µs of server CPU a hit costs in this run).",
    )


def _flood(results: Results, settings: Settings, scale: Scale, wrk_path: str) -> None:
    """Random ids no order has, round robin: the first pass asks PostgreSQL once per id (coalesced);
    after it, the replica remembers them as absent and a flood costs no query."""
    rng = random.Random(SEED + 1)
    unknown = [f"flood{rng.getrandbits(64):016x}" for _ in range(scale.read_orders // 5)]
    ids_file = data.ids_file("flood_ids.txt", unknown)
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    api_settings = dataclasses.replace(settings, api_port=port, api_replicas=1)
    server = Service(
        "api", api_settings, "reads-api-flood", ("--port", str(port), "--replicas", "1"), cpus=SERVER_CPU
    )
    common = dict(threads=scale.wrk_threads, connections=scale.wrk_connections, cpus=WRK_CPU)
    with server:
        server.wait_http("/readyz", port)
        # The first pass asks for every id once (a timed wrk pass may not reach them all on a
        # slow machine, and the ones it missed then cost a query in the flood).
        asyncio.run(_ask_each_once(base, unknown))
        after_first = _api_metrics(base)
        load = wrk.run(wrk_path, port, ids_file, scale.wrk_seconds, **common)
        after = _api_metrics(base)
    results.figure(SECTION, "flood: distinct unknown ids", len(unknown), "ids")
    results.figure(
        SECTION,
        "flood: DB lookups, first pass",
        after_first["lookups"],
        "queries",
        note="coalesced, one per id at most",
    )
    results.figure(SECTION, "flood: requests after the first pass", load.requests, "requests", note="all 404")
    results.figure(
        SECTION,
        "flood: DB lookups after the first pass",
        after["lookups"] - after_first["lookups"],
        "queries",
        note="unknown ids remembered until their NOTIFY (target 0)",
    )
    results.figure(SECTION, "flood req/s", load.rps, "req/s")


async def _ask_each_once(base: str, ids: list[str], concurrency: int = 32) -> None:
    queue = list(ids)

    async def ask(client: aiohttp.ClientSession) -> None:
        while queue:
            async with client.get(f"{base}/order/{queue.pop()}") as response:
                await response.read()

    async with aiohttp.ClientSession() as client:
        await asyncio.gather(*(ask(client) for _ in range(concurrency)))


def _combine(loads: list[wrk.Load]) -> wrk.Load:
    if len(loads) == 1:
        return loads[0]
    return wrk.Load(
        requests=sum(x.requests for x in loads),
        seconds=sum(x.seconds for x in loads),
        rps=statistics.mean(x.rps for x in loads),
        p50_ms=statistics.median(x.p50_ms for x in loads),
        p90_ms=statistics.median(x.p90_ms for x in loads),
        p99_ms=statistics.median(x.p99_ms for x in loads),
        mean_ms=statistics.mean(x.mean_ms for x in loads),
        errors=sum(x.errors for x in loads),
    )


def _measure(
    kind: str, settings: Settings, scale: Scale, wrk_path: str, ids_file: Path, probe: str
) -> Measured:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    if kind == "baseline":
        server = Service(
            "bench.baseline_server", settings, "reads-baseline", ("--port", str(port)), cpus=SERVER_CPU
        )
        expected = "hit"
    else:
        entries = max(scale.read_orders, settings.cache_max_entries) if kind == "hit" else 0
        api_settings = dataclasses.replace(settings, cache_max_entries=entries, api_port=port, api_replicas=1)
        args = ("--port", str(port), "--replicas", "1")
        server = Service("api", api_settings, f"reads-api-{kind}", args, cpus=SERVER_CPU)
        expected = kind
    with server:
        server.wait_http("/readyz", port)
        status, _, headers = http_get(f"{base}/order/{probe}")
        if status != 200 or headers.get("X-Cache") != expected:
            raise RuntimeError(
                f"{server.name} answered {status} X-Cache={headers.get('X-Cache')}, wanted 200 {expected}"
            )
        common = dict(threads=scale.wrk_threads, connections=scale.wrk_connections, cpus=WRK_CPU)
        wrk.run(wrk_path, port, ids_file, scale.wrk_warm_seconds, **common)
        before = _api_metrics(base) if kind != "baseline" else {}
        cpu_before = cpu_seconds(server.pid)
        with Profile(server.pid, f"reads-{kind}") as profile:
            load = wrk.run(wrk_path, port, ids_file, scale.wrk_seconds, **common)
        cpu_used = cpu_seconds(server.pid) - cpu_before
        after = _api_metrics(base) if kind != "baseline" else {}
        single = wrk.run(
            wrk_path, port, ids_file, max(2, scale.wrk_seconds // 3), threads=1, connections=1, cpus=WRK_CPU
        )
    return Measured(
        profile=profile.describe(API_PARTS, API_REST),
        load=load,
        single=single,
        cpu_us_per_request=cpu_used / load.requests * 1e6,
        lookups=after.get("lookups", 0.0) - before.get("lookups", 0.0),
        misses=after.get("misses", 0.0) - before.get("misses", 0.0),
    )


def _api_metrics(base: str) -> dict[str, float]:
    text = scrape(f"{base}/metrics")
    return {
        "lookups": total(text, 'orderview_api_db_queries_total{kind="lookup"}') or 0.0,
        "misses": total(text, "orderview_api_cache_misses_total") or 0.0,
    }
