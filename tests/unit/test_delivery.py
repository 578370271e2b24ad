"""The fetcher's delivery of a message (projector/adapters/delivery.py): a delivery that need not
wait finishes without a task; one that waits is raced against the flow's suspension, as in Faust."""

from __future__ import annotations

import asyncio

import pytest

from projector.adapters.delivery import ImmediateDelivery

pytestmark = pytest.mark.asyncio


class Fetching(ImmediateDelivery):
    pass


def count_tasks(loop: asyncio.AbstractEventLoop) -> list[asyncio.Task]:
    made: list[asyncio.Task] = []

    def factory(loop: asyncio.AbstractEventLoop, coro, **kwargs) -> asyncio.Task:  # type: ignore[no-untyped-def]
        task = asyncio.Task(coro, loop=loop, **kwargs)
        made.append(task)
        return task

    loop.set_task_factory(factory)
    return made


async def test_a_delivery_that_need_not_wait_finishes_without_a_task() -> None:
    fetching, suspended = Fetching(), asyncio.Event()
    delivered: list[str] = []

    async def deliver(message: str) -> str:
        delivered.append(message)
        return "put"

    made = count_tasks(asyncio.get_running_loop())
    try:
        results = await fetching.wait_first(deliver("m1"), suspended.wait())
    finally:
        asyncio.get_running_loop().set_task_factory(None)
    assert delivered == ["m1"]
    assert results.results == ["put"] and not results.stopped
    assert made == []


async def test_a_delivery_that_waits_finishes_when_its_wait_ends() -> None:
    fetching, suspended, room = Fetching(), asyncio.Event(), asyncio.Event()
    steps: list[str] = []

    async def deliver() -> str:
        steps.append("full")
        await room.wait()
        await asyncio.sleep(0)  # a bare yield too
        steps.append("put")
        return "put"

    asyncio.get_running_loop().call_later(0.01, room.set)
    results = await fetching.wait_first(deliver(), suspended.wait())
    assert steps == ["full", "put"]
    assert results.results == ["put"]


async def test_a_delivery_that_waits_gives_way_when_the_flow_is_suspended() -> None:
    fetching, suspended, room = Fetching(), asyncio.Event(), asyncio.Event()
    abandoned = asyncio.Event()

    async def deliver() -> None:
        try:
            await room.wait()  # the stream's buffer is full and stays so
        except asyncio.CancelledError:
            abandoned.set()
            raise

    asyncio.get_running_loop().call_later(0.01, suspended.set)
    results = await asyncio.wait_for(fetching.wait_first(deliver(), suspended.wait()), 5)
    assert results.results == [True]  # the suspension won
    await asyncio.wait_for(abandoned.wait(), 5)


async def test_a_delivery_that_fails_at_once_raises_its_error() -> None:
    fetching, suspended = Fetching(), asyncio.Event()

    async def deliver() -> None:
        raise LookupError("no channel for this partition")

    with pytest.raises(LookupError, match="no channel"):
        await fetching.wait_first(deliver(), suspended.wait())


async def test_a_delivery_that_fails_after_waiting_raises_its_error() -> None:
    fetching, suspended = Fetching(), asyncio.Event()

    async def deliver() -> None:
        await asyncio.sleep(0.01)
        raise LookupError("no channel for this partition")

    with pytest.raises(LookupError, match="no channel"):
        await fetching.wait_first(deliver(), suspended.wait())


async def test_a_stopped_fetcher_delivers_as_faust_does() -> None:
    fetching, suspended = Fetching(), asyncio.Event()
    fetching._stopped.set()
    delivered: list[str] = []

    async def deliver() -> None:
        delivered.append("m1")

    results = await fetching.wait_first(deliver(), suspended.wait())
    assert results.stopped  # Faust's answer for a stopped service, whatever the delivery did
