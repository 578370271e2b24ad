"""The rows a new version rewrites (projector/adapters/rows.py): after deleting what `replace`
calls stale and inserting what it adds, the tables hold exactly the new version's rows."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from harness.orders import reference_order
from projector.adapters.rows import DELIVERY_COLUMNS, ITEM_TYPES, ORDER_TYPES, Rows, Stale, copy_types
from tests import strategies

Tables = dict[str, dict[tuple, tuple]]  # table -> primary key -> row


def tables_of(rows: Rows) -> Tables:
    return {
        "orders": {(r[0],): r for r in rows.orders},
        "deliveries": {(r[0],): r for r in rows.deliveries},
        "payments": {(r[0],): r for r in rows.payments},
        "items": {(r[0], r[1]): r for r in rows.items},
    }


def applied(tables: Tables, stale: Stale, rows: Rows) -> Tables:
    """The tables after the deletes (a whole order by cascade) and then the inserts; an insert
    whose key is still there is the primary-key violation PostgreSQL would raise."""
    after = {name: dict(table) for name, table in tables.items()}
    for uid in stale.orders:
        for table in after.values():
            for key in [key for key in table if key[0] == uid]:
                del table[key]
    for uid in stale.deliveries:
        del after["deliveries"][(uid,)]
    for uid in stale.payments:
        del after["payments"][(uid,)]
    for key in stale.items:
        del after["items"][key]
    for name, table in tables_of(rows).items():
        for key, row in table.items():
            assert key not in after[name], f"{name} {key} inserted while still there"
            after[name][key] = row
    return after


@st.composite
def versions(draw: st.DrawFn) -> tuple[dict, dict]:
    """An order and a later version of it: each part (the order's own fields, delivery, payment,
    each item line, how many lines) kept or taken from another order."""
    old, other = draw(strategies.orders()), draw(strategies.orders())
    new = {
        k: v for k, v in (other if draw(st.booleans()) else old).items() if k not in ("delivery", "payment")
    }
    new["order_uid"] = old["order_uid"]
    new["delivery"] = draw(st.sampled_from([old["delivery"], other["delivery"]]))
    new["payment"] = draw(st.sampled_from([old["payment"], other["payment"]]))
    lines = max(len(old["items"]), len(other["items"]))
    picks = draw(st.lists(st.sampled_from(["old", "other"]), min_size=lines, max_size=lines))
    new["items"] = [
        source["items"][i]
        for i, pick in enumerate(picks)
        if i < len((source := old if pick == "old" else other)["items"])
    ] or old["items"]
    return old, new


@given(versions())
def test_the_deletes_and_inserts_of_a_new_version_turn_the_old_rows_into_the_new(
    pair: tuple[dict, dict],
) -> None:
    old, new = pair
    rows, stale = Rows(), Stale()
    rows.replace(old, new, stale)
    assert applied(tables_of(Rows.of([old])), stale, rows) == tables_of(Rows.of([new]))


@given(strategies.orders())
def test_the_same_version_again_rewrites_nothing(order: dict) -> None:
    rows, stale = Rows(), Stale()
    rows.replace(order, order, stale)
    assert stale == Stale() and rows == Rows()


@given(strategies.orders(), strategies.orders())
def test_an_order_whose_own_fields_changed_is_replaced_whole(old: dict, other: dict) -> None:
    new = {**other, "order_uid": old["order_uid"], "track_number": old["track_number"] + "x"}
    rows, stale = Rows(), Stale()
    rows.replace(old, new, stale)
    assert stale == Stale(orders=[old["order_uid"]]) and rows == Rows.of([new])


@given(strategies.orders())
def test_a_new_order_is_all_inserts_and_an_erasure_all_deletes(order: dict) -> None:
    rows, stale = Rows(), Stale()
    rows.replace(None, order, stale)
    assert stale == Stale() and rows == Rows.of([order])
    rows, stale = Rows(), Stale()
    rows.replace(order, None, stale)
    assert stale == Stale(orders=[order["order_uid"]]) and rows == Rows()


def test_an_advanced_item_status_rewrites_that_item_only() -> None:
    old = reference_order()
    new = {**old, "items": [{**old["items"][0], "status": old["items"][0]["status"] + 1}]}
    rows, stale = Rows(), Stale()
    rows.replace(old, new, stale)
    assert stale == Stale(items=[(old["order_uid"], 0)])
    assert rows == Rows(items=Rows.of([new]).items)


def test_each_column_is_dumped_as_its_schema_type() -> None:
    order = reference_order()
    rows = Rows.of([order])
    for types, row in ((ORDER_TYPES, rows.orders[0]), (ITEM_TYPES, rows.items[0])):
        assert len(types) == len(row)
        for kind, value in zip(types, row, strict=True):
            assert isinstance(value, int if kind == "int8" else str)


def test_a_column_of_a_schema_type_without_a_copy_type_is_refused_naming_it() -> None:
    properties = {name: {"type": "string"} for name in DELIVERY_COLUMNS} | {"zip": {"type": "number"}}
    with pytest.raises(ValueError, match="column 'zip' has schema type 'number'"):
        copy_types(properties, DELIVERY_COLUMNS)
