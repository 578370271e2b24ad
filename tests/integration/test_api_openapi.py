"""The running API against its own OpenAPI document, fuzzed by schemathesis: no 5xx, and every
answer (status, content type, headers, body) is one the document describes.

The API runs as a subprocess: schemathesis calls it synchronously, from this test's thread.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest_asyncio
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis import GenerationMode

from orderview.settings import Settings
from tests import support
from tests.api_server import api_process

EXAMPLES_PER_OPERATION = 50


@pytest_asyncio.fixture(scope="module")
async def api_schema(settings: Settings) -> AsyncIterator[schemathesis.schemas.BaseSchema]:
    await support.seed_orders(settings, [support.reference_order()])
    async with api_process(settings) as api:
        yield schemathesis.openapi.from_url(api.url + "/openapi.json")


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
    uid = support.reference_order()["order_uid"]
    for method in ("GET", "HEAD"):
        case = api_schema["/order/{order_uid}"][method].Case(path_parameters={"order_uid": uid})
        response = case.call_and_validate()
        assert response.status_code == 200


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
