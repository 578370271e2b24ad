"""What operators do to a live topic and around it — compaction, delete-records, more partitions,
a missing topic, a migration that refuses every row, a redrive — against real worker processes,
the real broker and the real database."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from dataclasses import replace

import orjson
import psycopg
import pytest

from harness import ROOT
from harness.processes import Projector
from harness.topics import end_offset
from orderview.bootstrap import ensure_topics
from orderview.settings import Settings
from projector import faults
from projector.adapters.kafka import KafkaLog
from projector.audit import audit
from projector.rebuild import TrimmedLog, rebuild
from projector.redrive import Choice, redrive
from tests import logops, support
from tests.readmodel import message, order, orders, positions, snapshots, wait_for_orders


def log_lines(p: Projector) -> list[dict]:
    return [orjson.loads(line) for line in p.log_text().splitlines() if line.startswith("{")]


def critical_lines(p: Projector) -> list[dict]:
    return [line for line in log_lines(p) if line["level"] == "critical"]


def readiness(p: Projector) -> tuple[int, str]:
    status, body = p.get("/readyz", p.port)
    return status, orjson.loads(body).get("reason", "")


def run(module: str, settings: Settings, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", module, *args],
        cwd=ROOT, env={**os.environ, **settings.to_env()}, capture_output=True, text=True, timeout=180,
    )  # fmt: skip


async def record_gone(s: Settings, offset: int) -> bool:
    kafka_log = KafkaLog(s, s.orders_topic)
    await kafka_log.start()
    try:
        found = await kafka_log.first_record(0, offset)
        return found is None or found.offset != offset
    finally:
        await kafka_log.stop()


# --- compaction and retention -----------------------------------------------------------------


async def test_a_last_applied_record_compacted_away_is_expected_and_the_worker_goes_on(
    one_partition: Settings,
) -> None:
    s = one_partition
    await logops.recreate_orders_topic_compacted(s)
    first = Projector(s, "projector-before-compaction").start().wait_ready()
    await support.produce(s, orders("c", 20))
    await wait_for_orders(s, 20)
    assert first.terminate() == 0
    newer = [message(order(f"c-{i}", locale="ru")) for i in range(20)]
    await support.produce(s, newer)

    async def compacted() -> bool:  # new records roll segments; the cleaner needs closed ones
        await support.produce(s, [message(order("filler", locale=str(time.monotonic_ns())))])
        return await record_gone(s, 19)

    await support.wait_until(compacted, timeout=90, interval=0.5, message="offset 19 compacted away")
    after = Projector(s, "projector-after-compaction").start().wait_ready()
    try:
        await support.wait_until(
            lambda: all(snapshots(s).get(f"c-{i}", {}).get("locale") == "ru" for i in range(20)),
            message="the newer versions applied",
        )
        assert after.metric("orderview_projector_applied_record_deleted_total", 'reason="compaction"') == 1
        said = [line for line in log_lines(after) if "deleted from the log since (compaction)" in line["msg"]]
        assert len(said) == 1 and said[0]["offset"] == 19
        assert readiness(after)[0] == 200 and not critical_lines(after)
    finally:
        assert after.terminate() == 0
    found = await audit(s)
    assert found.total("missing") == found.total("lost") == 0


async def test_records_deleted_before_they_were_applied_are_reported_lost_and_the_partition_goes_on(
    one_partition: Settings,
) -> None:
    s = one_partition
    p = Projector(s, "projector-records-deleted").start().wait_ready()
    try:
        await support.produce(s, orders("kept", 10))
        await wait_for_orders(s, 10)
        # The worker falls far behind (stopped, as a slow one would be) while retention deletes
        # records it has not read: it can have fetched at most one fetch's worth of them.
        with p.paused():
            await support.produce(s, orders("late", 12_000))
            await logops.delete_records(s, 0, 10_010)
        total = 10 + 12_000
        await support.wait_until(lambda: positions(s).get(0) == total, timeout=120, message="caught up")
        lost = p.metric("orderview_projector_records_lost_total", 'reason="deleted_before_applied"')
        applied = len(snapshots(s))
        assert lost > 0 and applied + lost == total, "every record applied, or counted lost"
        [said] = [
            line for line in log_lines(p) if "deleted from the log before they were applied" in line["msg"]
        ]
        assert said["level"] == "error" and said["to"] == 10_010 and said["records"] == lost
        assert readiness(p)[0] == 200 and not critical_lines(p)
    finally:
        assert p.terminate() == 0
    found = await audit(s)
    assert (found.total("missing"), found.total("not_yet_applied"), found.total("lost")) == (0, 0, lost)
    strict = run("projector.audit", s, "--strict")
    assert strict.returncode == 1 and f"LOST {int(lost):,} records" in strict.stdout


async def test_a_truncating_rebuild_refuses_a_trimmed_log_and_keep_rebuilds_without_losing_an_order(
    one_partition: Settings,
) -> None:
    s = one_partition
    await support.produce(s, orders("r", 20))
    assert await rebuild(s) == 20
    await logops.delete_records(s, 0, 10)

    refused = run("projector.rebuild", s, "--truncate")
    assert refused.returncode == 1
    assert "refusing to truncate: partition 0" in refused.stderr and "starts at offset 10" in refused.stderr
    assert "--keep" in refused.stderr and "--accept-loss" in refused.stderr
    assert len(snapshots(s)) == 20, "nothing was truncated"

    changed = [message(order(f"r-{i}", locale="ru")) for i in range(10, 20)]
    await support.produce(s, changed)
    assert await rebuild(s, keep=True) == 20
    after = snapshots(s)
    assert len(after) == 20, "orders whose records are gone are kept"
    assert {after[f"r-{i}"]["locale"] for i in range(10, 20)} == {"ru"}, "the log's latest versions"
    assert positions(s) == {0: 30}
    found = await audit(s)
    assert (found.total("missing"), found.total("lost")) == (0, 0), "applied before the trim: not lost"

    with pytest.raises(TrimmedLog):
        await rebuild(s, truncate=True)
    assert await rebuild(s, truncate=True, accept_loss=True) == 20
    assert len(snapshots(s)) == 10, "told explicitly, it rebuilds what the log holds"


# --- versions across partitions ---------------------------------------------------------------


async def test_an_older_version_from_another_partition_is_dead_lettered_stale_and_never_applied(
    clean_settings: Settings,
) -> None:
    s = clean_settings
    now = int(time.time() * 1000)
    newer, older = order("v-1", locale="en"), order("v-1", locale="ru")
    p = Projector(s, "projector-stale").start().wait_ready()
    try:
        await support.produce(s, [message(newer)], partition=1, timestamp_ms=now)
        await wait_for_orders(s, 1)
        [sent] = await support.produce(s, [message(older)], partition=2, timestamp_ms=now - 600_000)
        [letter] = await support.read_topic(s, s.dlq_topic, 1)
        h = {
            k: v.decode()
            for k, v in letter.headers
            if k.startswith("dlq.") and not k.startswith("dlq.header.")
        }
        assert (h["dlq.reason"], h["dlq.partition"], h["dlq.offset"]) == (
            "stale_version",
            "2",
            str(sent.offset),
        )
        assert f"older than the one applied (time {now} ms, partition 1, offset 0)" in h["dlq.error"]
        assert snapshots(s)["v-1"]["locale"] == "en", "the order did not go back in time"
        await support.wait_until(lambda: p.metric("orderview_projector_stale_versions_total") == 1)
    finally:
        assert p.terminate() == 0
    found = await audit(s)
    assert (found.total("applied"), found.total("dead_lettered"), found.total("missing")) == (1, 1, 0)


async def test_partitions_added_under_a_running_worker_keep_every_order_at_its_latest_version(
    one_partition: Settings,
) -> None:
    s = one_partition
    p = Projector(s, "projector-partitions-added").start().wait_ready()
    try:
        await support.produce(s, orders("grow", 60))
        await wait_for_orders(s, 60)
        await logops.add_partitions(s, 3)
        await support.produce(s, [message(order(f"grow-{i}", locale="ru")) for i in range(60)])
        await support.wait_until(
            lambda: all(o["locale"] == "ru" for o in snapshots(s).values()),
            timeout=120,
            message="every order at its newest version, from whichever partition it now lands on",
        )
        assert set(positions(s)) == {0, 1, 2}
        assert readiness(p)[0] == 200 and not critical_lines(p)
    finally:
        assert p.terminate() == 0
    found = await audit(s)
    assert (found.total("missing"), found.total("dead_lettered")) == (0, 0)


# --- topics missing ----------------------------------------------------------------------------


@pytest.mark.parametrize("when", ["before-the-worker-starts", "under-a-running-worker"])
async def test_a_missing_dead_letter_topic_holds_back_only_what_follows_a_bad_message_and_says_so(
    one_partition: Settings, when: str
) -> None:
    s = one_partition
    if when == "before-the-worker-starts":
        await logops.delete_topic(s, s.dlq_topic)
        p = Projector(s, f"projector-dlq-missing-{when}").start()
    else:
        p = Projector(s, f"projector-dlq-missing-{when}").start().wait_ready()
    try:
        if when == "under-a-running-worker":
            await logops.delete_topic(s, s.dlq_topic)
        await support.produce(s, [*orders("before", 5), (b"before-5", b"not json"), *orders("after", 5)])
        await wait_for_orders(s, 5)
        sentence = (
            f"the dead-letter topic {s.dlq_topic!r} does not exist: create it (python -m orderview.bootstrap"
        )
        await support.wait_until(lambda: sentence in readiness(p)[1], message="readiness naming the topic")
        await asyncio.sleep(3)
        assert sorted(snapshots(s)) == [f"before-{i}" for i in range(5)], "the orders after the bad one wait"
        assert positions(s) == {0: 5}
        said = [line for line in log_lines(p) if sentence in line.get("reason", line["msg"])]
        assert 1 <= len(said) <= 2, "said once, not at every retry"
        assert sum("not found in cluster metadata" in line["msg"] for line in log_lines(p)) <= 2

        await ensure_topics(s)
        await wait_for_orders(s, 10)
        await support.wait_until(lambda: readiness(p)[0] == 200, message="ready again")
        assert positions(s) == {0: 11}
        assert await end_offset(s, s.dlq_topic) == 1, "the bad message dead-lettered once"
    finally:
        assert p.terminate() == 0


async def test_a_worker_started_without_its_orders_topic_waits_not_ready_naming_it(
    one_partition: Settings,
) -> None:
    s = one_partition
    await logops.delete_topic(s, s.orders_topic)
    p = Projector(s, "projector-orders-missing").start()
    try:
        sentence = f"the orders topic {s.orders_topic!r} does not exist"
        await support.wait_until(lambda: _reason_or_none(p) and sentence in _reason_or_none(p), timeout=60)
        await ensure_topics(s)
        p.wait_ready(90)
        await support.produce(s, orders("late-topic", 5))
        await wait_for_orders(s, 5, timeout=90)
    finally:
        assert p.terminate() == 0


def _reason_or_none(p: Projector) -> str | None:
    try:
        return readiness(p)[1]
    except OSError:
        return None


# --- a database that refuses everything, and redrives --------------------------------------------


@pytest.mark.parametrize("batch_size", [500, 1], ids=["batches-of-500", "batches-of-1"])
async def test_a_migration_that_refuses_every_order_stops_the_worker_and_dead_letters_none(
    one_partition: Settings, batch_size: int
) -> None:
    s = replace(one_partition, batch_size=batch_size)
    p = Projector(s, f"projector-refuses-all-{batch_size}").start().wait_ready()
    await support.produce(s, orders("fine", 5))
    await wait_for_orders(s, 5)
    with psycopg.connect(s.dsn("owner"), autocommit=True) as conn:
        conn.execute("ALTER TABLE orders ADD CONSTRAINT refuse_all CHECK (order_uid = '') NOT VALID")
    try:
        await support.produce(s, orders("refused", 30))
        assert p.wait_exit(60) == faults.EXIT_FAILED
        [why] = critical_lines(p)
        assert "the database refuses every order, a valid order of the projector's own too" in why["msg"]
        assert 'check constraint "refuse_all"' in why["msg"] and "none of them is dead-lettered" in why["msg"]
        assert positions(s) == {0: 5} and await end_offset(s, s.dlq_topic) == 0
    finally:
        with psycopg.connect(s.dsn("owner"), autocommit=True) as conn:
            conn.execute("ALTER TABLE orders DROP CONSTRAINT refuse_all")
    again = Projector(s, f"projector-refuses-none-{batch_size}").start().wait_ready()
    try:
        await wait_for_orders(s, 35)
    finally:
        assert again.terminate() == 0


async def test_dead_letters_redriven_twice_are_applied_once_and_never_over_a_newer_version(
    one_partition: Settings,
) -> None:
    s = one_partition
    with psycopg.connect(s.dsn("owner"), autocommit=True) as conn:
        conn.execute("ALTER TABLE deliveries ADD CONSTRAINT no_city CHECK (city <> 'Forbidden City')")
    refused = [order(f"red-{i}") for i in range(8)]
    for o in refused:
        o["delivery"]["city"] = "Forbidden City"
    p = Projector(s, "projector-redrive").start().wait_ready()
    try:
        await support.produce(s, [message(o) for o in refused] + orders("ok", 5))
        await support.read_topic(s, s.dlq_topic, 8)
        await wait_for_orders(s, 5)
        # a newer version of red-0 arrives, and is applied, before the letters are redriven
        newer = order("red-0", locale="ru")
        await support.produce(s, [message(newer)])
        await wait_for_orders(s, 6)
        with psycopg.connect(s.dsn("owner"), autocommit=True) as conn:
            conn.execute("ALTER TABLE deliveries DROP CONSTRAINT no_city")

        dry = await redrive(s, Choice(reasons=frozenset({"db_rejected"})), dry_run=True)
        assert (dry.chosen["db_rejected"], dry.redriven) == (8, 8)
        before = positions(s)[0]
        done = run("projector.redrive", s, "--reason", "db_rejected")
        assert done.returncode == 0 and "redrove 8" in done.stdout, done.stdout + done.stderr
        await wait_for_orders(s, 13)
        assert snapshots(s)["red-0"]["locale"] == "ru", "a redrive never replaces a newer version"
        assert {snapshots(s)[f"red-{i}"]["delivery"]["city"] for i in range(1, 8)} == {"Forbidden City"}

        again = run("projector.redrive", s, "--reason", "db_rejected")
        assert again.returncode == 0 and "redrove 8" in again.stdout
        await support.wait_until(lambda: p.metric("orderview_projector_redrives_skipped_total") == 8)
        assert len(snapshots(s)) == 13
        assert positions(s)[0] == before + 16
        stale = [
            r
            for r in await support.read_topic(s, s.dlq_topic, 9)
            if dict(r.headers)["dlq.reason"] == b"stale_version"
        ]
        assert len(stale) == 1, "red-0's old version, once: stale"
    finally:
        assert p.terminate() == 0
    found = await audit(s)
    assert found.total("missing") == 0 and found.total("resent") >= 8
