"""Which version of an order is the newer (projector/versions.py), the batch's own newest
(projector/store.py), and which dead letters a redrive takes (projector/redrive.py)."""

from __future__ import annotations

import pytest
from aiokafka.structs import ConsumerRecord

from projector import store
from projector.messages import REDRIVE_EVENT, REDRIVE_OF, BadHeader, Event, Incoming
from projector.redrive import Choice, Letter
from projector.versions import newer


def test_within_a_partition_the_later_offset_wins_whatever_the_timestamps():
    assert newer(Event(0, 5, 100), Event(0, 4, 900))
    assert not newer(Event(0, 4, 900), Event(0, 5, 100))


def test_across_partitions_the_later_timestamp_wins_and_a_tie_keeps_what_is_there():
    assert newer(Event(1, 0, 101), Event(0, 99, 100))
    assert not newer(Event(1, 0, 99), Event(0, 0, 100))
    assert not newer(Event(1, 0, 100), Event(0, 0, 100))


def test_anything_replaces_a_version_of_unknown_coordinates():
    assert newer(Event(0, 0, None), None)
    assert newer(Event(1, 0, 5), Event(0, 7, None))


def accepted(uid: str, body: str, partition: int, offset: int, ts: int) -> store.Accepted:
    return store.Accepted(uid, body, partition, offset, None, Event(partition, offset, ts))


def test_a_batch_keeps_the_newest_version_of_each_order_and_an_identical_resend_keeps_the_first():
    first = accepted("a", '{"v":1}', 0, 1, 10)
    resent = accepted("a", '{"v":1}', 0, 2, 11)
    older_elsewhere = accepted("b", '{"v":2}', 1, 9, 5)
    newer_here = accepted("b", '{"v":3}', 0, 3, 6)
    assert store.latest_versions([first, resent, newer_here, older_elsewhere]) == [first, newer_here]


def test_a_redrive_is_ordered_as_the_event_it_was_and_its_headers_are_checked():
    redriven = Incoming(
        2, 500, b"k", b"v", 999, None, ((REDRIVE_OF, b"orders:0:7"), (REDRIVE_EVENT, b"0:7:123"))
    )
    assert (redriven.redrive_of(), redriven.event()) == ("orders:0:7", Event(0, 7, 123))
    forged = Incoming(2, 500, b"k", b"v", 999, None, ((REDRIVE_EVENT, b"0:seven:123"),))
    with pytest.raises(BadHeader, match=r"orderview\.redrive\.event"):
        forged.event()


def letter(reason: str, ts: int, source: tuple[int, int]) -> Letter:
    record = ConsumerRecord("orders.dlq", 0, 0, ts, 0, b"k", b"v", None, 1, 1, ())
    return Letter(record, {}, reason, source)


def test_a_redrive_takes_the_letters_every_filter_given_accepts():
    letters = [
        letter("db_rejected", 100, (0, 1)),
        letter("schema", 200, (1, 2)),
        letter("db_rejected", 300, (0, 3)),
    ]
    by_reason = Choice(reasons=frozenset({"db_rejected"}))
    in_time = Choice(since_ms=150, until_ms=300)
    both = Choice(reasons=frozenset({"db_rejected"}), since_ms=150)
    at = Choice(at=frozenset({(1, 2)}))
    assert [lt.source for lt in letters if by_reason.takes(lt)] == [(0, 1), (0, 3)]
    assert [lt.source for lt in letters if in_time.takes(lt)] == [(1, 2)]
    assert [lt.source for lt in letters if both.takes(lt)] == [(0, 3)]
    assert [lt.source for lt in letters if at.takes(lt)] == [(1, 2)]
