"""The adversarial run of tests/chaos, short, with one seed: `make chaos` runs it longer."""

from __future__ import annotations

import pytest

from orderview.settings import Settings
from tests.chaos.run import run


@pytest.mark.slow
async def test_hostile_messages_a_killed_worker_and_restarted_services_lose_nothing(
    settings: Settings,
) -> None:
    report = await run(settings, seed=1, duration=60, say=lambda _: None)
    print(report.text())
    assert report.problems == []
    assert report.audit is not None and report.audit.total("missing") == 0
    assert report.exits[-9] >= 1, "a worker was killed"
    assert {kind for _, kind in report.faults} == {
        "add_partitions",
        "kill_worker",
        "restart_postgres",
        "restart_broker",
        "trim_applied",
    }
