"""A PostgreSQL failover under load, with real servers: a primary and streaming standbys from
`ops/postgres.sh` (tests/pg_failover.py), the shared Kafka, a real projector worker and real API
replicas (`python -m api`), one reading from the primary, one from a standby of the standby.

Orders stream in; the standby stops receiving WAL; three seconds later the primary's postmaster is
killed (kill -9), a second after that the standby is promoted, and the settings reach it — once
through the list of hosts (`target_session_attrs=read-write`), once through one address that moves
(a forwarder standing for a VIP). The promoted database lacks the batches the old primary
committed in those three seconds. The worker is stopped (SIGSTOP) from the crash until both
replicas have reached the promoted database, so that they find it lacking what they served
(whether a replica or the worker reconnects first is otherwise a race of their backoffs). Then every acknowledged order is in the read model once, at its
newest version; no replica ever serves an older version of an order than one it served before,
and the one on the standby reads from it again on the new timeline; the worker never exits.
"""

from __future__ import annotations

import asyncio
import re
from collections import defaultdict
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from dataclasses import dataclass, field, replace
from time import monotonic

import orjson
import pytest
import pytest_asyncio
from aiokafka.errors import KafkaError

from harness import scratch
from harness.metrics import matching
from harness.orders import reference_order
from harness.processes import LOGS, Projector
from harness.replication import Answer, new_orders, poll_replica, version_of, versioned
from harness.topics import create_topics, delete_topics
from orderview import kafka_clients
from orderview.bootstrap import create_database
from orderview.settings import Settings
from projector.audit import audit
from tests import readmodel, support
from tests.api_server import RunningApi, api_process
from tests.pg_failover import FailoverCluster

RATE = 200  # messages a second: a new order, or the next version of a watched one (one in four)
WATCHED = 30  # orders updated all along, which the replicas are asked for over and over
HOLD_AT_S = 5.0  # into the stream, the standby stops receiving WAL
CRASH_AFTER_S = 3.0  # ... and this much later the primary dies: the standby lacks those seconds
PROMOTE_AFTER_S = 1.0  # a failover manager's time to notice and promote
SEND_FOR_S = 16.0
BACK_WITHIN_S = 180.0  # a failure bound, not a target


@dataclass
class Sent:
    """What the broker acknowledged: order_uid -> newest version (new orders: 1)."""

    newest: dict[str, int] = field(default_factory=dict)
    failed: int = 0
    last_at: float = 0.0


@dataclass
class Worker:
    """The projector worker, started again a second after it stops (as `make run` does), so that
    the rest can be measured; every exit is kept, with its last critical line."""

    settings: Settings
    process: Projector | None = None
    exits: list[tuple[int, str]] = field(default_factory=list)
    starts: int = 0

    def start(self) -> Projector:
        self.starts += 1
        self.process = Projector(self.settings, f"projector-failover-{self.starts}").start()
        return self.process

    async def supervise(self) -> None:
        while True:
            await asyncio.sleep(0.2)
            assert self.process is not None and self.process.proc is not None
            code = self.process.proc.poll()
            if code is None:
                continue
            critical = [line for line in self.process.log_text().splitlines() if '"critical"' in line]
            self.exits.append((code, critical[-1][:400] if critical else ""))
            await asyncio.sleep(1)
            self.start()


async def send(settings: Settings, watched: list[dict], stop_at: float, sent: Sent, prefix: str) -> None:
    producer = kafka_clients.producer(settings, linger_ms=5, request_timeout_ms=30_000)
    await producer.start()
    pending: set[asyncio.Task] = set()
    versions: dict[str, int] = defaultdict(lambda: 1)

    async def acknowledged(uid: str, version: int, future: asyncio.Future) -> None:
        try:
            await future
        except KafkaError:
            sent.failed += 1
            return
        sent.newest[uid] = max(sent.newest.get(uid, 0), version)

    try:
        started, i = monotonic(), 0
        while monotonic() < stop_at:
            if i % 4 == 0:
                order = watched[(i // 4) % len(watched)]
                uid = order["order_uid"]
                versions[uid] += 1
                version, body = versions[uid], versioned(order, versions[uid])
            else:
                uid, version = f"{prefix}-{i}", 1
                body = readmodel.order(uid)
            future = await producer.send(settings.orders_topic, orjson.dumps(body), key=uid.encode())
            task = asyncio.create_task(acknowledged(uid, version, future))
            pending.add(task)
            task.add_done_callback(pending.discard)
            i += 1
            await asyncio.sleep(max(0.0, started + i / RATE - monotonic()))
        await asyncio.gather(*pending)
        sent.last_at = monotonic()
    finally:
        await producer.stop()


async def metric(replica: RunningApi, name: str, **labels: str) -> float:
    """A sample of a replica's /metrics (0 when the series does not exist yet)."""
    async with replica.client.get(f"{replica.url}/metrics") as response:
        return matching(await response.text(), name, **labels)


async def versions_served(replica: RunningApi, uids: list[str]) -> dict[str, int]:
    """What the replica answers for each order now (0: not found, -1: an error)."""
    served = {}
    for uid in uids:
        async with replica.client.get(f"{replica.url}/order/{uid}") as response:
            body = await response.read()
            served[uid] = (
                version_of(body) if response.status == 200 else (0 if response.status == 404 else -1)
            )
    return served


def went_back(answers: list[Answer]) -> list[tuple[Answer, int]]:
    """Answers older than one the replica gave before for the same order (a 404 is version 0)."""
    newest: dict[str, int] = {}
    back = []
    for answer in sorted(answers, key=lambda a: a.asked):
        if answer.version < 0:  # neither 200 nor 404: no version served
            continue
        if answer.version < newest.get(answer.uid, 0):
            back.append((answer, newest[answer.uid]))
        newest[answer.uid] = max(newest.get(answer.uid, 0), answer.version)
    return back


def not_back(settings: Settings, sent: Sent, watched: set[str]) -> list[str]:
    """Acknowledged orders the read model lacks, or holds at an older version."""
    held = readmodel.snapshots(settings)
    return [
        uid
        for uid, version in sent.newest.items()
        if uid not in held or (uid in watched and version_of(held[uid]) != version)
    ]


def held_s(reached: str, replica: str) -> float:
    """How long the replica held reads after LISTEN reconnected, as its log says (-1: it did not)."""
    log = (LOGS / f"api-failover-{reached}-{replica}.log").read_text(errors="replace")
    found = re.findall(r"holds what this replica served again after ([0-9.]+) s", log)
    return float(found[-1]) if found else -1.0


@pytest_asyncio.fixture
async def cluster(settings: Settings) -> AsyncIterator[FailoverCluster]:
    running = await FailoverCluster(settings).start()
    try:
        yield running
    finally:
        await running.stop()


@pytest.mark.parametrize("reached", ["through_hosts", "through_vip"])
async def test_a_promoted_standby_that_lacks_the_last_batches_gets_them_back_with_no_worker_exit(
    settings: Settings, cluster: FailoverCluster, reached: str
) -> None:
    s = replace(
        getattr(cluster, reached)(scratch.topics_for_tests(settings)),
        pg_database=scratch.unique("orderview_failover_"),
    )
    await asyncio.to_thread(create_database, s)
    await create_topics(s)
    worker = Worker(s)
    watched = new_orders("watched", WATCHED)
    watched_uids = [o["order_uid"] for o in watched]
    sent = Sent(newest=dict.fromkeys(watched_uids, 1))
    figures: dict[str, float] = {}
    try:
        worker.start().wait_ready(120)
        await support.produce(s, [(o["order_uid"].encode(), orjson.dumps(versioned(o, 1))) for o in watched])
        await readmodel.wait_for_orders(s, WATCHED)
        supervising = asyncio.create_task(worker.supervise())
        async with AsyncExitStack() as stack:
            on_primary = await stack.enter_async_context(
                api_process(s, log_path=LOGS / f"api-failover-{reached}-primary.log")
            )
            on_standby = await stack.enter_async_context(
                api_process(
                    cluster.reading_the_cascade(s), log_path=LOGS / f"api-failover-{reached}-standby.log"
                )
            )
            replicas = (on_primary, on_standby)
            stop_polling = asyncio.Event()
            polls = [
                asyncio.create_task(poll_replica(r.url, watched_uids, stop_polling, workers=3, pause_s=0.01))
                for r in replicas
            ]
            started = monotonic()
            sending = asyncio.create_task(send(s, watched, started + SEND_FOR_S, sent, scratch.unique("fo")))

            await asyncio.sleep(max(0.0, started + HOLD_AT_S - monotonic()))
            cluster.hold_wal()
            await asyncio.sleep(CRASH_AFTER_S)
            at_crash = await asyncio.to_thread(
                cluster.positions, cluster.primary_port, s.pg_database, s.orders_topic
            )
            await cluster.crash_primary()
            assert worker.process is not None
            with worker.process.paused():
                await asyncio.sleep(PROMOTE_AFTER_S)
                await cluster.promote()
                if reached == "through_vip":
                    await cluster.move_vip()
                promoted_at = monotonic()
                promoted = await asyncio.to_thread(
                    cluster.positions, cluster.standby_port, s.pg_database, s.orders_topic
                )
                standby_reads = await metric(
                    on_standby, "orderview_api_standby_reads_total", source="standby"
                )

                async def both_holding() -> bool:
                    return all(
                        [await metric(r, "orderview_api_database_catch_ups_total") >= 1 for r in replicas]
                    )

                await support.wait_until(
                    both_holding,
                    60,
                    0.2,
                    "both replicas to reach the promoted database and hold reads it lacks the versions of",
                )
                held_for_s = monotonic() - promoted_at

            await sending
            remaining: list[str] = []
            while monotonic() - promoted_at < BACK_WITHIN_S:
                remaining = await asyncio.to_thread(not_back, s, sent, set(watched_uids))
                if not remaining:
                    break
                await asyncio.sleep(0.2)
            back_at = monotonic()

            async def reading_the_standby_again() -> bool:
                return await metric(on_standby, "orderview_api_standby_in_use") == 1

            await support.wait_until(
                reading_the_standby_again, 60, 0.2, "the standby replica to read from the standby"
            )
            newest = {uid: sent.newest[uid] for uid in watched_uids}

            async def serving_the_newest() -> bool:
                return all([await versions_served(r, watched_uids) == newest for r in replicas])

            await support.wait_until(
                serving_the_newest,
                60,
                0.2,
                "every replica to serve the newest version of every watched order",
            )
            stop_polling.set()
            answers: list[list[Answer]] = await asyncio.gather(*polls)
            reconnects = [await metric(r, "orderview_api_listen_reconnects_total") for r in replicas]
            catch_ups = [await metric(r, "orderview_api_database_catch_ups_total") for r in replicas]
            standby_reads_after = await metric(
                on_standby, "orderview_api_standby_reads_total", source="standby"
            )
            ready = []
            for r in replicas:
                async with r.client.get(f"{r.url}/readyz") as response:
                    ready.append(response.status)
        supervising.cancel()
        await asyncio.gather(supervising, return_exceptions=True)

        lacked_records = sum(at_crash[p] - promoted.get(p, 0) for p in at_crash)
        lacked_batches = await asyncio.to_thread(cluster.lost_commits)
        found = await audit(s)
        figures = {
            "acknowledged": len(sent.newest),
            "lacked_batches": lacked_batches,
            "lacked_records": lacked_records,
            "back_after_promotion_s": back_at - promoted_at,
            "back_after_last_send_s": back_at - sent.last_at,
            "worker_paused_after_promotion_s": held_for_s,
            "worker_exits": len(worker.exits),
            **{f"{name}_answers": len(a) for name, a in zip(("primary", "standby"), answers, strict=True)},
            **{
                f"{name}_failed_answers": sum(x.version < 0 for x in a)
                for name, a in zip(("primary", "standby"), answers, strict=True)
            },
            **{f"{name}_held_s": held_s(reached, name) for name in ("primary", "standby")},
        }
        summary = ", ".join(f"{name} {value:g}" for name, value in figures.items())
        print(f"{reached}: {summary}; positions at the crash {at_crash}, promoted {promoted}")
        print(f"{reached}: worker exits {[(code, line[:300]) for code, line in worker.exits]}")
        (LOGS / f"failover-figures-{reached}.txt").write_text(
            "".join(f"{name}={value:.1f}\n" for name, value in figures.items())
        )

        assert sent.failed == 0 and len(sent.newest) > RATE * SEND_FOR_S * 0.5
        assert lacked_batches > 0 and lacked_records > 0, "the promoted database lacked the last batches"
        assert remaining == [], f"{len(remaining)} acknowledged orders not back, e.g. {remaining[:5]}"
        assert found.total("missing") == found.total("not_yet_applied") == found.total("lost") == 0
        assert readmodel.count(s, "orders") == len(sent.newest), "every order once"
        items = len(reference_order()["items"])
        assert readmodel.count(s, "items") == items * len(sent.newest), "every order's items once"
        for name, mine in zip(("primary", "standby"), answers, strict=True):
            back = went_back(mine)
            assert back == [], f"the replica on the {name} served an older version than before: {back[:5]}"
        assert min(reconnects) >= 1 and min(catch_ups) >= 1, "both replicas' LISTEN followed the failover"
        assert min(held_s(reached, name) for name in ("primary", "standby")) >= 0, "both held, then served"
        assert ready == [200, 200]
        assert standby_reads_after > standby_reads, (
            "the standby replica reads from the standby on the new timeline"
        )
        assert worker.process is not None and worker.process.terminate() == 0, "a clean stop on SIGTERM"
        assert worker.exits == [], (
            f"the worker exited {len(worker.exits)} time(s) and was started again (status, last critical "
            f"line): {worker.exits}"
        )
    finally:
        if (
            worker.process is not None
            and worker.process.proc is not None
            and worker.process.proc.poll() is None
        ):
            worker.process.kill9()
        await delete_topics(s, best_effort=True)
