"""The bench's child processes (the API, the projector, baselines): harness's ServiceProcess with
the bench's log folder and patience, and what each costs the machine, read from /proc."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

from bench.env import OUT
from harness.metrics import total
from harness.ports import free_port
from harness.processes import ServiceProcess
from harness.readiness import http_get
from orderview.settings import Settings

LOGS = OUT / "logs"


class Service(ServiceProcess):
    """`python -m <module> <args>`; output to bench/out/logs/<name>.log. Readiness is polled every
    20 ms for up to two minutes unless told otherwise (a boot is timed by it)."""

    logs = LOGS

    def wait_http(self, path: str, port: int, timeout: float = 120.0, interval: float = 0.02) -> float:
        return super().wait_http(path, port, timeout, interval)

    def pids(self) -> list[int]:
        """The process and its children (a multi-process server's replicas)."""
        return [self.pid, *_children(self.pid)]

    def rss_bytes(self) -> int:
        """Resident memory of the process and its children (a multi-process server counts whole)."""
        total = 0
        for pid in self.pids():
            try:
                for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1]) * 1024
            except OSError:
                pass
        return total

    def pss_bytes(self) -> dict[int, int]:
        """Proportional set size of the process and each of its children, by pid: pages shared
        by n of them count 1/n to each, so the sum is what the whole server costs the machine."""
        sizes = {}
        for pid in self.pids():
            try:
                for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
                    if line.startswith("Pss:"):
                        sizes[pid] = int(line.split()[1]) * 1024
            except OSError:
                pass
        return sizes


class Workers:
    """Projector workers in one consumer group, measured together."""

    def __init__(self, workers: list[Service]) -> None:
        self.workers = workers
        self.settings = workers[0].settings
        self.log_path = ", ".join(str(w.log_path) for w in workers)

    @classmethod
    def as_make_run(cls, settings: Settings, name: str) -> Workers:
        """As `make run` starts them (ops/run.sh): one per partition of the orders topic, each on
        a port of its own."""
        return cls(
            [
                Service(
                    "projector", dataclasses.replace(settings, projector_port=free_port()), f"{name}-{i + 1}"
                )
                for i in range(settings.orders_partitions)
            ]
        )

    @property
    def started_at(self) -> float:
        return min(w.started_at for w in self.workers)

    @property
    def pid(self) -> int:
        """The first worker's (the one profiled)."""
        return self.workers[0].pid

    def pids(self) -> list[int]:
        return [w.pid for w in self.workers]

    def alive(self) -> bool:
        return all(w.alive() for w in self.workers)

    def projected(self) -> float | None:
        """Orders applied by all the workers (their /metrics), None if one does not answer."""
        applied = 0.0
        for w in self.workers:
            try:
                status, body, _ = http_get(f"http://127.0.0.1:{w.settings.projector_port}/metrics", timeout=2)
            except OSError:
                return None
            if status != 200:
                return None
            applied += total(body.decode(), "orderview_projector_projected_total") or 0.0
        return applied

    def __len__(self) -> int:
        return len(self.workers)

    def __enter__(self) -> Workers:
        for w in self.workers:
            w.start()
        return self

    def __exit__(self, *exc: object) -> None:
        for w in self.workers:
            w.stop()


def _children(pid: int) -> list[int]:
    found: list[int] = []
    try:
        for task in Path(f"/proc/{pid}/task").iterdir():
            children = (task / "children").read_text().split()
            for child in children:
                found += [int(child), *_children(int(child))]
    except OSError:
        pass
    return found


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (its children's excluded)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    # After the command: state is field 3; utime and stime are fields 14 and 15.
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
