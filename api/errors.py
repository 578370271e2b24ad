"""What can go wrong on the read side, in its own words. `answering` (api/answers.py) is the
one place that turns these into HTTP answers."""

from __future__ import annotations


class OrderNotFound(Exception):
    def __init__(self, order_uid: str) -> None:
        super().__init__(f"no order with order_uid '{order_uid}'")
        self.order_uid = order_uid


class BadOrderUid(Exception):
    def __init__(self) -> None:
        super().__init__("order_uid must be 1 to 64 characters of A-Z, a-z, 0-9, '_' and '-'")


class BadQuery(Exception):
    """A query parameter that cannot be used; `code` names which (e.g. bad_limit)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


class DatabaseTimeout(Exception):
    """The database did not answer within the deadline (api_db_timeout_s)."""

    def __init__(self) -> None:
        super().__init__("the order database did not answer in time")


class UnknownHost(Exception):
    """The Host header names no host of ORDERVIEW_API_ALLOWED_HOSTS."""

    def __init__(self) -> None:
        super().__init__("this server does not answer for that host name")


class StandbyBehind(DatabaseTimeout):
    """The standby cannot be read (too far behind, or down) and ORDERVIEW_API_STANDBY_FALLBACK
    is `unavailable`: a 503, like any database that cannot answer in time."""

    def __init__(self) -> None:
        Exception.__init__(self, "the standby is behind the primary or down, and reads do not fall back")
