"""An order's rows in the normalized tables: their one definition.

Built from the parsed message in Python and COPYed (projector/adapters/postgres.py); the bench's
raw COPY baseline builds its rows here too. A new version of a known order rewrites only the rows
that differ from its previous version's (`Rows.replace`): a shop's versions mostly advance an
item's status or correct an address, and the rest of the order's rows stay as they are.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from operator import itemgetter

from schemas import ORDER_SCHEMA

ORDER_COLUMNS = (
    "order_uid",
    "track_number",
    "entry",
    "locale",
    "internal_signature",
    "customer_id",
    "delivery_service",
    "shardkey",
    "sm_id",
    "date_created",
    "oof_shard",
)
DELIVERY_COLUMNS = ("name", "phone", "zip", "city", "address", "region", "email")
PAYMENT_COLUMNS = (
    "transaction",
    "request_id",
    "currency",
    "provider",
    "amount",
    "payment_dt",
    "bank",
    "delivery_cost",
    "goods_total",
    "custom_fee",
)
ITEM_COLUMNS = (
    "chrt_id",
    "track_number",
    "price",
    "rid",
    "name",
    "sale",
    "size",
    "total_price",
    "nm_id",
    "brand",
    "status",
)

COPY_ORDERS = f"COPY orders ({', '.join(ORDER_COLUMNS)}) FROM STDIN"
COPY_DELIVERIES = f"COPY deliveries (order_uid, {', '.join(DELIVERY_COLUMNS)}) FROM STDIN"
COPY_PAYMENTS = f"COPY payments (order_uid, {', '.join(PAYMENT_COLUMNS)}) FROM STDIN"
COPY_ITEMS = f"COPY items (order_uid, position, {', '.join(ITEM_COLUMNS)}) FROM STDIN"


# What a schema-valid value of each JSON Schema type is dumped as: strings are str, integers int.
_DUMPED_AS = {"string": "text", "integer": "int8"}


def copy_types(properties: dict, columns: Sequence[str]) -> tuple[str, ...]:
    """The types psycopg dumps the columns' values as (`Copy.set_types`), from the schema the
    values were validated against. In text COPY the server parses each value as its column's
    type; naming the dumpers up front spares psycopg a lookup per value (formatting 2.2 -> 1.2 us
    per order's items). A column of any other schema type is refused here, at import."""
    types = []
    for c in columns:
        kind = properties[c]["type"]
        if kind not in _DUMPED_AS:
            raise ValueError(f"column {c!r} has schema type {kind!r}, which rows.py has no COPY type for")
        types.append(_DUMPED_AS[kind])
    return tuple(types)


_PROPERTIES = ORDER_SCHEMA["properties"]
ORDER_TYPES = copy_types(_PROPERTIES, ORDER_COLUMNS)
DELIVERY_TYPES = ("text", *copy_types(_PROPERTIES["delivery"]["properties"], DELIVERY_COLUMNS))
PAYMENT_TYPES = ("text", *copy_types(_PROPERTIES["payment"]["properties"], PAYMENT_COLUMNS))
ITEM_TYPES = ("text", "int8", *copy_types(_PROPERTIES["items"]["items"]["properties"], ITEM_COLUMNS))

_order = itemgetter(*ORDER_COLUMNS)
_delivery = itemgetter(*DELIVERY_COLUMNS)
_payment = itemgetter(*PAYMENT_COLUMNS)
_item = itemgetter(*ITEM_COLUMNS)


@dataclass(slots=True)
class Stale:
    """Rows of known orders to delete before `Rows` are COPYed: whole orders (their deliveries,
    payments and items go by cascade), or single rows of the child tables by primary key."""

    orders: list[str] = field(default_factory=list)
    deliveries: list[str] = field(default_factory=list)
    payments: list[str] = field(default_factory=list)
    items: list[tuple[str, int]] = field(default_factory=list)  # (order_uid, position)


@dataclass(slots=True)
class Rows:
    """The normalized rows of some orders, per table, ready to COPY."""

    orders: list[tuple] = field(default_factory=list)
    deliveries: list[tuple] = field(default_factory=list)
    payments: list[tuple] = field(default_factory=list)
    items: list[tuple] = field(default_factory=list)

    @classmethod
    def of(cls, orders: Iterable[dict]) -> Rows:
        rows = cls()
        for order in orders:
            rows.add(order)
        return rows

    def add(self, order: dict) -> None:
        """A schema-valid order's rows; an item's position is its index in the message."""
        uid = order["order_uid"]
        self.orders.append(_order(order))
        self.deliveries.append((uid, *_delivery(order["delivery"])))
        self.payments.append((uid, *_payment(order["payment"])))
        self.items += [(uid, i, *_item(item)) for i, item in enumerate(order["items"])]

    def replace(self, old: dict | None, new: dict | None, stale: Stale) -> None:
        """Add to these rows and to `stale` what turns the rows of order `old` into those of `new`
        (None: no rows, as before a new order or after an erasure). An order whose own row
        changes is replaced whole; otherwise only the child rows that differ are."""
        if old is None:
            if new is not None:
                self.add(new)
            return
        uid = old["order_uid"]
        if new is None or _order(old) != _order(new):
            stale.orders.append(uid)
            if new is not None:
                self.add(new)
            return
        if (delivery := _delivery(new["delivery"])) != _delivery(old["delivery"]):
            stale.deliveries.append(uid)
            self.deliveries.append((uid, *delivery))
        if (payment := _payment(new["payment"])) != _payment(old["payment"]):
            stale.payments.append(uid)
            self.payments.append((uid, *payment))
        before = {(i, _item(item)) for i, item in enumerate(old["items"])}
        after = {(i, _item(item)) for i, item in enumerate(new["items"])}
        stale.items.extend((uid, i) for i, _ in sorted(before - after))
        self.items.extend((uid, i, *item) for i, item in sorted(after - before))

    def by_statement(self) -> list[tuple[str, tuple[str, ...], list[tuple]]]:
        """(COPY statement, its columns' types, rows) per table, parents first."""
        return [
            (COPY_ORDERS, ORDER_TYPES, self.orders),
            (COPY_DELIVERIES, DELIVERY_TYPES, self.deliveries),
            (COPY_PAYMENTS, PAYMENT_TYPES, self.payments),
            (COPY_ITEMS, ITEM_TYPES, self.items),
        ]
