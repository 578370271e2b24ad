"""The one total order of an order's versions (projector/core/versions.py), as properties."""

from __future__ import annotations

import itertools

from hypothesis import given
from hypothesis import strategies as st

from projector.core import versions
from projector.core.versions import Version

timestamps = st.none() | st.integers(min_value=0, max_value=2**41)


def clocked(partition: int, stamps: list[int | None], clock: int = 0) -> list[Version]:
    """Each record's version, in offset order, from the partition's clock."""
    found = []
    for offset, stamp in enumerate(stamps):
        clock = versions.tick(clock, stamp)
        found.append(Version(clock, partition, offset))
    return found


@given(st.integers(min_value=0, max_value=2**41), timestamps)
def test_the_clock_never_goes_back_and_takes_every_later_timestamp(clock, stamp):
    after = versions.tick(clock, stamp)
    assert after >= clock
    assert stamp is None or after >= stamp
    assert after in (clock, stamp)


@given(st.integers(min_value=0, max_value=5), st.lists(timestamps, min_size=2, max_size=30))
def test_within_a_partition_the_later_offset_wins_whatever_the_timestamps(partition, stamps):
    found = clocked(partition, stamps)
    assert found == sorted(found)
    assert len(set(found)) == len(found)


@given(
    st.lists(st.lists(timestamps, max_size=10), min_size=1, max_size=4),
    st.lists(st.integers(min_value=1, max_value=7), min_size=1, max_size=10),
)
def test_a_record_has_the_same_version_however_its_partition_is_cut_into_batches(stamps_by_partition, cuts):
    whole = {p: clocked(p, stamps) for p, stamps in enumerate(stamps_by_partition)}
    for p, stamps in enumerate(stamps_by_partition):
        pieces, clock, at = [], 0, 0
        for size in itertools.cycle(cuts):
            if at >= len(stamps):
                break
            batch = stamps[at : at + size]
            got = clocked(p, batch, clock)
            pieces += [Version(v.time, p, v.offset + at) for v in got]
            clock, at = (got[-1].time if got else clock), at + size
        assert pieces == whole[p]


@given(st.lists(st.tuples(st.integers(0, 3), timestamps), min_size=1, max_size=30), st.randoms())
def test_every_interleaving_of_the_partitions_gives_the_same_winner(records, random):
    by_partition: dict[int, list[int | None]] = {}
    for partition, stamp in records:
        by_partition.setdefault(partition, []).append(stamp)
    queues = {p: clocked(p, stamps) for p, stamps in by_partition.items()}
    everything = [v for q in queues.values() for v in q]
    current = None
    while any(queues.values()):  # each partition in offset order, the partitions interleaved at random
        partition = random.choice([p for p, q in queues.items() if q])
        version = queues[partition].pop(0)
        if current is None or version > current:
            current = version
    assert current == max(everything)


def test_three_versions_end_the_same_in_every_order_they_can_be_read():
    now = 1_800_000_000_000
    a = Version(versions.tick(0, now - 100_000), 0, 0)  # partition 0, read first in its partition
    c = Version(versions.tick(a.time, now - 300_000), 0, 1)  # partition 0, after A: inherits its time
    b = Version(versions.tick(0, now - 200_000), 1, 0)  # partition 1
    for reading in ([a, b, c], [a, c, b], [b, a, c]):
        assert max(reading) == c, "within a partition the later offset wins, and the order is total"


def test_a_version_is_written_and_read_back_as_headers_carry_it():
    version = Version(1_800_000_000_123, 2, 77)
    assert versions.parse(versions.text(version)) == version
