"""Redriving dead letters once their cause is mended, and redriving them again.

1. N valid orders are produced, each with a city that a constraint refuses (the projector's own
   canary order passes it, so the refusals are the orders' fault): N db_rejected letters.
2. The constraint is dropped; `python -m projector.redrive --reason db_rejected` runs (it scans
   the DLQ and publishes), and the projector applies every order: the command's time, and the
   time until the last order is visible.
3. The same redrive again: every copy is skipped by the projector. Orders applied twice and new
   dead letters must both be 0.
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import subprocess
import sys
import time
from collections.abc import Callable

import orjson
import psycopg

from bench import data
from bench.env import say
from bench.produce import produce
from bench.results import Results
from bench.scale import Scale
from bench.services import Service
from harness import ROOT
from harness.metrics import total
from harness.ports import free_port
from harness.readiness import http_get, wait_until
from harness.topics import end_offset
from orderview.settings import Settings

SECTION = "redrive"
SEED = 404
REFUSED_CITY = "Refused by the bench"  # as in REFUSE_THE_CITY
REFUSE_THE_CITY = """
ALTER TABLE deliveries ADD CONSTRAINT bench_refused_city CHECK (city <> 'Refused by the bench') NOT VALID
"""
ALLOW_AGAIN = "ALTER TABLE deliveries DROP CONSTRAINT bench_refused_city"
SNAPSHOTS = "SELECT count(*) FROM order_snapshots"


def run(results: Results, scale: Scale, settings: Settings) -> None:
    n = scale.redrive_letters
    settings = dataclasses.replace(settings, projector_port=free_port())
    orders = [_in_refused_city(o) for o in data.valid_orders(n, seed=SEED)]
    _owner(settings, REFUSE_THE_CITY)
    with Service("projector", settings, "redrive-projector") as projector:
        projector.wait_http("/readyz", settings.projector_port)
        say(f"redrive: {n:,} orders the database refuses")
        asyncio.run(produce(settings, orders))
        _wait(lambda: _end(settings, settings.dlq_topic) >= n, "every order dead-lettered")
        _owner(settings, ALLOW_AGAIN)

        say("redrive: python -m projector.redrive --reason db_rejected")
        started = time.perf_counter()
        command_s = _redrive(settings)
        _wait(lambda: _snapshots(settings) >= n, "every redriven order applied")
        visible_s = time.perf_counter() - started

        say("redrive: the same letters again")
        _redrive(settings)
        _wait(lambda: _skipped(settings) >= n, "every second copy skipped")
        applied_twice = _skipped(settings) - n
        extra_letters = _end(settings, settings.dlq_topic) - n
        snapshots = _snapshots(settings)
    results.figure(
        SECTION, f"redrive command, {n:,} letters", command_s, "s", note="scan of the DLQ and publish"
    )
    results.figure(
        SECTION,
        "redrive → every order applied",
        visible_s,
        "s",
        note=f"{n / visible_s:,.0f} letters/s end to end",
    )
    results.figure(SECTION, "orders applied twice after a second redrive", applied_twice, "orders")
    results.figure(SECTION, "dead letters added by the second redrive", extra_letters, "letters")
    results.note(SECTION, f"{snapshots:,} orders in the read model for {n:,} letters redriven twice.")


def _redrive(settings: Settings) -> float:
    started = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "projector.redrive", "--reason", "db_rejected"],
        cwd=ROOT, env={**os.environ, **settings.to_env()}, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    if done.returncode != 0:
        raise RuntimeError(f"redrive failed: {done.stderr[-2000:]}")
    return time.perf_counter() - started


def _skipped(settings: Settings) -> float:
    status, body, _ = http_get(f"http://127.0.0.1:{settings.projector_port}/metrics")
    if status != 200:
        return 0.0
    return total(body.decode(), "orderview_projector_redrives_skipped_total") or 0.0


def _end(settings: Settings, topic: str) -> int:
    return asyncio.run(end_offset(settings, topic))


def _snapshots(settings: Settings) -> int:
    with psycopg.connect(settings.dsn("owner")) as conn:
        return conn.execute(SNAPSHOTS).fetchone()[0]


def _in_refused_city(order: data.Order) -> data.Order:
    document = orjson.loads(order.value)
    document["delivery"]["city"] = REFUSED_CITY
    return data.Order(order.uid, orjson.dumps(document))


def _owner(settings: Settings, statement: str) -> None:
    with psycopg.connect(settings.dsn("owner"), autocommit=True) as conn:
        conn.execute(statement)


def _wait(predicate: Callable[[], bool], what: str, timeout: float = 600.0) -> None:
    wait_until(predicate, timeout, f"redrive: timed out waiting for {what}")
