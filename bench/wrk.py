"""Runs wrk with bench/ids.lua against one server and reads its figures."""

from __future__ import annotations

import json
import subprocess
from dataclasses import dataclass
from pathlib import Path

SCRIPT = Path(__file__).resolve().parent / "ids.lua"
MARK = "BENCH_JSON "


@dataclass(frozen=True)
class Load:
    requests: int
    seconds: float
    rps: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    mean_ms: float
    errors: int  # socket errors and non-2xx/3xx answers


def run(
    wrk: str,
    port: int,
    ids_file: Path,
    seconds: int,
    threads: int = 1,
    connections: int = 32,
    cpus: str | None = None,
    prefix: str = "/order/",
) -> Load:
    command = [
        wrk,
        f"-t{threads}",
        f"-c{connections}",
        f"-d{seconds}s",
        "--timeout",
        "5s",
        "-s",
        str(SCRIPT),
        f"http://127.0.0.1:{port}",
        "--",
        str(ids_file),
        prefix,
    ]
    if cpus is not None:
        command = ["taskset", "-c", cpus, *command]
    done = subprocess.run(command, capture_output=True, text=True, timeout=seconds + 60)
    for line in done.stdout.splitlines():
        if line.startswith(MARK):
            figures = json.loads(line[len(MARK) :])
            break
    else:
        raise RuntimeError(
            f"wrk gave no figures (exit {done.returncode}): {done.stdout[-500:]} {done.stderr[-500:]}"
        )
    seconds_run = figures["duration_us"] / 1e6
    latency = figures["latency_us"]
    return Load(
        requests=figures["requests"],
        seconds=seconds_run,
        rps=figures["requests"] / seconds_run,
        p50_ms=latency["p50"] / 1000,
        p90_ms=latency["p90"] / 1000,
        p99_ms=latency["p99"] / 1000,
        mean_ms=latency["mean"] / 1000,
        errors=sum(figures["errors"].values()),
    )
