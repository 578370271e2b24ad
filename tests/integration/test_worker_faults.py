"""What stops a worker, and what it waits for: positions the log cannot have produced, errors
nobody anticipated, services that are not there yet. Real worker processes, broker, database."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys

import orjson
import psycopg

from harness import ROOT
from harness.processes import Projector
from orderview.settings import Settings
from projector import faults
from projector.rebuild import rebuild
from tests import support
from tests.readmodel import (
    committed_offsets,
    ops,
    orders,
    positions,
    recreate_orders_topic,
    snapshots,
    wait_for_orders,
)


def critical_lines(p: Projector) -> list[dict]:
    return [line for line in map(orjson.loads, p.log_text().splitlines()) if line["level"] == "critical"]


async def test_a_topic_recreated_under_a_running_worker_stops_it_with_how_to_rebuild_and_skips_nothing(
    one_partition: Settings,
) -> None:
    s = one_partition
    p = Projector(s, "projector-topic-recreated").start().wait_ready()
    await support.produce(s, orders("old", 100))
    await wait_for_orders(s, 100)
    await recreate_orders_topic(s)
    await support.produce(s, orders("new", 50))
    assert p.wait_exit(120) == faults.EXIT_UNTRUSTED_POSITION
    [why] = critical_lines(p)
    assert "the topic was deleted and created again" in why["msg"]
    assert "python -m projector.rebuild --keep" in why["msg"], "advice that destroys nothing comes first"
    assert {uid.split("-")[0] for uid in snapshots(s)} == {"old"}, "none of the new orders skipped or applied"
    assert positions(s) == {0: 100}

    assert await rebuild(s, truncate=True) == 50
    assert {uid.split("-")[0] for uid in snapshots(s)} == {"new"}
    resumed = Projector(s, "projector-after-rebuild").start().wait_ready()
    try:
        await support.produce(s, orders("later", 5))
        await wait_for_orders(s, 55)
        assert positions(s) == {0: 55}
    finally:
        assert resumed.terminate() == 0


async def test_a_worker_started_on_a_recreated_longer_topic_stops_before_applying_anything(
    one_partition: Settings,
) -> None:
    s = one_partition
    first = Projector(s, "projector-before-recreation").start().wait_ready()
    await support.produce(s, orders("old", 100))
    await wait_for_orders(s, 100)
    assert first.terminate() == 0
    await recreate_orders_topic(s)
    await support.produce(s, orders("new", 150))
    second = Projector(s, "projector-on-longer-topic").start()
    assert second.wait_exit(90) == faults.EXIT_UNTRUSTED_POSITION
    assert "the topic was deleted and created again" in critical_lines(second)[0]["msg"]
    assert {uid.split("-")[0] for uid in snapshots(s)} == {"old"}
    assert positions(s) == {0: 100}


async def test_an_error_nobody_anticipated_stops_the_worker_loudly_and_records_nothing_of_the_batch(
    one_partition: Settings,
) -> None:
    s = one_partition
    p = Projector(s, "projector-privilege-revoked").start().wait_ready()
    await support.produce(s, orders("first", 20))
    await wait_for_orders(s, 20)
    with psycopg.connect(s.dsn("owner"), autocommit=True) as conn:
        conn.execute(f'REVOKE INSERT ON items FROM "{s.pg_projector_user}"')
    try:
        await support.produce(s, orders("second", 20))
        assert p.wait_exit(60) == faults.EXIT_FAILED
        [why] = critical_lines(p)
        assert "InsufficientPrivilege" in why["exc"]
        assert positions(s) == {0: 20} and len(snapshots(s)) == 20
        assert (await committed_offsets(s))[0] == 20
    finally:
        with psycopg.connect(s.dsn("owner"), autocommit=True) as conn:
            conn.execute(f'GRANT INSERT ON items TO "{s.pg_projector_user}"')
    again = Projector(s, "projector-privilege-back").start().wait_ready()
    try:
        await wait_for_orders(s, 40)
        assert positions(s) == {0: 40}
    finally:
        assert again.terminate() == 0


async def test_a_worker_started_while_the_broker_is_down_waits_not_ready_then_projects(
    one_partition: Settings,
) -> None:
    s = one_partition
    ops("kafka.sh", "stop")
    try:
        p = Projector(s, "projector-before-broker").start()
        await asyncio.sleep(8)
        assert p.proc is not None and p.proc.poll() is None, "still running"
        status, body = p.get("/readyz", p.port)
        assert status == 503 and b"broker unavailable" in body, body
    finally:
        ops("kafka.sh", "start")
    try:
        p.wait_ready(90)
        await support.produce(s, orders("late", 10))
        await wait_for_orders(s, 10)
    finally:
        assert p.terminate() == 0


async def test_a_worker_started_while_the_database_is_down_waits_not_ready_then_projects(
    one_partition: Settings,
) -> None:
    s = one_partition
    await support.produce(s, orders("waiting", 10))
    ops("postgres.sh", "stop")
    try:
        p = Projector(s, "projector-before-database").start()
        await support.wait_until(lambda: _not_ready_for(p, b"database unavailable"), timeout=60)
    finally:
        ops("postgres.sh", "start")
    try:
        await wait_for_orders(s, 10)
        p.wait_ready(60)
    finally:
        assert p.terminate() == 0


def _not_ready_for(p: Projector, what: bytes) -> bool:
    try:
        status, body = p.get("/readyz", p.port)
    except OSError:
        return False
    return status == 503 and what in body


def test_a_worker_refuses_to_listen_off_loopback_with_default_passwords_in_one_sentence(
    settings: Settings,
) -> None:
    env = {**os.environ, **settings.to_env(), "ORDERVIEW_PROJECTOR_HOST": "0.0.0.0"}
    out = subprocess.run(
        [sys.executable, "-m", "projector"], env=env, capture_output=True, text=True, timeout=60, cwd=ROOT
    )
    assert out.returncode == 1
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("[orderview] refusing to start:"), out.stderr
