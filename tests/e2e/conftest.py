"""The browser the end-to-end tests drive: Debian's Chromium, through Playwright, once a session."""

from __future__ import annotations

from pathlib import Path

import pytest
import pytest_asyncio
from playwright.async_api import async_playwright

from tests.e2e.test_viewer import CHROMIUM, CHROMIUM_ARGS


def _require_chromium() -> None:
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing: install Debian's chromium (apt-get install -y chromium)")


@pytest_asyncio.fixture(scope="session")
async def browser():
    _require_chromium()
    async with async_playwright() as playwright:
        chromium = await playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield chromium
        await chromium.close()
