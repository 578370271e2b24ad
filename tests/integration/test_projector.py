"""The projector against the real broker and database, run as the real worker process."""

from __future__ import annotations

import asyncio
import copy
from dataclasses import replace

import orjson
import psycopg
import pytest

from emulator.stream import expected_state, stream
from harness import scratch
from harness.orders import reference_order, reference_order_bytes
from harness.processes import Projector
from orderview.bootstrap import create_database, drop_database
from orderview.settings import Settings
from projector.rebuild import rebuild
from tests import support
from tests.readmodel import (
    count,
    message,
    not_from_snapshots,
    ops,
    order,
    orders,
    positions,
    projector_group,
    read_model,
    set_group_offsets,
    snapshots,
    wait_for_orders,
)


@pytest.fixture
def projector(clean_settings: Settings):
    p = Projector(clean_settings).start().wait_ready()
    yield p
    p.terminate()


async def test_reference_order_reaches_every_table_and_its_snapshot_equals_the_message(
    clean_settings: Settings, projector: Projector
) -> None:
    raw = reference_order_bytes()
    uid = reference_order()["order_uid"]
    await support.produce(clean_settings, [(uid.encode(), raw)])
    await wait_for_orders(clean_settings, 1)
    assert snapshots(clean_settings)[uid] == orjson.loads(raw)
    for table in ("orders", "deliveries", "payments", "items"):
        assert count(clean_settings, table) == 1, table
    with psycopg.connect(clean_settings.dsn("owner")) as conn:
        amount, currency = conn.execute("SELECT amount, currency FROM payments").fetchone()
        name, rid = conn.execute("SELECT name, rid FROM items WHERE position = 0").fetchone()
    assert (amount, currency, name, rid) == (1817, "USD", "Mascaras", "ab4219087a764ae0btest")


BAD_MESSAGES = [
    ("decode", "$", b"k1", b"\xff\xfe not utf-8"),
    ("decode", "$", b"k2", b'{"order_uid": "trunc'),
    ("decode", "$", b"k3", b""),
    ("invariant", "$key", b"not an order uid", None),  # a tombstone erases only an order_uid
    ("schema", "$.delivery.email", b"bad-email", None),
    ("schema", "$.payment.amount", b"wrong-type", None),
    ("schema", "$.locale", b"missing-field", None),
    ("invariant", "$.payment.goods_total", b"bad-total", None),
    ("invariant", "$.items[0].track_number", b"bad-track", None),
    ("too_large", "$", b"huge", None),
]


def bad_value(key: bytes, max_bytes: int) -> bytes:
    o = order(key.decode())
    match key:
        case b"bad-email":
            o["delivery"]["email"] = "not-an-email"
        case b"wrong-type":
            o["payment"]["amount"] = "1817"
        case b"missing-field":
            del o["locale"]
        case b"bad-total":
            o["payment"]["goods_total"] = 300
            o["payment"]["amount"] = 1800
        case b"bad-track":
            o["items"][0]["track_number"] = "OTHER"
        case b"huge":
            return b" " * (max_bytes + 1)
    return orjson.dumps(o)


async def test_every_bad_message_kind_reaches_the_dlq_with_reason_path_and_source(
    clean_settings: Settings, projector: Projector
) -> None:
    s = clean_settings
    sent = [
        (
            key,
            value if value is not None or key == b"not an order uid" else bad_value(key, s.max_message_bytes),
        )
        for reason, _, key, value in BAD_MESSAGES
    ]
    good = order("good-after-bad")
    await support.produce(s, [*sent, message(good)])

    records = await support.read_topic(s, s.dlq_topic, len(BAD_MESSAGES))
    by_key = {r.key: r for r in records}
    for (reason, path, key, _), (_, value) in zip(BAD_MESSAGES, sent, strict=True):
        record = by_key[key]
        h = support.headers(record)
        assert h["dlq.reason"] == reason, (key, h)
        assert h["dlq.path"] == path, (key, h)
        assert h["dlq.error"], key
        assert h["dlq.topic"] == s.orders_topic
        assert int(h["dlq.offset"]) >= 0 and int(h["dlq.partition"]) in range(s.orders_partitions)
        assert record.value == value, "the DLQ keeps the original bytes"
    await wait_for_orders(s, 1)
    assert set(snapshots(s)) == {"good-after-bad"}, "bad messages wrote no row; the stream went on"
    assert count(s, "orders") == 1


@pytest.fixture
def database_rule(clean_settings: Settings):
    """A rule the database enforces and the schema does not know: one valid event breaks it."""
    with psycopg.connect(clean_settings.dsn("owner"), autocommit=True) as conn:
        conn.execute("ALTER TABLE deliveries ADD CONSTRAINT test_rule CHECK (city <> 'Forbidden City')")
    yield
    with psycopg.connect(clean_settings.dsn("owner"), autocommit=True) as conn:
        conn.execute("ALTER TABLE deliveries DROP CONSTRAINT test_rule")


async def test_an_event_the_database_refuses_goes_to_dlq_and_the_rest_of_the_batch_is_written(
    clean_settings: Settings, database_rule: None, projector: Projector
) -> None:
    s = clean_settings
    refused = order("refused")
    refused["delivery"]["city"] = "Forbidden City"
    others = [order(f"fine-{i}") for i in range(5)]
    sent = [message(o) for o in [*others[:2], refused, *others[2:]]]
    await support.produce(s, sent)
    [record] = await support.read_topic(s, s.dlq_topic, 1)
    h = support.headers(record)
    assert h["dlq.reason"] == "db_rejected"
    assert "test_rule" in h["dlq.error"]
    assert (record.key, record.value) == message(refused), "original key and bytes"
    await wait_for_orders(s, 5)
    assert set(snapshots(s)) == {o["order_uid"] for o in others}
    assert count(s, "orders") == 5


async def test_a_new_version_replaces_the_old_one_in_every_table(
    clean_settings: Settings, projector: Projector
) -> None:
    s = clean_settings
    v1 = order("versioned")
    v2 = copy.deepcopy(v1)
    v2["delivery"]["city"] = "Haifa"
    second_item = dict(v2["items"][0], rid="second-item", total_price=100, price=100, sale=0)
    v2["items"].append(second_item)
    v2["payment"]["goods_total"] += 100
    v2["payment"]["amount"] += 100
    await support.produce(s, [message(v1)])
    await wait_for_orders(s, 1)
    await support.produce(s, [message(v2), message(v2)])  # the second is an identical re-send
    await support.wait_until(lambda: snapshots(s)["versioned"] == v2, message="version 2 applied")
    with psycopg.connect(s.dsn("owner")) as conn:
        assert conn.execute("SELECT city FROM deliveries").fetchone() == ("Haifa",)
        assert conn.execute("SELECT amount FROM payments").fetchone() == (v2["payment"]["amount"],)
        assert conn.execute("SELECT rid FROM items ORDER BY position").fetchall() == [
            (v1["items"][0]["rid"],),
            ("second-item",),
        ]
    v3 = copy.deepcopy(v2)
    v3["items"][1]["status"] += 1  # what a shop sends most: only that line's row is rewritten
    await support.produce(s, [message(v3)])
    await support.wait_until(lambda: snapshots(s)["versioned"] == v3, message="version 3 applied")
    assert not_from_snapshots(s) == [], "every table holds exactly the current version's rows"


async def test_a_seeded_mixed_stream_of_10000_gives_exact_counts(clean_settings: Settings) -> None:
    s = clean_settings
    messages = list(stream(10_000, seed=7, invalid_share=0.1, repeat_share=0.1))
    expected = expected_state(messages)
    invalid = [m for m in messages if m.kind == "invalid"]
    p = Projector(s, "projector-10k").start().wait_ready()
    try:
        await support.produce(s, [(m.key, m.value) for m in messages])
        dlq = await support.read_topic(s, s.dlq_topic, len(invalid), timeout=180)
        await support.wait_until(
            lambda: p.metric("orderview_projector_consumed_total") >= len(messages),
            timeout=180,
            message="every message consumed",
        )
        assert snapshots(s) == expected
        assert not_from_snapshots(s) == [], "the tables hold each order's current version's rows"
        assert count(s, "items") == sum(len(o["items"]) for o in expected.values())
        assert count(s, "orders") == count(s, "payments") == count(s, "deliveries") == len(expected)
        assert len(dlq) == len(invalid)
        reasons = sorted(support.headers(r)["dlq.reason"] for r in dlq)
        assert reasons == sorted(m.reason for m in invalid)
        assert p.metric("orderview_projector_redeliveries_skipped_total") == 0
        await support.wait_until(
            lambda: committed_total(s), timeout=30, message="the group's offsets committed to the end"
        )
    finally:
        p.terminate()


async def committed_total(settings: Settings) -> bool:
    """Whether the projector's group has committed every partition to its end."""
    async with projector_group(settings) as (consumer, tps, ends):
        return all([await consumer.committed(tp) == ends[tp] for tp in tps])


async def test_kill_9_mid_stream_then_restart_loses_nothing_and_applies_nothing_twice(
    clean_settings: Settings,
) -> None:
    s = clean_settings
    messages = list(stream(6_000, seed=11, invalid_share=0.0, repeat_share=0.1))
    expected = expected_state(messages)
    first = Projector(s, "projector-killed").start().wait_ready()
    await support.produce(s, [(m.key, m.value) for m in messages])
    await support.wait_until(lambda: count(s, "order_snapshots") > 500, message="progress before the kill")
    first.kill9()
    assert count(s, "order_snapshots") < len(expected), "killed mid-stream"
    second = Projector(s, "projector-restarted").start().wait_ready()
    try:
        await wait_for_orders(s, len(expected))
        await support.wait_until(lambda: snapshots(s) == expected, timeout=60, message="exact final state")
        assert not_from_snapshots(s) == []
        assert count(s, "items") == sum(len(o["items"]) for o in expected.values())
        assert count(s, "orders") == len(expected)
    finally:
        second.terminate()
    assert await dlq_is_empty(s), "no valid message was dead-lettered"


async def dlq_is_empty(settings: Settings) -> bool:
    try:
        await support.read_topic(settings, settings.dlq_topic, 1, timeout=3)
    except AssertionError:
        return True
    return False


def set_postgres(action: str) -> None:
    ops("postgres.sh", action)


async def test_postgresql_stopped_for_20s_mid_stream_loses_nothing_and_progress_resumes(
    clean_settings: Settings,
) -> None:
    s = clean_settings
    messages = list(stream(4_000, seed=13, repeat_share=0.05))
    expected = expected_state(messages)
    p = Projector(s, "projector-pg-outage").start().wait_ready()
    try:
        await support.produce(s, [(m.key, m.value) for m in messages[:2000]])
        await wait_for_orders(s, 100)
        set_postgres("stop")
        try:
            await support.produce(s, [(m.key, m.value) for m in messages[2000:]])
            await asyncio.sleep(5)
            status, body = p.get("/readyz", p.port)
            assert status == 503 and b"database" in body, body
            await asyncio.sleep(15)
        finally:
            set_postgres("start")
        await support.wait_until(
            lambda: snapshots(s) == expected, timeout=120, message="all orders after outage"
        )
        assert p.metric("orderview_projector_db_retries_total") > 0
        await support.wait_until(lambda: p.get("/readyz", p.port)[0] == 200, message="ready again")
    finally:
        p.terminate()
    assert await dlq_is_empty(s)


async def test_group_offsets_reset_to_the_start_are_overruled_by_the_read_model(
    clean_settings: Settings,
) -> None:
    s = clean_settings
    messages = list(stream(500, seed=17))
    first = Projector(s, "projector-before-reset").start().wait_ready()
    await support.produce(s, [(m.key, m.value) for m in messages])
    await wait_for_orders(s, len(expected_state(messages)))
    await support.wait_until(lambda: committed_total(s), message="offsets committed to the end")
    assert first.terminate() == 0
    before = read_model(s)

    assert await set_group_offsets(s, "start") == len(messages)
    second = Projector(s, "projector-after-reset").start().wait_ready()
    try:
        await support.produce(s, [message(order("after-reset"))])
        await wait_for_orders(s, len(before["order_snapshots"]) + 1)
        await support.wait_until(lambda: second.metric("orderview_projector_consumed_total") >= 1)
        assert second.metric("orderview_projector_consumed_total") == 1, "nothing read twice"
        assert second.metric("orderview_projector_redeliveries_skipped_total") == 0
        after = read_model(s)
        assert {k: [r for r in rows if "after-reset" not in str(r)] for k, rows in after.items()} == before
        await support.wait_until(lambda: committed_total(s), message="the group's offsets back at the end")
    finally:
        second.terminate()


async def test_group_offsets_past_the_read_model_are_overruled_by_it(clean_settings: Settings) -> None:
    s = clean_settings
    await support.produce(s, orders("ahead", 300))
    assert await set_group_offsets(s, "end") == 300
    p = Projector(s, "projector-group-ahead").start().wait_ready()
    try:
        await wait_for_orders(s, 300)
        assert sum(positions(s).values()) == 300
    finally:
        p.terminate()


async def test_rebuild_gives_a_read_model_equal_to_the_live_one(clean_settings: Settings) -> None:
    s = clean_settings
    messages = list(stream(1_500, seed=19, invalid_share=0.05, repeat_share=0.2))
    p = Projector(s, "projector-live").start().wait_ready()
    try:
        await support.produce(s, [(m.key, m.value) for m in messages])
        await support.wait_until(
            lambda: p.metric("orderview_projector_consumed_total") >= len(messages),
            timeout=120,
            message="live projection done",
        )
    finally:
        p.terminate()
    live = read_model(s)

    other = replace(s, pg_database=scratch.unique("orderview_rebuild_"))
    create_database(other)
    try:
        assert await rebuild(other) == len(messages)
        assert read_model(other) == live
    finally:
        drop_database(other)


def set_kafka(action: str) -> None:
    ops("kafka.sh", action)


async def test_a_broker_restart_mid_stream_is_survived_without_loss(clean_settings: Settings) -> None:
    s = clean_settings
    messages = list(stream(3_000, seed=23, repeat_share=0.05))
    expected = expected_state(messages)
    p = Projector(s, "projector-broker-restart").start().wait_ready()
    try:
        await support.produce(s, [(m.key, m.value) for m in messages[:1500]])
        await wait_for_orders(s, 100)
        set_kafka("stop")
        set_kafka("start")
        await support.produce(s, [(m.key, m.value) for m in messages[1500:]])
        await support.wait_until(
            lambda: snapshots(s) == expected, timeout=180, message="all orders after restart"
        )
        assert count(s, "items") == sum(len(o["items"]) for o in expected.values())
    finally:
        p.terminate()


async def test_logs_are_json_lines_without_payloads(clean_settings: Settings) -> None:
    s = clean_settings
    secret = order("log-check")
    secret["delivery"]["email"] = "never-logged@example.com"
    bad = copy.deepcopy(secret)
    bad["order_uid"] = "log-check-bad"
    bad["delivery"]["email"] = "never-logged-either"
    p = Projector(s, "projector-logs").start().wait_ready()
    try:
        await support.produce(s, [message(secret), message(bad)])
        await support.read_topic(s, s.dlq_topic, 1)
        await wait_for_orders(s, 1)
    finally:
        p.terminate()
    lines = [line for line in p.log_path.read_text().splitlines() if line.strip()]
    assert lines, "the projector logged something"
    records = [orjson.loads(line) for line in lines]  # every line is a JSON object
    dead = [r for r in records if r.get("msg") == "dead-lettered"]
    assert dead and {"partition", "offset", "reason"} <= set(dead[0])
    assert not any("never-logged" in line for line in lines)


async def test_sigterm_while_the_database_is_down_abandons_the_batch_and_the_next_worker_applies_it(
    clean_settings: Settings,
) -> None:
    s = clean_settings
    messages = list(stream(1_000, seed=29))
    expected = expected_state(messages)
    first = Projector(s, "projector-sigterm").start().wait_ready()
    set_postgres("stop")
    try:
        await support.produce(s, [(m.key, m.value) for m in messages])
        await support.wait_until(lambda: first.get("/readyz", first.port)[0] == 503, message="not ready")
        assert first.terminate(timeout=30) == 0, "a clean exit, mid-retry"
    finally:
        set_postgres("start")
    assert count(s, "order_snapshots") == 0
    second = Projector(s, "projector-after-sigterm").start().wait_ready()
    try:
        await support.wait_until(
            lambda: snapshots(s) == expected, timeout=60, message="the abandoned batch applied"
        )
    finally:
        second.terminate()
