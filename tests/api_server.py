"""Running the API from tests: in this process on a free port, or as `python -m api` subprocesses.

Also meant for the viewer's end-to-end tests, which need a real API to point a browser at.
"""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web

from api.main import create_app, make_runner
from harness import ROOT
from harness.ports import free_port
from orderview.settings import Settings


@dataclass
class RunningApi:
    url: str
    client: aiohttp.ClientSession
    app: web.Application | None = None  # None for a subprocess
    process: asyncio.subprocess.Process | None = None


async def wait_ready(client: aiohttp.ClientSession, url: str, timeout: float = 30.0) -> None:
    """Poll /readyz until it answers 200 (cache warmed, LISTEN up, database reachable)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    last = "no answer"
    while loop.time() < deadline:
        try:
            async with client.get(url + "/readyz") as response:
                if response.status == 200:
                    return
                last = await response.text()
        except aiohttp.ClientError as exc:
            last = repr(exc)
        await asyncio.sleep(0.05)
    raise AssertionError(f"API at {url} not ready after {timeout}s: {last}")


@asynccontextmanager
async def running_api(settings: Settings, ready: bool = True, **overrides: Any) -> AsyncIterator[RunningApi]:
    """The app in this event loop on a free port, with a client; ready unless ready=False."""
    app = create_app(replace(settings, **overrides))
    runner = make_runner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host, port = runner.addresses[0][:2]
    url = f"http://{host}:{port}"
    try:
        async with aiohttp.ClientSession() as client:
            if ready:
                await wait_ready(client, url)
            yield RunningApi(url, client, app=app)
    finally:
        await runner.cleanup()


@asynccontextmanager
async def api_process(
    settings: Settings, port: int | None = None, log_path: Path | None = None, replicas: int = 1
) -> AsyncIterator[RunningApi]:
    """`python -m api --port P --replicas N` with these settings in its environment, ready; its
    output goes to `log_path` when given."""
    port = port or free_port()
    env = {**os.environ, **settings.to_env(), "PYTHONPATH": str(ROOT)}
    command = [
        *(sys.executable, "-m", "api", "--host", "127.0.0.1"),
        *("--port", str(port), "--replicas", str(replicas)),
    ]
    output = log_path.open("wb") if log_path is not None else None  # handed to the process
    process = await asyncio.create_subprocess_exec(*command, cwd=ROOT, env=env, stdout=output, stderr=output)
    url = f"http://127.0.0.1:{port}"
    try:
        async with aiohttp.ClientSession() as client:
            await wait_ready(client, url)
            yield RunningApi(url, client, process=process)
    finally:
        if process.returncode is None:
            process.terminate()
            try:
                async with asyncio.timeout(10):
                    await process.wait()
            except TimeoutError:
                process.kill()
                await process.wait()
        if output is not None:
            output.close()
