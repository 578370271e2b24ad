"""The answers aiohttp would make itself, before any handler of ours runs (a request it cannot
read, a target no route can match), from a real `python -m api` over raw sockets: JSON with the
security headers every other answer carries; the unreadable ones counted, and not logged as the
server's error."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio
from prometheus_client.parser import text_string_to_metric_families
from yarl import URL

from api.edge import SECURITY_HEADERS
from orderview.settings import Settings
from tests.api_server import RunningApi, api_process

HOST = b"Host: 127.0.0.1\r\n"
UNREADABLE = {
    "not an HTTP method": b"GARBAGE / HTTP/1.1\r\n" + HOST + b"\r\n",
    "a TLS handshake": b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + b"\x00" * 32 + b"\r\n\r\n",
    "an unknown HTTP version": b"GET /healthz HTTP/7.1\r\n" + HOST + b"\r\n",
    "a request line too long": b"GET /" + b"a" * 9000 + b" HTTP/1.1\r\n" + HOST + b"\r\n",
    "a header too long": b"GET /healthz HTTP/1.1\r\n" + HOST + b"X-Big: " + b"a" * 9000 + b"\r\n\r\n",
    "too many headers": b"GET /healthz HTTP/1.1\r\n"
    + HOST
    + b"".join(b"X-%d: 1\r\n" % i for i in range(200))
    + b"\r\n",
    "a header without a colon": b"GET /healthz HTTP/1.1\r\n" + HOST + b"X-No-Colon\r\n\r\n",
    "a NUL in a header name": b"GET /healthz HTTP/1.1\r\n" + HOST + b"X-A\x00b: 1\r\n\r\n",
    "two Content-Lengths": b"POST /orders HTTP/1.1\r\n"
    + HOST
    + b"Content-Length: 1\r\nContent-Length: 2\r\n\r\nab",
}


# A target that is no path: no route can match it, and aiohttp answered it itself. (CONNECT's
# host:port still is: docs/security.md says why.)
NO_PATH = {"OPTIONS *": b"OPTIONS * HTTP/1.1\r\n" + HOST + b"\r\n"}


@pytest_asyncio.fixture(scope="module")
async def api(
    settings: Settings, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[tuple[RunningApi, Path]]:
    log = tmp_path_factory.mktemp("parser-answers") / "api.log"
    async with api_process(settings, log_path=log) as running:
        yield running, log


async def exchange(api: RunningApi, request: bytes) -> bytes:
    """Everything the server answers to `request` on a connection of its own, until it closes."""
    url = URL(api.url)
    reader, writer = await asyncio.open_connection(url.host, url.port)
    try:
        writer.write(request)
        async with asyncio.timeout(30):
            return await reader.read()  # to the end: the server closes after such an answer
    finally:
        writer.close()


def parse(answer: bytes) -> tuple[int, dict[str, str], bytes]:
    head, _, body = answer.partition(b"\r\n\r\n")
    status_line, *lines = head.decode("latin-1").split("\r\n")
    headers = dict(line.split(": ", 1) for line in lines)
    return int(status_line.split()[1]), headers, body


@pytest.mark.parametrize("request_bytes", UNREADABLE.values(), ids=UNREADABLE.keys())
async def test_a_request_the_server_cannot_read_is_answered_json_with_the_security_headers(
    api: tuple[RunningApi, Path], request_bytes: bytes
) -> None:
    status, headers, body = parse(await exchange(api[0], request_bytes))
    assert status == 400
    assert {name: headers.get(name) for name in SECURITY_HEADERS} == SECURITY_HEADERS
    assert (headers["Content-Type"], headers["Vary"]) == ("application/json", "Origin")
    error = json.loads(body)
    assert error["error"] == "bad_request" and error["message"]


async def test_unreadable_requests_are_counted_and_not_logged_as_the_servers_errors(
    api: tuple[RunningApi, Path],
) -> None:
    running, log = api

    async def unreadable() -> float:
        async with running.client.get(running.url + "/metrics") as response:
            text = await response.text()
        for family in text_string_to_metric_families(text):
            for s in family.samples:
                if s.name == "orderview_api_connections_closed_total" and s.labels["reason"] == "unreadable":
                    return s.value
        return 0.0

    before = await unreadable()
    for request_bytes in UNREADABLE.values():
        await exchange(running, request_bytes)
    assert await unreadable() - before == len(UNREADABLE)
    errors = [line for line in log.read_text().splitlines() if '"level":"error"' in line]
    assert errors == []


@pytest.mark.parametrize("request_bytes", NO_PATH.values(), ids=NO_PATH.keys())
async def test_a_target_that_is_no_path_is_a_json_404_with_the_security_headers(
    api: tuple[RunningApi, Path], request_bytes: bytes
) -> None:
    status, headers, body = parse(
        await exchange(api[0], request_bytes.replace(HOST, HOST + b"Connection: close\r\n"))
    )
    assert status == 404
    assert {name: headers.get(name) for name in SECURITY_HEADERS} == SECURITY_HEADERS
    assert json.loads(body)["error"] == "not_found"
