"""The API's edge in a real Chromium: the viewer under its Content-Security-Policy, a page that
rebinds its own host name to the API's address, and a page opened from a file calling the API."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest_asyncio
from playwright.async_api import async_playwright, expect

from orderview.settings import Settings
from tests import support
from tests.api_server import api_process
from tests.e2e.test_viewer import CHROMIUM, CHROMIUM_ARGS, REF_UID, REFERENCE_ORDER, look_up, order_heading

REBOUND = "rebind.test"  # resolved by Chromium alone, to 127.0.0.1: DNS rebinding, simulated

FILE_PAGE = """<!doctype html><meta charset="utf-8"><title>pending</title>
<script>
fetch("%(url)s", {headers: {"If-None-Match": '"not-this-one"'}})
  .then(async (r) => { document.title = JSON.stringify({
      status: r.status, etag: r.headers.get("ETag"), cache: r.headers.get("X-Cache"),
      uid: (await r.json()).order_uid}); })
  .catch((e) => { document.title = "blocked: " + e.message; });
</script>"""


@pytest_asyncio.fixture(scope="module")
async def edge_browser():
    async with async_playwright() as playwright:
        args = [*CHROMIUM_ARGS, f"--host-resolver-rules=MAP {REBOUND} 127.0.0.1"]
        chromium = await playwright.chromium.launch(executable_path=CHROMIUM, args=args)
        yield chromium
        await chromium.close()


@pytest_asyncio.fixture(scope="module")
async def guarded_api(settings: Settings):
    """The API as one would expose it to pages: loopback names only, file pages allowed."""
    await support.seed_orders(settings, [REFERENCE_ORDER])
    exposed = replace(settings, api_allowed_hosts="127.0.0.1,localhost", api_cors_origins="null")
    async with api_process(exposed) as running:
        yield running


@pytest_asyncio.fixture(scope="module")
async def default_api(settings: Settings):
    async with api_process(settings) as running:
        yield running


@pytest_asyncio.fixture
async def page(edge_browser):
    context = await edge_browser.new_context()
    page = await context.new_page()
    yield page
    await context.close()


async def test_the_viewer_works_under_its_policy_and_inline_script_does_not_run(page, guarded_api):
    violations: list[str] = []
    page.on("console", lambda m: violations.append(m.text) if "Content Security Policy" in m.text else None)
    response = await page.goto(guarded_api.url + "/")
    assert response is not None
    headers = response.headers
    assert "frame-ancestors 'none'" in headers["content-security-policy"]
    assert (headers["x-content-type-options"], headers["referrer-policy"]) == ("nosniff", "no-referrer")
    await look_up(page, REF_UID)
    await expect(order_heading(page, REF_UID)).to_be_visible()
    await page.goto(guarded_api.url + "/ui/api.html")
    await expect(page.locator("#api-status")).to_contain_text("operations")
    assert violations == []  # the pages need nothing the policy forbids

    try:
        await page.add_script_tag(content="window.__inline = 1")
    except Exception:  # Chromium refuses the script; Playwright may report that as an error
        pass
    assert await page.evaluate("typeof window.__inline") == "undefined"
    assert any("inline script" in v for v in violations), violations


async def test_a_page_that_rebinds_its_name_to_the_api_gets_421(page, guarded_api):
    port = guarded_api.url.rsplit(":", 1)[1]
    rebound = await page.goto(f"http://{REBOUND}:{port}/orders")
    assert rebound is not None and rebound.status == 421
    assert json.loads(await rebound.body())["error"] == "misdirected_request"
    direct = await page.goto(f"http://127.0.0.1:{port}/orders")
    assert direct is not None and direct.status == 200


async def _open_file_page(page, tmp_path: Path, api_url: str) -> str:
    html = tmp_path / "my-page.html"
    html.write_text(FILE_PAGE % {"url": f"{api_url}/order/{REF_UID}"})
    await page.goto(html.as_uri())
    await page.wait_for_function("document.title !== 'pending'")
    return await page.title()


async def test_a_file_page_reads_an_order_and_its_etag_when_file_pages_are_allowed(
    page, guarded_api, tmp_path
):
    answer = json.loads(
        await _open_file_page(page, tmp_path, guarded_api.url.replace("127.0.0.1", "localhost"))
    )
    assert answer["status"] == 200 and answer["uid"] == REF_UID
    assert answer["etag"].startswith('"') and answer["cache"] in ("hit", "miss")


async def test_a_file_page_is_refused_by_default(page, default_api, tmp_path):
    assert (await _open_file_page(page, tmp_path, default_api.url)).startswith("blocked: ")
