"""The lag sampler (projector/lag.py) against the real log and read model: per partition, the log
end, the recorded position, the records between them and the age of the oldest one."""

from __future__ import annotations

import time

import psycopg
from prometheus_client import CollectorRegistry

from orderview.settings import Settings
from projector.adapters import postgres
from projector.lag import LagSampler
from projector.rebuild import rebuild
from projector.redrive import Choice, redrive
from tests import support


def sample_value(registry: CollectorRegistry, name: str, partition: int) -> float | None:
    return registry.get_sample_value(name, {"partition": str(partition)})


def record_position(settings: Settings, partition: int, next_offset: int) -> None:
    """What a batch's transaction records (projector/adapters/postgres.py), written directly."""
    with psycopg.connect(settings.dsn("projector")) as conn:
        conn.execute(
            postgres.RECORD_POSITIONS,
            {
                "topic": settings.orders_topic,
                "partitions": [partition],
                "next_offsets": [next_offset],
                "clocks": [0],
                "timestamps": [0],
                "digests": [b""],
                "topic_id": None,
            },
        )


async def test_records_nobody_applied_are_lag_and_age_until_the_position_passes_them(
    one_partition: Settings,
) -> None:
    s = one_partition
    sent_at = time.time()
    # Timestamps of our own, a second apart: what the sampler reads back is then unmistakable.
    stamps = [int(sent_at * 1000) + 1000 * i for i in range(5)]
    for i, stamp in enumerate(stamps):
        await support.produce(s, [(b"k", b"%d" % i)], timestamp_ms=stamp)
    registry = CollectorRegistry()
    now = sent_at + 42.0
    sampler = LagSampler(s, registry, lambda: [0], clock=lambda: now)
    try:
        await sampler.sample()
        assert sample_value(registry, "orderview_projector_log_end_offset", 0) == 5
        assert sample_value(registry, "orderview_projector_position", 0) == 0
        assert sample_value(registry, "orderview_projector_lag_records", 0) == 5
        oldest = sample_value(registry, "orderview_projector_oldest_unapplied_age_seconds", 0)
        assert oldest == now - stamps[0] / 1000

        record_position(s, 0, 3)
        await sampler.sample()
        assert sample_value(registry, "orderview_projector_position", 0) == 3
        assert sample_value(registry, "orderview_projector_lag_records", 0) == 2
        oldest = sample_value(registry, "orderview_projector_oldest_unapplied_age_seconds", 0)
        assert oldest == now - stamps[3] / 1000

        record_position(s, 0, 5)
        await sampler.sample()
        assert sample_value(registry, "orderview_projector_lag_records", 0) == 0
        assert sample_value(registry, "orderview_projector_oldest_unapplied_age_seconds", 0) == 0
    finally:
        await sampler.close()


async def test_a_partition_that_leaves_the_worker_leaves_its_series(clean_settings: Settings) -> None:
    s = clean_settings
    await support.produce(s, [(b"k", b"v")], partition=1)
    assigned = [0, 1, 2]
    registry = CollectorRegistry()
    sampler = LagSampler(s, registry, lambda: assigned)
    try:
        await sampler.sample()
        assert [sample_value(registry, "orderview_projector_lag_records", p) for p in (0, 1, 2)] == [0, 1, 0]
        assigned = [2]
        await sampler.sample()
        assert sample_value(registry, "orderview_projector_lag_records", 1) is None
        assert sample_value(registry, "orderview_projector_log_end_offset", 0) is None
        assert sample_value(registry, "orderview_projector_lag_records", 2) == 0
    finally:
        await sampler.close()


async def test_records_of_an_aborted_transaction_at_the_log_end_are_no_lag(one_partition: Settings) -> None:
    s = one_partition
    await support.produce(s, [(b"k", b"applied")])
    await support.produce_aborted(s, [(b"k", b"aborted")] * 3)
    record_position(s, 0, 1)
    registry = CollectorRegistry()
    sampler = LagSampler(s, registry, lambda: [0])
    try:
        await sampler.sample()
        assert sample_value(registry, "orderview_projector_log_end_offset", 0) == 5  # 3 + a marker
        assert sample_value(registry, "orderview_projector_lag_records", 0) == 0
        assert sample_value(registry, "orderview_projector_oldest_unapplied_age_seconds", 0) == 0
    finally:
        await sampler.close()


async def test_a_redrive_of_an_old_letter_is_as_old_as_it_reached_the_log_not_as_its_original(
    one_partition: Settings,
) -> None:
    """The age alert (OrderviewOldestUnappliedTooOld) judges when a record reached the log: a
    redrive of a letter dead-lettered ten minutes ago is a new arrival, not ten minutes old."""
    s = one_partition
    ten_minutes_ago = int(time.time() * 1000) - 600_000
    await support.produce(s, [(b"old-bad", b"not json")], timestamp_ms=ten_minutes_ago)
    assert await rebuild(s) == 1  # dead-lettered, position 1
    report = await redrive(s, Choice(at=frozenset({(0, 0)})))
    assert report.redriven == 1
    registry = CollectorRegistry()
    sampler = LagSampler(s, registry, lambda: [0])
    try:
        await sampler.sample()
        assert sample_value(registry, "orderview_projector_lag_records", 0) == 1
        oldest = sample_value(registry, "orderview_projector_oldest_unapplied_age_seconds", 0)
        assert oldest is not None and oldest < 60, (
            f"the redrive is {oldest:.0f} s old, not its original's age"
        )
    finally:
        await sampler.close()
