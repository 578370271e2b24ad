"""A streaming standby of the test session's primary, made by `ops/postgres.sh standby` on a port
of its own, for this directory's tests; destroyed afterwards."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from harness.replication import Standby
from orderview.settings import Settings


@pytest.fixture(scope="module")
def standby(settings: Settings) -> Iterator[Standby]:
    standby = Standby(settings).start()
    try:
        yield standby
    finally:
        standby.destroy()
