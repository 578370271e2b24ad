"""The Host allow-list by default, on real servers: a loopback API refuses a rebound name without
any setting, and an API bound off loopback without a list says so when it starts; so does one
whose CORS origins let the null origin read, the origin of any sandboxed iframe."""

from __future__ import annotations

import json
import time
import urllib.request
from dataclasses import replace

from yarl import URL

from harness.ports import free_port
from harness.processes import ServiceProcess
from orderview.settings import Settings
from tests.api_server import running_api
from tests.integration.test_api import get


async def test_a_loopback_api_refuses_a_rebound_host_name_without_any_setting(settings: Settings) -> None:
    async with running_api(settings) as api:
        port = URL(api.url).port
        status, _, body = await get(api, "/orders", headers={"Host": f"rebind.example:{port}"})
        assert (status, json.loads(body)["error"]) == (421, "misdirected_request")
        for host in (f"127.0.0.1:{port}", f"localhost:{port}", f"[::1]:{port}"):
            assert (await get(api, "/orders", headers={"Host": host}))[0] == 200, host
    async with running_api(settings, api_allowed_hosts="*") as any_host:
        assert (await get(any_host, "/orders", headers={"Host": "rebind.example"}))[0] == 200


def test_an_api_bound_off_loopback_without_a_list_says_so_at_start(settings: Settings) -> None:
    # Off loopback, default passwords and secrets are refused before anything else: these are not them.
    exposed = replace(
        settings,
        pg_admin_password="not-default",
        pg_owner_password="not-default",
        pg_projector_password="not-default",
        pg_api_password="not-default",
        redrive_secret="not-default",
    )
    port = free_port()
    api = ServiceProcess(
        "api", exposed, "api-exposed", args=("--host", "0.0.0.0", "--port", str(port), "--replicas", "1")
    ).start()
    try:
        deadline = time.monotonic() + 30
        while "not loopback" not in api.log_text() and time.monotonic() < deadline:
            assert api.proc and api.proc.poll() is None, api.log_text()
            time.sleep(0.1)
    finally:
        assert api.terminate() == 0
    warnings = [line for line in api.log_text().splitlines() if "not loopback" in line]
    assert len(warnings) == 1, api.log_text()
    assert "ORDERVIEW_API_ALLOWED_HOSTS is empty" in json.loads(warnings[0])["msg"]


def test_an_api_that_lets_the_null_origin_read_says_so_once_at_start_and_does_let_it(
    settings: Settings,
) -> None:
    allowing = replace(settings, api_cors_origins="null")
    port = free_port()
    api = ServiceProcess(
        "api", allowing, "api-null-origin", args=("--port", str(port), "--replicas", "2")
    ).start()
    try:
        api.wait_http("/readyz", port)
        request = urllib.request.Request(f"http://127.0.0.1:{port}/orders", headers={"Origin": "null"})
        with urllib.request.urlopen(request, timeout=5) as answer:  # what a sandboxed iframe gets
            assert answer.headers["Access-Control-Allow-Origin"] == "null"
    finally:
        assert api.terminate() == 0
    warnings = [line for line in api.log_text().splitlines() if "null origin" in line]
    assert len(warnings) == 1, api.log_text()
    record = json.loads(warnings[0])
    assert record["level"] == "warning" and "sandboxed iframe" in record["msg"]
