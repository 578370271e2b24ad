"""A TCP proxy in front of the real PostgreSQL that a test can make stop answering.

Frozen, it holds whatever arrives in either direction: to the client the database is there (the
connection stays open) but silent, as behind a hung server or a NAT that dropped its entry. A
`freeze_on` marker freezes only the connections whose client traffic contains it (a query's
parameters travel as plain bytes), so one query can hang while the others go through.

Moved (`move`), it stands for an address that follows the primary (a VIP, HAProxy with Patroni):
new connections go to the new target, and those it carried are closed, as a VIP that moves to
another host leaves them nowhere.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator


class _Link:
    __slots__ = ("frozen",)

    def __init__(self) -> None:
        self.frozen = False


class PgProxy:
    def __init__(self, target_host: str, target_port: int, port: int = 0) -> None:
        self.target = (target_host, target_port)
        self.frozen = False
        self.freeze_on: bytes | None = None
        self.frozen_links = 0
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task] = set()
        self.port = port

    async def start(self) -> PgProxy:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", self.port)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def move(self, target_host: str, target_port: int) -> None:
        """New connections to this target from now on; the open ones are closed."""
        self.target = (target_host, target_port)
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def close(self) -> None:
        assert self._server is not None
        self._server.close()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _accept(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        try:
            server_r, server_w = await asyncio.open_connection(*self.target)
        except OSError:
            client_w.close()
            return
        link = _Link()
        for reader, writer, upstream in ((client_r, server_w, True), (server_r, client_w, False)):
            task = asyncio.create_task(self._pump(reader, writer, link, upstream))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _pump(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, link: _Link, upstream: bool
    ) -> None:
        try:
            while data := await reader.read(65536):
                if upstream and self.freeze_on is not None and self.freeze_on in data and not link.frozen:
                    link.frozen = True
                    self.frozen_links += 1
                while self.frozen or link.frozen:  # noqa: ASYNC110 (polled: a test flips a flag)
                    await asyncio.sleep(0.02)
                writer.write(data)
                await writer.drain()
        except (OSError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()


@contextlib.asynccontextmanager
async def pg_proxy(host: str, port: int) -> AsyncIterator[PgProxy]:
    proxy = await PgProxy(host, port).start()
    try:
        yield proxy
    finally:
        await proxy.close()
