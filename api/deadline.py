"""A deadline for one database call of a request, answered at once when it passes.

Cancelling a psycopg query on a connection that stopped answering waits for the cancellation
(up to seconds); the request should not. So the call runs as a task: at the deadline the request
gets DatabaseTimeout (a 503) and the task is cancelled in the background.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any, TypeVar

from api.errors import DatabaseTimeout

T = TypeVar("T")
_abandoned: set[asyncio.Task] = set()  # referenced until they finish cancelling


def _forget(task: asyncio.Task) -> None:
    _abandoned.discard(task)
    if not task.cancelled():
        task.exception()


async def within(seconds: float, call: Coroutine[Any, Any, T]) -> T:
    task = asyncio.ensure_future(call)
    try:
        async with asyncio.timeout(seconds):
            return await asyncio.shield(task)
    except TimeoutError:
        task.cancel()
        _abandoned.add(task)
        task.add_done_callback(_forget)
        raise DatabaseTimeout() from None
