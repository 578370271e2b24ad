"""An order snapshot as the API serves it: orjson bytes, keys in the schema's order, a strong ETag.

jsonb keeps no key order (it sorts keys by length), so the body read back from PostgreSQL is
deep-equal to the accepted message but scrambled for a human reader; the keys are put back in
the order the schema (and the reference message) lists them.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from typing import Any

import orjson

from schemas import ORDER_SCHEMA

Reorder = Callable[[Any], Any]


def _object_reorder(properties: dict[str, Any]) -> Reorder:
    keys = list(properties)
    nested = {key: _reorder_for(sub) for key, sub in properties.items()}

    def reorder(value: Any) -> Any:
        if not isinstance(value, dict):
            return value
        out = {}
        for key in keys:
            if key in value:
                inner = nested[key]
                out[key] = inner(value[key]) if inner else value[key]
        if len(out) != len(value):  # keys the schema does not know keep theirs, after
            out.update((k, v) for k, v in value.items() if k not in out)
        return out

    return reorder


def _array_reorder(inner: Reorder) -> Reorder:
    def reorder(value: Any) -> Any:
        return [inner(item) for item in value] if isinstance(value, list) else value

    return reorder


def _reorder_for(schema: Any) -> Reorder | None:
    if not isinstance(schema, dict):
        return None
    if isinstance(schema.get("properties"), dict):
        return _object_reorder(schema["properties"])
    items = _reorder_for(schema.get("items"))
    return _array_reorder(items) if items else None


_reorder = _reorder_for(ORDER_SCHEMA) or (lambda value: value)


def order_bytes(body: Any) -> bytes:
    # A copy: orjson.dumps returns a bytes object with a buffer of at least ~8 KiB; the
    # exact-size copy keeps a 1 KB order from holding 8 KiB in the cache.
    return memoryview(orjson.dumps(_reorder(body))).tobytes()


def strong_etag(body: bytes) -> str:
    """Derived from the bytes, so every replica gives the same version the same tag. 64 bits
    tell the versions of one order apart; every header byte costs on the hit path."""
    return '"' + hashlib.blake2b(body, digest_size=8).hexdigest() + '"'
