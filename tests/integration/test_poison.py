"""Messages nobody planned for, against the real worker: each is projected or dead-lettered, the
stream goes on, and what cannot be read stops the worker loudly instead of being skipped."""

from __future__ import annotations

import asyncio
import hashlib
import os
import random
from pathlib import Path

import orjson
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from harness.processes import Projector
from harness.topics import end_offset
from orderview import kafka_clients
from orderview.settings import Settings
from projector import faults
from projector.redrive import Choice, redrive
from tests import support
from tests.readmodel import (
    committed_offsets,
    message,
    order,
    orders,
    positions,
    snapshots,
    wait_for_orders,
)

FAULTS = Path(__file__).resolve().parents[1] / "fault_injection"
NO_CODECS = FAULTS / "no_codecs"
VALIDATOR_BUG = FAULTS / "validator_bug"


async def dead_letters(settings: Settings, n: int) -> list:
    return await support.read_topic(settings, settings.dlq_topic, n)


async def test_a_value_nested_1000_deep_among_600_orders_is_dead_lettered_and_every_order_applied(
    one_partition: Settings,
) -> None:
    s = one_partition
    nested = b"[" * 1000 + b"]" * 1000
    p = Projector(s, "projector-nested").start().wait_ready()
    try:
        await support.produce(s, [*orders("before", 300), (b"nested", nested), *orders("after", 300)])
        [letter] = await dead_letters(s, 1)
        await wait_for_orders(s, 600)
        h = support.headers(letter)
        assert (h["dlq.reason"], h["dlq.offset"]) == ("schema", "300")
        assert "nests deeper than 8 levels" in h["dlq.error"]
        assert h["dlq.path"] == "$" + "[0]" * 8
        assert letter.value == nested
        assert p.get("/readyz", p.port)[0] == 200
        assert positions(s) == {0: 601}
    finally:
        assert p.terminate() == 0


async def test_a_20_mib_gzip_value_is_dead_lettered_whole_and_the_orders_behind_it_applied(
    one_partition: Settings,
) -> None:
    s = one_partition
    bomb = b" " * (20 * 1024 * 1024)
    p = Projector(s, "projector-gzip-bomb").start().wait_ready()
    try:
        await support.produce(s, [(b"bomb", bomb)], compression="gzip")
        await support.produce(s, orders("behind", 50))
        [letter] = await dead_letters(s, 1)
        await wait_for_orders(s, 50)
        h = support.headers(letter)
        assert h["dlq.reason"] == "too_large"
        assert h["dlq.original_size"] == str(len(bomb))
        assert h["dlq.original_sha256"] == hashlib.sha256(bomb).hexdigest()
        assert letter.value == bomb, "compressed, the dead letter fits whole"
    finally:
        assert p.terminate() == 0


async def test_a_dead_letter_over_the_dlq_topics_limit_is_sent_truncated_with_size_and_digest(
    one_partition: Settings,
) -> None:
    s = one_partition
    admin = kafka_clients.admin(s)
    await admin.start()
    try:  # a DLQ topic that takes records of 64 KiB at most
        await admin.delete_topics([s.dlq_topic])
        small = NewTopic(s.dlq_topic, 1, 1, topic_configs={"max.message.bytes": str(64 * 1024)})
        await support.wait_until(lambda: _create(admin, small), message="a small DLQ topic")
    finally:
        await admin.close()
    noise = random.Random(7).randbytes(200_000)  # not JSON, not compressible, under 1 MiB
    around = [(f"bad-{i}".encode(), b"not json") for i in range(10)]
    p = Projector(s, "projector-dlq-refuses").start().wait_ready()
    try:
        # One batch: letters before and after the one too large for the DLQ, which is cut to what
        # fits before it is sent (a refusal would break the idempotent producer's sequence).
        await support.produce(s, [*around[:5], (b"noise", noise), *around[5:], *orders("behind", 20)])
        letters = await dead_letters(s, 11)
        await wait_for_orders(s, 20)
        await asyncio.sleep(2)
        assert await end_offset(s, s.dlq_topic) == 11
        sources = sorted(int(support.headers(r)["dlq.offset"]) for r in letters)
        assert sources == list(range(11)), "every bad message dead-lettered exactly once"
        [letter] = [r for r in letters if support.headers(r).get("dlq.truncated")]
        h = support.headers(letter)
        assert (h["dlq.reason"], h["dlq.truncated"]) == ("decode", "true")
        assert h["dlq.original_size"] == "200000"
        assert h["dlq.original_sha256"] == hashlib.sha256(noise).hexdigest()
        assert letter.value == noise[: len(letter.value)] and 60_000 < len(letter.value) < 64 * 1024
    finally:
        assert p.terminate() == 0
    said = p.log_text()
    assert "dead letter over the DLQ topic's max.message.bytes, sent truncated" in said
    assert "renewed after a refusal" not in said, "the broker refused nothing"
    report = await redrive(s, Choice(), dry_run=True)
    assert report.truncated == [(0, 5)] and report.redriven == 10
    assert "cannot redrive the letter of" in report.text(s.orders_topic, True)


async def _create(admin: AIOKafkaAdminClient, topic: NewTopic) -> bool:
    try:
        await admin.create_topics([topic])
        return True
    except Exception:  # still being deleted
        return False


async def test_batches_compressed_with_every_kafka_codec_are_projected(one_partition: Settings) -> None:
    s = one_partition
    p = Projector(s, "projector-codecs").start().wait_ready()
    try:
        for codec in ("gzip", "snappy", "lz4", "zstd"):
            await support.produce(s, orders(codec, 25), compression=codec)
        await wait_for_orders(s, 100)
        assert {uid.split("-")[0] for uid in snapshots(s)} == {"gzip", "snappy", "lz4", "zstd"}
    finally:
        assert p.terminate() == 0


async def test_a_worker_that_cannot_decompress_a_batch_stops_loudly_and_records_nothing_past_it(
    one_partition: Settings,
) -> None:
    s = one_partition
    await support.produce(s, orders("plain", 100))
    await support.produce(s, orders("lz4", 10), compression="lz4")
    await support.produce(s, orders("after", 100))
    without = Projector(s, "projector-no-codecs", env={"PYTHONPATH": str(NO_CODECS)}).start()
    assert without.wait_exit(60) != 0
    assert any(
        line["level"] == "critical" and "UnsupportedCodecError" in line.get("exc", "") + line["msg"]
        for line in map(orjson.loads, without.log_text().splitlines())
    ), "it says why"
    # aiokafka may fail a whole fetch that holds the lz4 batch, so the 100 before may be unapplied.
    assert positions(s).get(0, 0) <= 100, "nothing past the batch it could not read"
    assert ((await committed_offsets(s))[0] or 0) <= 100

    with_codecs = Projector(s, "projector-with-codecs").start().wait_ready()
    try:
        await wait_for_orders(s, 210)
        assert positions(s) == {0: 210}
    finally:
        assert with_codecs.terminate() == 0


async def test_orders_of_an_aborted_kafka_transaction_are_never_projected(one_partition: Settings) -> None:
    s = one_partition
    p = Projector(s, "projector-aborted").start().wait_ready()
    try:
        await support.produce_aborted(s, orders("aborted", 10))
        await support.produce(s, orders("committed", 5))
        await wait_for_orders(s, 5)
        await support.wait_until(lambda: p.metric("orderview_projector_consumed_total") >= 5)
        assert {uid.split("-")[0] for uid in snapshots(s)} == {"committed"}
        assert p.metric("orderview_projector_consumed_total") == 5
    finally:
        assert p.terminate() == 0


async def test_keys_that_are_not_the_order_uid_are_dead_lettered_with_the_reason(
    one_partition: Settings,
) -> None:
    s = one_partition
    valid = order("keyed")
    huge_key = b"k" * (512 * 1024)
    p = Projector(s, "projector-keys").start().wait_ready()
    try:
        await support.produce(
            s,
            [
                (None, orjson.dumps(order("no-key"))),
                (huge_key, orjson.dumps(order("huge-key"))),
                (b"\xff\xfe", orjson.dumps(order("binary-key"))),
                (b"keyed", None),  # a tombstone: erases "keyed", and the order after it is newer
                message(valid),
            ],
        )
        letters = await dead_letters(s, 3)
        await wait_for_orders(s, 1)
        assert set(snapshots(s)) == {"keyed"}
        by_offset = {support.headers(r)["dlq.offset"]: support.headers(r) for r in letters}
        assert by_offset["0"]["dlq.reason"] == "invariant" and "no Kafka key" in by_offset["0"]["dlq.error"]
        assert by_offset["1"]["dlq.reason"] == "invariant" and len(by_offset["1"]["dlq.error"]) <= 1000
        assert by_offset["2"]["dlq.reason"] == "invariant" and "b'\\xff\\xfe'" in by_offset["2"]["dlq.error"]
    finally:
        assert p.terminate() == 0


def test_the_fault_injection_folders_hold_only_what_the_worker_loads() -> None:
    for folder in (NO_CODECS, VALIDATOR_BUG):
        assert sorted(os.listdir(folder)) in (["sitecustomize.py"], ["__pycache__", "sitecustomize.py"])


async def test_a_bug_in_the_validator_stops_the_worker_and_dead_letters_nothing(
    one_partition: Settings,
) -> None:
    s = one_partition
    bug = order("bug")
    bug["customer_id"] = "trigger-the-bug"
    await support.produce(s, [*orders("before", 20), message(bug), *orders("after", 20)])
    buggy = Projector(s, "projector-validator-bug", env={"PYTHONPATH": str(VALIDATOR_BUG)}).start()
    assert buggy.wait_exit(60) == faults.EXIT_FAILED, "an exception nobody anticipated stops the worker"
    [why] = [line for line in map(orjson.loads, buggy.log_text().splitlines()) if line["level"] == "critical"]
    assert "KeyError" in why.get("exc", ""), "it says which exception"
    assert positions(s).get(0, 0) <= 20 and await end_offset(s, s.dlq_topic) == 0, (
        "no position past the record, and no letter for a fault of ours"
    )
    fixed = Projector(s, "projector-validator-fixed").start().wait_ready()
    try:
        await wait_for_orders(s, 41)
        assert positions(s) == {0: 41} and await end_offset(s, s.dlq_topic) == 0
    finally:
        assert fixed.terminate() == 0
