"""Hypothesis strategies for order events, shared by the test layers.

`orders()` draws documents that satisfy the schema and the invariants; `spoiled_orders()` draws
documents broken in one known way, with the rejection reason the projector must give;
`tampered_orders()` replaces one value with arbitrary JSON, with no promise about validity.
"""

from __future__ import annotations

import json
import string
from datetime import datetime
from typing import Any

import orjson
from hypothesis import strategies as st

from schemas import ORDER_SCHEMA, ORDER_UID_RE
from schemas.formats import is_date_time, is_email

MAX_SAFE_INTEGER = 2**53 - 1
MAX_INT4 = 2**31 - 1
# Small enough that 5 lines plus fees stay under MAX_SAFE_INTEGER, large enough to matter.
MAX_MONEY = 2**49

ATEXT = string.ascii_letters + string.digits + "!#$%&'*+/=?^_`{|}~-"
LDH = string.ascii_letters + string.digits + "-"

# Any text PostgreSQL can store: no U+0000 (and no surrogates, which hypothesis leaves out anyway).
_text_characters = st.characters(exclude_characters="\x00", exclude_categories=("Cs",))


def texts(max_size: int = 30) -> st.SearchStrategy[str]:
    return st.text(_text_characters, max_size=max_size)


def order_uids() -> st.SearchStrategy[str]:
    return st.text(string.ascii_letters + string.digits + "_-", min_size=1, max_size=64)


def emails() -> st.SearchStrategy[str]:
    """Mailboxes the `email` format accepts: dot-atom local part, two or more host labels."""
    atom = st.text(ATEXT, min_size=1, max_size=8)
    local = st.lists(atom, min_size=1, max_size=3).map(".".join)
    label = st.builds(
        lambda first, middle, last: first + middle + last if middle or last else first,
        st.sampled_from(string.ascii_letters + string.digits),
        st.text(LDH, max_size=6),
        st.sampled_from(string.ascii_letters + string.digits),
    )
    domain = st.lists(label, min_size=2, max_size=4).map(".".join)
    return st.builds(lambda lp, d: f"{lp}@{d}", local, domain)


def date_times() -> st.SearchStrategy[str]:
    """RFC 3339 date-times of years 0001-9999, any zone, optional fraction, T or t."""
    moment = st.datetimes(min_value=datetime(1, 1, 1), max_value=datetime(9999, 12, 31, 23, 59, 59))
    fraction = st.one_of(st.just(""), st.text("0123456789", min_size=1, max_size=9).map(lambda d: "." + d))
    offset = st.one_of(
        st.sampled_from(["Z", "z"]),
        st.builds(
            lambda sign, h, m: f"{sign}{h:02d}:{m:02d}",
            st.sampled_from("+-"),
            st.integers(0, 23),
            st.integers(0, 59),
        ),
    )
    return st.builds(
        lambda dt, sep, frac, zone: (
            dt.date().isoformat() + sep + dt.time().isoformat("seconds") + frac + zone
        ),
        moment,
        st.sampled_from("Tt"),
        fraction,
        offset,
    )


def ids() -> st.SearchStrategy[int]:
    return st.integers(0, MAX_SAFE_INTEGER)


def money() -> st.SearchStrategy[int]:
    return st.one_of(st.integers(0, 10_000_000), st.integers(0, MAX_MONEY))


@st.composite
def items(draw: st.DrawFn, track_number: str) -> dict:
    return {
        "chrt_id": draw(ids()),
        "track_number": track_number,
        "price": draw(money()),
        "rid": draw(texts()),
        "name": draw(texts()),
        "sale": draw(st.integers(0, 100)),
        "size": draw(texts(8)),
        "total_price": draw(money()),
        "nm_id": draw(ids()),
        "brand": draw(texts()),
        "status": draw(st.integers(0, MAX_INT4)),
    }


@st.composite
def orders(draw: st.DrawFn, max_items: int = 5) -> dict:
    """A valid order: schema-valid, goods_total = Σ total_price, amount = the sum of its parts."""
    track_number = draw(texts())
    lines = draw(st.lists(items(track_number), min_size=1, max_size=max_items))
    goods_total = sum(line["total_price"] for line in lines)
    delivery_cost, custom_fee = draw(money()), draw(money())
    return {
        "order_uid": draw(order_uids()),
        "track_number": track_number,
        "entry": draw(texts(8)),
        "delivery": {
            "name": draw(texts()),
            "phone": draw(texts(16)),
            "zip": draw(texts(10)),
            "city": draw(texts()),
            "address": draw(texts()),
            "region": draw(texts()),
            "email": draw(emails()),
        },
        "payment": {
            "transaction": draw(texts()),
            "request_id": draw(texts()),
            "currency": draw(texts(4)),
            "provider": draw(texts(10)),
            "amount": goods_total + delivery_cost + custom_fee,
            "payment_dt": draw(ids()),
            "bank": draw(texts(10)),
            "delivery_cost": delivery_cost,
            "goods_total": goods_total,
            "custom_fee": custom_fee,
        },
        "items": lines,
        "locale": draw(texts(5)),
        "internal_signature": draw(texts()),
        "customer_id": draw(texts()),
        "delivery_service": draw(texts(10)),
        "shardkey": draw(texts(4)),
        "sm_id": draw(ids()),
        "date_created": draw(date_times()),
        "oof_shard": draw(texts(4)),
    }


# --- broken orders -----------------------------------------------------------------------------


def fields(order: dict) -> list[tuple[dict, str, dict]]:
    """Every field of an order, nested ones included: (its object, its name, its schema)."""
    found: list[tuple[dict, str, dict]] = []

    def walk(obj: dict, schema: dict) -> None:
        for name, sub in schema["properties"].items():
            found.append((obj, name, sub))
            if sub["type"] == "object":
                walk(obj[name], sub)
            elif sub["type"] == "array":
                for element in obj[name]:
                    walk(element, sub["items"])

    walk(order, ORDER_SCHEMA)
    return found


_WRONG_TYPE = {
    "string": [0, 1.5, True, None, [], {}],
    "integer": ["1", 1.5, True, None, [], {}],
    "object": ["x", 1, None, []],
    "array": ["x", 1, None, {}],
}


def _too_long(sub: dict) -> str:
    return "x" * (sub.get("maxLength", 64) + 1)


@st.composite
def _schema_breakage(draw: st.DrawFn, order: dict) -> dict:
    obj, name, sub = draw(st.sampled_from(fields(order)))
    kind = sub["type"]
    how = draw(st.sampled_from(["missing", "wrong_type", "extra", *_BREAKS_BY_TYPE.get(kind, [])]))
    if how == "missing":
        del obj[name]
    elif how == "wrong_type":
        obj[name] = draw(st.sampled_from(_WRONG_TYPE[kind]))
    elif how == "extra":
        extra = draw(st.text(min_size=1, max_size=10).filter(lambda k: k not in obj))
        obj[extra] = draw(st.sampled_from([0, "x", None]))
    elif how == "below_minimum":
        obj[name] = draw(st.integers(-(2**63), sub["minimum"] - 1))
    elif how == "above_maximum":
        obj[name] = draw(st.integers(sub["maximum"] + 1, 2**63 - 1))
    elif how == "inexact":
        obj[name] = float(draw(st.integers(sub["minimum"], min(sub["maximum"], 2**52))))
    elif how == "too_long":
        obj[name] = _too_long(sub)
    elif how == "nul":
        obj[name] = draw(texts(5)) + "\x00" + draw(texts(5))
    elif how == "no_items":
        obj[name] = []
    else:  # "bad_format"
        obj[name] = draw(_not_formatted(name))
    return order


_BREAKS_BY_TYPE = {
    "integer": ["below_minimum", "above_maximum", "inexact"],
    "string": ["too_long", "nul", "bad_format"],
    "array": ["no_items"],
}


def _not_formatted(name: str) -> st.SearchStrategy[str]:
    if name == "order_uid":
        return st.text(max_size=70).filter(lambda s: not ORDER_UID_RE.match(s))
    if name == "email":
        return st.one_of(
            st.sampled_from(["a@b", "Ann <a@b.io>", "a..b@c.io", "a@-b.io", "a b@c.io"]),
            st.text(max_size=20).filter(lambda s: not is_email(s)),
        )
    if name == "date_created":
        return st.one_of(
            st.sampled_from(
                [
                    "0000-01-01T00:00:00Z",
                    "2016-12-31T23:59:60Z",
                    "2021-02-29T00:00:00Z",
                    "2021-11-26T06:22:19+0000",
                    "2021-11-26 06:22:19Z",
                    "2021-11-26T06:22:19Z\n",
                ]
            ),
            st.text(max_size=25).filter(lambda s: not is_date_time(s)),
        )
    return st.just("\x00")  # a plain text field has no format; NUL is the one thing it refuses


@st.composite
def _invariant_breakage(draw: st.DrawFn, order: dict) -> dict:
    payment = order["payment"]
    delta = draw(st.integers(1, 1000))
    how = draw(st.sampled_from(["goods_total", "amount", "track_number"]))
    if how == "goods_total":
        payment["goods_total"] += delta
        payment["amount"] += delta
    elif how == "amount":
        payment["amount"] += delta
    else:
        line = draw(st.sampled_from(order["items"]))
        line["track_number"] = draw(texts().filter(lambda t: t != order["track_number"]))
    return order


def copy(order: dict) -> dict:
    return orjson.loads(orjson.dumps(order))


@st.composite
def spoiled_orders(draw: st.DrawFn) -> tuple[Any, str]:
    """(a document broken in one way, the rejection reason it must get: "schema" or "invariant")."""
    order = copy(draw(orders()))
    if draw(st.booleans()):
        return draw(_schema_breakage(order)), "schema"
    return draw(_invariant_breakage(order)), "invariant"


def json_values() -> st.SearchStrategy[Any]:
    scalars = st.one_of(
        st.none(),
        st.booleans(),
        st.integers(-(2**63), 2**64 - 1),
        st.floats(allow_nan=False, allow_infinity=False),
        st.text(),
        st.sampled_from(["", "\n", "a\n", "x" * 300, "2021-11-26T06:22:19Z", "test@gmail.com"]),
    )
    return st.recursive(
        scalars, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(), inner)
    )


@st.composite
def tampered_orders(draw: st.DrawFn) -> Any:
    """A valid order with one value replaced by any JSON value (valid or not, who knows)."""
    order = copy(draw(orders(max_items=2)))
    obj, name, _ = draw(st.sampled_from(fields(order)))
    obj[name] = draw(json_values())
    return order


def _nested(inner: bytes, depth: int, kind: str) -> bytes:
    """`inner` wrapped `depth` times in arrays or objects, built as text (serializers recurse)."""
    if kind == "array":
        return b"[" * depth + inner + b"]" * depth
    return b'{"\\u0000 \xe2\x80\xae k":' * depth + inner + b"}" * depth


def hostile_documents() -> st.SearchStrategy[bytes]:
    """JSON texts no order is: any value, nested up to past JSON's own depth limit, wide, or
    with keys of odd Unicode (NUL, bidi overrides, surrogate escapes)."""
    values = json_values().map(lambda v: json.dumps(v).encode())
    wide = st.integers(0, 60_000).map(lambda n: b"[" + b",".join([b"0"] * n) + b"]")
    odd_keys = st.dictionaries(st.text(min_size=1), json_values(), max_size=5).map(
        lambda d: json.dumps(d, ensure_ascii=False).encode()
    )
    nested = st.builds(_nested, values | wide, st.integers(0, 1100), st.sampled_from(["array", "object"]))
    return st.one_of(values, wide, odd_keys, nested)
