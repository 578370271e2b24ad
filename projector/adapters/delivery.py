"""A Faust consumer's fetcher that hands over a message without four tasks.

Faust's fetcher delivers each message with ``wait_first(callback(message), suspend_flow.wait())``:
four tasks and an ``asyncio.wait`` per message, so that a delivery blocked on a full stream buffer
gives way when a rebalance suspends the flow. Almost every delivery never blocks (it puts the
event into a queue with room), and for those the tasks were most of Faust's cost per message
(bench/findings.md). Here the delivery first runs until it finishes or first has to wait; only one
that has to wait is finished the way Faust does, racing the suspension. A coroutine that finishes
without waiting wins that race in Faust too, so the outcome of every delivery is one Faust allows.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Coroutine, Generator
from typing import Any

from mode.services import Service, WaitArgT, WaitResults


class _Resumed(Awaitable[Any]):
    """The rest of a coroutine that already ran up to ``pending``, the first thing it waits on."""

    def __init__(self, coro: Coroutine[Any, Any, Any], pending: Any) -> None:
        self._coro = coro
        self._pending = pending

    def __await__(self) -> Generator[Any, Any, Any]:
        coro, pending = self._coro, self._pending
        while True:
            try:
                try:
                    sent = yield pending
                except BaseException as exc:  # cancellation and the like go on into the coroutine
                    pending = coro.throw(exc)
                else:
                    pending = coro.send(sent)
            except StopIteration as stop:
                return stop.value


class ImmediateDelivery(Service):
    """Mixed into Faust's consumer: ``wait_first`` of a coroutine that need not wait, without tasks."""

    async def wait_first(self, *coros: WaitArgT, timeout: Any = None) -> WaitResults:
        first, *rest = coros
        if not asyncio.iscoroutine(first) or self._stopped.is_set() or self._crashed.is_set():
            return await super().wait_first(*coros, timeout=timeout)
        try:
            pending = first.send(None)
        except StopIteration as done:
            _close(rest)
            return WaitResults([first], [done.value], False)
        except BaseException:
            _close(rest)
            raise
        return await super().wait_first(_Resumed(first, pending), *rest, timeout=timeout)


def _close(coros: list[WaitArgT]) -> None:
    """Close what never started, so that asyncio does not warn it was never awaited."""
    for coro in coros:
        if asyncio.iscoroutine(coro):
            coro.close()
