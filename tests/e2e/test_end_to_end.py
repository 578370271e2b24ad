"""The whole way, as a user runs it: the emulator sends, Kafka keeps, the projector projects,
the API serves, the page shows. The test itself writes nothing to PostgreSQL."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from datetime import datetime

import aiohttp
from playwright.async_api import expect

from emulator.stream import expected_state, stream
from harness import ROOT
from harness.processes import Projector
from orderview.settings import Settings
from tests import support
from tests.api_server import api_process
from tests.e2e.test_viewer import REF_UID, _new_page, field, look_up, order_heading, screenshot

SEED, COUNT = 31, 200
START = "2026-03-01T09:00:00Z"  # the stream's time: with the seed, the CLI's stream is stream()'s


def emulate(settings: Settings) -> str:
    """`python -m emulator` as the README shows it: the reference order, then a seeded stream."""
    done = subprocess.run(
        [
            sys.executable, "-m", "emulator", "--file", "examples/order.json", "--count", str(COUNT),
            "--seed", str(SEED), "--invalid-share", "0.1", "--repeat-share", "0.1", "--compression", "lz4",
            "--start", START,
        ],
        cwd=ROOT, env={**os.environ, **settings.to_env()}, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    return done.stdout


async def test_orders_sent_by_the_emulator_are_read_on_the_page(clean_settings: Settings, browser) -> None:
    s = clean_settings
    projector = Projector(s, "projector-end-to-end").start().wait_ready()
    try:
        async with api_process(s) as api:
            summary = emulate(s)
            assert f"sent {COUNT + 1} messages" in summary
            start = datetime.fromisoformat(START).timestamp()
            sent = stream(COUNT, seed=SEED, invalid_share=0.1, repeat_share=0.1, start=start)
            latest = expected_state(list(sent))
            last_uid = list(latest)[-1]

            async def served(uid: str) -> bool:
                async with aiohttp.ClientSession() as client:
                    async with client.get(f"{api.url}/order/{uid}") as response:
                        return response.status == 200

            await support.wait_until(lambda: served(last_uid), timeout=60, message="the last order served")
            context, page = await _new_page(browser, 1280, 900)
            try:
                await page.goto(api.url + "/")
                await look_up(page, REF_UID)
                await expect(order_heading(page, REF_UID)).to_be_visible()
                amount = page.get_by_role("region", name="Payment").locator(".amount")
                await expect(amount).to_have_text(re.compile(r"Amount\s+USD\s18\.17"))
                await look_up(page, last_uid, press_enter=True)
                await expect(order_heading(page, last_uid)).to_be_visible()
                await expect(field(page, "Delivery", "City")).to_have_text(
                    latest[last_uid]["delivery"]["city"]
                )
                await screenshot(page, "end-to-end")
                assert page.script_errors == []
            finally:
                await context.close()
    finally:
        assert projector.terminate() == 0
