"""An order's rows in the normalized tables: their one definition.

Built from the parsed message in Python and COPYed (projector/store.py), for a new order and for
a new version of a known one alike; the bench's raw COPY baseline builds its rows here too.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from operator import itemgetter

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

_order = itemgetter(*ORDER_COLUMNS)
_delivery = itemgetter(*DELIVERY_COLUMNS)
_payment = itemgetter(*PAYMENT_COLUMNS)
_item = itemgetter(*ITEM_COLUMNS)


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
        self.items.extend((uid, i, *_item(item)) for i, item in enumerate(order["items"]))

    def by_statement(self) -> list[tuple[str, list[tuple]]]:
        """(COPY statement, rows) per table, parents first."""
        return [
            (COPY_ORDERS, self.orders),
            (COPY_DELIVERIES, self.deliveries),
            (COPY_PAYMENTS, self.payments),
            (COPY_ITEMS, self.items),
        ]
