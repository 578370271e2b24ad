"""Erasure and history through the real projector and API replicas (docs/history.md): a tombstone
erases an order cached by two replicas, an older version after it does not bring it back and a
newer one does, a rebuild keeps it erased, a long history is paged, and after compaction the
history starts at the oldest version the log holds."""

from __future__ import annotations

import time

import jsonpatch
import orjson
import psycopg

from harness.processes import Projector
from orderview.settings import Settings
from projector.adapters.kafka import scan
from projector.audit import audit
from projector.rebuild import rebuild
from tests import logops, support
from tests.api_server import RunningApi, api_process
from tests.readmodel import message, order, snapshots, wait_for_orders

HISTORY_ROWS = "SELECT count(*) FROM order_history WHERE order_uid = %s"
ERASED = "SELECT order_uid FROM order_snapshots WHERE body_json IS NULL"


async def get(api: RunningApi, path: str) -> tuple[int, dict]:
    async with api.client.get(api.url + path) as response:
        body = await response.read()
        return response.status, (orjson.loads(body) if body else {})


def history_rows(s: Settings, uid: str) -> int:
    with psycopg.connect(s.dsn("owner")) as conn:
        return conn.execute(HISTORY_ROWS, [uid]).fetchone()[0]


def erased(s: Settings) -> set[str]:
    with psycopg.connect(s.dsn("owner")) as conn:
        return {uid for (uid,) in conn.execute(ERASED)}


async def served_everywhere(replicas: list[RunningApi], uid: str, status: int, timeout: float = 10.0) -> None:
    async def answered() -> bool:
        return all([(await get(r, f"/order/{uid}"))[0] == status for r in replicas])

    await support.wait_until(answered, timeout=timeout, interval=0.05, message=f"{uid} answering {status}")


async def test_a_tombstone_erases_an_order_that_two_replicas_have_cached(clean_settings: Settings) -> None:
    s = clean_settings
    kept, gone = order("kept-1"), order("gone-1", locale="ru")
    p = Projector(s, "projector-erasure").start().wait_ready()
    try:
        await support.produce(s, [message(kept), message(gone)])
        await wait_for_orders(s, 2)
        async with api_process(s) as a, api_process(s) as b:
            for replica in (a, b):
                assert (await get(replica, "/order/gone-1"))[0] == 200
                assert (await get(replica, "/order/gone-1"))[0] == 200  # now from its cache
            await support.produce(s, [(b"gone-1", None)])
            await served_everywhere([a, b], "gone-1", 404)
            assert (await get(a, "/order/gone-1/history"))[0] == 404
            _, page = await get(b, "/orders")
            assert "gone-1" not in {o["order_uid"] for o in page["orders"]}
            assert (await get(a, "/order/kept-1"))[0] == 200, "the tombstone erased its own order only"
        assert set(snapshots(s)) == {"kept-1"} and erased(s) == {"gone-1"}
        assert history_rows(s, "gone-1") == 0
        await support.wait_until(lambda: p.metric("orderview_projector_erased_total") == 1)
    finally:
        assert p.terminate() == 0
    found = await audit(s)
    assert (found.total("erased"), found.total("missing")) == (1, 0)


async def test_an_older_version_after_the_tombstone_stays_erased_and_a_newer_one_creates_the_order_again(
    clean_settings: Settings,
) -> None:
    s = clean_settings
    now = int(time.time() * 1000)
    p = Projector(s, "projector-erasure-versions").start().wait_ready()
    try:
        await support.produce(s, [message(order("e-1"))], partition=0, timestamp_ms=now - 60_000)
        await support.produce(s, [(b"e-1", None)], partition=0, timestamp_ms=now)
        await support.wait_until(lambda: erased(s) == {"e-1"}, message="the erasure")
        # From another partition, older than the erasure: it lost, and is dead-lettered as stale.
        await support.produce(s, [message(order("e-1", locale="ru"))], partition=1, timestamp_ms=now - 30_000)
        [letter] = await support.read_topic(s, s.dlq_topic, 1)
        assert support.headers(letter)["dlq.reason"] == "stale_version"
        assert "e-1" not in snapshots(s)
        # Newer than the erasure: the order exists again, its history starting there.
        await support.produce(s, [message(order("e-1", locale="de"))], partition=2, timestamp_ms=now + 30_000)
        await support.wait_until(lambda: snapshots(s).get("e-1", {}).get("locale") == "de", message="reborn")
        assert history_rows(s, "e-1") == 0, "the erased versions stay erased from the history"
    finally:
        assert p.terminate() == 0


async def test_an_erasure_survives_a_rebuild(one_partition: Settings) -> None:
    s = one_partition
    await support.produce(s, [message(order("r-1")), message(order("r-2")), (b"r-1", None)])
    assert await rebuild(s) == 3
    assert set(snapshots(s)) == {"r-2"} and erased(s) == {"r-1"}
    assert await rebuild(s, keep=True) == 3
    assert set(snapshots(s)) == {"r-2"} and erased(s) == {"r-1"}
    assert await rebuild(s, truncate=True) == 3
    assert set(snapshots(s)) == {"r-2"} and erased(s) == {"r-1"}


async def test_a_long_history_written_by_the_projector_is_paged_back_to_its_first_version(
    one_partition: Settings,
) -> None:
    s = one_partition
    versions = [order("h-1", locale=f"l{i}") for i in range(45)]
    versions += [versions[-1]]  # the same order again: no history entry
    p = Projector(s, "projector-history").start().wait_ready()
    try:
        for start in range(0, len(versions), 7):  # in several batches, and several in a batch
            await support.produce(s, [message(v) for v in versions[start : start + 7]])
        await support.wait_until(lambda: snapshots(s).get("h-1", {}).get("locale") == "l44", message="h-1")
        assert history_rows(s, "h-1") == 44
        async with api_process(s) as api:
            seen, before = [], ""
            while True:
                status, page = await get(api, f"/order/h-1/history?limit=20{before}")
                assert status == 200
                state = None
                for entry in page["versions"]:
                    if "order" in entry:
                        state = entry["order"]
                    else:
                        state = jsonpatch.apply_patch(state, entry["patch"])
                    seen.append(state["locale"])
                if page["next_before"] is None:
                    break
                before = f"&before={page['next_before']}"
        assert sorted(seen, key=lambda loc: int(loc[1:])) == [f"l{i}" for i in range(45)]
        assert len(seen) == 45, "each version once, the identical re-send not at all"
    finally:
        assert p.terminate() == 0


async def test_after_compaction_a_rebuild_gives_a_history_from_the_oldest_version_the_log_holds(
    one_partition: Settings,
) -> None:
    s = one_partition
    await logops.recreate_orders_topic_compacted(s)
    await support.produce(s, [message(order("c-1", locale=f"l{i}")) for i in range(5)])
    assert await rebuild(s) == 5
    assert history_rows(s, "c-1") == 4

    async def compacted() -> bool:  # new records roll segments; the cleaner needs closed ones
        await support.produce(s, [message(order("filler", locale=str(time.monotonic_ns())))])
        return await records_of(s, b"c-1") == 1

    await support.wait_until(compacted, timeout=90, interval=0.5, message="c-1 compacted to its last record")
    await rebuild(s, keep=True)
    assert snapshots(s)["c-1"]["locale"] == "l4", "the newest version, as before"
    assert history_rows(s, "c-1") == 0, "the compacted versions are gone from the rebuilt history"


async def records_of(s: Settings, key: bytes) -> int:
    n = 0
    async for _, records in scan(s, s.orders_topic):
        n += sum(1 for r in records if r.key == key)
    return n
