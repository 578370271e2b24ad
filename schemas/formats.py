"""The meaning of the schema's `format`s, defined once and given to every validator of it.

Validators disagree on formats (jsonschema's `email` only looks for an "@"; jsonschema-rs accepts
display names such as "Ann <a@b.io>"; fastjsonschema accepts "+0000" offsets), so both the hot-path
and the reference validator are handed these functions and agree by construction.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import datetime

_ATEXT = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+"
_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
_EMAIL_RE = re.compile(rf"(?P<local>{_ATEXT}(?:\.{_ATEXT})*)@(?P<domain>{_LABEL}(?:\.{_LABEL})+)")
_MAX_LOCAL = 64  # RFC 5321 4.5.3.1.1
_MAX_ADDRESS = 254  # RFC 5321 4.5.3.1.3, a path of 256 less its angle brackets

# [0-9], not \d: \d also matches non-ASCII digits such as "٣".
_DATE_TIME_RE = re.compile(
    r"([0-9]{4})-([0-9]{2})-([0-9]{2})[Tt]([0-9]{2}):([0-9]{2}):([0-9]{2})(?:\.[0-9]+)?"
    r"(?:[Zz]|[+-]([0-9]{2}):([0-9]{2}))"
)


def is_email(value: object) -> bool:
    """An RFC 5321 mailbox, restricted to what mail systems commonly accept.

    The local part is a dot-atom (no quoted string), the domain a host name of at least two
    labels (no IP literal, no display name around the address); ASCII only, as `idn-email`
    is the format for internationalized addresses.
    """
    if not isinstance(value, str):
        return True  # a format applies to strings only; `type` judges the rest
    match = _EMAIL_RE.fullmatch(value)
    return match is not None and len(match["local"]) <= _MAX_LOCAL and len(value) <= _MAX_ADDRESS


def is_date_time(value: object) -> bool:
    """An RFC 3339 date-time that PostgreSQL `timestamptz` and Python `datetime` both hold.

    That excludes year 0000 and the leap second 60, which RFC 3339 allows.
    """
    if not isinstance(value, str):
        return True
    match = _DATE_TIME_RE.fullmatch(value)
    if match is None:
        return False
    year, month, day, hour, minute, second, offset_hours, offset_minutes = match.groups()
    if offset_hours is not None and (int(offset_hours) > 23 or int(offset_minutes) > 59):
        return False
    try:
        datetime(int(year), int(month), int(day), int(hour), int(minute), int(second))
    except ValueError:
        return False
    return True


FORMATS: dict[str, Callable[[object], bool]] = {"email": is_email, "date-time": is_date_time}
