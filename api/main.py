"""The app factory and the `python -m api` entry point.

    python -m api                          settings.api_replicas processes on settings.api_port
    python -m api --port 8090 --replicas 1 one process on a chosen port

Replicas are processes sharing one port through SO_REUSEPORT: the kernel spreads connections
across them. Each has its own cache, pool and LISTEN connection; the supervisor restarts a
replica that dies and stops them all on SIGTERM/SIGINT.
"""

from __future__ import annotations

import argparse
import logging
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import uvloop
from aiohttp import web

from api.contexts import (
    METRICS,
    SCRAPE,
    SETTINGS,
    cache_context,
    freshness_context,
    pg_context,
    scrape_context,
)
from api.metrics import ApiMetrics
from api.routes import setup_routes
from api.scrape import OwnOnly, ReplicaFiles
from orderview import jsonlog
from orderview.settings import Settings, get_settings

log = logging.getLogger("orderview.api")

RESTART_DELAY_S = 1.0


def create_app(settings: Settings, replica: str = "0", metrics_dir: Path | None = None) -> web.Application:
    """One replica's app. With `metrics_dir` (from the supervisor), /metrics shows every replica."""
    metrics = ApiMetrics()
    app = web.Application()
    app[SETTINGS] = settings
    app[METRICS] = metrics
    if metrics_dir is None:
        app[SCRAPE] = OwnOnly(metrics.registry, replica)
    else:
        app[SCRAPE] = ReplicaFiles(metrics_dir, metrics.registry, replica)
        app.cleanup_ctx.append(scrape_context)
    app.cleanup_ctx.append(pg_context)
    app.cleanup_ctx.append(cache_context)
    app.cleanup_ctx.append(freshness_context)
    setup_routes(app)
    return app


def serve(
    settings: Settings, host: str, port: int, replica: str = "0", metrics_dir: Path | None = None
) -> None:
    """One replica, on uvloop. No access log: /metrics counts every request, and a log line
    per request would cost more than the cache hit it records."""
    web.run_app(
        create_app(settings, replica, metrics_dir),
        host=host,
        port=port,
        reuse_port=True,
        access_log=None,
        print=None,
        shutdown_timeout=5.0,
        loop=uvloop.new_event_loop(),
    )


def supervise(host: str, port: int, replicas: int) -> int:
    """Run `replicas` single-replica processes on one port; restart any that exits. They share
    a directory of metrics files, so a scrape of any sees them all."""
    with tempfile.TemporaryDirectory(prefix="orderview-api-metrics-") as metrics_dir:
        return _supervise(host, port, replicas, metrics_dir)


def _supervise(host: str, port: int, replicas: int, metrics_dir: str) -> int:
    def command(replica: int) -> list[str]:
        return [
            *(sys.executable, "-m", "api", "--host", host, "--port", str(port), "--replicas", "1"),
            *("--replica", str(replica), "--metrics-dir", metrics_dir),
        ]

    children = [subprocess.Popen(command(i)) for i in range(replicas)]
    stopping = False

    def stop(_signum: int, _frame: object) -> None:
        nonlocal stopping
        stopping = True
        for child in children:
            if child.poll() is None:
                child.terminate()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    log.info("api replicas started", extra={"replicas": replicas, "port": port})
    while not stopping:
        time.sleep(0.5)
        for i, child in enumerate(children):
            if child.poll() is not None and not stopping:
                log.warning(
                    "api replica exited, restarting", extra={"pid": child.pid, "rc": child.returncode}
                )
                time.sleep(RESTART_DELAY_S)
                children[i] = subprocess.Popen(command(i))
    for child in children:
        try:
            child.wait(timeout=10)
        except subprocess.TimeoutExpired:
            child.kill()
    return 0


def main(argv: Sequence[str] | None = None) -> None:
    try:
        settings = get_settings()
    except ValueError as exc:  # a bad value, or default passwords off loopback: one sentence
        sys.exit(f"[orderview] {exc}")
    parser = argparse.ArgumentParser(prog="python -m api", description="The orderview HTTP API.")
    parser.add_argument("--host", default=settings.api_host)
    parser.add_argument("--port", type=int, default=settings.api_port)
    parser.add_argument("--replicas", type=int, default=settings.api_replicas)
    parser.add_argument("--replica", default="0", help=argparse.SUPPRESS)  # given by the supervisor
    parser.add_argument("--metrics-dir", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    try:
        settings.refuse_default_passwords(**{"--host": args.host})
    except ValueError as exc:
        sys.exit(f"[orderview] {exc}")
    jsonlog.setup(settings.log_level)
    if args.replicas <= 1:
        serve(settings, args.host, args.port, args.replica, args.metrics_dir)
    else:
        sys.exit(supervise(args.host, args.port, args.replicas))
