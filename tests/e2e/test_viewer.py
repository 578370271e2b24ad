"""End-to-end tests of the viewer (ui/) in a real headless Chromium (Debian's, via Playwright).

The tests only need these fixtures from the API side: `base_url` (where the API serves the
viewer at / and its assets at /ui/...), `seed_orders` (an async callable that makes a list
of order dicts readable through GET /order/{order_uid} and GET /orders), `seed_history` (one
order's versions, oldest first, as GET /order/{order_uid}/history gives them) and `erase_order`.
"""

from __future__ import annotations

import asyncio
import copy
import os
import re
import uuid
from datetime import UTC, datetime
from pathlib import Path

import pytest
import pytest_asyncio
from playwright.async_api import Page, Route, expect

from harness.history import Version, erase, later_times, versions_of, write_history
from harness.ports import free_port
from orderview.settings import Settings
from tests import support
from tests.api_server import api_process

ROOT = Path(__file__).resolve().parents[2]
UI_DIR = ROOT / "ui"
SCREENSHOTS = ROOT / "test-artifacts" / "screenshots"

CHROMIUM = os.environ.get("ORDERVIEW_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]

# The reference order (shared/examples/order.json), kept here so the tests stand alone.
REFERENCE_ORDER = {
    "order_uid": "b563feb7b2b84b6test",
    "track_number": "WBILMTESTTRACK",
    "entry": "WBIL",
    "delivery": {
        "name": "Test Testov",
        "phone": "+9720000000",
        "zip": "2639809",
        "city": "Kiryat Mozkin",
        "address": "Ploshad Mira 15",
        "region": "Kraiot",
        "email": "test@gmail.com",
    },
    "payment": {
        "transaction": "b563feb7b2b84b6test",
        "request_id": "",
        "currency": "USD",
        "provider": "wbpay",
        "amount": 1817,
        "payment_dt": 1637907727,
        "bank": "alpha",
        "delivery_cost": 1500,
        "goods_total": 317,
        "custom_fee": 0,
    },
    "items": [
        {
            "chrt_id": 9934930,
            "track_number": "WBILMTESTTRACK",
            "price": 453,
            "rid": "ab4219087a764ae0btest",
            "name": "Mascaras",
            "sale": 30,
            "size": "0",
            "total_price": 317,
            "nm_id": 2389212,
            "brand": "Vivienne Sabo",
            "status": 202,
        }
    ],
    "locale": "en",
    "internal_signature": "",
    "customer_id": "test",
    "delivery_service": "meest",
    "shardkey": "9",
    "sm_id": 99,
    "date_created": "2021-11-26T06:22:19Z",
    "oof_shard": "1",
}
REF_UID = REFERENCE_ORDER["order_uid"]

IMG_PAYLOAD = "<img src=x onerror=alert(1)>"
SCRIPT_PAYLOAD = "</script><script>window.__pwned=1</script>"


def new_uid(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex[:12]}"


def make_order(uid: str, **changes) -> dict:
    """A valid copy of the reference order under a new id, created now (so it is among the recent)."""
    order = copy.deepcopy(REFERENCE_ORDER)
    order["order_uid"] = uid
    order["payment"]["transaction"] = uid
    order["date_created"] = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    order.update(changes)
    return order


# ---------------------------------------------------------------------------------------------
# The API under test: a real `python -m api` on the session's PostgreSQL database.
# ---------------------------------------------------------------------------------------------


@pytest_asyncio.fixture(scope="module")
async def api(settings: Settings):
    async with api_process(settings) as running:
        yield running


@pytest.fixture
def base_url(api) -> str:
    return api.url


@pytest.fixture
def seed_orders(settings: Settings):
    """Orders written through the projector's own path, one transaction each, so the
    last one seeded is the most recent in GET /orders."""

    async def seed(orders: list[dict]) -> None:
        for order in orders:
            await support.seed_orders(settings, [order])

    return seed


@pytest.fixture
def seed_history(settings: Settings):
    """An order's versions (a list of orders, or of harness.history.Version), written as the
    projector keeps them: the last current, the others its history."""

    async def seed(versions: list) -> None:
        if not isinstance(versions[0], Version):
            versions = versions_of(versions)
        uid = (versions[-1].order or versions[0].order)["order_uid"]
        await write_history(settings, uid, versions)

    return seed


@pytest.fixture
def erase_order(settings: Settings):
    async def erase_it(uid: str) -> None:
        await erase(settings, uid)

    return erase_it


# ---------------------------------------------------------------------------------------------
# Browser fixtures and helpers
# ---------------------------------------------------------------------------------------------


async def _new_page(browser, width: int, height: int):
    context = await browser.new_context(
        locale="en-US", timezone_id="UTC", viewport={"width": width, "height": height}
    )
    page = await context.new_page()
    page.dialogs = []  # every alert/confirm/prompt the page opened
    page.script_errors = []  # uncaught exceptions in the page

    async def record_and_dismiss(dialog) -> None:
        page.dialogs.append(dialog.message)
        await dialog.dismiss()

    page.on("dialog", record_and_dismiss)
    page.on("pageerror", lambda error: page.script_errors.append(str(error)))
    return context, page


@pytest_asyncio.fixture
async def page(browser):
    context, page = await _new_page(browser, 1280, 900)
    yield page
    await context.close()
    assert page.script_errors == []


@pytest_asyncio.fixture
async def phone_page(browser):
    context, page = await _new_page(browser, 390, 844)
    yield page
    await context.close()
    assert page.script_errors == []


async def screenshot(page: Page, name: str) -> None:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    await page.screenshot(path=str(SCREENSHOTS / f"{name}.png"), full_page=True)


async def look_up(page: Page, order_id: str, *, press_enter: bool = False) -> None:
    await page.get_by_label("Order id").fill(order_id)
    if press_enter:
        await page.get_by_label("Order id").press("Enter")
    else:
        await page.get_by_role("button", name="Show order").click()


def field(page: Page, section: str, label: str):
    """The value (<dd>) of a labelled field in one of the order's sections."""
    return page.get_by_role("region", name=section).locator(f'.field:has(> dt:text-is("{label}")) > dd')


def order_heading(page: Page, uid: str):
    return page.get_by_role("heading", level=2, name=f"Order {uid}")


def order_requests(page: Page) -> list[str]:
    """Start recording the URLs of GET /order/... requests the page makes."""
    seen: list[str] = []
    page.on("request", lambda request: seen.append(request.url) if "/order/" in request.url else None)
    return seen


# ---------------------------------------------------------------------------------------------
# Tests
# ---------------------------------------------------------------------------------------------


async def test_lookup_shows_summary_delivery_payment_and_items(page, base_url, seed_orders):
    await seed_orders([REFERENCE_ORDER])
    await page.goto(base_url + "/")
    await expect(page.get_by_role("heading", level=1)).to_have_text("orderview")

    await look_up(page, REF_UID)

    heading = order_heading(page, REF_UID)
    await expect(heading).to_be_visible()
    await expect(heading).to_be_focused()
    assert page.url == f"{base_url}/?id={REF_UID}"
    await expect(page.locator("#order")).not_to_have_attribute("aria-busy", "true")

    # summary
    await expect(field(page, "Summary", "Order uid")).to_have_text(REF_UID)
    await expect(field(page, "Summary", "Track number")).to_have_text("WBILMTESTTRACK")
    await expect(field(page, "Summary", "Entry")).to_have_text("WBIL")
    await expect(field(page, "Summary", "Customer")).to_have_text("test")
    await expect(field(page, "Summary", "Locale")).to_have_text("en")
    await expect(field(page, "Summary", "Delivery service")).to_have_text("meest")
    await expect(field(page, "Summary", "Created")).to_have_text("Nov 26, 2021, 6:22:19 AM UTC")
    await expect(field(page, "Summary", "Shard key")).to_have_text("9")
    await expect(field(page, "Summary", "OOF shard")).to_have_text("1")
    await expect(field(page, "Summary", "SM id")).to_have_text("99")
    await expect(field(page, "Summary", "Internal signature")).to_have_text("none")

    # delivery (email and phone as plain text, no links)
    for label, value in [
        ("Name", "Test Testov"),
        ("Phone", "+9720000000"),
        ("Email", "test@gmail.com"),
        ("Address", "Ploshad Mira 15"),
        ("City", "Kiryat Mozkin"),
        ("Region", "Kraiot"),
        ("Zip", "2639809"),
    ]:
        await expect(field(page, "Delivery", label)).to_have_text(value)
    await expect(page.get_by_role("region", name="Delivery").locator("a")).to_have_count(0)

    # payment: money with its currency, payment time as a localized date
    payment = page.get_by_role("region", name="Payment")
    await expect(payment.locator(".amount")).to_have_text(re.compile(r"Amount\s+USD\s18\.17"))
    await expect(field(page, "Payment", "Goods total")).to_have_text(re.compile(r"^USD\s3\.17$"))
    await expect(field(page, "Payment", "Delivery cost")).to_have_text(re.compile(r"^USD\s15\.00$"))
    await expect(field(page, "Payment", "Custom fee")).to_have_text(re.compile(r"^USD\s0\.00$"))
    await expect(field(page, "Payment", "Provider")).to_have_text("wbpay")
    await expect(field(page, "Payment", "Bank")).to_have_text("alpha")
    await expect(field(page, "Payment", "Transaction")).to_have_text(REF_UID)
    await expect(field(page, "Payment", "Request id")).to_have_text("none")
    payment_time = field(page, "Payment", "Payment time").locator("time")
    await expect(payment_time).to_have_text("Nov 26, 2021, 6:22:07 AM UTC")
    await expect(payment_time).to_have_attribute("datetime", "2021-11-26T06:22:07.000Z")

    # items table with a totals row
    table = page.get_by_role("table", name="Items in this order (1 item)")
    await expect(table.locator("thead th")).to_have_text(
        ["Name", "Brand", "Size", "Price", "Sale", "Total price", "Status", "Ids"]
    )
    await expect(table.locator("tbody tr")).to_have_count(1)
    row = table.locator("tbody tr").first
    await expect(row.locator("th, td")).to_have_text(
        [
            "Mascaras",
            "Vivienne Sabo",
            "0",
            re.compile(r"USD\s4\.53"),
            "30%",
            re.compile(r"USD\s3\.17"),
            "202",
            re.compile(r"chrt_id 9934930\s*nm_id 2389212\s*rid ab4219087a764ae0btest"),
        ]
    )
    await expect(table.locator("tfoot tr")).to_have_text(re.compile(r"Total \(1 item\)\s*USD\s3\.17"))
    await expect(page.locator("#alert")).to_be_empty()
    await screenshot(page, "desktop-reference-order")


async def test_enter_key_submits(page, base_url, seed_orders):
    uid = new_uid("enter")
    await seed_orders([make_order(uid)])
    await page.goto(base_url + "/")
    await look_up(page, uid, press_enter=True)
    await expect(order_heading(page, uid)).to_be_focused()
    assert page.url.endswith(f"?id={uid}")


async def test_loading_state_is_shown_while_waiting(page, base_url, seed_orders):
    uid = new_uid("slow")
    await seed_orders([make_order(uid)])
    release = asyncio.Event()

    async def hold_until_released(route: Route) -> None:
        await release.wait()
        await route.continue_()

    await page.route("**/order/**", hold_until_released)
    await page.goto(base_url + "/")
    await look_up(page, uid)
    await expect(page.locator("#status")).to_have_text(f"Loading order “{uid}”…")
    await expect(page.locator("#status")).to_have_attribute("role", "status")
    await expect(page.locator("#order")).to_have_attribute("aria-busy", "true")
    release.set()
    await expect(order_heading(page, uid)).to_be_visible()
    await expect(page.locator("#order")).not_to_have_attribute("aria-busy", "true")
    await expect(page.locator("#status")).to_be_empty()


async def test_unknown_id_says_not_found(page, base_url):
    uid = new_uid("missing")
    await page.goto(base_url + "/")
    await look_up(page, uid)
    alert = page.get_by_role("alert")
    await expect(alert).to_have_text(f"Order not found. There is no order with id “{uid}”.")
    await expect(alert).to_have_attribute("data-kind", "not-found")
    await expect(page.locator("#order h2")).to_have_count(0)
    assert page.url.endswith(f"?id={uid}")
    await screenshot(page, "desktop-not-found")


async def test_malformed_id_is_refused_without_a_request(page, base_url):
    requests = order_requests(page)
    await page.goto(base_url + "/")
    await look_up(page, "bad id!", press_enter=True)
    alert = page.get_by_role("alert")
    await expect(alert).to_contain_text("Malformed order id.")
    await expect(alert).to_contain_text("“bad id!” is not a valid order id")
    await expect(alert).to_have_attribute("data-kind", "malformed")
    await expect(page.get_by_label("Order id")).to_have_attribute("aria-invalid", "true")
    await expect(page.get_by_label("Order id")).to_be_focused()

    await look_up(page, "x" * 65)
    await expect(alert).to_contain_text(f"“{'x' * 65}” is not a valid order id")
    await look_up(page, "")
    await expect(alert).to_have_text("No order id. Type an order id, then press “Show order”.")

    await page.goto(base_url + "/?id=" + "%3Cb%3E%20no")  # a deep link with a malformed id
    await expect(alert).to_contain_text("“<b> no” is not a valid order id")
    await page.wait_for_timeout(200)
    assert requests == []
    await screenshot(page, "desktop-malformed")


async def test_server_400_is_shown_as_malformed(page, base_url):
    await page.route(
        "**/order/**",
        lambda route: route.fulfill(
            status=400, json={"error": "bad_order_uid", "message": "order_uid must be 1-64 characters"}
        ),
    )
    await page.goto(base_url + "/")
    await look_up(page, "fine_by_the_page")
    await expect(page.get_by_role("alert")).to_have_attribute("data-kind", "malformed")
    await expect(page.get_by_role("alert")).to_contain_text("Malformed order id.")


async def test_unreachable_server_is_reported_and_retry_works(page, base_url, seed_orders):
    uid = new_uid("retry")
    await seed_orders([make_order(uid)])
    dead_origin = f"http://127.0.0.1:{free_port()}"  # free: nothing listens on it

    async def to_closed_port(route: Route) -> None:
        await route.continue_(url=route.request.url.replace(base_url, dead_origin))

    await page.route("**/order/**", to_closed_port)
    await page.goto(base_url + "/")
    await look_up(page, uid)
    alert = page.get_by_role("alert")
    await expect(alert).to_contain_text("Server unreachable. Could not connect to the orderview API.")
    await expect(alert).to_have_attribute("data-kind", "unreachable")
    await screenshot(page, "desktop-unreachable")

    await page.unroute("**/order/**")
    await alert.get_by_role("button", name="Try again").click()
    await expect(order_heading(page, uid)).to_be_visible()
    await expect(page.locator("#alert")).to_be_empty()


async def test_server_error_is_reported(page, base_url):
    await page.route("**/order/**", lambda route: route.fulfill(status=503, body="overloaded"))
    await page.goto(base_url + "/")
    await look_up(page, new_uid("boom"))
    alert = page.get_by_role("alert")
    await expect(alert).to_contain_text("Server error. The API failed with HTTP 503.")
    await expect(alert).to_have_attribute("data-kind", "server-error")


async def test_deep_link_loads_the_order(page, base_url, seed_orders):
    uid = new_uid("deep")
    await seed_orders([make_order(uid)])
    await page.goto(f"{base_url}/?id={uid}")
    await expect(order_heading(page, uid)).to_be_visible()
    await expect(page.get_by_label("Order id")).to_have_value(uid)


async def test_back_and_forward_move_between_orders(page, base_url, seed_orders):
    first, second = new_uid("first"), new_uid("second")
    await seed_orders([make_order(first), make_order(second)])
    await page.goto(base_url + "/")
    await look_up(page, first)
    await expect(order_heading(page, first)).to_be_visible()
    await look_up(page, second)
    await expect(order_heading(page, second)).to_be_visible()

    await page.go_back()
    await expect(order_heading(page, first)).to_be_visible()
    await expect(page.get_by_label("Order id")).to_have_value(first)
    assert page.url.endswith(f"?id={first}")
    await page.go_back()
    await expect(page.locator(".placeholder")).to_be_visible()
    await expect(page.get_by_label("Order id")).to_have_value("")

    await page.go_forward()
    await expect(order_heading(page, first)).to_be_visible()
    await page.go_forward()
    await expect(order_heading(page, second)).to_be_visible()
    assert page.url.endswith(f"?id={second}")


async def test_recent_order_click_loads_it_without_a_reload(page, base_url, seed_orders):
    uid = new_uid("recent")
    await seed_orders([make_order(uid)])
    await page.goto(base_url + "/")
    await page.evaluate("window.__same_document = true")
    link = page.get_by_role("complementary", name="Recent orders").get_by_role("link", name=re.compile(uid))
    await expect(link).to_have_attribute("href", f"?id={uid}")
    await link.click()
    await expect(order_heading(page, uid)).to_be_visible()
    assert page.url.endswith(f"?id={uid}")
    assert await page.evaluate("window.__same_document") is True
    await expect(link).to_have_attribute("aria-current", "page")


async def test_recent_orders_more_loads_the_next_page(page, base_url, seed_orders):
    await seed_orders([make_order(new_uid("page")) for _ in range(25)])
    await page.goto(base_url + "/")
    links = page.locator("#recent-list a")
    await expect(links).to_have_count(20)
    await page.get_by_role("button", name="More").click()
    await expect(links.nth(20)).to_be_visible()
    await expect(links.nth(20)).to_be_focused()
    ids = await links.evaluate_all("links => links.map(link => link.dataset.id)")
    assert len(ids) > 20 and len(set(ids)) == len(ids)


async def test_hostile_strings_are_shown_as_text_and_never_run(page, base_url, seed_orders):
    uid = new_uid("hostile")
    order = make_order(uid, customer_id=IMG_PAYLOAD, entry=SCRIPT_PAYLOAD)
    order["delivery"].update(name=IMG_PAYLOAD, address=SCRIPT_PAYLOAD, city=SCRIPT_PAYLOAD)
    order["payment"].update(bank=IMG_PAYLOAD, provider=SCRIPT_PAYLOAD)
    order["items"][0].update(name=IMG_PAYLOAD, brand=SCRIPT_PAYLOAD)
    await seed_orders([order])

    await page.goto(f"{base_url}/?id={uid}")
    await expect(order_heading(page, uid)).to_be_visible()
    await expect(field(page, "Summary", "Customer")).to_have_text(IMG_PAYLOAD)
    await expect(field(page, "Summary", "Entry")).to_have_text(SCRIPT_PAYLOAD)
    await expect(field(page, "Delivery", "Name")).to_have_text(IMG_PAYLOAD)
    await expect(field(page, "Delivery", "Address")).to_have_text(SCRIPT_PAYLOAD)
    await expect(field(page, "Payment", "Bank")).to_have_text(IMG_PAYLOAD)
    await expect(field(page, "Payment", "Provider")).to_have_text(SCRIPT_PAYLOAD)
    row = page.get_by_role("table").locator("tbody tr").first
    await expect(row.locator("th")).to_have_text(IMG_PAYLOAD)
    await expect(row.locator("td").first).to_have_text(SCRIPT_PAYLOAD)
    recent = page.locator(f'#recent-list a[data-id="{uid}"]')
    await expect(recent).to_contain_text(f"{IMG_PAYLOAD} · {SCRIPT_PAYLOAD}")

    await page.wait_for_timeout(300)  # give an injected onerror handler time to fire
    assert await page.locator("img").count() == 0
    assert await page.locator("body script").count() == 0
    assert await page.evaluate("typeof window.__pwned") == "undefined"
    assert page.dialogs == []
    await screenshot(page, "desktop-hostile-strings")


async def test_phone_layout_stacks_and_does_not_overflow(phone_page, base_url, seed_orders):
    page = phone_page
    await seed_orders([REFERENCE_ORDER])
    await page.goto(f"{base_url}/?id={REF_UID}")
    await expect(order_heading(page, REF_UID)).to_be_visible()
    await expect(page.locator("#recent-list a").first).to_be_visible()

    summary = await page.get_by_role("region", name="Summary").bounding_box()
    delivery = await page.get_by_role("region", name="Delivery").bounding_box()
    payment = await page.get_by_role("region", name="Payment").bounding_box()
    assert summary["x"] == delivery["x"] == payment["x"]  # sections stack
    assert summary["y"] < delivery["y"] < payment["y"]
    assert await page.evaluate("document.documentElement.scrollWidth") <= 390  # only the table scrolls
    await screenshot(page, "phone-reference-order")
    await page.locator("#order").screenshot(path=str(SCREENSHOTS / "phone-reference-order-detail.png"))


async def test_the_api_page_calls_an_operation_and_shows_its_answer(page, base_url, seed_orders):
    await seed_orders([REFERENCE_ORDER])
    await page.goto(base_url + "/")
    await page.get_by_role("link", name="API").click()
    form = page.get_by_role("form", name="Call GET /order/{order_uid}", exact=True)
    await form.get_by_role("textbox", name="order_uid (path)").fill(REF_UID)
    await form.get_by_role("button", name="Send").click()
    await expect(page.locator(".status-line").first).to_have_text(re.compile(r"^200 OK · application/json"))
    await expect(page.locator(".response pre").first).to_contain_text(f'"order_uid": "{REF_UID}"')
    await page.screenshot(path=str(SCREENSHOTS / "desktop-api-page.png"))


async def test_money_is_shown_from_minor_units_in_each_currencys_own_decimals(page, base_url, seed_orders):
    """The schema says minor units: 1817 is USD 18.17, and JPY, which has none, 1,817."""
    uid = new_uid("yen")
    order = make_order(uid)
    order["payment"]["currency"] = "JPY"
    await seed_orders([order])
    await page.goto(f"{base_url}/?id={uid}")
    payment = page.get_by_role("region", name="Payment")
    await expect(payment.locator(".amount")).to_have_text(re.compile(r"Amount\s+JPY\s1,817$"))
    await expect(field(page, "Payment", "Delivery cost")).to_have_text(re.compile(r"^JPY\s1,500$"))
    await expect(payment.locator(".note")).to_have_text(re.compile(r"recorded in minor units"))


async def test_looking_an_order_up_twice_shows_the_cache_at_work(page, base_url, seed_orders):
    order = make_order(new_uid("twice"))
    await seed_orders([order])
    await page.goto(base_url + "/")
    served = page.locator("#served")

    await look_up(page, order["order_uid"])
    await expect(order_heading(page, order["order_uid"])).to_be_visible()
    await expect(served).to_have_text(
        re.compile(r"^Served from the database in \d+(\.\d)? (µs|ms) of server time\.$")
    )

    await page.goto(base_url + "/")
    await look_up(page, order["order_uid"])
    await expect(order_heading(page, order["order_uid"])).to_be_visible()
    await expect(served).to_have_text(
        re.compile(r"^Served from the cache in \d+(\.\d)? (µs|ms) of server time\.$")
    )
    await screenshot(page, "served-from-cache")


# ---------------------------------------------------------------------------------------------
# The order's history
# ---------------------------------------------------------------------------------------------


def history_entry(page: Page, number: int):
    return page.get_by_role("region", name="History").locator(f'li.version[data-version="{number}"]')


def ms(text: str) -> int:
    return int(datetime.fromisoformat(text).timestamp() * 1000)


async def test_the_history_shows_each_version_with_its_time_where_it_came_from_and_what_changed(
    page, base_url, seed_history
):
    uid = new_uid("lifecycle")
    first = make_order(uid)
    corrected = copy.deepcopy(first)
    corrected["delivery"]["address"] = "Ploshad Mira 15, apt. 4"
    shipped = copy.deepcopy(corrected)
    shipped["items"][0]["status"] = 203
    [t] = later_times(1)
    await seed_history(
        [
            Version(
                first,
                t,
                1,
                40,
                record_timestamp=ms("2026-03-01T09:15:00+00:00"),
                applied_at=datetime(2026, 3, 1, 9, 15, 1, tzinfo=UTC),
            ),
            Version(
                corrected,
                t + 1,
                1,
                52,
                record_timestamp=ms("2026-03-01T11:02:30+00:00"),
                applied_at=datetime(2026, 3, 1, 11, 2, 30, tzinfo=UTC),
            ),
            Version(
                shipped,
                t + 2,
                2,
                7,
                record_timestamp=ms("2026-03-02T08:00:00+00:00"),
                timestamp_type=1,
                applied_at=datetime(2026, 3, 2, 8, 0, 0, tzinfo=UTC),
            ),
        ]
    )
    await page.goto(f"{base_url}/?id={uid}")
    history = page.get_by_role("region", name="History")
    await expect(history.locator("li.version")).to_have_count(3)
    await expect(history.locator("li.version h4")).to_have_text(
        ["Version 3 current", "Version 2", "Version 1"]
    )

    newest = history_entry(page, 3)
    await expect(newest.locator(".version-meta")).to_have_text(
        "logged at (the broker's time) Mar 2, 2026, 8:00:00 AM UTC · from partition 2, offset 7"
        " · applied Mar 2, 2026, 8:00:00 AM UTC"
    )
    await expect(
        newest.get_by_role("list", name="Changes in version 3").get_by_role("listitem")
    ).to_have_text(["Item 1 › Status 202 → changed to 203"])
    await expect(newest.locator("del")).to_have_text("202")
    await expect(newest.locator("ins")).to_have_text("203")

    corrected_entry = history_entry(page, 2)
    await expect(corrected_entry.locator(".version-meta")).to_contain_text(
        "sent at (the producer's time) Mar 1, 2026, 11:02:30 AM UTC · from partition 1, offset 52"
    )
    await expect(corrected_entry.locator(".change")).to_have_text(
        ["Delivery › Address Ploshad Mira 15 → changed to Ploshad Mira 15, apt. 4"]
    )
    await expect(history_entry(page, 1)).to_contain_text(
        "The first version kept: the order as it was received."
    )
    await expect(history.get_by_role("status")).to_have_text("3 versions.")
    await expect(history.get_by_role("button", name="Show older versions")).to_be_hidden()
    await screenshot(page, "desktop-order-history")
    await history.screenshot(path=str(SCREENSHOTS / "history-card.png"))  # docs/history-viewer.png


async def test_older_versions_load_on_request_and_show_what_changed_across_the_pages(
    page, base_url, seed_history
):
    uid = new_uid("long")
    orders = [make_order(uid)]
    for n in range(1, 25):
        order = copy.deepcopy(orders[-1])
        order["delivery"]["phone"] = f"+97250000{n:04d}"
        orders.append(order)
    await seed_history(orders)
    await page.goto(f"{base_url}/?id={uid}")
    history = page.get_by_role("region", name="History")
    await expect(history.locator("li.version")).to_have_count(20)
    await expect(history.get_by_role("status")).to_have_text("20 of 25 versions shown.")
    await expect(history_entry(page, 6)).to_contain_text(
        "What changed shows once the older versions are loaded."
    )

    await history.get_by_role("button", name="Show older versions").click()
    await expect(history.locator("li.version")).to_have_count(25)
    numbers = await history.locator("li.version").evaluate_all(
        "nodes => nodes.map(n => Number(n.dataset.version))"
    )
    assert numbers == list(range(25, 0, -1))
    await expect(history_entry(page, 6).locator(".change")).to_have_text(
        ["Delivery › Phone +972500000004 → changed to +972500000005"]
    )
    await expect(history.get_by_role("button", name="Show older versions")).to_be_hidden()
    await expect(history.get_by_role("status")).to_have_text("25 versions.")


async def test_hostile_strings_in_the_history_are_shown_as_text_and_never_run(page, base_url, seed_history):
    uid = new_uid("hostilehistory")
    first = make_order(uid)
    second = copy.deepcopy(first)
    second["delivery"]["address"] = IMG_PAYLOAD
    second["items"][0]["brand"] = SCRIPT_PAYLOAD
    third = copy.deepcopy(second)
    third["delivery"]["name"] = "‮evil‬ " + "x" * 500
    third["items"].append({**third["items"][0], "name": IMG_PAYLOAD, "total_price": 0, "price": 0})
    await seed_history([first, second, third])

    await page.goto(f"{base_url}/?id={uid}")
    history = page.get_by_role("region", name="History")
    await expect(history.locator("li.version")).to_have_count(3)
    await expect(history_entry(page, 2).locator("ins")).to_have_text([IMG_PAYLOAD, SCRIPT_PAYLOAD])
    added = history_entry(page, 3).locator('.change[data-op="add"]')
    await expect(added).to_contain_text("Item 2 added:")
    await expect(added).to_contain_text("<img src=x")  # the item as text, cut to a readable length
    assert len(await added.inner_text()) < 250
    await page.wait_for_timeout(300)  # give an injected onerror handler time to fire
    assert await page.locator("img").count() == 0
    assert await page.locator("body script").count() == 0
    assert await page.evaluate("typeof window.__pwned") == "undefined"
    assert page.dialogs == []
    await screenshot(page, "desktop-history-hostile-strings")


async def test_an_erased_order_is_not_found_like_an_unknown_one(page, base_url, seed_orders, erase_order):
    uid = new_uid("erased")
    await seed_orders([make_order(uid)])
    await page.goto(f"{base_url}/?id={uid}")
    await expect(order_heading(page, uid)).to_be_visible()  # cached by the API now

    await erase_order(uid)
    await expect(page.locator(f'#recent-list a[data-id="{uid}"]')).to_have_count(1)

    async def shown_as_not_found() -> bool:
        """The page loaded again shows an answer: False while it is still the order (a replica
        not yet told of the erasure), so that the wait asks again."""
        await page.goto(f"{base_url}/?id={uid}")
        alert = page.get_by_role("alert")
        await expect(alert.or_(order_heading(page, uid)).first).to_be_visible()
        return await alert.count() > 0 and await alert.get_attribute("data-kind") == "not-found"

    await support.wait_until(shown_as_not_found, timeout=15.0, message="the erased order shown as not found")
    await expect(page.get_by_role("alert")).to_have_text(
        f"Order not found. There is no order with id “{uid}”."
    )
    await expect(page.locator("#order h2")).to_have_count(0)
    await expect(page.locator(f'#recent-list a[data-id="{uid}"]')).to_have_count(0)
