"""`make run` as a person runs it, in a terminal of its own: it starts a projector worker per
partition, restarts one that stops, says so, and Ctrl-C stops what it started while Kafka and
PostgreSQL keep running."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import time
from dataclasses import replace
from pathlib import Path

from harness import ROOT, scratch
from harness.ports import free_port
from harness.topics import delete_topics
from orderview.settings import Settings


def session_processes(sid: int) -> dict[int, str]:
    """pid -> command line of every process in a session."""
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2 :].split()
        if int(fields[3]) == sid:  # stat's 6th field: the session id
            found[int(entry.name)] = cmdline
    return found


def port_of(pid: int) -> int:
    """The ORDERVIEW_PROJECTOR_PORT a worker was started with."""
    environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    [port] = [v.split(b"=", 1)[1] for v in environ if v.startswith(b"ORDERVIEW_PROJECTOR_PORT=")]
    return int(port)


def wait_for(predicate, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if value := predicate():
            return value
        time.sleep(0.3)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def answers(url: str) -> bool:
    try:
        return subprocess.run(["curl", "-sf", url], capture_output=True, timeout=5).returncode == 0
    except subprocess.TimeoutExpired:
        return False


def test_make_run_restarts_a_stopped_projector_and_ctrl_c_stops_only_what_it_started(
    settings: Settings,
) -> None:
    s = replace(scratch.topics_for_tests(settings), api_port=free_port(), projector_port=free_port())
    api, projector = f"http://127.0.0.1:{s.api_port}", f"http://127.0.0.1:{s.projector_port}"
    output = ROOT / "test-artifacts" / "logs" / "make-run.out"
    output.parent.mkdir(parents=True, exist_ok=True)
    with output.open("wb") as out:
        run = subprocess.Popen(
            ["make", "run"],
            cwd=ROOT,
            env={**os.environ, **s.to_env()},
            stdout=out,
            stderr=out,
            start_new_session=True,
        )
    try:
        wait_for(lambda: answers(f"{api}/order/b563feb7b2b84b6test"), 180, "the reference order served")
        wait_for(lambda: answers(f"{projector}/readyz"), 60, "the projector ready")
        workers = {
            port_of(pid): pid for pid, cmd in session_processes(run.pid).items() if "-m projector" in cmd
        }
        # One worker per partition, on consecutive ports.
        ports = [s.projector_port + i for i in range(s.orders_partitions)]
        assert sorted(workers) == ports
        os.kill(workers[s.projector_port], signal.SIGKILL)
        wait_for(
            lambda: "restarting projector-1 in 1s" in output.read_text(), 30, "make run to say it restarts it"
        )
        wait_for(lambda: answers(f"{projector}/readyz"), 90, "the projector ready again")

        os.killpg(run.pid, signal.SIGINT)  # what Ctrl-C in its terminal does
        assert run.wait(60) != 0
        wait_for(lambda: not session_processes(run.pid), 30, "every process make run started to stop")
    finally:
        if run.poll() is None:
            os.killpg(run.pid, signal.SIGKILL)
        asyncio.run(delete_topics(s, best_effort=True))
    text = output.read_text()
    assert "projector-1 was killed (signal 9)" in text, text
    assert "Killed" not in text, "no stray job message from bash"
    assert "Kafka and PostgreSQL keep running" in text
    for service in ("kafka.sh", "postgres.sh"):
        status = subprocess.run(
            ["bash", f"ops/{service}", "status"], cwd=ROOT, capture_output=True, text=True
        )
        assert status.stdout.startswith("running"), (service, status.stdout)
