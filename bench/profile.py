"""Where a process spends its CPU while it is measured: py-spy samples, sorted into named parts.

    with Profile(pid, "projector") as profile:   # py-spy record --nonblocking, 100 Hz
        ...                                      # the measured run
    profile.shares(PROJECTOR_PARTS)              # [("validation", 0.21), ...]

py-spy reads the process's memory from outside (--nonblocking: it never stops it), so the run
measured is the run profiled; only samples where a thread was running count (no idle).
"""

from __future__ import annotations

import signal
import subprocess
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

from bench.env import OUT
from harness import ROOT

PY_SPY = ROOT / ".venv" / "bin" / "py-spy"
RATE_HZ = 100

# (part, path fragments): a sample belongs to the first part any of whose fragments is in one of
# its frames; samples matching none are "the rest".
Parts = Sequence[tuple[str, Sequence[str]]]
PROJECTOR_PARTS: Parts = (
    (
        "validation (projector/core/validate.py, schemas/formats.py, jsonschema-rs)",
        ("core/validate.py", "formats.py"),
    ),
    (
        "writing to PostgreSQL (projector/adapters/postgres.py, rows.py, psycopg)",
        ("adapters/postgres.py", "adapters/rows.py", "psycopg"),
    ),
    (
        "the plan, positions, dead letters, metrics (projector/core/, checkpoint.py, batch.py, "
        "adapters/dead_letters.py, metrics.py)",
        ("projector/core/", "checkpoint.py", "projector/batch.py", "dead_letters.py", "projector/metrics.py"),
    ),
)
PROJECTOR_REST = "Faust, aiokafka and the event loop (consumer thread, streams, fetches)"
API_PARTS: Parts = (
    ("order handler and cache (api/handlers.py, cache.py)", ("api/handlers.py", "api/cache.py")),
    ("notifications and refreshes (api/freshness.py, loader.py)", ("freshness.py", "loader.py", "psycopg")),
    ("metrics files (api/scrape.py, prometheus_client)", ("scrape.py", "prometheus_client")),
)
API_REST = "aiohttp and the event loop (parsing, writing, connections)"


class Profile:
    def __init__(self, pid: int, name: str, subprocesses: bool = False) -> None:
        self.path = OUT / "profiles" / f"{name}.txt"
        self.pid = pid
        self.subprocesses = subprocesses
        self._proc: subprocess.Popen | None = None

    def __enter__(self) -> Profile:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        command = [str(PY_SPY), "record", "--nonblocking", "-r", str(RATE_HZ), "-f", "raw"]
        command += ["-p", str(self.pid), "-o", str(self.path)]
        if self.subprocesses:
            command.append("--subprocesses")
        self._proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        return self

    def __exit__(self, *exc: object) -> None:
        if self._proc is not None and self._proc.poll() is None:
            self._proc.send_signal(signal.SIGINT)  # py-spy writes its file on SIGINT
            try:
                self._proc.wait(30)
            except subprocess.TimeoutExpired:
                self._proc.kill()

    def samples(self) -> list[tuple[list[str], int]]:
        if not self.path.is_file():
            return []
        stacks = []
        for line in self.path.read_text().splitlines():
            stack, _, count = line.rpartition(" ")
            if count.isdigit():
                stacks.append((stack.split(";"), int(count)))
        return stacks

    def shares(self, parts: Parts, rest: str) -> list[tuple[str, float]]:
        """Each part's share of the samples, largest first; [] if py-spy recorded nothing."""
        counts: Counter[str] = Counter()
        for frames, n in self.samples():
            counts[_part_of(frames, parts) or rest] += n
        total = sum(counts.values())
        return [(part, n / total) for part, n in counts.most_common()] if total else []

    def top(self, limit: int = 8) -> list[tuple[str, float]]:
        """The functions most often on top of the stack (self time), with their shares."""
        counts: Counter[str] = Counter()
        for frames, n in self.samples():
            counts[_short(frames[-1])] += n
        total = sum(counts.values())
        return [(name, n / total) for name, n in counts.most_common(limit)] if total else []

    def describe(self, parts: Parts, rest: str) -> str:
        shares = self.shares(parts, rest)
        if not shares:
            return "py-spy recorded no samples"
        total = sum(n for _, n in self.samples())
        split = "; ".join(f"{part} {share:.0%}" for part, share in shares)
        top = ", ".join(f"{name} {share:.0%}" for name, share in self.top())
        return f"{split} ({total:,} samples at {RATE_HZ} Hz; most on top of the stack: {top})"


def _part_of(frames: list[str], parts: Parts) -> str | None:
    for part, fragments in parts:
        if any(fragment in frame for frame in frames for fragment in fragments):
            return part
    return None


def _short(frame: str) -> str:
    """`check (projector/validate.py:70)` → `check (validate.py)`."""
    name, _, where = frame.partition(" (")
    return f"{name} ({Path(where.split(':')[0]).name})" if where else name
