"""A replica's connections: how long a request head may take, how many connections it holds, and
the answers aiohttp makes itself, before any handler runs.

- **Slow heads.** A request head (the request line and headers) that has not fully arrived
  `api_head_timeout_s` after the connection opened (or, on a kept-alive connection, after its
  first byte) is closed: with a 408 when part of it came, silently when nothing did. A kept-alive
  connection that sends nothing is idle, not slow: aiohttp's keep-alive timeout closes it.
- **Many connections.** A replica holds at most `api_max_connections`. Past it, a new connection
  makes room by closing the one that has waited longest for a request head, else the one idle
  the longest between requests; only when every connection is busy with a request is the new one
  closed. A request in progress is never cut, and a new client always gets in while slow heads
  or idle connections hold the places.
- **aiohttp's own answers** (a bad request line, an oversized or malformed header: the parser's
  400s, and its 500/504 should a handler ever let one out) are JSON with the headers every other
  answer carries (api/edge.py), not aiohttp's plain text without them.

The protocol is aiohttp's `RequestHandler` with a few checks added where data arrives: a request
that arrives whole in one read (the common case) costs three attribute tests more. It reads some
of RequestHandler's internals (`_messages`, `_request_in_progress`, `_waiter`,
`_next_keepalive_close_time`): aiohttp is pinned (pyproject.toml), and tests/integration/
test_api_connections.py is what tells an upgrade broke them.
"""

from __future__ import annotations

import asyncio
import logging
import resource
from collections import deque
from email.utils import formatdate
from http import HTTPStatus
from typing import Any

import orjson
from aiohttp import http_exceptions, web
from aiohttp.web_protocol import RequestHandler
from aiohttp.web_request import BaseRequest

from api.answers import error_response
from api.edge import SECURITY_HEADERS, VARY
from orderview.settings import Settings

log = logging.getLogger("orderview.api.connections")

# Files a replica needs besides its clients' connections: its database pools, LISTEN, the standby
# watch, its metrics file, the viewer's files, the log.
RESERVED_FILES = 64
# How often the replica looks for heads past their deadline while any is awaited (and so how late
# past the deadline one may be closed).
SWEEP_S = 0.25
# Between two scans for idle connections to close for room; a scan that found none is not
# repeated sooner, so a flood while every connection is busy costs no scan per connection.
IDLE_SCAN_S = 0.05

_PARSER_ERRORS: tuple[tuple[type[Exception], str], ...] = (
    (http_exceptions.LineTooLong, "a line of the request head is too long"),
    (http_exceptions.BadHttpMethod, "not an HTTP request method"),
    (http_exceptions.BadStatusLine, "not an HTTP request line"),
    (http_exceptions.InvalidURLError, "not a request target"),
    (http_exceptions.PayloadEncodingError, "the request body cannot be read"),
    (http_exceptions.BadHttpMessage, "the request head cannot be read"),
)


def _request_timeout_bytes() -> tuple[bytes, bytes]:
    """The 408 answer's head but its Date, and its body: written directly, as no request exists
    to answer."""
    body = orjson.dumps({"error": "request_timeout", "message": "the request head did not arrive in time"})
    headers = {
        "Content-Type": "application/json",
        "Content-Length": str(len(body)),
        "Connection": "close",
        **VARY,
        **SECURITY_HEADERS,
    }
    head = "".join(f"{name}: {value}\r\n" for name, value in headers.items())
    return f"HTTP/1.1 408 Request Timeout\r\n{head}".encode(), body


_TIMEOUT_HEAD, _TIMEOUT_BODY = _request_timeout_bytes()


class Connections:
    """One replica's connections: which wait for a request head and since when, and what was
    closed (read by /metrics, api/metrics.py)."""

    def __init__(self, head_timeout_s: float, max_connections: int) -> None:
        self.head_timeout_s = head_timeout_s
        self.max_connections = max(1, max_connections)
        self.open: dict[EdgeProtocol, None] = {}
        # Connections awaiting a request head, by when they began to: oldest first.
        self.heads: dict[EdgeProtocol, float] = {}
        self.slow_heads = 0  # closed: the head took longer than head_timeout_s
        self.made_room = 0  # closed: waiting or idle, to make room for a new connection
        self.refused = 0  # closed at once: the replica was full of busy connections
        self.unreadable = 0  # answered 400 and closed: the parser refused the request
        self._idle: deque[tuple[float, EdgeProtocol]] = deque()
        self._scanned_at = float("-inf")
        self._sweeping: asyncio.TimerHandle | None = None

    @classmethod
    def from_settings(cls, settings: Settings) -> Connections:
        return cls(settings.api_head_timeout_s, settings.api_max_connections)

    def fit_file_limit(self) -> None:
        """Make the process's file limit hold `max_connections` (raising its soft limit as far as
        the hard one allows), or hold fewer connections, said in one log line."""
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        needed = self.max_connections + RESERVED_FILES
        if soft != resource.RLIM_INFINITY and soft < needed:
            raised = needed if hard == resource.RLIM_INFINITY else min(hard, needed)
            try:
                resource.setrlimit(resource.RLIMIT_NOFILE, (raised, hard))
                soft = raised
            except (ValueError, OSError):
                pass
        if soft != resource.RLIM_INFINITY and soft < needed:
            fewer = max(1, soft - RESERVED_FILES)
            log.warning(
                "ORDERVIEW_API_MAX_CONNECTIONS is %d, but this process may open %d files (ulimit -n) "
                "and needs %d of them for itself: holding at most %d connections",
                self.max_connections,
                soft,
                RESERVED_FILES,
                fewer,
            )
            self.max_connections = fewer

    def opened(self, protocol: EdgeProtocol) -> bool:
        """A new connection: False if it is to be closed at once (every other one is busy).
        Those closed here leave `open` at once, so it never holds more than max_connections."""
        if len(self.open) >= self.max_connections and not self._make_room():
            self.refused += 1
            return False
        self.open[protocol] = None
        self.head_started(protocol)
        return True

    def lost(self, protocol: EdgeProtocol) -> None:
        self.open.pop(protocol, None)
        self.heads.pop(protocol, None)

    def head_started(self, protocol: EdgeProtocol, with_bytes: bool = False) -> None:
        loop = asyncio.get_running_loop()
        protocol.head_since = now = loop.time()
        protocol.head_bytes = with_bytes
        self.heads[protocol] = now
        if self._sweeping is None:
            self._sweeping = loop.call_later(SWEEP_S, self._sweep)

    def head_arrived(self, protocol: EdgeProtocol) -> None:
        protocol.head_since = None
        protocol.head_bytes = False
        self.heads.pop(protocol, None)

    def _sweep(self) -> None:
        """Close the heads past their deadline; again in a while, as long as any is awaited."""
        self._sweeping = None
        heads = self.heads
        if not heads:
            return
        loop = asyncio.get_running_loop()
        cutoff = loop.time() - self.head_timeout_s
        late = []
        for protocol, since in heads.items():  # oldest first: stop at the first within its time
            if since > cutoff:
                break
            late.append(protocol)
        for protocol in late:
            sent_some = protocol.head_bytes
            self.head_arrived(protocol)
            self.open.pop(protocol, None)
            if protocol.close_slow_head(sent_some):
                self.slow_heads += 1
        if heads:
            self._sweeping = loop.call_later(SWEEP_S, self._sweep)

    def _make_room(self) -> bool:
        """Close the connection that waited longest for a head, else the longest idle one."""
        waiting = next(iter(self.heads), None)
        if waiting is not None:
            self._close_for_room(waiting)
            return True
        idle, now = self._idle, asyncio.get_running_loop().time()
        if not idle and now - self._scanned_at >= IDLE_SCAN_S:
            self._scanned_at = now
            found = [(since, p) for p in self.open if (since := p.idle_since()) is not None]
            idle.extend(sorted(found, key=lambda pair: pair[0]))
        while idle:
            since, protocol = idle.popleft()
            if protocol in self.open and protocol.idle_since() == since:  # still idle since then
                self._close_for_room(protocol)
                return True
        return False

    def _close_for_room(self, protocol: EdgeProtocol) -> None:
        self.head_arrived(protocol)
        self.open.pop(protocol, None)
        protocol.force_close()
        self.made_room += 1


CONNECTIONS = web.AppKey("connections", Connections)


class EdgeProtocol(RequestHandler):
    """aiohttp's RequestHandler under a replica's `Connections`."""

    __slots__ = ("_connections", "head_bytes", "head_since")

    def __init__(self, manager: web.Server, *, connections: Connections, **kwargs: Any) -> None:
        super().__init__(manager, **kwargs)
        self._connections = connections
        self.head_since: float | None = None  # awaiting a request head since (loop time)
        self.head_bytes = False  # part of the awaited head has arrived

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        if not self._connections.opened(self):
            self.force_close()

    def connection_lost(self, exc: BaseException | None) -> None:
        super().connection_lost(exc)
        self._connections.lost(self)

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        if self.head_since is not None:
            if self._messages:  # the head arrived (or the parser refused it: an answer is due)
                self._connections.head_arrived(self)
            elif data:
                self.head_bytes = True
        elif data and not self._messages and not self._request_in_progress and self.transport is not None:
            # The first bytes of the next head on a kept-alive connection, not all of it.
            self._connections.head_started(self, with_bytes=True)

    def idle_since(self) -> float | None:
        """When this connection's last answer ended, if it waits for the next request without
        having received any of it; None otherwise."""
        waiter = self._waiter
        if self.head_since is not None or self._request_in_progress or self._messages:
            return None
        if waiter is None or waiter.done() or self.transport is None:
            return None
        return self._next_keepalive_close_time  # the answer's end, plus the keep-alive timeout

    def close_slow_head(self, sent_some: bool) -> bool:
        """The awaited head is late: close, with a 408 if part of it came (`sent_some`). False if
        the connection was no longer open."""
        transport = self.transport
        if transport is None or self._force_close:
            return False
        if sent_some:
            date = formatdate(usegmt=True)
            transport.write(b"%sDate: %s\r\n\r\n%s" % (_TIMEOUT_HEAD, date.encode(), _TIMEOUT_BODY))
        self.force_close()
        return True

    def handle_error(
        self,
        request: BaseRequest,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        """aiohttp's answer to what no handler answered, as JSON with the edge's headers.

        A request the parser refused is the client's doing: counted and logged at debug, not
        as aiohttp's error with a traceback, which any client could flood the log with."""
        if isinstance(exc, http_exceptions.HttpProcessingError) and status < 500:
            self._connections.unreadable += 1
            log.debug("unreadable request from %s: %r", request.remote, exc)
        else:
            super().handle_error(request, status, exc, message)  # logs it; raises if an answer began
        reason = next((text for kind, text in _PARSER_ERRORS if isinstance(exc, kind)), None)
        phrase = HTTPStatus(status).phrase
        code = phrase.lower().replace(" ", "_").replace("-", "_")
        answer = error_response(status, code, reason or phrase.lower())
        answer.force_close()
        return answer


class EdgeServer(web.Server):
    """aiohttp's Server, making EdgeProtocols."""

    def __init__(self, connections: Connections, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.edge_connections = connections

    def __call__(self) -> RequestHandler:
        return EdgeProtocol(self, loop=self._loop, connections=self.edge_connections, **self._kwargs)


class EdgeRunner(web.AppRunner):
    """An AppRunner whose server is an EdgeServer under `connections`."""

    def __init__(self, app: web.Application, connections: Connections, **kwargs: Any) -> None:
        super().__init__(app, **kwargs)
        self._connections = connections

    async def _make_server(self) -> web.Server:
        server = await super()._make_server()  # the app started and frozen, its plain Server
        return EdgeServer(
            self._connections,
            server.request_handler,
            request_factory=server.request_factory,
            handler_cancellation=server.handler_cancellation,
            loop=server._loop,
            **server._kwargs,
        )
