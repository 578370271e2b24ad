"""What the chaos run sends: a seeded mix of valid orders (new ones, identical re-sends, new
versions) and hostile messages of many kinds. Every message carries a `chaos.tag` header saying
what the projector must do with it: apply it (`valid`), dead-letter it (`hostile`), or have the
database refuse it (`refused`, dead-lettered as db_rejected)."""

from __future__ import annotations

import json
import random
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import orjson
from hypothesis import HealthCheck, Phase, given
from hypothesis import seed as hypothesis_seed
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from emulator.orders import pad
from emulator.stream import stream
from projector.core import redrives
from projector.core.redrives import REDRIVE_OF, REDRIVE_VERSION, UNSIGNED_EVENT
from projector.core.versions import Version
from tests import strategies

TAG = "chaos.tag"
# The database of a chaos run refuses deliveries to this city (a CHECK the schema knows nothing of).
REFUSED_CITY = "Forbidden City"
REFUSED_CITY_RULE = "ALTER TABLE deliveries ADD CONSTRAINT chaos_rule CHECK (city <> 'Forbidden City')"


@dataclass(frozen=True, slots=True)
class Outgoing:
    kind: str
    tag: str  # valid | hostile | refused
    key: bytes | None
    value: bytes | None
    headers: tuple[tuple[str, bytes], ...] = ()
    codec: str | None = None  # this message needs a batch of its own with this codec

    def kafka_headers(self) -> list[tuple[str, bytes]]:
        return [(TAG, self.tag.encode()), *self.headers]


def hypothesis_pool(seed: int, n: int) -> list[bytes]:
    """Arbitrary bytes and hostile JSON texts, drawn by Hypothesis under a fixed seed."""
    found: list[bytes] = []

    @hypothesis_settings(
        max_examples=n,
        database=None,
        deadline=None,
        phases=[Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    @hypothesis_seed(seed)
    @given(st.binary(max_size=4096) | strategies.hostile_documents())
    def collect(value: bytes) -> None:
        found.append(value)

    collect()
    return found


class Mix:
    """An endless, seeded sequence of Outgoing messages."""

    def __init__(self, seed: int, max_message_bytes: int, dlq_max_bytes: int, broker_max_bytes: int) -> None:
        self.rng = random.Random(seed)
        self.orders = stream(
            0, seed=seed, invalid_share=0.08, repeat_share=0.2, erase_share=0.02, max_bytes=max_message_bytes
        )
        self.pool = hypothesis_pool(seed, 300)
        self.max_message_bytes = max_message_bytes
        self.dlq_max_bytes = dlq_max_bytes
        self.broker_max_bytes = broker_max_bytes
        self.kinds: Counter[str] = Counter()
        self._hostile: list[tuple[float, Callable[[], Outgoing]]] = [
            (6, self._arbitrary),
            (2, self._deep_array),
            (2, self._deep_object),
            (2, self._deep_in_order),
            (1, self._huge_string),
            (1, self._at_the_limit),
            (1, self._over_the_limit),
            (0.3, self._gzip_bomb),
            (0.3, self._near_the_dlq_limit),
            (0.2, self._near_the_broker_limit),
            (2, self._refused_by_the_database),
            (1, self._nul),
            (2, self._no_key),
            (1, self._wrong_key),
            (1, self._tombstone),
            (1, self._empty),
            (1, self._odd_unicode),
            (1, self._forged_redrive),
        ]

    def __iter__(self) -> Iterator[Outgoing]:
        return self

    def __next__(self) -> Outgoing:
        if self.rng.random() < 0.8:
            message = self._order()
        else:
            weights = [w for w, _ in self._hostile]
            message = self.rng.choices([f for _, f in self._hostile], weights)[0]()
        if self.rng.random() < 0.1:
            message = self._with_noise_headers(message)
        self.kinds[message.kind] += 1
        return message

    def valid_order(self) -> dict:
        """A fresh valid order (for aborted transactions, which must leave no trace)."""
        while True:
            m = next(self.orders)
            if m.kind == "new":
                return orjson.loads(m.value)

    # --- valid orders and what the emulator spoils ------------------------------------------

    def _order(self) -> Outgoing:
        m = next(self.orders)
        tag = "hostile" if m.kind == "invalid" else "valid"
        return Outgoing(f"emulator_{m.kind}", tag, m.key, m.value)

    def _keyed(self, kind: str, tag: str, order: dict, **json_options: object) -> Outgoing:
        value = json.dumps(order, **json_options).encode() if json_options else orjson.dumps(order)
        return Outgoing(kind, tag, order["order_uid"].encode(), value)

    # --- hostile ---------------------------------------------------------------------------

    def _arbitrary(self) -> Outgoing:
        key = self.rng.choice([None, b"", self.rng.randbytes(self.rng.randrange(1, 40))])
        return Outgoing("arbitrary", "hostile", key, self.rng.choice(self.pool))

    def _deep(self, kind: str, opening: bytes, closing: bytes) -> Outgoing:
        depth = self.rng.choice([9, 100, 255, 256, 1000, 1024, 1025, 5000])
        return Outgoing(kind, "hostile", b"deep", opening * depth + b"1" + closing * depth)

    def _deep_array(self) -> Outgoing:
        return self._deep("deep_array", b"[", b"]")

    def _deep_object(self) -> Outgoing:
        return self._deep("deep_object", b'{"a":', b"}")

    def _deep_in_order(self) -> Outgoing:
        order = self.valid_order()
        value: object = "x"
        for _ in range(self.rng.choice([9, 100, 900])):
            value = [value]
        order["items"][0]["name"] = value
        return self._keyed("deep_in_order", "hostile", order, separators=(",", ":"))  # orjson stops at 254

    def _huge_string(self) -> Outgoing:
        order = self.valid_order()
        order["delivery"]["address"] = "x" * self.rng.choice([1025, 100_000, 900_000])
        return self._keyed("huge_string", "hostile", order)

    def _padded(self, kind: str, tag: str, size: int) -> Outgoing:
        order = self.valid_order()
        return Outgoing(kind, tag, order["order_uid"].encode(), pad(orjson.dumps(order), size))

    def _at_the_limit(self) -> Outgoing:
        return self._padded("at_the_projector_limit", "valid", self.max_message_bytes)

    def _over_the_limit(self) -> Outgoing:
        return self._padded("over_the_projector_limit", "hostile", self.max_message_bytes + 1)

    def _gzip_bomb(self) -> Outgoing:
        return Outgoing("gzip_bomb", "hostile", b"bomb", b" " * (20 * 1024 * 1024), codec="gzip")

    def _near_the_dlq_limit(self) -> Outgoing:
        """Incompressible, over the projector's limit: its dead letter is just under or over the
        DLQ topic's record limit (over: it is sent truncated)."""
        size = self.dlq_max_bytes + self.rng.choice([-4096, -1024, 1024, 4096])
        return Outgoing("near_the_dlq_limit", "hostile", b"big", self.rng.randbytes(size))

    def _near_the_broker_limit(self) -> Outgoing:
        """Just under (accepted, too large for the projector) or over (refused by the broker)."""
        size = self.broker_max_bytes + self.rng.choice([-8192, 1024])
        return Outgoing("near_the_broker_limit", "hostile", b"bigger", self.rng.randbytes(size))

    def _refused_by_the_database(self) -> Outgoing:
        order = self.valid_order()
        order["delivery"]["city"] = REFUSED_CITY
        return self._keyed("refused_by_the_database", "refused", order)

    def _nul(self) -> Outgoing:
        order = self.valid_order()
        order["delivery"]["name"] += "\x00"
        return self._keyed("nul", "hostile", order)

    def _no_key(self) -> Outgoing:
        order = self.valid_order()
        return Outgoing("no_key", "hostile", None, orjson.dumps(order))

    def _wrong_key(self) -> Outgoing:
        order = self.valid_order()
        return Outgoing("wrong_key", "hostile", self.rng.randbytes(16), orjson.dumps(order))

    def _tombstone(self) -> Outgoing:
        """A tombstone whose key is no order_uid: it erases nothing (tombstones of sent orders come
        with the emulator's stream, as valid erasures)."""
        return Outgoing("tombstone", "hostile", self.rng.choice([b"", b"not an uid!", b"x" * 65]), None)

    def _empty(self) -> Outgoing:
        return Outgoing("empty", "hostile", b"empty", b"")

    def _odd_unicode(self) -> Outgoing:
        """Valid: bidi overrides, combining marks, astral characters, escapes."""
        order = self.valid_order()
        order["delivery"]["name"] = '\u202eevil\u202c Zá\u0301lgo 𝔘𝔫𝔦 \U0001f600 \\ " </script>'
        return self._keyed("odd_unicode", "valid", order, ensure_ascii=self.rng.random() < 0.5)

    def _forged_redrive(self) -> Outgoing:
        """A valid order claiming to be a redrive: headers of ours that say nothing, an unsigned
        claim of older redrives, or a claim signed with a secret that is not the deployment's."""
        order = self.valid_order()
        m = self._keyed("forged_redrive", "hostile", order)
        choice = self.rng.randrange(3)
        if choice == 0:
            name = self.rng.choice([REDRIVE_OF, REDRIVE_VERSION])
            headers = (
                (name, self.rng.choice([b"", b"orders", b"t:x:1", b"1:2:3:4", self.rng.randbytes(24)])),
            )
        elif choice == 1:
            headers = ((UNSIGNED_EVENT, b"0:9000000000000000000:99999999999999"),)
        else:
            version = Version(9_000_000_000_000_000, 0, 0)  # would outrank every later version
            headers = tuple(redrives.headers(b"a guess", "orders:0:0", version, m.key, m.value))
        return Outgoing(m.kind, m.tag, m.key, m.value, headers)

    def _with_noise_headers(self, message: Outgoing) -> Outgoing:
        noise = tuple(
            (
                self.rng.choice(["x", TAG, "dlq.reason", "ünï", ""]),
                self.rng.randbytes(self.rng.randrange(0, 1024)),
            )
            for _ in range(self.rng.randrange(1, 6))
        )
        return Outgoing(
            message.kind, message.tag, message.key, message.value, (*message.headers, *noise), message.codec
        )
