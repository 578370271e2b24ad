"""The operator's view, end to end: a real Prometheus (Debian's) scrapes two projector workers
and an API of two replicas, with the project's scrape config and rules (tests/prometheus.py says
what differs: targets, 1 s intervals, a short `for:`), while the emulator sends orders and a
client reads them. The dashboard's queries are asked of that Prometheus, since Grafana does not
run here, and the browser takes the README's screenshots."""

from __future__ import annotations

import asyncio
import json
import re
import subprocess
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass

import aiohttp
import pytest_asyncio
from playwright.async_api import expect

from harness import ROOT, scratch
from harness.processes import LOGS, Projector, ServiceProcess
from orderview.settings import Settings
from tests import support
from tests.api_server import RunningApi, api_process
from tests.conftest import own_topics
from tests.e2e.test_viewer import _new_page, order_heading, screenshot
from tests.prometheus import Prometheus, binary, write_config

DASHBOARD = ROOT / "ops" / "grafana" / "dashboards" / "orderview.json"
TIMINGS = ROOT / "test-artifacts" / "prometheus-alert-timing.json"
# The alert this module waits for, with a `for:` of seconds instead of the shipped minute.
SHORT_FOR = {"OrderviewProjectorDown": "5s"}
# Series the dashboard shows that a short healthy run does not have: their panels' queries are
# still asked (Prometheus must accept them), but may answer nothing.
ABSENT_IN_A_SHORT_RUN = {
    "orderview_api_standby_replay_lag_seconds": "only when the API reads from a standby",
}
METRIC_NAME = re.compile(r"\b(orderview_[a-z_]+|up)\b")


@dataclass
class Watched:
    settings: Settings
    prometheus: Prometheus
    workers: list[Projector]
    api: RunningApi
    read_uids: list[str]

    def instance(self, worker: Projector) -> str:
        return f"127.0.0.1:{worker.port}"


async def read_orders(api: RunningApi, known: list[str], stop: asyncio.Event) -> None:
    """A client, twice a second: the same orders again (hits, once each replica has read them),
    the newest ones (misses) and an order that does not exist."""
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True)) as client:
        while not stop.is_set():
            async with client.get(f"{api.url}/orders?limit=2") as response:
                newest = [o["order_uid"] for o in (await response.json())["orders"]]
            for uid in [*known, *newest, scratch.unique("nobody")]:
                async with client.get(f"{api.url}/order/{uid}") as response:
                    await response.read()
            await asyncio.sleep(0.5)


async def served_uids(api: RunningApi, at_least: int) -> list[str]:
    async def some() -> list[str]:
        async with aiohttp.ClientSession() as client:
            async with client.get(f"{api.url}/orders?limit=50") as r:
                orders = (await r.json())["orders"] if r.status == 200 else []
        return [o["order_uid"] for o in orders] if len(orders) >= at_least else []

    return await support.wait_until(some, timeout=60, interval=0.5, message=f"{at_least} orders served")


@pytest_asyncio.fixture(scope="module")
async def watched(settings: Settings, tmp_path_factory) -> AsyncIterator[Watched]:
    async with own_topics(settings, projector_lag_interval_s=0.5) as s:
        emulator = ServiceProcess(
            "emulator", s, "emulator-watched", ("--count", "0", "--rate", "20", "--seed", "17", "--invalid-share", "0.1")
        )  # fmt: skip
        workers = [Projector(s, f"projector-watched-{i}").start() for i in range(2)]
        try:
            async with api_process(s, log_path=LOGS / "api-watched.log", replicas=2) as api:
                for worker in workers:
                    worker.wait_ready()
                directory = tmp_path_factory.mktemp("prometheus")
                api_target = api.url.removeprefix("http://")
                config = write_config(
                    directory, [api_target], [f"127.0.0.1:{w.port}" for w in workers], SHORT_FOR
                )
                prometheus = Prometheus(directory).start(config)
                emulator.start()
                try:
                    uids = await served_uids(api, at_least=10)
                    reading = asyncio.create_task(read_orders(api, uids[:5], stop := asyncio.Event()))
                    yield Watched(s, prometheus, workers, api, uids[:10])
                    stop.set()
                    await reading
                finally:
                    assert emulator.terminate() == 0
                    assert prometheus.stop() == 0
        finally:
            for worker in workers:
                assert worker.terminate() == 0, worker.log_path


async def until(predicate, timeout: float = 30.0, message: str = "Prometheus to see it"):
    return await support.wait_until(lambda: asyncio.to_thread(predicate), timeout, 0.25, message)


async def test_every_projector_worker_and_every_api_replica_is_scraped_and_up(watched: Watched) -> None:
    p = watched.prometheus

    def everything_up() -> bool:
        targets = p.targets()
        return len(targets) == 3 and all(t["health"] == "up" for t in targets)

    await until(everything_up, message="the API and both workers scraped and up")
    jobs = sorted((t["labels"]["job"], t["labels"]["instance"]) for t in p.targets())
    assert jobs == sorted(
        [("orderview-api", watched.api.url.removeprefix("http://"))]
        + [("orderview-projector", watched.instance(w)) for w in watched.workers]
    )

    def replicas_fresh_and_ready() -> bool:
        # The replicas share the API's port: each one is seen by its series (replica="0", "1").
        ready = {r["metric"]["replica"] for r in p.query("orderview_api_ready == 1")}
        fresh = {r["metric"]["replica"] for r in p.query("orderview:api_notification_age_seconds < 5")}
        return ready == fresh == {"0", "1"}

    await until(replicas_fresh_and_ready, message="both replicas ready, their notifications fresh")
    ready = {r["metric"]["instance"] for r in p.query("orderview_projector_ready == 1")}
    assert ready == {watched.instance(w) for w in watched.workers}

    def every_partition_sampled_once() -> bool:
        lag = p.query("orderview_projector_lag_records")
        return sorted(r["metric"]["partition"] for r in lag) == ["0", "1", "2"]

    await until(every_partition_sampled_once, message="the lag of each partition, from one worker each")


async def test_promtool_accepts_what_every_worker_and_the_api_expose(watched: Watched) -> None:
    scraped = [(w.name, w.get("/metrics", w.port)) for w in watched.workers]
    async with aiohttp.ClientSession() as client:
        async with client.get(watched.api.url + "/metrics") as response:
            scraped.append(("api", (response.status, await response.read())))
    for name, (status, body) in scraped:
        assert status == 200, name
        checked = await asyncio.to_thread(
            subprocess.run, [binary("promtool"), "check", "metrics"], input=body, capture_output=True
        )
        assert checked.returncode == 0, (name, checked.stdout + checked.stderr)
    assert b"orderview_projector_oldest_unapplied_age_seconds" in b"".join(b for _, (_, b) in scraped)


def panel_queries() -> list[tuple[str, str]]:
    dashboard = json.loads(DASHBOARD.read_text())
    return [
        (panel["title"], target["expr"])
        for panel in dashboard["panels"]
        for target in panel.get("targets", [])
    ]


async def test_every_dashboard_query_answers_with_data_after_a_short_run(watched: Watched) -> None:
    p = watched.prometheus
    queries = panel_queries()
    assert len(queries) >= 12
    known = set(p.api("label/__name__/values"))

    def conditional(expr: str) -> bool:
        return any(name in ABSENT_IN_A_SHORT_RUN for name in METRIC_NAME.findall(expr))

    def answered() -> list[tuple[str, str]]:
        return [(title, expr) for title, expr in queries if not conditional(expr) and not p.query(expr)]

    await until(lambda: not answered(), timeout=45, message="data for every panel")
    for title, expr in queries:
        p.query(expr)  # every query is valid PromQL, data or not
        for name in METRIC_NAME.findall(expr):
            assert name in known or name in ABSENT_IN_A_SHORT_RUN, (title, name)
    hits = p.query('orderview:api_requests:rate5m{route="/order/{order_uid}", outcome="hit"} > 0')
    assert hits, "the client's second reads were cache hits"


async def test_a_stopped_worker_fires_its_alert_and_it_resolves_when_the_worker_is_back(
    watched: Watched, browser
) -> None:
    p, worker = watched.prometheus, watched.workers[1]
    instance = watched.instance(worker)
    alert = "OrderviewProjectorDown"
    await until(lambda: p.query(f'up{{instance="{instance}"}} == 1'), message="the worker up")
    assert p.alerts(alert) == []

    stopped = time.monotonic()
    assert worker.terminate() == 0

    def firing() -> list[dict]:
        return [a for a in p.alerts(alert, "firing") if a["labels"]["instance"] == instance]

    (fired,) = await until(firing, timeout=60, message=f"{alert} firing")
    to_firing = time.monotonic() - stopped
    assert fired["labels"]["severity"] == "critical"
    assert fired["annotations"]["summary"] == f"Projector worker {instance} is down: it cannot be scraped."
    assert fired["annotations"]["runbook"]
    await screenshot_alerts_page(browser, p)

    restarted = time.monotonic()
    worker.start()
    await until(lambda: not p.alerts(alert), timeout=60, message=f"{alert} resolved")
    to_resolved = time.monotonic() - restarted
    worker.wait_ready()
    TIMINGS.parent.mkdir(parents=True, exist_ok=True)
    timings = {
        "alert": alert,
        "for_s": 5,
        "scrape_and_evaluation_interval_s": 1,
        "stopped_to_firing_s": round(to_firing, 2),
        "restarted_to_resolved_s": round(to_resolved, 2),
    }
    TIMINGS.write_text(json.dumps(timings, indent=2) + "\n")
    print(timings)


async def screenshot_alerts_page(browser, prometheus: Prometheus) -> None:
    context, page = await _new_page(browser, 1280, 900)
    try:
        # Debian builds the classic web UI only (/classic/...), without the React one.
        await page.goto(prometheus.url + "/classic/alerts")
        firing = page.get_by_text("OrderviewProjectorDown").first
        await expect(firing).to_be_visible()
        await page.get_by_role("button", name="Show annotations").click()
        await firing.click()  # unfolds its labels, state, since when, summary and runbook
        await expect(page.get_by_text("it cannot be scraped").first).to_be_visible()
        await screenshot(page, "watching-prometheus-alerts")
    finally:
        await context.close()


async def test_the_viewer_shows_an_order_the_emulator_sent(watched: Watched, browser) -> None:
    uid = watched.read_uids[0]
    context, page = await _new_page(browser, 1280, 900)
    try:
        await page.goto(f"{watched.api.url}/?id={uid}")
        await expect(order_heading(page, uid)).to_be_visible()
        await screenshot(page, "watching-viewer")
        assert page.script_errors == []
    finally:
        await context.close()
