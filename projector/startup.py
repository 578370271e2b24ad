"""Before the Faust worker starts: wait for the broker, answering /readyz "not ready".

Faust's worker exits when the broker cannot be reached at start (during a broker restart, or
when the projector starts first). Waiting here instead keeps one start procedure for every
order in which services come up; the database is waited for by the agent itself.
"""

from __future__ import annotations

import asyncio
import logging
import signal

import orjson
from aiohttp import web

from orderview import kafka_clients, refusals
from orderview.settings import Settings
from projector import faults
from projector.batch import backoff_seconds

log = logging.getLogger("orderview.projector")


async def wait_for_broker(settings: Settings) -> None:
    reason = "starting"

    async def readyz(_request: web.Request) -> web.Response:
        body = orjson.dumps({"status": "not ready", "reason": reason})
        return web.Response(status=503, body=body, content_type="application/json")

    async def healthz(_request: web.Request) -> web.Response:
        return web.json_response({"status": "alive"})

    server = web.Application()
    server.router.add_get("/readyz", readyz)
    server.router.add_get("/healthz", healthz)
    runner = web.AppRunner(server, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, settings.projector_host, settings.projector_port, reuse_address=True).start()
    stopping = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stopping.set)
    try:
        attempt = 0
        while True:
            problem = await _refused_or_unreachable(settings)
            if problem is None:
                return
            attempt += 1
            if problem != reason:  # once per cause, not once per attempt
                log.warning("waiting for the broker", extra={"attempt": attempt, "reason": problem})
            reason = problem
            if await _told_to_stop(stopping, backoff_seconds(attempt, settings.db_retry_max_s)):
                raise SystemExit(0)  # nothing started yet: nothing to stop but the wait
    finally:
        asyncio.get_running_loop().remove_signal_handler(signal.SIGTERM)
        await runner.cleanup()


async def _refused_or_unreachable(settings: Settings) -> str | None:
    """None once the broker answers; else why not. Credentials or a certificate refused are asked
    of the servers directly (orderview/refusals.py): aiokafka would only say it could not bootstrap."""
    refused = await refusals.explain_kafka(settings)
    if refused is not None:
        return refused
    client = kafka_clients.client(settings, request_timeout_ms=5000)
    try:
        await client.bootstrap()
        return None
    except Exception as exc:
        outage = faults.outage(exc)
        if outage is None:
            raise
        return outage
    finally:
        await client.close()


async def _told_to_stop(stopping: asyncio.Event, seconds: float) -> bool:
    """Wait `seconds`, or less if SIGTERM comes: a worker that waits stops at once, status 0."""
    try:
        await asyncio.wait_for(stopping.wait(), seconds)
        return True
    except TimeoutError:
        return False
