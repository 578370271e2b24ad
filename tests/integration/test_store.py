"""The read model's adapter (projector/adapters/postgres.py) against the real database: what two
workers writing the same order at once do to each other."""

from __future__ import annotations

import psycopg
import pytest

from harness.orders import reference_order
from orderview.settings import Settings
from projector.adapters import postgres
from projector.core.plan import Fresh, decide
from projector.core.records import Record
from projector.core.verdicts import Order, compact_json
from projector.core.versions import Version
from tests import support
from tests.readmodel import count, snapshots


def _plan(order: dict, partition: int, offset: int, heads: dict) -> list[postgres.Change]:
    """The changes a worker plans for one record of `order`, given the heads it locked."""
    body = compact_json(order)
    record = Record(partition, offset, order["order_uid"].encode(), body.encode(), support.now_ms())
    fresh = Fresh()
    fresh.records.append((record, Version(record.timestamp_ms, partition, offset)))
    return decide(fresh, {record.where: Order(order["order_uid"], body, order)}, heads, (), {}).changes


async def test_a_new_order_another_worker_inserted_meanwhile_is_a_conflict_that_leaves_nothing(
    clean_settings: Settings,
) -> None:
    order = reference_order()
    uid = order["order_uid"]
    mine = dict(order, track_number="MINE")
    async with (
        await psycopg.AsyncConnection.connect(clean_settings.dsn("projector")) as worker,
        await psycopg.AsyncConnection.connect(clean_settings.dsn("projector")) as other,
    ):
        async with worker.transaction():
            heads = await postgres.lock_heads(worker, [uid])
            assert heads == {}  # new to the read model as the worker sees it
            async with other.transaction():
                await postgres.write_orders(other, [(7, order)], partition=1)
            with pytest.raises(postgres.Conflict):
                async with worker.transaction():
                    await postgres.write_changes(worker, _plan(mine, 0, 3, heads))
        # Planned again, the order is no longer new: the worker's later version replaces it.
        async with worker.transaction():
            heads = await postgres.lock_heads(worker, [uid])
            assert set(heads) == {uid}
            await postgres.write_changes(worker, _plan(mine, 0, 3, heads))
    assert snapshots(clean_settings)[uid]["track_number"] == "MINE"
    for table in ("orders", "deliveries", "payments"):
        assert count(clean_settings, table) == 1, table


REFUSE_A_CITY = "ALTER TABLE deliveries ADD CONSTRAINT test_refused_city CHECK (city <> 'Refused') NOT VALID"
ALLOW_IT_AGAIN = "ALTER TABLE deliveries DROP CONSTRAINT test_refused_city"


async def test_the_orders_a_database_refuses_are_found_by_halving_the_batch_not_one_by_one(
    clean_settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    base = reference_order()
    orders = [dict(base, order_uid=f"{base['order_uid']}{i:04d}") for i in range(400)]
    refused_at = {17, 203, 204}
    for i in refused_at:
        orders[i] = dict(orders[i], delivery=dict(base["delivery"], city="Refused"))
    changes = [c for i, o in enumerate(orders) for c in _plan(o, 0, i, {})]
    tries = 0
    write = postgres.write_changes

    async def counted(conn: psycopg.AsyncConnection, part: list, history: bool = True) -> None:
        nonlocal tries
        tries += 1
        await write(conn, part, history)

    with psycopg.connect(clean_settings.dsn("owner"), autocommit=True) as owner:
        owner.execute(REFUSE_A_CITY)
        try:
            monkeypatch.setattr(postgres, "write_changes", counted)
            async with await psycopg.AsyncConnection.connect(clean_settings.dsn("projector")) as conn:
                async with conn.transaction(force_rollback=True):
                    refused = await postgres.refused_changes(conn, changes)
        finally:
            owner.execute(ALLOW_IT_AGAIN)
    assert set(refused) == {(0, i) for i in refused_at}
    assert all("test_refused_city" in words for words in refused.values())
    assert tries < 60  # one by one would be 400
    assert count(clean_settings, "orders") == 0  # every try rolled back
