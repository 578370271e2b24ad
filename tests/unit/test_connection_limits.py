"""Which connection a full replica closes (api/connections.py), as a rule over its connections'
states: the one that has waited longest for a request head, else the one idle the longest, and
only when every one is busy with a request, the new one. A replica never holds more than its
bound, whatever arrives in whatever order."""

from __future__ import annotations

import asyncio
from dataclasses import replace

import pytest
from hypothesis import given
from hypothesis import strategies as st

from api.connections import Connections
from orderview.settings import Settings


class FakeConnection:
    """What Connections asks of a connection: whether it awaits a head, is idle, or is busy."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.head_since: float | None = None
        self.head_bytes = False
        self.idle_at: float | None = None  # set: idle since then (no head awaited, no request)
        self.closed = False

    def idle_since(self) -> float | None:
        return None if self.head_since is not None or self.closed else self.idle_at

    def force_close(self) -> None:
        self.closed = True

    def close_slow_head(self, sent_some: bool) -> bool:
        self.closed = True
        return True

    def __repr__(self) -> str:
        return self.name


def run(scenario):
    return asyncio.run(scenario())


def test_a_full_replica_closes_the_connection_waiting_longest_for_its_head() -> None:
    async def scenario() -> None:
        limits = Connections(head_timeout_s=60, max_connections=3)
        first, second, third = (FakeConnection(n) for n in ("first", "second", "third"))
        for c in (first, second, third):
            assert limits.opened(c)  # type: ignore[arg-type]
        limits.head_arrived(second)  # type: ignore[arg-type]  # second is busy with its request
        newcomer = FakeConnection("new")
        assert limits.opened(newcomer)  # type: ignore[arg-type]
        assert (first.closed, second.closed, third.closed) == (True, False, False)
        assert set(limits.open) == {second, third, newcomer} and limits.made_room == 1

    run(scenario)


def test_with_no_head_awaited_the_longest_idle_connection_makes_room() -> None:
    async def scenario() -> None:
        limits = Connections(head_timeout_s=60, max_connections=2)
        older, newer = FakeConnection("older"), FakeConnection("newer")
        for c, idle_at in ((older, 1.0), (newer, 2.0)):
            assert limits.opened(c)  # type: ignore[arg-type]
            limits.head_arrived(c)  # type: ignore[arg-type]
            c.idle_at = idle_at  # answered, kept alive, waiting for the next request
        assert limits.opened(FakeConnection("new"))  # type: ignore[arg-type]
        assert (older.closed, newer.closed) == (True, False)

    run(scenario)


def test_when_every_connection_is_busy_the_new_one_is_closed_and_the_others_go_on() -> None:
    async def scenario() -> None:
        limits = Connections(head_timeout_s=60, max_connections=2)
        busy = [FakeConnection("a"), FakeConnection("b")]
        for c in busy:
            assert limits.opened(c)  # type: ignore[arg-type]
            limits.head_arrived(c)  # type: ignore[arg-type]
        newcomer = FakeConnection("new")
        assert not limits.opened(newcomer)  # type: ignore[arg-type]
        assert not any(c.closed for c in busy)
        assert set(limits.open) == set(busy) and limits.refused == 1

    run(scenario)


def test_a_head_past_its_deadline_is_closed_by_the_sweep() -> None:
    async def scenario() -> None:
        limits = Connections(head_timeout_s=0.05, max_connections=10)
        slow, quick = FakeConnection("slow"), FakeConnection("quick")
        limits.opened(slow)  # type: ignore[arg-type]
        limits.opened(quick)  # type: ignore[arg-type]
        limits.head_arrived(quick)  # type: ignore[arg-type]
        for _ in range(100):
            if slow.closed:
                break
            await asyncio.sleep(0.05)
        assert (slow.closed, quick.closed, limits.slow_heads) == (True, False, 1)
        assert list(limits.open) == [quick] and not limits.heads

    run(scenario)


events = st.lists(st.sampled_from(["open", "head", "idle", "lost"]), min_size=1, max_size=60)


def busy(connection: FakeConnection) -> bool:
    return not connection.closed and connection.head_since is None and connection.idle_at is None


@given(st.integers(1, 5), events, st.randoms(use_true_random=False))
def test_a_replica_never_holds_more_than_its_bound_and_never_closes_a_busy_connection(
    bound: int, steps: list[str], rng
) -> None:
    async def scenario() -> None:
        limits = Connections(head_timeout_s=60, max_connections=bound)
        made: list[FakeConnection] = []
        for step in steps:
            busy_before = {c for c in made if busy(c)}
            live = [c for c in made if c in limits.open]
            if step == "open":
                made.append(FakeConnection(f"c{len(made)}"))
                limits.opened(made[-1])  # type: ignore[arg-type]
            elif live:
                c = rng.choice(live)
                limits.head_arrived(c)  # type: ignore[arg-type]
                if step == "head":  # its head arrived: busy with its request
                    c.idle_at = None
                elif step == "idle":  # answered: idle until its next request
                    c.idle_at = float(len(made))
                else:  # the client went away
                    limits.lost(c)  # type: ignore[arg-type]
                    busy_before.discard(c)
            assert len(limits.open) <= bound
            assert not any(c.closed for c in busy_before)
            assert not any(c.closed for c in limits.open)  # type: ignore[attr-defined]

    run(scenario)


@pytest.mark.parametrize(("name", "value"), [("api_head_timeout_s", 0.0), ("api_max_connections", 0)])
def test_settings_refuse_a_head_deadline_or_a_connection_bound_of_nothing(name: str, value: float) -> None:
    with pytest.raises(ValueError, match=name.upper()):
        replace(Settings(), **{name: value}).refuse_unusable()
