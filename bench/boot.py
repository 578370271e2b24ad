"""Boot: an API replica from process start to /readyz 200, warming its cache from a big snapshot
table, against a raw scan of the same rows by the same query; and memory per cached order."""

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

import orjson
import psycopg
from psycopg.types.json import set_json_loads

from api.cache import CachedOrder, OrderCache
from api.freshness import CHUNK
from api.views import RECENT_SNAPSHOTS
from bench import data
from bench.env import ROOT, say
from bench.procs import Service, free_port, http_get, metric
from bench.results import Results
from bench.scale import Scale
from orderview.settings import Settings

SECTION = "boot"
SEED = 505
BASE_ORDERS = 20_000  # distinct emulator orders; the rest are copies under new uids
SIZE_SAMPLE = 5_000


@dataclasses.dataclass
class Boot:
    seconds: float  # process start → /readyz 200
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
    limit = scale.boot_cache_entries
    say(f"boot: raw scans and API boots warming {limit:,}")
    raw_scan(settings, limit)  # unmeasured: the same pages in PostgreSQL's and the OS's caches for both
    raws, boots = [], []
    for _ in range(2):
        raws.append(raw_scan(settings, limit))
        boots.append(boot_api(settings, limit))
    empty = boot_api(settings, 0)
    if any(b.entries != limit for b in boots):
        raise RuntimeError(f"the API warmed {[b.entries for b in boots]} entries, wanted {limit}")

    raw_wall = statistics.median(r["wall_s"] for r in raws)
    raw_scan_s = statistics.median(r["scan_s"] for r in raws)
    warm = statistics.median(b.seconds for b in boots)
    results.figure(SECTION, "raw scan, process start → done", raw_wall, "s")
    results.figure(SECTION, "raw scan, query only", raw_scan_s, "s")
    results.figure(SECTION, f"API start → ready, warming {limit:,}", warm, "s")
    results.figure(SECTION, "API start → ready, empty cache", empty.seconds, "s")
    results.ratio(
        SECTION, "raw scan / API warm boot", raw_wall / warm, (">=", 0.5), "both from process start"
    )
    results.ratio(
        SECTION,
        "raw query / (warm boot − empty boot)",
        raw_scan_s / max(1e-9, warm - empty.seconds),
        note="the warm-up alone against the query alone",
    )
    warmed = boots[-1]
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
    results.ratio(SECTION, "RSS per cached order / JSON size", per_entry_rss / json_size)
    results.ratio(SECTION, "tracemalloc per cached order / JSON size", traced / json_size)
    results.ratio(SECTION, "cache's accounting / tracemalloc per order", per_entry_accounted / traced)
    results.settings[SECTION] = (
        f"{count:,} snapshots; API `python -m api --port P --replicas 1` with ORDERVIEW_CACHE_MAX_ENTRIES={limit:,} "
        f"(and =0 for the empty boot), /readyz polled every 20 ms; raw scan `python -m bench.rawscan` "
        f"(api.views.RECENT_SNAPSHOTS, server-side cursor, {CHUNK} rows per fetch, bodies as bytes), "
        "after one unmeasured scan; 2 rounds of raw → API, medians; RSS from /proc 1 s after ready"
    )
    results.series["boot"] = {"raw scan": raw_wall, "API warm boot": warm, "API empty boot": empty.seconds}


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


def boot_api(settings: Settings, entries: int) -> Boot:
    port = free_port()
    s = dataclasses.replace(settings, cache_max_entries=entries, api_port=port, api_replicas=1)
    with Service(f"boot-api-{entries}", "api", s, ("--port", str(port), "--replicas", "1")) as api:
        seconds = api.wait_http(f"http://127.0.0.1:{port}/readyz", timeout=600, interval=0.02)
        time.sleep(1.0)
        rss = api.rss_bytes()
        status, body, _ = http_get(f"http://127.0.0.1:{port}/metrics")
        if status != 200:
            raise RuntimeError(f"/metrics answered {status}")
        text = body.decode()
        return Boot(
            seconds=seconds,
            rss=rss,
            entries=metric(text, "orderview_api_cache_entries") or 0.0,
            cache_bytes=metric(text, "orderview_api_cache_bytes") or 0.0,
        )


def measure_entries(settings: Settings, sample: int) -> tuple[float, float]:
    """(mean size of the bytes the API serves for the most recent orders, bytes retained per cache
    entry as tracemalloc counts them) for `sample` entries built as the warm-up builds them."""
    with psycopg.connect(settings.dsn("api")) as conn:
        set_json_loads(orjson.loads, conn)
        rows = conn.execute(RECENT_SNAPSHOTS, {"limit": sample}).fetchall()
    size = statistics.mean(len(body.encode()) for _, body, _ in rows)
    cache = OrderCache(sample, 2**40)
    gc.collect()
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    for uid, body, updated_at in rows:
        cache.warm(CachedOrder.from_snapshot(uid, body, updated_at))
    gc.collect()
    retained = tracemalloc.get_traced_memory()[0] - before
    tracemalloc.stop()
    if len(cache) != len(rows):
        raise RuntimeError(f"OrderCache took {len(cache)} of {len(rows)} entries")
    return size, retained / len(rows)
