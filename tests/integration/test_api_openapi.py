"""The running API against its own OpenAPI document, fuzzed by schemathesis: no 5xx, and every
answer (status, content type, headers, body) is one the document describes.

The API runs as a subprocess: schemathesis calls it synchronously, from this test's thread.
"""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import AsyncIterator

import pytest_asyncio
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis import GenerationMode

from harness.history import versions_of, write_history
from harness.orders import reference_order
from orderview.settings import Settings
from tests import support
from tests.api_server import api_process

EXAMPLES_PER_OPERATION = 50


def reference_history() -> list[dict]:
    """The reference order's versions before it became what examples/order.json holds: another
    address, an item's status, an item more."""
    current = reference_order()
    first = copy.deepcopy(current)
    first["delivery"]["address"] = "Ploshad Mira 51"
    first["items"][0]["status"] = 200
    second = copy.deepcopy(first)
    second["delivery"]["address"] = current["delivery"]["address"]
    second["items"].append({**second["items"][0], "rid": "second-item", "total_price": 0, "price": 0})
    return [first, second, current]


@pytest_asyncio.fixture(scope="module")
async def api_schema(settings: Settings) -> AsyncIterator[schemathesis.schemas.BaseSchema]:
    uid = reference_order()["order_uid"]
    await write_history(settings, uid, versions_of(reference_history()))
    async with api_process(settings) as api:
        yield schemathesis.openapi.from_url(api.url + "/openapi.json")


@pytest_asyncio.fixture(scope="module")
async def guarded_schema(settings: Settings) -> AsyncIterator[schemathesis.schemas.BaseSchema]:
    """The API with its Host allow-list and a CORS origin set."""
    guarded = dataclasses.replace(settings, api_allowed_hosts="127.0.0.1", api_cors_origins=SHOP)
    await support.seed_orders(settings, [reference_order()])
    async with api_process(guarded) as api:
        yield schemathesis.openapi.from_url(api.url + "/openapi.json")


SHOP = "https://shop.example"


def fuzz(operation: schemathesis.APIOperation, mode: GenerationMode) -> None:
    @given(case=operation.as_strategy(generation_mode=mode))
    @settings(
        max_examples=EXAMPLES_PER_OPERATION,
        deadline=None,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    def conforms(case: schemathesis.Case) -> None:
        case.call_and_validate()

    conforms()


def test_every_operation_conforms_to_the_document(api_schema: schemathesis.schemas.BaseSchema) -> None:
    operations = [result.ok() for result in api_schema.get_all_operations()]
    assert len(operations) >= 7
    for operation in operations:
        fuzz(operation, GenerationMode.POSITIVE)
        if list(operation.iter_parameters()):  # without any, there is nothing to make invalid
            fuzz(operation, GenerationMode.NEGATIVE)


def test_an_existing_order_conforms_to_the_order_schema(api_schema: schemathesis.schemas.BaseSchema) -> None:
    uid = reference_order()["order_uid"]
    for method in ("GET", "HEAD"):
        case = api_schema["/order/{order_uid}"][method].Case(path_parameters={"order_uid": uid})
        response = case.call_and_validate()
        assert response.status_code == 200


def test_every_page_of_a_history_conforms_to_the_document(
    api_schema: schemathesis.schemas.BaseSchema,
) -> None:
    uid = reference_order()["order_uid"]
    operation = api_schema["/order/{order_uid}/history"]["GET"]
    for limit in (1, 2, 3, 100):
        before, versions = None, 0
        while True:
            query = {"limit": limit, **({"before": before} if before else {})}
            response = operation.Case(path_parameters={"order_uid": uid}, query=query).call_and_validate()
            assert response.status_code == 200
            page = response.json()
            versions += len(page["versions"])
            before = page["next_before"]
            if before is None:
                break
        assert versions == len(reference_history()), limit


def test_the_document_says_money_is_in_minor_units_as_the_schema_does() -> None:
    from api.openapi import document

    doc = document()
    assert "minor units" in doc["info"]["description"]
    assert (
        "minor units" in doc["components"]["schemas"]["OrderSummary"]["properties"]["amount"]["description"]
    )
    payment = doc["components"]["schemas"]["Order"]["properties"]["payment"]["properties"]
    for field in ("amount", "goods_total", "delivery_cost", "custom_fee"):
        assert "minor units" in payment[field]["description"], field


def test_preflights_conform_to_the_document(guarded_schema: schemathesis.schemas.BaseSchema) -> None:
    uid = reference_order()["order_uid"]
    for path, parameters in (("/order/{order_uid}", {"order_uid": uid}), ("/orders", {})):
        fuzz(guarded_schema[path]["OPTIONS"], GenerationMode.POSITIVE)
        for origin, method, status in (
            (SHOP, "GET", 204),
            ("https://evil.example", "GET", 403),
            (SHOP, "DELETE", 403),
        ):
            headers = {"Origin": origin, "Access-Control-Request-Method": method}
            case = guarded_schema[path]["OPTIONS"].Case(path_parameters=parameters, headers=headers)
            assert case.call_and_validate().status_code == status, (path, origin, method)


def test_a_host_off_the_allow_list_gets_the_documented_421(
    guarded_schema: schemathesis.schemas.BaseSchema,
) -> None:
    uid = reference_order()["order_uid"]
    for path, parameters in (("/order/{order_uid}", {"order_uid": uid}), ("/orders", {}), ("/healthz", {})):
        case = guarded_schema[path]["GET"].Case(
            path_parameters=parameters, headers={"Host": "rebound.example"}
        )
        response = case.call_and_validate()
        assert response.status_code == 421, path
        assert response.json()["error"] == "misdirected_request"


def test_the_document_has_preflights_and_421_only_where_configured() -> None:
    from api.openapi import document

    plain, guarded = document(), document(cors=True, host_check=True)
    assert not any("options" in operations for operations in plain["paths"].values())
    assert not any("421" in op["responses"] for ops in plain["paths"].values() for op in ops.values())
    assert {path for path, ops in guarded["paths"].items() if "options" in ops} == {
        "/order/{order_uid}",
        "/order/{order_uid}/history",
        "/orders",
    }
    assert all("421" in op["responses"] for ops in guarded["paths"].values() for op in ops.values())
