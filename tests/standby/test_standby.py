"""API replicas that read from a streaming standby (real `python -m api` processes, a real
projector, a standby made by `ops/postgres.sh standby`): each replica, polled on its own port,
serves every commit within a second and never goes back to an older version, also when a
notification arrives before the standby has replayed its change; a standby that stops, or falls
behind, shows in /readyz and the metrics, the replica degrades as configured and recovers by
itself."""

from __future__ import annotations

import asyncio
import math
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import replace

import orjson

from harness.metrics import matching
from harness.processes import LOGS, Projector
from harness.replication import (
    Answer,
    CommitLog,
    Standby,
    judge,
    new_orders,
    percentile,
    poll_replica,
    version_of,
    versioned,
    watch_commits,
)
from orderview.settings import Settings
from tests import support
from tests.api_server import RunningApi, api_process

ORDERS = 100
VERSIONS = 50  # ORDERS × VERSIONS updates, produced at once
WITHIN_S = 1.0


def on_standby(settings: Settings, standby: Standby, fallback: str = "primary") -> Settings:
    return replace(
        settings,
        pg_read_host="127.0.0.1",
        pg_read_port=standby.port,
        api_standby_fallback=fallback,
        api_standby_max_lag_s=1.0,
    )


@asynccontextmanager
async def replicas(*settings: Settings) -> AsyncIterator[list[RunningApi]]:
    """One `python -m api --replicas 1` per settings, each on its own port."""
    async with AsyncExitStack() as stack:
        running = []
        for i, s in enumerate(settings):
            log = LOGS / f"api-standby-{i}.log"
            LOGS.mkdir(parents=True, exist_ok=True)
            running.append(await stack.enter_async_context(api_process(s, log_path=log)))
        yield running


async def metric(replica: RunningApi, name: str, **labels: str) -> float:
    """A sample of a replica's /metrics (0 when the series does not exist yet)."""
    async with replica.client.get(f"{replica.url}/metrics") as response:
        return matching(await response.text(), name, **labels)


async def readyz(replica: RunningApi) -> tuple[int, dict]:
    async with replica.client.get(f"{replica.url}/readyz") as response:
        return response.status, orjson.loads(await response.read())


async def get_order(replica: RunningApi, uid: str) -> tuple[int, int]:
    """Status and version (0 for a 404)."""
    async with replica.client.get(f"{replica.url}/order/{uid}") as response:
        body = await response.read()
        return response.status, version_of(body) if response.status == 200 else 0


async def until(predicate, message: str, timeout: float = 15.0) -> None:
    await support.wait_until(predicate, timeout=timeout, interval=0.05, message=message)


async def test_two_replicas_on_a_standby_serve_every_commit_within_a_second_and_never_go_back(
    clean_settings: Settings, standby: Standby
) -> None:
    s = on_standby(clean_settings, standby)
    orders = new_orders("standby", ORDERS)
    uids = [o["order_uid"] for o in orders]
    log, listening = CommitLog(), asyncio.Event()
    watcher = asyncio.create_task(watch_commits(s, log, listening))
    projector = Projector(s, "projector-standby").start()
    try:
        await asyncio.wait_for(listening.wait(), 10)
        async with replicas(s, s) as running:
            await asyncio.to_thread(projector.wait_ready)
            stop = asyncio.Event()
            polls = [asyncio.create_task(poll_replica(r.url, uids, stop)) for r in running]
            updates = [versioned(o, v) for v in range(1, VERSIONS + 1) for o in orders]
            await support.produce(s, [(o["order_uid"].encode(), orjson.dumps(o)) for o in updates])

            def all_committed() -> bool:
                return all(log.latest(uid, math.inf) == VERSIONS for uid in uids)

            await until(all_committed, "every last version to be committed", timeout=120)
            await asyncio.sleep(WITHIN_S + 0.5)  # every replica is due to serve them by now
            stop.set()
            answers: list[list[Answer]] = await asyncio.gather(*polls)
            from_standby = [
                await metric(r, "orderview_api_standby_reads_total", source="standby") for r in running
            ]
            from_primary = [
                await metric(r, "orderview_api_standby_reads_total", source="primary") for r in running
            ]
        assert projector.terminate() == 0
    finally:
        watcher.cancel()
        await asyncio.gather(watcher, return_exceptions=True)
        if projector.proc and projector.proc.poll() is None:
            projector.kill9()

    assert log.count == ORDERS * VERSIONS or log.count >= ORDERS  # batches may fold versions together
    for i, mine in enumerate(answers):
        verdict = judge(log, mine, WITHIN_S)
        print(
            f"replica {i}: {verdict.answers} answers, {len(verdict.delays)} commits seen, delay p50 "
            f"{percentile(verdict.delays, 50) * 1000:.1f} ms p99 {percentile(verdict.delays, 99) * 1000:.1f} ms, "
            f"reads from the standby {from_standby[i]:.0f}, from the primary {from_primary[i]:.0f}"
        )
        assert verdict.failed == [], verdict.failed[:5]
        assert verdict.went_back == [], f"replica {i} went back: {verdict.went_back[:5]}"
        assert verdict.late == [], f"replica {i} was late: {verdict.late[:5]}"
        last = {a.uid: a.version for a in sorted(mine, key=lambda a: a.asked)}
        assert set(last.values()) == {VERSIONS}, f"replica {i} did not end on the last versions"
        assert from_standby[i] > 0


async def test_a_notification_before_the_standby_replayed_its_change_is_never_answered_with_the_old_version(
    settings: Settings, standby: Standby
) -> None:
    """Replay paused: the replicas hear of a change the standby does not have. From then on the
    one falling back to the primary serves the new version (after waiting the bound for the
    standby), the other answers 503 for that order; neither the old version. Past the bound
    both show the lag; resumed, both recover by themselves."""
    order = new_orders("paused", 1)[0]
    uid = order["order_uid"]
    await support.seed_orders(settings, [versioned(order, 1)])
    await until(lambda: asyncio.to_thread(standby.caught_up), "the standby to replay the first version")
    async with replicas(
        on_standby(settings, standby, "primary"), on_standby(settings, standby, "unavailable")
    ) as (
        falls_back,
        refuses,
    ):
        for replica in (falls_back, refuses):
            assert await get_order(replica, uid) == (200, 1)
            assert await get_order(replica, uid) == (200, 1)  # cached
        heard = [await metric(r, "orderview_api_notifications_total") for r in (falls_back, refuses)]
        standby.pause_replay()
        try:
            await support.seed_orders(settings, [versioned(order, 2)])

            async def both_heard() -> bool:
                now = [await metric(r, "orderview_api_notifications_total") for r in (falls_back, refuses)]
                return all(n > h for n, h in zip(now, heard, strict=True))

            await until(both_heard, "both replicas to hear of version 2")
            seen_primary, seen_refused = [], []
            async with asyncio.timeout(10):
                while True:
                    seen_primary.append(await get_order(falls_back, uid))
                    seen_refused.append(await get_order(refuses, uid))
                    if seen_primary[-1] == (200, 2) and len(seen_primary) > 20:
                        break
            assert (200, 1) not in seen_primary, seen_primary
            assert set(seen_primary) <= {(200, 2)}, seen_primary
            assert set(seen_refused) == {(503, 0)}, seen_refused

            async def lag_past_bound() -> bool:
                return all(
                    [
                        await metric(r, "orderview_api_standby_replay_lag_seconds") > 1.0
                        for r in (falls_back, refuses)
                    ]
                )

            await until(lag_past_bound, "the lag gauges to pass the bound")
            status, answer = await readyz(falls_back)
            assert (
                status == 200
                and "lags" in answer["degraded"]
                and "reading from the primary" in answer["degraded"]
            )
            status, answer = await readyz(refuses)
            assert status == 503 and "lags" in answer["reason"] and "503" in answer["reason"]
            assert await metric(refuses, "orderview_api_standby_in_use") == 0
        finally:
            standby.resume_replay()
        await recovered(falls_back, refuses)
        assert await get_order(refuses, uid) == (200, 2)
        assert await get_order(falls_back, uid) == (200, 2)


async def recovered(*running: RunningApi) -> None:
    async def all_back() -> bool:
        for replica in running:
            status, answer = await readyz(replica)
            if status != 200 or "degraded" in answer:
                return False
            if await metric(replica, "orderview_api_standby_in_use") != 1:
                return False
        return True

    await until(all_back, "the replicas to read from the standby again", timeout=30)
    for replica in running:
        assert await metric(replica, "orderview_api_standby_replay_lag_seconds") < 1.0
        assert await metric(replica, "orderview_api_standby_up") == 1


async def test_a_stopped_standby_shows_and_the_replicas_degrade_as_configured_then_recover(
    settings: Settings, standby: Standby
) -> None:
    changing, steady, created, after = new_orders("stopped", 4)
    await support.seed_orders(settings, [versioned(changing, 1), versioned(steady, 1)])
    await until(lambda: asyncio.to_thread(standby.caught_up), "the standby to replay the seed")
    async with replicas(
        on_standby(settings, standby, "primary"), on_standby(settings, standby, "unavailable")
    ) as (
        falls_back,
        refuses,
    ):
        for replica in (falls_back, refuses):
            for order in (changing, steady):
                assert await get_order(replica, order["order_uid"]) == (200, 1)
        standby_reads = await metric(refuses, "orderview_api_standby_reads_total", source="standby")
        await asyncio.to_thread(standby.stop)
        try:

            async def both_see_it() -> bool:
                return all([await metric(r, "orderview_api_standby_up") == 0 for r in (falls_back, refuses)])

            await until(both_see_it, "both replicas to see the standby down")
            status, answer = await readyz(falls_back)
            assert (
                status == 200
                and answer["degraded"] == "the standby does not answer: reading from the primary"
            )
            status, answer = await readyz(refuses)
            assert status == 503 and answer["reason"].startswith("the standby does not answer")

            await support.seed_orders(settings, [versioned(changing, 2), versioned(created, 1)])
            await until(
                lambda: _serves(falls_back, changing, 2),
                "the falling-back replica to serve the change from the primary",
            )
            assert await get_order(falls_back, created["order_uid"]) == (200, 1)
            await until(
                lambda: _answers(refuses, changing, 503), "the refusing replica to drop the changed order"
            )
            assert await get_order(refuses, created["order_uid"]) == (503, 0)
            for replica in (falls_back, refuses):  # what did not change is still served from the cache
                assert await get_order(replica, steady["order_uid"]) == (200, 1)
            for replica in (falls_back, refuses):
                assert await metric(replica, "orderview_api_standby_replay_lag_seconds") > 0
        finally:
            await asyncio.to_thread(standby.start)
        await recovered(falls_back, refuses)
        assert await get_order(refuses, changing["order_uid"]) == (200, 2)
        assert await get_order(refuses, created["order_uid"]) == (200, 1)
        await support.seed_orders(settings, [versioned(after, 1)])
        await until(lambda: _serves(refuses, after, 1), "a new order to be served from the standby again")
        assert await metric(refuses, "orderview_api_standby_reads_total", source="standby") > standby_reads


async def _serves(replica: RunningApi, order: dict, version: int) -> bool:
    return await get_order(replica, order["order_uid"]) == (200, version)


async def _answers(replica: RunningApi, order: dict, status: int) -> bool:
    return (await get_order(replica, order["order_uid"]))[0] == status
