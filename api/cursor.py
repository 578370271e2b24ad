"""The paging cursor of GET /orders: where the previous page ended, as "<µs since epoch>.<order_uid>".

Clients treat it as opaque. It is plain rather than encoded so that its pattern in the OpenAPI
document is exact: every string matching CURSOR_PATTERN is a usable cursor. 16 digits of
microseconds reach the year 2286, well inside what datetime and timestamptz hold.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

from api.errors import BadQuery

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
CURSOR_PATTERN = r"^[0-9]{1,16}\.[A-Za-z0-9_-]{1,64}$"
_CURSOR_RE = re.compile(CURSOR_PATTERN.removesuffix("$") + r"\Z")
_LIMIT_RE = re.compile(r"[0-9]{1,3}\Z")
MAX_LIMIT = 100
DEFAULT_LIMIT = 20


def encode_cursor(updated_at: datetime, order_uid: str) -> str:
    return f"{(updated_at - EPOCH) // timedelta(microseconds=1)}.{order_uid}"


def decode_cursor(raw: str | None) -> tuple[datetime, str] | None:
    if raw is None:
        return None
    if not _CURSOR_RE.match(raw):
        raise BadQuery("bad_cursor", "before must be the next_before of a previous page")
    micros, _, order_uid = raw.partition(".")
    return EPOCH + timedelta(microseconds=int(micros)), order_uid


def parse_limit(raw: str | None) -> int:
    if raw is None:
        return DEFAULT_LIMIT
    if _LIMIT_RE.match(raw) and 1 <= int(raw) <= MAX_LIMIT:
        return int(raw)
    raise BadQuery("bad_limit", f"limit must be an integer from 1 to {MAX_LIMIT}")
