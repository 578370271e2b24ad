"""Deterministic orders, new versions of them, and bad messages, all drawn from one `random.Random`.

Money is in minor units; every generated order satisfies the schema and the invariants
(goods_total = Σ total_price, amount = goods_total + delivery_cost + custom_fee, one track number).
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import orjson

from emulator import vocab

# 2024-01-01T00:00:00Z: the stream's time when none is given (tests); the command line starts
# the stream at the time it is run.
EPOCH_START = 1_704_067_200
DEFAULT_MAX_BYTES = 1024 * 1024
# How long before it reaches the log an order was created, as (share, longest lag in seconds):
# most are sent within two minutes, some wait hours in a shop's queue, a few days (a marketplace's
# nightly sync, a store that was offline), so the recent orders read varied dates.
CREATION_LAGS = ((0.80, 120), (0.15, 6 * 3600), (0.05, 7 * 86400))


def dumps(order: dict) -> bytes:
    return orjson.dumps(order)


def copy_order(order: dict) -> dict:
    return orjson.loads(orjson.dumps(order))


class OrderFactory:
    """Makes realistic, valid orders with unique order_uids, and new versions of them."""

    def __init__(self, rng: random.Random, now: float = EPOCH_START) -> None:
        self.rng = rng
        self._sequence = 0
        self.now = now  # the stream's time (Unix seconds): orders are created at or before it

    def new_uid(self) -> str:
        # The sequence number makes uids unique within a stream; the random part makes them look real.
        self._sequence += 1
        return f"{self.rng.getrandbits(64):016x}{self._sequence:x}"

    def order(self) -> dict:
        rng = self.rng
        uid = self.new_uid()
        entry = rng.choice(vocab.ENTRIES)
        track_number = entry + "".join(rng.choices("ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789", k=10))
        created = self._created()
        items = [self._item(track_number) for _ in range(rng.choice((1, 1, 1, 2, 2, 3, 4, 5)))]
        return {
            "order_uid": uid,
            "track_number": track_number,
            "entry": entry,
            "delivery": self._delivery(),
            "payment": self._payment(uid, items, created),
            "items": items,
            "locale": rng.choice(vocab.LOCALES),
            "internal_signature": "",
            "customer_id": f"customer{rng.randrange(1, 100_000)}",
            "delivery_service": rng.choice(vocab.DELIVERY_SERVICES),
            "shardkey": str(rng.randrange(10)),
            "sm_id": rng.randrange(1, 1000),
            "date_created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(created)),
            "oof_shard": str(rng.randrange(1, 4)),
        }

    def version(self, order: dict) -> dict:
        """A later state of the order, as a shop makes one: its items' statuses advancing (most
        often), the address corrected, the phone number fixed. An order whose items are all at
        their last status gets one of the others."""
        new = copy_order(order)
        changes = [self._correct_address, self._new_phone]
        if any(item["status"] < vocab.ITEM_STATUSES[-1] for item in new["items"]):
            changes += [self._advance_status] * 4
        self.rng.choice(changes)(new)
        return new

    def _created(self) -> int:
        """When a new order was created: a lag before the stream's time (CREATION_LAGS)."""
        rng = self.rng
        [longest] = rng.choices([lag for _, lag in CREATION_LAGS], weights=[w for w, _ in CREATION_LAGS])
        return int(self.now) - rng.randrange(0, longest)

    def _delivery(self) -> dict:
        rng = self.rng
        first, last = rng.choice(vocab.FIRST_NAMES), rng.choice(vocab.LAST_NAMES)
        city, region, calling_code, zip_length = rng.choice(vocab.CITIES)
        login = f"{first}.{last}".lower().translate(vocab.TRANSLIT).replace("'", "")
        return {
            "name": f"{first} {last}",
            "phone": f"+{calling_code}{rng.randrange(10**9, 10**10)}",
            "zip": str(rng.randrange(10 ** (zip_length - 1), 10**zip_length)),
            "city": city,
            "address": self._address(),
            "region": region,
            "email": f"{login}{rng.randrange(100)}@{rng.choice(vocab.EMAIL_DOMAINS)}",
        }

    def _address(self) -> str:
        return f"{self.rng.choice(vocab.STREETS)} {self.rng.randrange(1, 200)}"

    def _payment(self, uid: str, items: list[dict], created: int) -> dict:
        rng = self.rng
        goods_total = sum(item["total_price"] for item in items)
        delivery_cost = rng.choice((0, 0, 500, 1000, 1500, 2500))
        custom_fee = rng.choice((0, 0, 0, 0, 100, 350))
        return {
            "transaction": uid,
            "request_id": "" if rng.random() < 0.8 else f"{rng.getrandbits(48):012x}",
            "currency": rng.choice(vocab.CURRENCIES),
            "provider": rng.choice(vocab.PROVIDERS),
            "amount": goods_total + delivery_cost + custom_fee,
            "payment_dt": min(created + rng.randrange(0, 600), max(created, int(self.now))),
            "bank": rng.choice(vocab.BANKS),
            "delivery_cost": delivery_cost,
            "goods_total": goods_total,
            "custom_fee": custom_fee,
        }

    def _item(self, track_number: str) -> dict:
        rng = self.rng
        price = rng.randrange(50, 50_000)
        sale = rng.choice(vocab.SALES)
        return {
            "chrt_id": rng.randrange(1_000_000, 100_000_000),
            "track_number": track_number,
            "price": price,
            "rid": f"{rng.getrandbits(80):020x}",
            "name": rng.choice(vocab.PRODUCTS),
            "sale": sale,
            "size": rng.choice(vocab.SIZES),
            "total_price": price * (100 - sale) // 100,
            "nm_id": rng.randrange(100_000, 100_000_000),
            "brand": rng.choice(vocab.BRANDS),
            "status": rng.choice(vocab.ITEM_STATUSES[:3]),  # new items start early; versions advance them
        }

    def _correct_address(self, order: dict) -> None:
        """The customer fixes the address: the house number, or an apartment added, or another
        street (a typo in the street's name is a new street to us)."""
        delivery = order["delivery"]
        old = delivery["address"]
        street, _, rest = old.rpartition(" ")
        house = rest.split(",")[0]
        while delivery["address"] == old:
            fix = self.rng.randrange(3)
            if fix == 0 and street and house.isdigit():
                delivery["address"] = f"{street} {max(1, int(house) + self.rng.choice((-2, -1, 1, 2)))}"
            elif fix == 1 and "," not in old:
                delivery["address"] = f"{old}, apt. {self.rng.randrange(1, 300)}"
            else:
                delivery["address"] = self._address()

    def _new_phone(self, order: dict) -> None:
        delivery = order["delivery"]
        old = delivery["phone"]
        while delivery["phone"] == old:
            delivery["phone"] = f"{old[:-4]}{self.rng.randrange(10_000):04d}"

    def _advance_status(self, order: dict) -> None:
        """One item moves on to its next status (statuses only go forward)."""
        statuses = vocab.ITEM_STATUSES
        item = self.rng.choice([item for item in order["items"] if item["status"] < statuses[-1]])
        item["status"] = next(s for s in statuses if s > item["status"])


# --- bad messages ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Bad:
    """A message the projector must reject, and the reason it must give."""

    defect: str  # e.g. "bad_email"
    reason: str  # "decode" | "schema" | "invariant" | "too_large"
    key: bytes
    value: bytes
    order_uid: str  # the uid it pretends to have


_Maker = Callable[[random.Random, dict], bytes]  # spoils the order in place, returns the value to send

_STRING_FIELDS = {
    "": ("track_number", "entry", "locale", "customer_id", "delivery_service", "shardkey", "oof_shard"),
    "delivery": ("name", "phone", "zip", "city", "address", "region"),
    "payment": ("transaction", "currency", "provider", "bank"),
    "item": ("rid", "name", "size", "brand"),
}
_INT_FIELDS = {
    "": ("sm_id",),
    "payment": ("amount", "payment_dt", "delivery_cost", "goods_total", "custom_fee"),
    "item": ("chrt_id", "price", "sale", "total_price", "nm_id", "status"),
}
_MONEY_FIELDS = {
    "payment": ("amount", "delivery_cost", "goods_total", "custom_fee"),
    "item": ("price", "total_price"),
}
_BAD_EMAILS = (
    "not-an-email",
    "ann@",
    "@mail.ru",
    "ann..lee@mail.ru",
    "Ann Lee <ann@mail.ru>",
    "ann lee@mail.ru",
)
_BAD_DATE_TIMES = ("2024-13-01T00:00:00Z", "2024-02-30T10:00:00Z", "2024-01-01 10:00:00", "yesterday", "")
_BAD_UIDS = ("has space", "slash/uid", "x" * 65, "", "ünïcode", "semi;colon")
_NOT_JSON = (b"hello", b"<order id='1'/>", b"order_uid=1&amount=5", b"{'single': 'quotes'}", b"\x00\x01\x02")


def _pick_object(rng: random.Random, order: dict, fields: dict[str, tuple[str, ...]]) -> tuple[dict, str]:
    """A random object of the order (top level, delivery, payment or an item) and one of its fields."""
    level = rng.choice(sorted(fields))
    target = {"": order, "delivery": order["delivery"], "payment": order["payment"]}.get(level)
    if target is None:
        target = rng.choice(order["items"])
    return target, rng.choice(fields[level])


def _every_field(order: dict) -> list[tuple[dict, str]]:
    objects = [order, order["delivery"], order["payment"], *order["items"]]
    return [(obj, name) for obj in objects for name in obj]


def _invalid_utf8(rng: random.Random, order: dict) -> bytes:
    value = dumps(order)
    at = value.index(b'"name":"') + len(b'"name":"')
    return value[:at] + rng.choice((b"\xff", b"\xc3\x28", b"\xed\xa0\x80")) + value[at:]


def _truncated(rng: random.Random, order: dict) -> bytes:
    value = dumps(order)
    return value[: rng.randrange(1, len(value))]


def _not_json(rng: random.Random, order: dict) -> bytes:
    return rng.choice(_NOT_JSON)


def _missing_field(rng: random.Random, order: dict) -> bytes:
    target, name = rng.choice(_every_field(order))
    del target[name]
    return dumps(order)


def _wrong_type(rng: random.Random, order: dict) -> bytes:
    if rng.random() < 0.5:
        target, name = _pick_object(rng, order, _STRING_FIELDS)
        target[name] = rng.choice((12345, None, True, ["a"]))
    else:
        target, name = _pick_object(rng, order, _INT_FIELDS)
        target[name] = rng.choice((str(target[name]), float(target[name]) + 0.5, None, {"v": 1}))
    return dumps(order)


def _inexact_integer(rng: random.Random, order: dict) -> bytes:
    target, name = _pick_object(rng, order, _INT_FIELDS)
    target[name] = float(target[name])  # e.g. 99.0: an integer in JSON Schema, not in PostgreSQL
    return dumps(order)


def _bad_email(rng: random.Random, order: dict) -> bytes:
    order["delivery"]["email"] = rng.choice(_BAD_EMAILS)
    return dumps(order)


def _bad_date_time(rng: random.Random, order: dict) -> bytes:
    order["date_created"] = rng.choice(_BAD_DATE_TIMES)
    return dumps(order)


def _extra_field(rng: random.Random, order: dict) -> bytes:
    target = rng.choice([order, order["delivery"], order["payment"], *order["items"]])
    target[rng.choice(("note", "discount_code", "gift", "comment"))] = "unexpected"
    return dumps(order)


def _negative_money(rng: random.Random, order: dict) -> bytes:
    target, name = _pick_object(rng, order, _MONEY_FIELDS)
    target[name] = -rng.randrange(1, 10_000)
    return dumps(order)


def _bad_order_uid(rng: random.Random, order: dict) -> bytes:
    order["order_uid"] = rng.choice(_BAD_UIDS)
    return dumps(order)


def _nul_in_string(rng: random.Random, order: dict) -> bytes:
    target, name = _pick_object(rng, order, _STRING_FIELDS)
    target[name] += "\x00"
    return dumps(order)


def _no_items(rng: random.Random, order: dict) -> bytes:
    order["items"] = []
    return dumps(order)


def _goods_total_mismatch(rng: random.Random, order: dict) -> bytes:
    payment = order["payment"]
    delta = rng.randrange(1, 1000)
    payment["goods_total"] += delta
    payment["amount"] += delta  # so that goods_total is the one thing wrong
    return dumps(order)


def _amount_mismatch(rng: random.Random, order: dict) -> bytes:
    payment = order["payment"]
    delta = rng.randrange(1, 1000)
    payment["amount"] += -delta if delta <= payment["amount"] and rng.random() < 0.5 else delta
    return dumps(order)


def _track_number_mismatch(rng: random.Random, order: dict) -> bytes:
    rng.choice(order["items"])["track_number"] = order["track_number"] + "X"
    return dumps(order)


# defect -> (expected reason, maker, weight). Oversize messages are rare: each is a whole MiB.
BAD_KINDS: dict[str, tuple[str, _Maker, int]] = {
    "invalid_utf8": ("decode", _invalid_utf8, 10),
    "truncated_json": ("decode", _truncated, 10),
    "not_json": ("decode", _not_json, 10),
    "missing_field": ("schema", _missing_field, 10),
    "wrong_type": ("schema", _wrong_type, 10),
    "inexact_integer": ("schema", _inexact_integer, 5),
    "bad_email": ("schema", _bad_email, 10),
    "bad_date_time": ("schema", _bad_date_time, 5),
    "extra_field": ("schema", _extra_field, 10),
    "negative_money": ("schema", _negative_money, 10),
    "bad_order_uid": ("schema", _bad_order_uid, 10),
    "nul_in_string": ("schema", _nul_in_string, 5),
    "no_items": ("schema", _no_items, 5),
    "goods_total_mismatch": ("invariant", _goods_total_mismatch, 10),
    "amount_mismatch": ("invariant", _amount_mismatch, 10),
    "track_number_mismatch": ("invariant", _track_number_mismatch, 10),
    "key_mismatch": ("invariant", lambda rng, order: dumps(order), 5),  # bad_message gives the key
    "too_large": ("too_large", lambda rng, order: dumps(order), 1),  # bad_message pads it
}
_DEFECTS = tuple(BAD_KINDS)
_WEIGHTS = tuple(weight for _, _, weight in BAD_KINDS.values())


def bad_message(
    rng: random.Random, order: dict, *, max_bytes: int = DEFAULT_MAX_BYTES, defect: str | None = None
) -> Bad:
    """Spoil a copy of `order` in one way (a random one unless `defect` is named)."""
    if defect is None:
        defect = rng.choices(_DEFECTS, weights=_WEIGHTS)[0]
    reason, make, _ = BAD_KINDS[defect]
    spoiled = copy_order(order)
    value = make(rng, spoiled)
    uid = spoiled["order_uid"] if defect == "bad_order_uid" else order["order_uid"]
    key = uid.encode()
    if defect == "key_mismatch":
        key = (uid + "-other").encode()
    elif defect == "too_large":
        value = pad(value, max_bytes + 1)
    elif defect == "not_json":
        uid = f"{rng.getrandbits(64):016x}-undecodable"
        key = uid.encode()
    return Bad(defect, reason, key, value, uid)


def pad(value: bytes, size: int) -> bytes:
    """The same JSON document, `size` bytes long: JSON allows whitespace after the value."""
    return value + b" " * (size - len(value))


def order_uid_of(value: bytes) -> str:
    """The order_uid of a JSON order, e.g. of a file to send as is."""
    doc: Any = orjson.loads(value)
    if not isinstance(doc, dict) or not isinstance(doc.get("order_uid"), str):
        raise ValueError("no string order_uid at the top level")
    return doc["order_uid"]
