"""Boot: an API replica from process start to its first order served (from the database, while it
warms) and to /readyz 200 (warm), warming its cache from a big snapshot table, against a raw scan
of the same rows by the same query; memory per cached order; and what the default two replicas
cost the machine (PSS)."""

from __future__ import annotations

import dataclasses
import gc
import json
import os
import statistics
import subprocess
import sys
import time
import tracemalloc

import psycopg

from api.cache import CachedOrder, OrderCache
from api.freshness import CHUNK
from api.views import RECENT_SNAPSHOTS
from bench import data
from bench.env import say
from bench.results import Results
from bench.scale import Scale
from bench.services import Service
from harness import ROOT
from harness.metrics import scrape, total
from harness.ports import free_port
from harness.readiness import wait_until
from orderview.settings import Settings

SECTION = "boot"
SEED = 505
BASE_ORDERS = 20_000  # distinct emulator orders; the rest are copies under new uids
SIZE_SAMPLE = 5_000
PSS_REPLICAS = 2  # the default of ORDERVIEW_API_REPLICAS


@dataclasses.dataclass
class Boot:
    first_order_s: float  # process start → the first GET /order/{uid} answered 200
    seconds: float  # process start → /readyz 200 (warm)
    rss: int  # bytes, a second after ready
    entries: float
    cache_bytes: float  # the cache's own accounting


def run(results: Results, scale: Scale, settings: Settings) -> None:
    """`settings` name the bench's own database, created and migrated by the caller."""
    say(f"boot: copying {scale.boot_orders:,} snapshots")
    started = time.perf_counter()
    base = data.valid_orders(min(BASE_ORDERS, scale.boot_orders), seed=SEED)
    count = data.copy_snapshots(settings, data.variants(base, scale.boot_orders))
    results.note(
        SECTION,
        f"{count:,} valid orders ({len(base):,} emulator orders and copies of them under new uids) COPYed "
        f"into order_snapshots in {time.perf_counter() - started:.1f} s (the warm-up reads no other table).",
    )
    # An order the warm-up reaches last, if at all: its first answer comes from the database.
    probe = data.variant_uid(base, count // 2)
    limit = scale.boot_cache_entries
    say(f"boot: raw scans and API boots warming {limit:,}")
    raw_scan(settings, limit)  # unmeasured: the same pages in PostgreSQL's and the OS's caches for both
    raws, boots = [], []
    for _ in range(2):
        raws.append(raw_scan(settings, limit))
        boots.append(boot_api(settings, limit, probe))
    empty = boot_api(settings, 0, probe)
    api_imports = statistics.median(imports_alone() for _ in range(3))
    if any(b.entries != limit for b in boots):
        raise RuntimeError(f"the API warmed {[b.entries for b in boots]} entries, wanted {limit}")

    raw_wall = statistics.median(r["wall_s"] for r in raws)
    raw_scan_s = statistics.median(r["scan_s"] for r in raws)
    warm = statistics.median(b.seconds for b in boots)
    first = statistics.median(b.first_order_s for b in boots)
    imports = statistics.median(r["imports_s"] for r in raws)
    results.figure(
        SECTION,
        "API start → first order served",
        first,
        "s",
        ("<=", 0.2),
        f"{count:,} orders in the database; the order is read from it (the warm-up has not reached it)",
        baseline=f"interpreter start and the API's imports alone: {api_imports:.3f} s",
    )
    results.figure(
        SECTION,
        "API: interpreter start and imports alone",
        api_imports,
        "s",
        note=f"`python -c 'import api.main'`; the largest: {IMPORT_PROFILE[0]}",
    )
    results.figure(SECTION, f"API start → ready, warming {limit:,}", warm, "s")
    results.figure(SECTION, "API start → ready, empty cache", empty.seconds, "s")
    results.figure(
        SECTION,
        "raw scan: interpreter start and imports",
        imports,
        "s",
        note="python, psycopg: bench.rawscan",
    )
    results.figure(SECTION, "raw scan, process start → done", raw_wall, "s")
    results.figure(SECTION, "raw scan, query only", raw_scan_s, "s")
    results.ratio(
        SECTION,
        "raw scan / API warm boot",
        raw_wall / warm,
        (">=", 0.5),
        "both from process start",
        baseline=f"raw scan of the same {limit:,} rows: {raw_wall:.2f} s",
    )
    results.ratio(
        SECTION,
        "raw query / (warm boot − empty boot)",
        raw_scan_s / max(1e-9, warm - empty.seconds),
        note="the warm-up alone against the query alone",
    )
    _memory(results, settings, scale, boots[-1], empty, limit)
    results.settings[SECTION] = (
        f"{count:,} snapshots; API `python -m api --port P --replicas 1` with ORDERVIEW_CACHE_MAX_ENTRIES={limit:,} "
        f"(and =0 for the empty boot); GET /order/{{uid}} of an order the warm-up reaches last polled every "
        "2 ms from process start, then /readyz every 2 ms; raw scan `python -m bench.rawscan` "
        f"(api.views.RECENT_SNAPSHOTS, server-side cursor, {CHUNK} rows per fetch, binary, bodies as bytes), "
        "after one unmeasured scan; 2 rounds of raw → API, medians; RSS from /proc 1 s after ready; "
        f"PSS: `python -m api` with its default {PSS_REPLICAS} replicas and "
        f"ORDERVIEW_CACHE_MAX_ENTRIES={scale.pss_cache_entries:,}, /proc/<pid>/smaps_rollup of the supervisor "
        "and its replicas 1 s after both are warm"
    )
    results.series["boot"] = {
        "first order": first,
        "raw scan": raw_wall,
        "API warm boot": warm,
        "API empty boot": empty.seconds,
    }


def _memory(
    results: Results, settings: Settings, scale: Scale, warmed: Boot, empty: Boot, limit: int
) -> None:
    json_size, traced = measure_entries(settings, min(limit, SIZE_SAMPLE))
    per_entry_rss = (warmed.rss - empty.rss) / warmed.entries
    per_entry_accounted = warmed.cache_bytes / warmed.entries
    results.figure(SECTION, "RSS warmed", warmed.rss / 2**20, "MiB")
    results.figure(SECTION, "RSS empty cache", empty.rss / 2**20, "MiB")
    results.figure(SECTION, "memory per cached order (RSS)", per_entry_rss, "B")
    results.figure(SECTION, "memory per cached order (cache's accounting)", per_entry_accounted, "B")
    results.figure(
        SECTION,
        "memory per cached order (tracemalloc)",
        traced,
        "B",
        note=f"retained by {min(limit, SIZE_SAMPLE):,} entries put in an OrderCache in the bench process",
    )
    results.figure(
        SECTION, "order JSON size (mean)", json_size, "B", note=f"API bytes of {SIZE_SAMPLE:,} cached orders"
    )
    results.ratio(
        SECTION,
        "RSS per cached order / JSON size",
        per_entry_rss / json_size,
        ("<=", 1.5),
        f"(RSS with {warmed.entries:,.0f} cached − RSS empty) / entries, against the mean JSON",
        baseline=f"the order's JSON: {json_size:,.0f} B",
    )
    results.ratio(SECTION, "tracemalloc per cached order / JSON size", traced / json_size)
    results.ratio(SECTION, "cache's accounting / tracemalloc per order", per_entry_accounted / traced)
    say(f"boot: PSS of {PSS_REPLICAS} replicas holding {scale.pss_cache_entries:,} orders each")
    pss = replicas_pss(settings, scale.pss_cache_entries)
    supervisor, *replicas = pss.values()
    results.figure(
        SECTION,
        f"API PSS, {PSS_REPLICAS} replicas × {scale.pss_cache_entries:,} cached orders",
        sum(pss.values()) / 1e6,
        "MB",
        ("<=", 150),
        "supervisor " + " + ".join(f"{v / 1e6:.0f}" for v in [supervisor, *replicas]) + " MB (replicas)",
        baseline=f"the cached JSON itself: {PSS_REPLICAS * scale.pss_cache_entries * json_size / 1e6:.0f} MB",
    )


def raw_scan(settings: Settings, limit: int) -> dict[str, float]:
    env = {**os.environ, **settings.to_env()}
    started = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "bench.rawscan", "--limit", str(limit), "--chunk", str(CHUNK)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    wall = time.perf_counter() - started
    if done.returncode != 0:
        raise RuntimeError(f"raw scan failed: {done.stderr[-1000:]}")
    figures = json.loads(done.stdout.strip().splitlines()[-1])
    if figures["rows"] != limit:
        raise RuntimeError(f"raw scan read {figures['rows']} rows, wanted {limit}")
    return {**figures, "wall_s": wall}


def boot_api(settings: Settings, entries: int, probe: str) -> Boot:
    port = free_port()
    s = dataclasses.replace(settings, cache_max_entries=entries, api_port=port, api_replicas=1)
    base = f"http://127.0.0.1:{port}"
    with Service("api", s, f"boot-api-{entries}", ("--port", str(port), "--replicas", "1")) as api:
        first = api.wait_http(f"/order/{probe}", port, timeout=60, interval=0.002)
        seconds = api.wait_http("/readyz", port, timeout=600, interval=0.002)
        time.sleep(1.0)
        rss = api.rss_bytes()
        text = scrape(f"{base}/metrics")
        return Boot(
            first_order_s=first,
            seconds=seconds,
            rss=rss,
            entries=total(text, "orderview_api_cache_entries") or 0.0,
            cache_bytes=total(text, "orderview_api_cache_bytes") or 0.0,
        )


IMPORT_PROFILE: list[str] = ["(not measured)"]


def imports_alone() -> float:
    """Seconds of `python -X importtime -c 'import api.main'`; keeps its largest imports (by
    cumulative time, top-level packages) in IMPORT_PROFILE for the report."""
    started = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-X", "importtime", "-c", "import api.main"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    seconds = time.perf_counter() - started
    tops = []
    for line in done.stderr.splitlines():
        parts = line.removeprefix("import time:").split("|")
        if len(parts) == 3 and parts[1].strip().isdigit():
            depth = len(parts[2]) - len(parts[2].lstrip())  # 1: imported by -c, 3: by api.main
            if depth <= 3:
                tops.append((int(parts[1]), parts[2].strip()))
    tops.sort(reverse=True)
    IMPORT_PROFILE[:] = [", ".join(f"{name} {us / 1000:.0f} ms" for us, name in tops[1:7] if name)]
    return seconds


def replicas_pss(settings: Settings, entries: int) -> dict[int, int]:
    """PSS by pid (the supervisor first) of `python -m api` with its default replicas, each
    holding `entries` cached orders."""
    port = free_port()
    s = dataclasses.replace(settings, cache_max_entries=entries, api_port=port, api_replicas=PSS_REPLICAS)
    base = f"http://127.0.0.1:{port}"
    with Service("api", s, "boot-api-pss", ("--port", str(port))) as api:
        api.wait_http("/readyz", port, timeout=600)
        wait_until(
            lambda: (
                (total(scrape(f"{base}/metrics"), "orderview_api_cache_entries") or 0)
                >= entries * PSS_REPLICAS
            ),
            120,
            f"the replicas did not cache {entries:,} orders each in time",
        )
        time.sleep(1.0)
        pss = api.pss_bytes()
    if len(pss) != 1 + PSS_REPLICAS:
        raise RuntimeError(f"expected a supervisor and {PSS_REPLICAS} replicas, found pids {sorted(pss)}")
    return pss


def measure_entries(settings: Settings, sample: int) -> tuple[float, float]:
    """(mean size of the bytes the API serves for the most recent orders, bytes retained per cache
    entry as tracemalloc counts them) for `sample` entries read and built as the warm-up does."""
    cache = OrderCache(sample, 2**40)
    with psycopg.connect(settings.dsn("api")) as conn:
        gc.collect()
        tracemalloc.start()
        before = tracemalloc.get_traced_memory()[0]
        rows = conn.execute(RECENT_SNAPSHOTS, {"limit": sample}, binary=True).fetchall()
        size = statistics.mean(len(row[1]) for row in rows)
        for row in rows:
            cache.warm(CachedOrder.from_row(row))
        count = len(rows)
        del rows
        gc.collect()
        retained = tracemalloc.get_traced_memory()[0] - before
        tracemalloc.stop()
    if len(cache) != count:
        raise RuntimeError(f"OrderCache took {len(cache)} of {count} entries")
    return size, retained / count
