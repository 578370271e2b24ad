"""The bench's own database and topics, the machine it runs on, and the tools it needs."""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import os
import platform
import shutil
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import psycopg

from harness import ROOT
from harness.scratch import settings_for_bench
from harness.topics import create_topics, delete_topics
from orderview.bootstrap import create_database, drop_database
from orderview.settings import Settings, get_settings

OUT = ROOT / "bench" / "out"  # scratch: logs, id lists (git-ignored)


def ensure_wrk() -> str:
    """The path of wrk, installing Debian's package when it is missing and we are root."""
    if not shutil.which("wrk") and os.geteuid() == 0 and shutil.which("apt-get"):
        quiet = {"check": False, "stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL}
        print("bench: installing wrk (apt-get install -y wrk)", flush=True)
        if subprocess.run(["apt-get", "install", "-y", "-q", "wrk"], **quiet).returncode != 0:
            subprocess.run(["apt-get", "update", "-q"], **quiet)
            subprocess.run(["apt-get", "install", "-y", "-q", "wrk"], **quiet)
    path = shutil.which("wrk")
    if not path:
        raise SystemExit(
            "bench: wrk is missing and could not be installed; run `apt-get install -y wrk` as root."
        )
    return path


def machine() -> dict[str, str]:
    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    memory = "unknown"
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                memory = f"{int(line.split()[1]) / 1024 / 1024:.1f} GiB"
                break
    except OSError:
        pass
    return {
        "nproc": str(os.cpu_count()),
        "memory": memory,
        "cpu": cpu,
        "kernel": platform.release(),
        "python": platform.python_version(),
        "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M:%S UTC"),
        "commit": git_commit(),
        "postgres": _postgres_version(),
        "load": load_average(),
    }


def load_average() -> str:
    """The machine's 1, 5 and 15 minute load averages: how much else ran beside the bench."""
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def git_commit() -> str:
    try:
        head = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        return head + (" (with uncommitted changes)" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def _postgres_version() -> str:
    try:
        with psycopg.connect(get_settings().dsn("admin")) as conn:
            row = conn.execute("SHOW server_version").fetchone()
            buffers = conn.execute("SHOW shared_buffers").fetchone()
            sync = conn.execute("SHOW synchronous_commit").fetchone()
        return f"{row[0]} (shared_buffers={buffers[0]}, synchronous_commit={sync[0]})"
    except psycopg.Error:
        return "unknown"


def say(text: str) -> None:
    print(f"[bench] {text}", flush=True)


@contextlib.contextmanager
def scratch(tag: str, topics: bool = False) -> Iterator[Settings]:
    """A database (and topics) of the bench's own for one section, dropped afterwards."""
    settings = settings_for_bench(tag)
    try:
        create_database(settings)
        if topics:
            asyncio.run(create_topics(settings))
        yield settings
    finally:
        _best_effort(lambda: drop_database(settings), f"drop database {settings.pg_database}")
        if topics:
            _best_effort(
                lambda: asyncio.run(delete_topics(settings)), f"delete topics {settings.orders_topic}"
            )


def _best_effort(action: Callable[[], None], what: str) -> None:
    """Clean-up that waits out a restart of the services once, and never hides the real error."""
    for attempt in (1, 2):
        try:
            action()
            return
        except Exception as exc:
            if attempt == 2:
                say(f"could not {what}: {exc}")
                return
            try:
                ensure_services()
            except SystemExit:
                pass


def require_matplotlib() -> None:
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        raise SystemExit(
            "bench: matplotlib is missing; install the bench extra: .venv/bin/pip install -e '.[bench]'"
        ) from None


def ensure_services() -> None:
    """Kafka and PostgreSQL answering on loopback, started by ops/up.sh when they are not."""
    deadline = time.monotonic() + 60  # a fault test elsewhere may be restarting them
    while not services_up():
        if time.monotonic() > deadline:
            break
        time.sleep(1)
    else:
        return
    say("Kafka or PostgreSQL is not answering; starting them with ops/up.sh")
    subprocess.run(["bash", "ops/up.sh"], cwd=ROOT, check=True)
    if not services_up():
        raise SystemExit(
            "bench: Kafka and PostgreSQL are not answering even after ops/up.sh; see .run/ logs."
        )


def services_up() -> bool:
    settings = get_settings()
    try:
        with psycopg.connect(settings.dsn("admin")) as conn:
            conn.execute("SELECT 1")
    except psycopg.Error:
        return False
    host, _, port = settings.kafka_bootstrap.rpartition(":")
    try:
        with socket.create_connection((host, int(port)), timeout=3):
            return True
    except OSError:
        return False
