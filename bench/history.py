"""What history costs: ingest of new versions with history kept and without, bytes per stored
version, and a history read's latency against GET /order's.

The bench's `history` section runs all three (`run`). The read latency alone:

    .venv/bin/python -m bench.history [--orders 2000] [--seconds 10]

Orders of 5 and of 50 versions are written into a database of the bench's own as the projector
keeps them (harness/history.py: snapshots and order_history rows), then one `python -m api`
process on one core answers wrk on the other: GET /order/{uid} (cache hits), and
GET /order/{uid}/history (always from PostgreSQL: the default page of 20, the 5-version orders
whole, the 50-version orders' newest 20), each at 8 connections and at one. Loopback only,
bounded by --seconds per run. Prints the figures and writes bench/out/history.json.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import random
import time
from pathlib import Path
from statistics import fmean

import psycopg

from bench import data, env, wrk
from bench.env import say
from bench.ingest import projected_samples
from bench.produce import produce
from bench.results import Results
from bench.scale import Scale
from bench.services import Service
from harness.history import Version, later_times, write_history
from harness.ports import free_port
from harness.readiness import http_get
from harness.scratch import truncate_read_model
from orderview.settings import Settings

SECTION = "history"
SEED = 211
SERVER_CPU, WRK_CPU = "0", "1"
VERSION_COUNTS = (5, 50)
VERSIONS_PER_ORDER = 5  # in the ingest runs: the first version, then four later ones
# Runs alternate keep, off, off, keep: a drift of the machine during the section weighs on both.
INGEST_RUNS = ("keep", "off", "off", "keep")
HISTORY_SIZE = """
SELECT pg_total_relation_size('order_history'), count(*), coalesce(sum(octet_length(body_json)), 0)
FROM order_history
"""


def revisions(order: dict, count: int, rng: random.Random) -> list[dict]:
    """`count` versions of an order as a shop sends them, each one item's status or the address
    changed from the one before."""
    orders = [order]
    for n in range(1, count):
        new = json.loads(json.dumps(orders[-1]))
        if rng.random() < 0.7:
            rng.choice(new["items"])["status"] += 1
        else:
            new["delivery"]["address"] = f"{new['delivery']['address'].split(',')[0]}, apt. {n}"
        orders.append(new)
    return orders


def versions(order: dict, count: int, rng: random.Random) -> list[Version]:
    """`count` versions of an order with version times later than any written before."""
    orders = revisions(order, count, rng)
    times = later_times(count)
    return [Version(o, t, 0, i) for i, (o, t) in enumerate(zip(orders, times, strict=True))]


async def seed(settings: Settings, orders: int) -> dict[int, list[str]]:
    rng = random.Random(SEED)
    generated = data.valid_orders(orders * len(VERSION_COUNTS), seed=SEED)
    uids: dict[int, list[str]] = {count: [] for count in VERSION_COUNTS}
    for i, order in enumerate(generated):
        count = VERSION_COUNTS[i % len(VERSION_COUNTS)]
        document = json.loads(order.value)
        await write_history(settings, order.uid, versions(document, count, rng))
        uids[count].append(order.uid)
    return uids


def ids_file(name: str, lines: list[str]) -> Path:
    shuffled = list(lines)
    random.Random(SEED).shuffle(shuffled)
    return data.ids_file(f"history_{name}.txt", shuffled)


def measure(settings: Settings, uids: dict[int, list[str]], seconds: int, wrk_path: str) -> dict:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    api_settings = dataclasses.replace(settings, api_port=port, api_replicas=1)
    server = Service(
        "api", api_settings, "history-api", ("--port", str(port), "--replicas", "1"), cpus=SERVER_CPU
    )
    everyone = [uid for group in uids.values() for uid in group]
    runs = {
        "GET /order (cache hit)": (ids_file("orders", everyone), "/order/"),
        **{
            f"GET /order/history, {count} versions": (
                ids_file(f"h{count}", [f"{uid}/history" for uid in uids[count]]),
                "/order/",
            )
            for count in VERSION_COUNTS
        },
    }
    figures: dict[str, dict] = {}
    with server:
        server.wait_http("/readyz", port)
        for name, (path, prefix) in runs.items():
            probe = path.read_text().split()[0]
            status, body, headers = http_get(f"{base}{prefix}{probe}")
            if status != 200:
                raise RuntimeError(f"{name}: {probe} answered {status}")
            wrk.run(wrk_path, port, path, 2, connections=8, cpus=WRK_CPU, prefix=prefix)  # warm
            loaded = wrk.run(wrk_path, port, path, seconds, connections=8, cpus=WRK_CPU, prefix=prefix)
            single = wrk.run(wrk_path, port, path, seconds, connections=1, cpus=WRK_CPU, prefix=prefix)
            figures[name] = {
                "bytes": len(body),
                "x_cache": headers.get("X-Cache", ""),
                "c8": dataclasses.asdict(loaded),
                "c1": dataclasses.asdict(single),
            }
            say(
                f"{name}: {len(body):,} B; 8 connections {loaded.rps:,.0f} req/s p50 {loaded.p50_ms:.2f} ms "
                f"p99 {loaded.p99_ms:.2f} ms; 1 connection p50 {single.p50_ms:.3f} ms p99 {single.p99_ms:.3f} ms "
                f"(errors {loaded.errors + single.errors})"
            )
    return figures


# --- the section --------------------------------------------------------------------------------


def run(results: Results, scale: Scale, settings: Settings, wrk_path: str) -> None:
    """`settings`: a database and topics of the section's own, created by the caller."""
    count = scale.history_orders
    say(f"history: producing {count:,} orders with {VERSIONS_PER_ORDER} versions each")
    asyncio.run(produce(settings, shop_versions(count)))
    rates: dict[str, list[tuple[float, float]]] = {"keep": [], "off": []}
    stored = (0, 0, 0)
    for i, history in enumerate(INGEST_RUNS):
        say(f"history: projector with ORDERVIEW_HISTORY={history} (run {i + 1} of {len(INGEST_RUNS)})")
        rates[history].append(ingest_once(settings, history, count, i))
        if history == "keep":
            stored = _history_size(settings)
    _report_ingest(results, rates)
    _report_size(results, stored, count)
    say("history: GET /order/{uid}/history against GET /order/{uid}")
    truncate_read_model(settings)
    uids = asyncio.run(seed(settings, max(200, count // 10)))
    _report_reads(results, measure(settings, uids, scale.wrk_seconds, wrk_path))
    results.settings[SECTION] = (
        f"{count:,} emulator orders, then {VERSIONS_PER_ORDER - 1} later versions of each (an item's status "
        "advanced or the address corrected, as the emulator does), produced before measuring; `python -m "
        f"projector` run {len(INGEST_RUNS)} times over the same topic ({', '.join(INGEST_RUNS)}), each into "
        "an emptied read model with a consumer group of its own; rates from /metrics "
        "orderview_projector_projected_total polled every 100 ms, new orders up to the first version "
        "of the last, new versions after; reads: one API process on one core, wrk on the other, "
        "8 connections and 1"
    )


def shop_versions(count: int) -> list[data.Order]:
    """`count` new orders, then each one's later versions, round by round (a shop's updates come
    after its orders); every version differs from the one before, so each is history."""
    rng = random.Random(SEED)
    firsts = data.valid_orders(count, seed=SEED)
    rounds = [revisions(json.loads(o.value), VERSIONS_PER_ORDER, rng) for o in firsts]
    return [
        data.Order(o.uid, json.dumps(versions_[n]).encode())
        for n in range(VERSIONS_PER_ORDER)
        for o, versions_ in zip(firsts, rounds, strict=True)
    ]


def ingest_once(settings: Settings, history: str, count: int, run_number: int) -> tuple[float, float]:
    """(new orders/s, new versions/s) of one projector over the whole topic into an empty read model."""
    truncate_read_model(settings)
    run_settings = dataclasses.replace(
        settings,
        history=history,
        consumer_group=f"{settings.consumer_group}-history-{run_number}",
        projector_port=free_port(),
    )
    projector = Service("projector", run_settings, f"history-projector-{run_number}")
    with projector:
        samples = projected_samples(projector, count * VERSIONS_PER_ORDER)
    return _rate(samples, 0, count), _rate(samples, count, count * VERSIONS_PER_ORDER)


def _rate(samples: list[tuple[float, float]], start: int, end: int) -> float:
    """Versions/s between the first sample past `start` (the first nonzero one for 0) and the
    first at or past `end`."""
    first = next(s for s in samples if s[1] > start)
    last = next(s for s in samples if s[1] >= end)
    if last[0] <= first[0]:
        raise RuntimeError(f"too few samples between {start} and {end} versions to measure a rate")
    return (last[1] - first[1]) / (last[0] - first[0])


def _history_size(settings: Settings) -> tuple[int, int, int]:
    """(bytes of order_history with its indexes and TOAST, rows, bytes of the JSON it holds)."""
    with psycopg.connect(settings.dsn("owner")) as conn:
        row = conn.execute(HISTORY_SIZE).fetchone()
    assert row is not None
    return int(row[0]), int(row[1]), int(row[2])


def _report_ingest(results: Results, rates: dict[str, list[tuple[float, float]]]) -> None:
    for history in ("off", "keep"):
        new = fmean([r[0] for r in rates[history]])
        later = fmean([r[1] for r in rates[history]])
        results.figure(SECTION, f"new orders, history {history}", new, "orders/s")
        results.figure(SECTION, f"new versions, history {history}", later, "versions/s")
    for i, kind in enumerate(("new orders", "new versions")):
        keep = fmean([r[i] for r in rates["keep"]])
        off = fmean([r[i] for r in rates["off"]])
        results.ratio(
            SECTION,
            f"{kind}: history kept / history off",
            keep / off,
            (">=", 0.9) if kind == "new versions" else None,
            baseline=f"the same projector with ORDERVIEW_HISTORY=off, {off:,.0f}/s",
            note="every run: " + ", ".join(f"{h} {r[i]:,.0f}" for h, runs in rates.items() for r in runs),
        )


def _report_size(results: Results, stored: tuple[int, int, int], count: int) -> None:
    size, rows, json_bytes = stored
    if rows != count * (VERSIONS_PER_ORDER - 1):
        raise RuntimeError(f"order_history holds {rows} rows, {count * (VERSIONS_PER_ORDER - 1)} expected")
    results.figure(
        SECTION,
        "bytes per stored version",
        size / rows,
        "B",
        note=f"order_history with its indexes and TOAST, {rows:,} rows; their JSON: {json_bytes / rows:,.0f} B",
    )
    results.ratio(SECTION, "stored version / its JSON", size / json_bytes)


def _report_reads(results: Results, figures: dict) -> None:
    order = figures["GET /order (cache hit)"]
    for name, figure in figures.items():
        results.figure(
            SECTION,
            f"{name}: p50, 1 connection",
            figure["c1"]["p50_ms"],
            "ms",
            note=f"{figure['bytes']:,} B; 8 connections: {figure['c8']['rps']:,.0f} req/s, "
            f"p99 {figure['c8']['p99_ms']:.2f} ms",
        )
    for count in VERSION_COUNTS:
        name = f"GET /order/history, {count} versions"
        results.ratio(
            SECTION,
            f"history of {count} versions / cached order: p50",
            figures[name]["c1"]["p50_ms"] / order["c1"]["p50_ms"],
            note="a history is read from PostgreSQL each time; an order from the cache",
        )


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.history", description=__doc__.split("\n")[0])
    parser.add_argument("--orders", type=int, default=2000, help="orders of each version count")
    parser.add_argument("--seconds", type=int, default=10, help="seconds of each wrk run")
    args = parser.parse_args()
    wrk_path = env.ensure_wrk()
    with env.scratch("history") as settings:
        started = time.perf_counter()
        uids = asyncio.run(seed(settings, args.orders))
        say(
            f"wrote {args.orders:,} orders each of {VERSION_COUNTS} versions in {time.perf_counter() - started:.1f} s"
        )
        figures = measure(settings, uids, args.seconds, wrk_path)
    out = env.OUT / "history.json"
    out.write_text(json.dumps({"orders": args.orders, "seconds": args.seconds, "figures": figures}, indent=2))
    say(f"figures in {out}")


if __name__ == "__main__":
    main()
