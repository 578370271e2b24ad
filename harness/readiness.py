"""Asking a service over HTTP, and waiting until it answers or a condition holds."""

from __future__ import annotations

import time
import urllib.error
import urllib.request
from collections.abc import Callable


class NotReady(AssertionError):
    """A wait that failed: the service exited, or what was awaited did not come in time. An
    AssertionError, so that a test meeting one fails as on a failed assert."""


def http_get(url: str, timeout: float = 5.0) -> tuple[int, bytes, dict[str, str]]:
    """Status, body and headers of a GET; an HTTP error status is an answer, not an exception."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            return r.status, r.read(), dict(r.headers)
    except urllib.error.HTTPError as e:
        return e.code, e.read(), dict(e.headers)


def answers_200(url: str) -> bool:
    """Whether `url` answers 200 now; no answer at all (refused, timed out) is False."""
    try:
        return http_get(url, timeout=2)[0] == 200
    except OSError:
        return False


def wait_until(
    predicate: Callable[[], object],
    timeout: float,
    what: str,
    interval: float = 0.2,
    check: Callable[[], None] | None = None,
) -> None:
    """Poll `predicate` until it is truthy. `check` runs before each try and raises when waiting
    longer is pointless (the process exited); past `timeout`, NotReady saying `what`."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check is not None:
            check()
        if predicate():
            return
        time.sleep(interval)
    raise NotReady(what)
