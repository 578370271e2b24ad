"""Slow and numerous clients against a real API process, with real sockets on loopback: a request
head slower than ORDERVIEW_API_HEAD_TIMEOUT_S is closed, a replica holds at most
ORDERVIEW_API_MAX_CONNECTIONS, and normal requests keep being answered while thousands of slow
heads are tried. Counts are bounded; times are generous bounds on failure, never the assertion."""

from __future__ import annotations

import asyncio
import contextlib
import resource
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, replace

import aiohttp
import pytest_asyncio
from prometheus_client.parser import text_string_to_metric_families
from yarl import URL

from api.edge import SECURITY_HEADERS
from orderview.settings import Settings
from tests import support
from tests.api_server import RunningApi, api_process
from tests.integration.test_api import new_order

HEAD_TIMEOUT_S = 2.0
MAX_CONNECTIONS = 300
SLOW_HEADS = 3000  # ten times the bound: most are closed to make room, the rest at their deadline
OPENING_S = 3.0  # ... opened over this long, so that some live to their deadline
TRICKLE_S = 0.5  # each sends a header line this often, never the blank line that ends a head
BOUND_S = 60.0  # a generous bound on failure: anything still open past it is a bug
PARTIAL_HEAD = b"GET /orders HTTP/1.1\r\nHost: 127.0.0.1\r\n"


@dataclass
class Outcome:
    answer: bytes  # what the server sent before it closed
    closed: bool  # False: still open at BOUND_S


def raise_file_limit(needed: int) -> int:
    """As many sockets as this test opens, if the hard limit allows (the API inherits it)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = needed if hard == resource.RLIM_INFINITY else min(hard, needed)
    if soft != resource.RLIM_INFINITY and soft < wanted:
        resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


@pytest_asyncio.fixture(scope="module")
async def api(settings: Settings) -> AsyncIterator[RunningApi]:
    raise_file_limit(SLOW_HEADS + 1000)
    bounded = replace(settings, api_head_timeout_s=HEAD_TIMEOUT_S, api_max_connections=MAX_CONNECTIONS)
    async with api_process(bounded) as running:
        yield running


def port_of(api: RunningApi) -> int:
    port = URL(api.url).port
    assert port is not None
    return port


async def slow_head(
    port: int, first: bytes = PARTIAL_HEAD, trickle: bytes | None = b"X-Trickle: 1\r\n"
) -> Outcome:
    """A client that sends `first` and then, every TRICKLE_S, `trickle`, until the server closes."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    answer = b""
    try:
        writer.write(first)
        async with asyncio.timeout(BOUND_S):
            while True:
                try:
                    async with asyncio.timeout(TRICKLE_S):
                        chunk = await reader.read(65536)
                except TimeoutError:
                    if trickle is not None:
                        writer.write(trickle)
                    continue
                if not chunk:
                    return Outcome(answer, closed=True)
                answer += chunk
    except (ConnectionError, OSError):
        return Outcome(answer, closed=True)
    except TimeoutError:
        return Outcome(answer, closed=False)
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError, OSError):
            await writer.wait_closed()


async def metrics(api: RunningApi) -> dict[tuple[str, str], float]:
    async with api.client.get(api.url + "/metrics") as response:
        text = await response.text()
    found = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name.startswith("orderview_api_connections"):
                found[s.name, s.labels.get("reason", "")] = s.value
    return found


def security_headers_in(answer: bytes) -> bool:
    head = answer.split(b"\r\n\r\n", 1)[0].decode().lower()
    return all(f"{name.lower()}: {value.lower()}" in head for name, value in SECURITY_HEADERS.items())


async def test_a_request_head_slower_than_the_deadline_is_closed_with_a_408(api: RunningApi) -> None:
    outcomes = await asyncio.gather(*(slow_head(port_of(api)) for _ in range(50)))
    assert all(o.closed for o in outcomes), "a slow head still open after the bound"
    assert all(o.answer.startswith(b"HTTP/1.1 408 ") for o in outcomes), outcomes[0]
    assert all(security_headers_in(o.answer) for o in outcomes)


async def test_a_connection_that_sends_nothing_is_closed_without_an_answer(api: RunningApi) -> None:
    outcome = await slow_head(port_of(api), first=b"", trickle=None)
    assert (outcome.closed, outcome.answer) == (True, b"")


async def test_a_head_sent_in_pieces_within_the_deadline_is_answered(api: RunningApi) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port_of(api))
    try:
        for piece in (b"GET /healthz HTTP/1.1\r\n", b"Host: 127.0.0.1\r\n", b"Connection: close\r\n\r\n"):
            writer.write(piece)
            await asyncio.sleep(HEAD_TIMEOUT_S / 5)
        async with asyncio.timeout(BOUND_S):
            answer = await reader.read()
    finally:
        writer.close()
    assert answer.startswith(b"HTTP/1.1 200 "), answer[:200]


async def test_a_kept_alive_connection_gets_a_new_deadline_for_each_head(api: RunningApi) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port_of(api))
    try:
        writer.write(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        async with asyncio.timeout(BOUND_S):
            first = await reader.readuntil(b'"alive"}')
        assert first.startswith(b"HTTP/1.1 200 ")
        await asyncio.sleep(HEAD_TIMEOUT_S * 1.5)  # idle longer than a head may take: still open
        writer.write(PARTIAL_HEAD)  # then a head that never ends
        async with asyncio.timeout(BOUND_S):
            late = await reader.read()
    finally:
        writer.close()
    assert late.startswith(b"HTTP/1.1 408 "), late[:200]


async def test_normal_requests_keep_being_answered_while_thousands_of_slow_heads_are_tried(
    api: RunningApi, settings: Settings
) -> None:
    order = new_order("besieged")
    await support.seed_orders(settings, [order])
    path = f"/order/{order['order_uid']}"
    before = await metrics(api)
    attack_done = asyncio.Event()
    answers: list[tuple[str, int, float]] = []  # (client, status, seconds)
    held: list[float] = []  # orderview_api_connections during the attack

    async def slow_heads() -> list[Outcome]:
        pause = OPENING_S / SLOW_HEADS
        tasks = []
        for _ in range(SLOW_HEADS):
            tasks.append(asyncio.create_task(slow_head(port_of(api))))
            await asyncio.sleep(pause)
        try:
            return await asyncio.gather(*tasks)
        finally:
            attack_done.set()

    async def normal(name: str, client: aiohttp.ClientSession, every_s: float) -> None:
        while not attack_done.is_set():
            started = time.perf_counter()
            async with client.get(api.url + path, timeout=aiohttp.ClientTimeout(total=BOUND_S)) as r:
                await r.read()
                answers.append((name, r.status, time.perf_counter() - started))
            await asyncio.sleep(every_s)

    async def watch() -> None:
        while not attack_done.is_set():
            held.append((await metrics(api))["orderview_api_connections", ""])
            await asyncio.sleep(0.2)

    new_each = aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True))
    kept_alive = aiohttp.ClientSession()
    async with new_each, kept_alive:
        quiet = []  # the same requests before the attack, for the report below
        for _ in range(50):
            started = time.perf_counter()
            async with new_each.get(api.url + path) as r:
                await r.read()
            quiet.append(time.perf_counter() - started)
        outcomes, *_ = await asyncio.gather(
            slow_heads(),
            normal("new connection", new_each, 0.02),
            normal("kept alive", kept_alive, 0.02),
            watch(),
        )
    after = await metrics(api)

    assert all(o.closed for o in outcomes), f"{sum(not o.closed for o in outcomes)} slow heads still open"
    assert not any(b" 200 " in o.answer.split(b"\r\n", 1)[0] for o in outcomes)
    assert {name for name, _, _ in answers} == {"new connection", "kept alive"}
    assert all(status == 200 for _, status, _ in answers), [a for a in answers if a[1] != 200][:5]
    assert max(held) <= MAX_CONNECTIONS
    closed = {
        reason: after["orderview_api_connections_closed_total", reason]
        - before.get(("orderview_api_connections_closed_total", reason), 0.0)
        for reason in ("head_timeout", "made_room", "refused")
    }
    assert closed["head_timeout"] > 0 and closed["made_room"] > 0
    assert closed["head_timeout"] + closed["made_room"] >= SLOW_HEADS
    assert closed["refused"] == 0  # a normal client always found room
    slowest = sorted(seconds for _, _, seconds in answers)
    print(
        f"\n{len(answers)} normal requests during {SLOW_HEADS} slow heads: p50 {slowest[len(slowest) // 2] * 1000:.1f} ms, "
        f"max {slowest[-1] * 1000:.1f} ms (before them: p50 {sorted(quiet)[25] * 1000:.1f} ms); "
        f"closed {closed}; held at most {max(held):.0f}"
    )
