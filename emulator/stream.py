"""A seeded stream of order messages: new orders, repeats, new versions, erasures and invalid ones.

The kinds come in exact proportions: every block of `BLOCK` messages holds the share of each
kind (rounded so the running totals stay exact), shuffled, so any prefix of the stream is close
to the shares and a whole stream of `count` messages matches them to the message.
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from itertools import count as counter

import orjson

from emulator.orders import DEFAULT_MAX_BYTES, EPOCH_START, OrderFactory, bad_message, dumps

BLOCK = 100
# Repeats and versions are drawn from the most recent orders only, so memory stays bounded when
# the stream runs for hours.
RECENT_ORDERS = 10_000
# Generated orders are a few KiB; a smaller limit would turn valid orders into oversize ones.
MIN_MAX_BYTES = 16 * 1024
KINDS = ("new", "repeat", "version", "erase", "invalid")
# The stream's time advances by 1/rate a message; sent as fast as possible, by this.
FLAT_OUT_SPACING_S = 0.001


@dataclass(frozen=True, slots=True)
class Message:
    kind: str  # "new" | "repeat" | "version" | "erase" | "invalid" ("file" for the CLI's --file orders)
    key: bytes | None
    value: bytes | None  # None: a tombstone, the order's key without a value (kind "erase")
    order_uid: str | None
    reason: str | None  # expected rejection reason for invalid ones
    defect: str | None = None  # how an invalid one is spoiled, e.g. "bad_email"
    at: float = 0.0  # the stream's time at this message (Unix seconds)


def stream(
    count: int,
    *,
    seed: int,
    invalid_share: float = 0.0,
    repeat_share: float = 0.0,
    erase_share: float = 0.0,
    max_bytes: int = DEFAULT_MAX_BYTES,
    start: float = EPOCH_START,
    rate: float = 0.0,
) -> Iterator[Message]:
    """`count` messages (0: endless). `repeat_share` is split evenly between identical re-sends
    ("repeat") and new versions of sent orders ("version"); `erase_share` are tombstones of sent
    orders ("erase"), which are then never sent again; the rest of the shares are new orders.
    The stream's time starts at `start` and moves on as the messages are sent at `rate` a second:
    new orders are dated at or before it. The same arguments give the same stream, byte for byte."""
    check_arguments(count, invalid_share, repeat_share, max_bytes, erase_share)
    rng = random.Random(seed)
    factory = OrderFactory(rng, start)
    recent = _Recent(RECENT_ORDERS)
    spacing = 1 / rate if rate else FLAT_OUT_SPACING_S
    for index, kind in enumerate(_kinds(rng, count, invalid_share, repeat_share, erase_share)):
        if kind in ("repeat", "version", "erase") and not recent:
            kind = "new"  # only when the shares leave no new order in front of it to repeat
        factory.now = start + index * spacing
        message = _message(kind, rng, factory, recent, max_bytes)
        if kind in ("new", "version"):
            recent.put(message.order_uid, message.value)  # type: ignore[arg-type]
        elif kind == "erase":
            recent.remove(message.order_uid)  # type: ignore[arg-type]
        yield message


def expected_state(messages: Iterable[Message]) -> dict[str, dict]:
    """For each order_uid, its last valid version, erased ones left out: what the read model
    serves after the stream."""
    state: dict[str, dict] = {}
    for message in messages:
        if message.kind == "erase":
            state.pop(message.order_uid, None)  # type: ignore[arg-type]
        elif message.kind != "invalid":
            state[message.order_uid] = orjson.loads(message.value)  # type: ignore[index, arg-type]
    return state


def check_arguments(
    count: int, invalid_share: float, repeat_share: float, max_bytes: int, erase_share: float = 0.0
) -> None:
    """Raise ValueError for arguments `stream` cannot honour."""
    shares = (invalid_share, repeat_share, erase_share)
    if count < 0:
        raise ValueError("count must be 0 (endless) or more")
    if not (all(0 <= share <= 1 for share in shares) and sum(shares) <= 1):
        raise ValueError("the shares must be between 0 and 1 and add up to 1 at most")
    if (repeat_share or erase_share) and sum(shares) >= 1:
        raise ValueError("repeats and erasures need new orders to repeat and erase: leave a share for them")
    if max_bytes < MIN_MAX_BYTES:
        raise ValueError(f"max_bytes must be at least {MIN_MAX_BYTES}")


def _kinds(
    rng: random.Random, count: int, invalid_share: float, repeat_share: float, erase_share: float = 0.0
) -> Iterator[str]:
    shares = {"invalid": invalid_share, "repeat": repeat_share / 2, "version": repeat_share / 2}
    if erase_share:  # only then, so that streams without erasures stay what they were
        shares["erase"] = erase_share
    for start in counter(0, BLOCK):
        end = start + BLOCK if count == 0 else min(start + BLOCK, count)
        if end <= start:
            return
        block: list[str] = []
        for kind, share in shares.items():
            block += [kind] * (round(end * share) - round(start * share))
        block += ["new"] * (end - start - len(block))
        rng.shuffle(block)
        if start == 0:
            _new_first(block)
        yield from block


def _new_first(block: list[str]) -> None:
    """Put a new order in front of the first repeat or version: they need one to repeat."""
    valid = [i for i, kind in enumerate(block) if kind != "invalid"]
    if valid and block[valid[0]] != "new" and "new" in block:
        i, j = valid[0], block.index("new")
        block[i], block[j] = block[j], block[i]


def _message(
    kind: str, rng: random.Random, factory: OrderFactory, recent: _Recent, max_bytes: int
) -> Message:
    at = factory.now
    if kind == "new":
        order = factory.order()
        return Message("new", order["order_uid"].encode(), dumps(order), order["order_uid"], None, at=at)
    if kind == "invalid":
        # Half spoil a fresh order, half a bad update of a sent one, which must leave it as it was.
        base = (
            orjson.loads(recent.latest(recent.pick(rng)))
            if recent and rng.random() < 0.5
            else factory.order()
        )
        bad = bad_message(rng, base, max_bytes=max_bytes)
        return Message("invalid", bad.key, bad.value, bad.order_uid, bad.reason, bad.defect, at=at)
    uid = recent.pick(rng)
    if kind == "erase":  # a tombstone: the order's key, no value
        return Message("erase", uid.encode(), None, uid, None, at=at)
    value = recent.latest(uid)
    if kind == "version":
        value = dumps(factory.version(orjson.loads(value)))
    return Message(kind, uid.encode(), value, uid, None, at=at)


class _Recent:
    """The latest value of the last `capacity` new orders not erased, and a fair pick among them."""

    def __init__(self, capacity: int) -> None:
        self._capacity = capacity
        self._uids: list[str] = []  # a ring, in order of creation
        self._values: dict[str, bytes] = {}
        self._next = 0

    def __bool__(self) -> bool:
        return bool(self._values)

    def put(self, uid: str, value: bytes) -> None:
        if uid not in self._values:
            if len(self._uids) < self._capacity:
                self._uids.append(uid)
            else:
                self._values.pop(self._uids[self._next], None)
                self._uids[self._next] = uid
                self._next = (self._next + 1) % self._capacity
        self._values[uid] = value

    def remove(self, uid: str) -> None:
        """Erased: never picked again (its place in the ring stays, taken by a later order)."""
        del self._values[uid]

    def pick(self, rng: random.Random) -> str:
        while (uid := rng.choice(self._uids)) not in self._values:  # an erased order's place
            pass
        return uid

    def latest(self, uid: str) -> bytes:
        return self._values[uid]
