"""/metrics of several replicas sharing one port (`python -m api --replicas 2`): whichever replica
answers a scrape, it shows every replica's series, and no counter ever goes down."""

from __future__ import annotations

import asyncio
import itertools
import os
import sys
from collections.abc import AsyncIterator

import aiohttp
import pytest_asyncio
from prometheus_client.parser import text_string_to_metric_families

from harness import scratch
from harness.ports import free_port
from orderview.settings import Settings
from tests import support
from tests.api_server import ROOT, RunningApi, wait_ready
from tests.integration.test_api import new_order

SCRAPES = 40
MONOTONIC = ("counter", "histogram")


@pytest_asyncio.fixture
async def two_replicas(settings: Settings) -> AsyncIterator[RunningApi]:
    port = free_port()
    env = {**os.environ, **settings.to_env(), "PYTHONPATH": str(ROOT)}
    command = [sys.executable, "-m", "api", "--host", "127.0.0.1", "--port", str(port), "--replicas", "2"]
    process = await asyncio.create_subprocess_exec(*command, cwd=ROOT, env=env)
    url = f"http://127.0.0.1:{port}"
    try:
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True)) as client:
            await wait_ready(client, url)
            yield RunningApi(url, client, process=process)
    finally:
        process.terminate()
        await process.wait()


def counters(text: str) -> dict[tuple, float]:
    """Every sample of the counters and histograms, by name and labels."""
    samples = {}
    for family in text_string_to_metric_families(text):
        if family.type in MONOTONIC:
            for s in family.samples:
                if not s.name.endswith("_created"):
                    samples[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return samples


async def test_successive_scrapes_under_load_never_see_a_counter_go_down(
    settings: Settings, two_replicas: RunningApi
) -> None:
    api = two_replicas
    orders = [new_order("scraped") for _ in range(20)]
    await support.seed_orders(settings, orders)
    paths = itertools.cycle(
        [f"/order/{o['order_uid']}" for o in orders] + [f"/order/{scratch.unique('ghost')}", "/orders"]
    )
    stop = asyncio.Event()

    async def load() -> None:  # a new connection per request: both replicas take some
        while not stop.is_set():
            async with api.client.get(api.url + next(paths)) as response:
                await response.read()

    loaders = [asyncio.create_task(load()) for _ in range(4)]
    seen: list[dict[tuple, float]] = []
    try:
        for _ in range(SCRAPES):
            async with api.client.get(api.url + "/metrics") as response:
                assert response.status == 200
                seen.append(counters(await response.text()))
            await asyncio.sleep(0.05)
    finally:
        stop.set()
        await asyncio.gather(*loaders)
    replicas = {dict(labels)["replica"] for sample in seen for (_, labels) in sample}
    assert replicas == {"0", "1"}
    for before, after in itertools.pairwise(seen):
        went_down = {key: (before[key], after.get(key)) for key in before if after.get(key, -1) < before[key]}
        assert went_down == {}
    hits = [sum(v for (name, _), v in s.items() if name == "orderview_api_cache_hits_total") for s in seen]
    assert hits[-1] > hits[0], "the load was seen"
