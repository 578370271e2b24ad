"""The chaos run's account of a stall (tests/chaos/stalls.py): the faults it overlapped, with how
long after each it lasted, and what the workers complained of meanwhile."""

from __future__ import annotations

from pathlib import Path

import orjson

from tests.chaos.stalls import Fault, LogLine, Stall, explain, log_lines

STARTED = 1000.0


def test_a_stall_names_the_fault_it_followed_and_how_long_it_outlasted_it() -> None:
    stall = Stall(partition=2, since=1040.0, until=1052.5)
    faults = [Fault("kill_worker", 1039.0, 1039.1), Fault("restart_postgres", 1100.0, 1104.0)]
    lines = [
        LogLine(1041.0, "chaos-worker-0-1", "group_coordinator: Heartbeat session expired"),
        LogLine(1045.0, "chaos-worker-1-1", "projector: cannot make progress, retrying"),
        LogLine(1046.0, "chaos-worker-1-1", "projector: cannot make progress, retrying"),
        LogLine(1060.0, "chaos-worker-1-1", "projector: after the stall"),
    ]
    text = explain(stall, faults, lines, STARTED)
    assert text.startswith("partition 2 stood 12.5 s (40–52 s)")
    assert "kill_worker 39–39 s (ended 13.4 s before the stall did)" in text
    assert "restart_postgres" not in text
    assert "cannot make progress, retrying ×2" in text
    assert "after the stall" not in text


def test_a_stall_with_no_fault_near_says_so() -> None:
    text = explain(Stall(0, 1200.0, 1207.0), [Fault("kill_worker", 1000.0, 1000.1)], [], STARTED)
    assert "faults no fault" in text and "workers logged nothing" in text


def test_worker_logs_give_their_warnings_on_the_monotonic_clock(tmp_path: Path) -> None:
    log = tmp_path / "chaos-worker-0-1.log"
    entries = [
        {
            "ts": "2026-12-03T10:00:01.500Z",
            "level": "info",
            "logger": "orderview.projector",
            "msg": "dead-lettered",
        },
        {
            "ts": "2026-12-03T10:00:02.000Z",
            "level": "warning",
            "logger": "orderview.projector",
            "msg": "cannot make progress",
        },
    ]
    log.write_bytes(b"\n".join(orjson.dumps(e) for e in entries) + b"\nTraceback (most recent call last):\n")
    wall = 1_796_292_000.0  # 2026-12-03T10:00:00Z
    [line] = log_lines([log, tmp_path / "absent.log"], clock=wall - 500.0)
    assert line == LogLine(502.0, "chaos-worker-0-1", "projector: cannot make progress")
