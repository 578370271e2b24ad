"""Real service processes for tests: started with a test's settings, stopped or killed at will."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import replace
from pathlib import Path

from orderview.settings import Settings

ROOT = Path(__file__).resolve().parents[1]
LOGS = ROOT / "test-artifacts" / "logs"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def free_port_pair() -> int:
    """A free port whose successor is free too (Kafka's listener and its controller's)."""
    while True:
        port = free_port()
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port + 1))
            except OSError:
                continue
        return port


class ServiceProcess:
    """A `python -m <module>` child with the given settings; its output goes to a log file."""

    def __init__(
        self,
        module: str,
        settings: Settings,
        name: str,
        args: tuple[str, ...] = (),
        env: dict[str, str] | None = None,
    ) -> None:
        self.module, self.settings, self.name, self.args = module, settings, name, args
        self.env = env or {}
        self.proc: subprocess.Popen | None = None
        LOGS.mkdir(parents=True, exist_ok=True)
        self.log_path = LOGS / f"{name}.log"

    def start(self) -> ServiceProcess:
        env = {**os.environ, **self.settings.to_env(), "PYTHONUNBUFFERED": "1", **self.env}
        # A fresh log for a new process object; a restart of the same one appends.
        log = open(self.log_path, "ab" if self.proc is not None else "wb")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", self.module, *self.args], cwd=ROOT, env=env, stdout=log, stderr=log
        )
        return self

    def get(self, path: str, port: int) -> tuple[int, bytes]:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=2) as r:
                return r.status, r.read()
        except urllib.error.HTTPError as e:
            return e.code, e.read()

    def wait_http(self, path: str, port: int, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.proc and self.proc.poll() is None, f"{self.name} exited; see {self.log_path}"
            try:
                if self.get(path, port)[0] == 200:
                    return
            except OSError:
                pass
            time.sleep(0.2)
        raise AssertionError(f"{self.name} not answering 200 on {path} after {timeout}s; see {self.log_path}")

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

    def terminate(self, timeout: float = 30.0) -> int:
        assert self.proc
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
                raise AssertionError(f"{self.name} ignored SIGTERM for {timeout}s") from None
        return self.proc.returncode


class Projector(ServiceProcess):
    def __init__(
        self, settings: Settings, name: str = "projector", env: dict[str, str] | None = None
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
        wanted = f"{name}{{{labels}}}" if labels else name
        for line in body.decode().splitlines():
            if line.startswith(wanted + " "):
                return float(line.split()[-1])
        return 0.0
