"""Child processes of the bench (the API, the projector, baselines) and small HTTP helpers."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

from bench.env import OUT, ROOT
from orderview.settings import Settings

LOGS = OUT / "logs"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def http_get(url: str, timeout: float = 5.0) -> tuple[int, bytes, dict[str, str]]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            return r.status, r.read(), dict(r.headers)
    except urllib.error.HTTPError as e:
        return e.code, e.read(), dict(e.headers)


_REPLICA = re.compile(r'replica="[^"]*"')


def metric(text: str, name: str) -> float | None:
    """The value of an unlabelled sample (or the sum over labels) in Prometheus text, None if absent."""
    total, found = 0.0, False
    for line in text.splitlines():
        if line.startswith("#"):
            continue
        head, _, value = line.rpartition(" ")
        head = _REPLICA.sub("", head).replace("{,", "{").replace(",}", "}").removesuffix("{}")
        if head == name or head.startswith(name + "{"):
            total += float(value)
            found = True
    return total if found else None


class Service:
    """`python -m <module> <args>` with the given settings; output to bench/out/logs/<name>.log."""

    def __init__(
        self,
        name: str,
        module: str,
        settings: Settings,
        args: tuple[str, ...] = (),
        cpus: str | None = None,
        env: dict[str, str] | None = None,
    ) -> None:
        self.name, self.module, self.settings, self.args = name, module, settings, args
        self.cpus, self.extra_env = cpus, env or {}
        self.proc: subprocess.Popen | None = None
        self.started_at = 0.0
        LOGS.mkdir(parents=True, exist_ok=True)
        self.log_path: Path = LOGS / f"{name}.log"

    def start(self) -> Service:
        env = {**os.environ, **self.settings.to_env(), "PYTHONUNBUFFERED": "1", **self.extra_env}
        command = [sys.executable, "-m", self.module, *self.args]
        if self.cpus is not None:
            command = ["taskset", "-c", self.cpus, *command]
        log = open(self.log_path, "wb")
        self.started_at = time.perf_counter()
        self.proc = subprocess.Popen(command, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
        log.close()
        return self

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def wait_http(self, url: str, timeout: float = 120.0, interval: float = 0.02) -> float:
        """Poll until `url` answers 200; return seconds since start()."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.alive():
                raise RuntimeError(f"{self.name} exited (code {self.proc.returncode}); see {self.log_path}")
            try:
                if http_get(url, timeout=2)[0] == 200:
                    return time.perf_counter() - self.started_at
            except OSError:
                pass
            time.sleep(interval)
        raise RuntimeError(f"{self.name}: no 200 from {url} after {timeout:.0f}s; see {self.log_path}")

    def pids(self) -> list[int]:
        """The process and its children (a multi-process server's replicas)."""
        return [self.pid, *_children(self.pid)]

    def rss_bytes(self) -> int:
        """Resident memory of the process and its children (a multi-process server counts whole)."""
        total = 0
        for pid in [self.pid, *_children(self.pid)]:
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
        for pid in [self.pid, *_children(self.pid)]:
            try:
                for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
                    if line.startswith("Pss:"):
                        sizes[pid] = int(line.split()[1]) * 1024
            except OSError:
                pass
        return sizes

    def stop(self, timeout: float = 20.0) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)

    def __enter__(self) -> Service:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


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
