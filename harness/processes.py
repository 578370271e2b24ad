"""Services as child processes (`python -m projector`, `api`, `emulator`, ...) with a run's
settings: output to a log file, readiness over HTTP, stopped by SIGTERM or killed with SIGKILL,
and their exit status for a caller to assert on."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path

from harness import ROOT
from harness.metrics import sample
from harness.ports import free_port
from harness.readiness import NotReady, answers_200, http_get, wait_until
from orderview.settings import Settings

LOGS = ROOT / "test-artifacts" / "logs"  # the tests'; the bench names its own


class ServiceProcess:
    """A `python -m <module> <args>` child with the given settings in its environment (and `env`
    over them), pinned to `cpus` (taskset) when given; its output goes to <logs>/<name>.log."""

    logs: Path = LOGS  # a subclass names its own folder

    def __init__(
        self,
        module: str,
        settings: Settings,
        name: str,
        args: tuple[str, ...] = (),
        env: dict[str, str] | None = None,
        *,
        cpus: str | None = None,
    ) -> None:
        self.module, self.settings, self.name, self.args = module, settings, name, args
        self.env = env or {}
        self.cpus = cpus
        self.proc: subprocess.Popen | None = None
        self.started_at = 0.0  # perf_counter() at the last start()
        self.logs.mkdir(parents=True, exist_ok=True)
        self.log_path = self.logs / f"{name}.log"

    def start(self) -> ServiceProcess:
        env = {**os.environ, **self.settings.to_env(), "PYTHONUNBUFFERED": "1", **self.env}
        command = [sys.executable, "-m", self.module, *self.args]
        if self.cpus is not None:
            command = ["taskset", "-c", self.cpus, *command]
        # A fresh log for a new process object; a restart of the same one appends.
        with open(self.log_path, "ab" if self.proc is not None else "wb") as log:
            self.started_at = time.perf_counter()
            self.proc = subprocess.Popen(command, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
        return self

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def get(self, path: str, port: int) -> tuple[int, bytes]:
        status, body, _ = http_get(f"http://127.0.0.1:{port}{path}", timeout=2)
        return status, body

    def _still_running(self) -> None:
        if not self.alive():
            code = self.proc.returncode if self.proc is not None else None
            raise NotReady(f"{self.name} exited (code {code}); see {self.log_path}")

    def wait_http(self, path: str, port: int, timeout: float = 60.0, interval: float = 0.2) -> float:
        """Poll http://127.0.0.1:<port><path> until it answers 200; seconds since start()."""
        url = f"http://127.0.0.1:{port}{path}"
        wait_until(
            lambda: answers_200(url),
            timeout,
            f"{self.name} not answering 200 on {path} after {timeout}s; see {self.log_path}",
            interval,
            check=self._still_running,
        )
        return time.perf_counter() - self.started_at

    def wait_exit(self, timeout: float = 60.0) -> int:
        """The exit status, once the process ended by itself."""
        assert self.proc
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"{self.name} still running after {timeout}s; see {self.log_path}") from None

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace")

    def kill9(self) -> None:
        assert self.proc
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    @contextmanager
    def paused(self) -> Iterator[None]:
        """Stopped (SIGSTOP) for the block, as a worker that has fallen far behind; then SIGCONT."""
        assert self.proc
        self.proc.send_signal(signal.SIGSTOP)
        try:
            yield
        finally:
            self.proc.send_signal(signal.SIGCONT)

    def _sigterm(self, timeout: float) -> bool:
        """SIGTERM, then wait; past `timeout`, SIGKILL. Whether it ended by the SIGTERM (or before)."""
        assert self.proc
        if self.proc.poll() is not None:
            return True
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout)
            return True
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)
            return False

    def terminate(self, timeout: float = 30.0) -> int:
        """Stop it with SIGTERM and return its exit status; one that ignores SIGTERM fails."""
        if not self._sigterm(timeout):
            raise AssertionError(f"{self.name} ignored SIGTERM for {timeout}s")
        assert self.proc
        return self.proc.returncode

    def stop(self, timeout: float = 20.0) -> None:
        """Stop it if it runs, by SIGTERM or, past `timeout`, SIGKILL; never fails."""
        if self.proc is not None:
            self._sigterm(timeout)

    def __enter__(self) -> ServiceProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


class Projector(ServiceProcess):
    """`python -m projector` on a free port of its own for /readyz and /metrics."""

    def __init__(
        self,
        settings: Settings,
        name: str = "projector",
        env: dict[str, str] | None = None,
    ) -> None:
        super().__init__("projector", replace(settings, projector_port=free_port()), name, env=env)

    @property
    def port(self) -> int:
        return self.settings.projector_port

    def wait_ready(self, timeout: float = 60.0) -> Projector:
        self.wait_http("/readyz", self.port, timeout)
        return self

    def metric(self, name: str, labels: str = "") -> float:
        """A sample of this process's /metrics, 0 when absent."""
        status, body = self.get("/metrics", self.port)
        assert status == 200
        return sample(body.decode(), name, labels)
