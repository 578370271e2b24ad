"""A history read's latency against GET /order's, one API process under the same wrk load.

    .venv/bin/python -m bench.history [--orders 2000] [--seconds 10]

Orders of 5 and of 50 versions are written into a database of the bench's own as the projector
keeps them (tests/history.py: snapshots and order_history rows), then one `python -m api`
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

from bench import data, env, wrk
from bench.env import say
from bench.procs import Service, free_port, http_get
from orderview.settings import Settings
from tests.history import Version, later_times, write_history

SEED = 211
SERVER_CPU, WRK_CPU = "0", "1"
VERSION_COUNTS = (5, 50)


def versions(order: dict, count: int, rng: random.Random) -> list[Version]:
    """`count` versions of an order, each one item's status or the address changed."""
    orders = [order]
    for n in range(1, count):
        new = json.loads(json.dumps(orders[-1]))
        if rng.random() < 0.7:
            rng.choice(new["items"])["status"] += 1
        else:
            new["delivery"]["address"] = f"{new['delivery']['address'].split(',')[0]}, apt. {n}"
        orders.append(new)
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
    path = env.OUT / f"history_{name}.txt"
    path.parent.mkdir(parents=True, exist_ok=True)
    shuffled = list(lines)
    random.Random(SEED).shuffle(shuffled)
    path.write_text("\n".join(shuffled) + "\n")
    return path


def measure(settings: Settings, uids: dict[int, list[str]], seconds: int, wrk_path: str) -> dict:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    api_settings = dataclasses.replace(settings, api_port=port, api_replicas=1)
    server = Service(
        "history-api", "api", api_settings, ("--port", str(port), "--replicas", "1"), cpus=SERVER_CPU
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
        server.wait_http(f"{base}/readyz")
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
