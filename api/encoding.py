"""The strong ETag of an order's bytes."""

from __future__ import annotations

import hashlib


def strong_etag(body: bytes) -> str:
    """Derived from the bytes, so every replica gives the same version the same tag. 64 bits
    tell the versions of one order apart; every header byte costs on the hit path."""
    return '"' + hashlib.blake2b(body, digest_size=8).hexdigest() + '"'
