"""What a replica has served, in the log's coordinates (api/served.py): a database holds it once
its recorded positions are past every version read; reads wait while the replica cannot vouch."""

from __future__ import annotations

import asyncio

import pytest

from api.served import Position, Served

TOPIC = "8f14e45f-ceea-467f-a9d3-0d4a6bd2a3c1"


def positions(**next_offsets: int) -> dict[int, Position]:
    return {int(p.removeprefix("p")): Position(o, TOPIC) for p, o in next_offsets.items()}


def test_a_database_past_every_version_read_lacks_nothing() -> None:
    served = Served()
    served.saw([(0, 41), (1, 7), (0, 12), (None, None)])
    assert served.missing(positions(p0=42, p1=8)) == {}
    assert served.missing(positions(p0=100, p1=100, p2=5)) == {}


def test_a_database_behind_a_version_read_lacks_its_partition() -> None:
    served = Served()
    served.saw([(0, 41), (1, 7), (2, 3)])
    assert served.missing(positions(p0=41, p1=8)) == {0: (41, 42), 2: (0, 4)}


def test_positions_of_another_incarnation_of_the_topic_are_taken_as_they_are() -> None:
    served = Served()
    served.saw([(0, 500)])
    assert served.missing(positions(p0=501)) == {}
    recreated = {0: Position(3, "another-topic-id")}
    assert served.missing(recreated) == {}
    served.saw([(0, 3)])
    assert served.missing({0: Position(3, "another-topic-id")}) == {0: (3, 4)}


async def test_reads_wait_from_a_lost_listen_until_the_replica_vouches_again() -> None:
    served = Served()
    await asyncio.wait_for(served.wait(), 0.1)  # a replica starts vouching for what it finds
    served.lost_sight()
    waiting = asyncio.ensure_future(served.wait())
    await asyncio.sleep(0.01)
    assert not waiting.done() and not served.vouched
    served.vouch()
    await asyncio.wait_for(waiting, 0.1)
    assert served.vouched


@pytest.mark.parametrize("unknown", [(None, 5), (5, None), (None, None)])
def test_a_version_of_unknown_coordinates_asks_nothing(unknown: tuple[int | None, int | None]) -> None:
    served = Served()
    served.saw([unknown])
    assert served.offsets == {} and served.missing({}) == {}
