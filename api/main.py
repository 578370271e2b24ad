"""The app factory and the `python -m api` entry point.

    python -m api                          settings.api_replicas processes on settings.api_port
    python -m api --port 8090 --replicas 1 one process on a chosen port

Replicas are processes sharing one port through SO_REUSEPORT: the kernel spreads connections
across them. Each has its own cache, pool and LISTEN connection. They are forks of the
supervisor, which imported everything before forking, so they share its pages (code, modules)
and start without importing anything; the supervisor restarts a replica that dies and stops
them all on SIGTERM/SIGINT.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import gc
import logging
import os
import signal
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import uvloop
from aiohttp import web

from api.connections import CONNECTIONS, Connections, EdgeRunner
from api.contexts import (
    METRICS,
    SCRAPE,
    SETTINGS,
    cache_context,
    freshness_context,
    pg_context,
    scrape_context,
)
from api.edge import exposure_warning, null_origin_warning
from api.metrics import ApiMetrics
from api.routes import setup_routes
from api.scrape import OwnOnly, ReplicaFiles
from orderview import jsonlog
from orderview.settings import Settings, get_settings

log = logging.getLogger("orderview.api")

RESTART_DELAY_S = 1.0
KEEPALIVE_TIMEOUT_S = 75.0  # an idle kept-alive connection is closed after this (web.run_app's)
SHUTDOWN_TIMEOUT_S = 5.0  # requests in progress at SIGTERM get this long to finish


def create_app(settings: Settings, replica: str = "0", metrics_dir: Path | None = None) -> web.Application:
    """One replica's app. With `metrics_dir` (from the supervisor), /metrics shows every replica."""
    metrics = ApiMetrics()
    app = web.Application()
    app[SETTINGS] = settings
    app[METRICS] = metrics
    app[CONNECTIONS] = metrics.connections.connections = Connections.from_settings(settings)
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


def make_runner(app: web.Application) -> EdgeRunner:
    """The runner of one replica's app: its connections bounded (api/connections.py). No access
    log: /metrics counts every request, and a log line per request would cost more than the cache
    hit it records."""
    return EdgeRunner(
        app,
        app[CONNECTIONS],
        access_log=None,
        keepalive_timeout=KEEPALIVE_TIMEOUT_S,
        shutdown_timeout=SHUTDOWN_TIMEOUT_S,
    )


def serve(
    settings: Settings, host: str, port: int, replica: str = "0", metrics_dir: Path | None = None
) -> None:
    """One replica, on uvloop, until SIGTERM or SIGINT (then it finishes what it answers)."""
    app = create_app(settings, replica, metrics_dir)
    app[CONNECTIONS].fit_file_limit()
    loop = uvloop.new_event_loop()
    asyncio.set_event_loop(loop)
    try:
        loop.run_until_complete(_serve(app, host, port))
    finally:
        leftover = asyncio.all_tasks(loop)
        for task in leftover:
            task.cancel()
        loop.run_until_complete(asyncio.gather(*leftover, return_exceptions=True))
        loop.run_until_complete(loop.shutdown_asyncgens())
        loop.close()


async def _serve(app: web.Application, host: str, port: int) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    runner = make_runner(app)
    await runner.setup()
    try:
        await web.TCPSite(runner, host, port, reuse_port=True).start()
        await stop.wait()
    finally:
        await runner.cleanup()


def supervise(settings: Settings, host: str, port: int, replicas: int) -> int:
    """Run `replicas` replicas on one port, each a fork of this process; restart any that exits.
    They share a directory of metrics files, so a scrape of any sees them all."""
    with tempfile.TemporaryDirectory(prefix="orderview-api-metrics-") as metrics_dir:
        return _supervise(settings, host, port, replicas, Path(metrics_dir))


def _supervise(settings: Settings, host: str, port: int, replicas: int, metrics_dir: Path) -> int:
    # Everything a replica runs is imported by now (this module's imports): forked, replicas
    # share those pages instead of importing them each. Frozen, the parent's objects are left
    # out of the children's collections, which would otherwise write to (and so copy) them.
    gc.collect()
    gc.freeze()
    children = {_fork_replica(settings, host, port, str(i), metrics_dir): i for i in range(replicas)}
    stopping = False

    def stop(_signum: int, _frame: object) -> None:
        nonlocal stopping
        stopping = True
        for pid in children:
            _signal(pid, signal.SIGTERM)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    log.info("api replicas started", extra={"replicas": replicas, "port": port})
    while not stopping:
        time.sleep(0.5)
        for pid, replica in list(children.items()):
            if stopping or not _exited(pid):
                continue
            log.warning("api replica exited, restarting", extra={"pid": pid, "replica": replica})
            del children[pid]
            time.sleep(RESTART_DELAY_S)
            children[_fork_replica(settings, host, port, str(replica), metrics_dir)] = replica
    deadline = time.monotonic() + 10
    while children and time.monotonic() < deadline:
        for pid in [pid for pid in children if _exited(pid)]:
            del children[pid]
        time.sleep(0.05)
    for pid in children:
        _signal(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
    return 0


def _fork_replica(settings: Settings, host: str, port: int, replica: str, metrics_dir: Path) -> int:
    pid = os.fork()
    if pid:
        return pid
    # The child: the supervisor's signal handlers are not its own (serve sets the loop's).
    status = 1
    try:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        serve(settings, host, port, replica, metrics_dir)
        status = 0
    except BaseException:
        log.exception("api replica failed", extra={"replica": replica})
    finally:
        logging.shutdown()
        # Never back into the supervisor's frames: its `finally` would delete the metrics files.
        os._exit(status)


def _exited(pid: int) -> bool:
    try:
        done, _ = os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        return True
    return done == pid


def _signal(pid: int, signum: int) -> None:
    try:
        os.kill(pid, signum)
    except ProcessLookupError:
        pass


def main(argv: Sequence[str] | None = None) -> None:
    try:
        settings = get_settings()
    except ValueError as exc:  # a bad value, or default passwords off loopback: one sentence
        sys.exit(f"[orderview] {exc}")
    parser = argparse.ArgumentParser(prog="python -m api", description="The orderview HTTP API.")
    parser.add_argument("--host", default=settings.api_host)
    parser.add_argument("--port", type=int, default=settings.api_port)
    parser.add_argument("--replicas", type=int, default=settings.api_replicas)
    args = parser.parse_args(argv)
    try:
        settings.refuse_default_passwords(**{"--host": args.host})
    except ValueError as exc:
        sys.exit(f"[orderview] {exc}")
    jsonlog.setup(settings.log_level)
    # The app decides its Host allow-list from the address it binds to.
    settings = dataclasses.replace(settings, api_host=args.host)
    for warning in (exposure_warning(settings), null_origin_warning(settings)):
        if warning is not None:
            log.warning(warning)
    if args.replicas <= 1:
        serve(settings, args.host, args.port)
    else:
        sys.exit(supervise(settings, args.host, args.port, args.replicas))
