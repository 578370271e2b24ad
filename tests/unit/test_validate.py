"""The validation pipeline of one message: size → UTF-8 → JSON → schema → invariants."""

from __future__ import annotations

from collections.abc import Callable

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from jsonschema import Draft202012Validator

from harness.orders import reference_order, reference_order_bytes
from projector.adapters import postgres
from projector.core.validate import (
    MAX_DEPTH,
    MAX_VALUES,
    Rejection,
    Validator,
    fast_validator,
    json_path,
    reference_validator,
)
from schemas import ORDER_SCHEMA, ORDER_UID_PATTERN, ORDER_UID_RE
from schemas.formats import is_date_time, is_email
from tests import strategies

VALIDATOR = Validator()
FAST = fast_validator()
REFERENCE = reference_validator()
UID = b"b563feb7b2b84b6test"


def spoiled(change: Callable[[dict], object]) -> bytes:
    order = reference_order()
    change(order)
    return orjson.dumps(order)


def key_for(raw: bytes | None) -> bytes:
    """The Kafka key a well-behaved producer gives a message: its order_uid, when it has one."""
    try:
        uid = orjson.loads(raw)["order_uid"]  # type: ignore[arg-type]
    except Exception:
        return UID
    return uid.encode() if isinstance(uid, str) else UID


def check(raw: bytes | None, validator: Validator = VALIDATOR) -> dict | Rejection:
    return validator.check(raw, key_for(raw))


def rejection(raw: bytes | None, key: bytes | None = None, validator: Validator = VALIDATOR) -> Rejection:
    result = validator.check(raw, key_for(raw) if key is None else key)
    assert isinstance(result, Rejection), f"accepted: {result}"
    return result


# --- the schema itself ---------------------------------------------------------------------------


def test_the_schema_is_a_valid_draft_2020_12_schema_with_id_title_and_description():
    Draft202012Validator.check_schema(ORDER_SCHEMA)
    assert ORDER_SCHEMA["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert ORDER_SCHEMA["$id"] and ORDER_SCHEMA["title"] and ORDER_SCHEMA["description"]


def test_the_schema_is_self_contained():
    assert "$ref" not in orjson.dumps(ORDER_SCHEMA).decode()


def test_every_field_of_the_example_is_required_and_no_other_is_allowed():
    def walk(value: object, schema: dict) -> None:
        if isinstance(value, dict):
            assert schema["additionalProperties"] is False
            assert set(schema["required"]) == set(schema["properties"]) == set(value)
            for name, sub in value.items():
                walk(sub, schema["properties"][name])
        elif isinstance(value, list):
            for element in value:
                walk(element, schema["items"])

    walk(reference_order(), ORDER_SCHEMA)


def test_every_field_has_a_description_and_every_string_a_finite_length():
    for _, name, sub in strategies.fields(reference_order()):
        assert sub.get("description"), name
        if sub["type"] == "string":
            assert "maxLength" in sub or sub.get("pattern", "").endswith("{1,64}$"), name


def test_the_order_uid_pattern_is_exported_and_its_regex_matches_whole_strings_only():
    assert ORDER_UID_PATTERN == "^[A-Za-z0-9_-]{1,64}$"
    assert ORDER_UID_RE.match("b563feb7b2b84b6test")
    assert ORDER_UID_RE.match("a" * 64)
    for bad in ("", "a" * 65, "has space", "abc\n", "ünï", "a/b"):
        assert not ORDER_UID_RE.match(bad), bad


# --- formats -----------------------------------------------------------------------------------

GOOD_EMAILS = [
    "test@gmail.com",
    "a.b+c@mail.co.il",
    "x_y-z@sub.example.org",
    "o'neil@x.io",
    "a@b.c",
    "A@B.CO",
]
BAD_EMAILS = [
    "not-an-email", "a@b", "@b.io", "a@", "a..b@c.io", ".a@b.io", "a.@b.io", "a@-b.io", "a@b-.io", "a@b..io",
    "Ann <a@b.io>", "a b@c.io", '"a b"@c.io', "a@[127.0.0.1]", "ä@b.io", "a@b.io\n", "x" * 65 + "@b.io",
    "a@" + "b" * 64 + ".io", "a@" + ".".join(["b" * 60] * 5),
]  # fmt: skip
GOOD_DATE_TIMES = [
    "2021-11-26T06:22:19Z", "2021-11-26t06:22:19z", "2021-11-26T06:22:19.123456789+03:00",
    "0001-01-01T00:00:00-23:59", "9999-12-31T23:59:59Z", "2024-02-29T12:00:00+05:30",
]  # fmt: skip
BAD_DATE_TIMES = [
    "2021-11-26", "2021-11-26T06:22:19", "2021-11-26 06:22:19Z", "2021-11-26T06:22:19+0000",
    "2021-11-26T06:22:19+24:00", "2021-11-26T06:22:19+03:60", "2021-13-01T00:00:00Z", "2023-02-29T00:00:00Z",
    "2021-11-26T24:00:00Z", "2016-12-31T23:59:60Z", "0000-01-01T00:00:00Z", "2021-11-26T06:22:19Z\n",
    "２０２１-11-26T06:22:19Z", "2021-11-26T06:22:19.Z",
]  # fmt: skip


@pytest.mark.parametrize("value", GOOD_EMAILS)
def test_plain_mailboxes_are_emails(value):
    assert is_email(value)


@pytest.mark.parametrize("value", BAD_EMAILS)
def test_display_names_quoted_parts_ip_literals_and_malformed_addresses_are_not_emails(value):
    assert not is_email(value)


@pytest.mark.parametrize("value", GOOD_DATE_TIMES)
def test_rfc_3339_date_times_are_date_times(value):
    assert is_date_time(value)


@pytest.mark.parametrize("value", BAD_DATE_TIMES)
def test_malformed_or_unstorable_date_times_are_not_date_times(value):
    assert not is_date_time(value)


# --- accepted -----------------------------------------------------------------------------------


def test_the_reference_order_is_accepted_with_its_order_uid_as_key():
    assert VALIDATOR.check(reference_order_bytes(), UID) == reference_order()


def test_a_message_of_exactly_the_size_limit_is_accepted():
    raw = reference_order_bytes()
    assert isinstance(check(raw, Validator(max_bytes=len(raw))), dict)


def test_bounds_are_inclusive():
    def at_bounds(order: dict) -> None:
        order["payment"]["custom_fee"] = 0
        order["items"][0].update(sale=100, status=2**31 - 1)
        order["sm_id"] = 2**53 - 1
        order["order_uid"] = "u" * 64

    assert isinstance(check(spoiled(at_bounds)), dict)


# --- rejected: decode and size -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "error"),
    [
        (None, "the message has no value"),
        (b"", "the message is empty"),
        (b'{"order_uid": "\xff"}', "invalid UTF-8 at byte 15: invalid start byte"),
        (b'{"a": "\xed\xa0\x80"}', "invalid UTF-8 at byte 7"),  # an encoded surrogate
        (b'{"order_uid": "ab', "invalid JSON: unexpected end of data: line 1 column 18 (char 17)"),
        (b'{"a": 1} trailing', "invalid JSON: unexpected content after document: line 1 column 10 (char 9)"),
        (b'{"a": NaN}', "invalid JSON: unexpected character"),
        (b'{"a": "\\ud800"}', "invalid JSON: no low surrogate in string"),
        (b"\xef\xbb\xbf{}", "invalid JSON: UTF-8 byte order mark (BOM) is not supported"),
        (b"hello", "invalid JSON: unexpected character, expected a JSON value: line 1 column 1 (char 0)"),
    ],
)
def test_undecodable_messages_are_rejected_as_decode_with_the_position(raw, error):
    got = rejection(raw)
    assert (got.reason, got.path) == ("decode", "$")
    assert got.error.startswith(error)


def test_a_truncated_reference_order_is_a_decode_rejection():
    raw = reference_order_bytes()
    assert rejection(raw[: len(raw) // 2]).reason == "decode"


def test_a_message_over_the_size_limit_is_too_large_before_anything_else():
    raw = b"\xff" * 101
    assert rejection(raw, validator=Validator(max_bytes=100)) == Rejection(
        "too_large", "the message is 101 bytes, over the limit of 100", "$"
    )


def test_the_default_size_limit_is_one_mebibyte():
    raw = reference_order_bytes().rstrip() + b" " * (1024 * 1024 + 1 - len(reference_order_bytes().rstrip()))
    assert rejection(raw).reason == "too_large"
    assert isinstance(check(raw[:-1]), dict)


# --- rejected: schema ----------------------------------------------------------------------------


SCHEMA_CASES = {
    "missing_field": (
        lambda o: o["delivery"].pop("email"),
        "$.delivery.email",
        "'email' is a required property",
    ),
    "missing_top_level_field": (lambda o: o.pop("items"), "$.items", "'items' is a required property"),
    "wrong_type": (
        lambda o: o["items"][0].update(price="453"),
        "$.items[0].price",
        "'453' is not of type 'integer'",
    ),
    "null_object": (lambda o: o.update(payment=None), "$.payment", "None is not of type 'object'"),
    "bad_email": (
        lambda o: o["delivery"].update(email="not-an-email"),
        "$.delivery.email",
        "'not-an-email' is not a 'email'",
    ),
    "email_with_display_name": (
        lambda o: o["delivery"].update(email="Test <test@gmail.com>"),
        "$.delivery.email",
        "'Test <test@gmail.com>' is not a 'email'",
    ),
    "bad_date_time": (
        lambda o: o.update(date_created="2021-11-26 06:22:19"),
        "$.date_created",
        "'2021-11-26 06:22:19' is not a 'date-time'",
    ),
    "date_time_postgresql_cannot_store": (
        lambda o: o.update(date_created="0000-01-01T00:00:00Z"),
        "$.date_created",
        "'0000-01-01T00:00:00Z' is not a 'date-time'",
    ),
    "extra_field": (
        lambda o: o["payment"].update(tip=5),
        "$.payment.tip",
        "Additional properties are not allowed ('tip' was unexpected)",
    ),
    "extra_field_with_an_odd_name": (
        lambda o: o.update({"it's odd": 1}),
        "$['it\\'s odd']",
        "Additional properties are not allowed",
    ),
    "negative_money": (
        lambda o: o["payment"].update(delivery_cost=-1),
        "$.payment.delivery_cost",
        "-1 is less than the minimum of 0",
    ),
    "money_beyond_exact_json_numbers": (
        lambda o: o["items"][0].update(total_price=2**53),
        "$.items[0].total_price",
        "9007199254740992 is greater than the maximum of 9007199254740991",
    ),
    "status_beyond_postgresql_integer": (
        lambda o: o["items"][0].update(status=2**31),
        "$.items[0].status",
        "2147483648 is greater than the maximum of 2147483647",
    ),
    "sale_over_100": (
        lambda o: o["items"][0].update(sale=101),
        "$.items[0].sale",
        "101 is greater than the maximum of 100",
    ),
    "integer_written_as_float": (lambda o: o.update(sm_id=99.0), "$.sm_id", "99.0 is not of type 'integer'"),
    "bad_uid": (
        lambda o: o.update(order_uid="bad uid!"),
        "$.order_uid",
        "'bad uid!' does not match '^[A-Za-z0-9_-]{1,64}$'",
    ),
    "uid_with_trailing_newline": (
        lambda o: o.update(order_uid="abc\n"),
        "$.order_uid",
        "'abc\\n' does not match",
    ),
    "uid_too_long": (lambda o: o.update(order_uid="a" * 65), "$.order_uid", "does not match"),
    "nul_in_a_string": (
        lambda o: o["delivery"].update(city="Kiryat\x00Mozkin"),
        "$.delivery.city",
        "the string contains U+0000 (NUL), which PostgreSQL text cannot store",
    ),
    "string_too_long": (
        lambda o: o.update(locale="x" * 65),
        "$.locale",
        "is too long (65 characters, at most 64)",
    ),
    "no_items": (lambda o: o.update(items=[]), "$.items", "[] should be non-empty"),
}


@pytest.mark.parametrize("case", SCHEMA_CASES)
def test_schema_violations_are_rejected_with_their_path(case):
    change, path, error = SCHEMA_CASES[case]
    got = rejection(spoiled(change))
    assert (got.reason, got.path) == ("schema", path)
    assert error in got.error


def test_too_many_items_are_rejected():
    def many(order: dict) -> None:
        order["items"] *= 1001
        order["payment"].update(goods_total=317 * 1001, amount=317 * 1001 + 1500)

    got = rejection(spoiled(many))
    assert (got.reason, got.path) == ("schema", "$.items")
    assert got.error.endswith("...] is too long (1001 items, at most 1000)")


@pytest.mark.parametrize("document", [[], "order", 42, None, True])
def test_a_top_level_value_other_than_an_object_is_a_schema_rejection(document):
    assert rejection(orjson.dumps(document)).reason == "schema"
    assert rejection(orjson.dumps(document)).path == "$"


def test_a_huge_offending_value_is_clipped_in_the_message():
    got = rejection(spoiled(lambda o: o.update({"x" * 5000: "y" * 100_000})))
    assert len(got.error) <= 1000 and len(got.path) <= 300


# --- rejected: invariants ------------------------------------------------------------------------


def test_goods_total_other_than_the_sum_of_the_items_is_an_invariant_rejection():
    got = rejection(spoiled(lambda o: o["payment"].update(goods_total=300, amount=1800)))
    assert got == Rejection(
        "invariant", "payment.goods_total 300 != sum of items.total_price 317", "$.payment.goods_total"
    )


def test_amount_other_than_goods_delivery_and_fee_is_an_invariant_rejection():
    got = rejection(spoiled(lambda o: o["payment"].update(amount=1818)))
    assert got == Rejection(
        "invariant",
        "payment.amount 1818 != goods_total 317 + delivery_cost 1500 + custom_fee 0 = 1817",
        "$.payment.amount",
    )


def test_an_item_of_another_track_number_is_an_invariant_rejection():
    def second_item_elsewhere(order: dict) -> None:
        order["items"].append(dict(order["items"][0], track_number="OTHER", total_price=0))

    got = rejection(spoiled(second_item_elsewhere))
    assert got == Rejection(
        "invariant",
        "items[1].track_number 'OTHER' != track_number 'WBILMTESTTRACK'",
        "$.items[1].track_number",
    )


def test_a_kafka_key_other_than_the_order_uid_is_an_invariant_rejection():
    got = rejection(reference_order_bytes(), key=b"another")
    assert got == Rejection(
        "invariant", "the Kafka key 'another' != order_uid 'b563feb7b2b84b6test'", "$.order_uid"
    )


def test_a_message_without_a_kafka_key_is_an_invariant_rejection():
    got = VALIDATOR.check(reference_order_bytes(), None)
    assert isinstance(got, Rejection)
    assert (got.reason, got.path) == ("invariant", "$.order_uid")
    assert got.error.startswith(
        "the message has no Kafka key; it must be the order_uid 'b563feb7b2b84b6test'"
    )


def test_an_undecodable_kafka_key_is_shown_as_bytes():
    assert "b'\\xff'" in rejection(reference_order_bytes(), key=b"\xff").error


def test_the_schema_is_checked_before_the_invariants():
    got = rejection(spoiled(lambda o: o["payment"].update(goods_total=-1)))
    assert (got.reason, got.path) == ("schema", "$.payment.goods_total")


# --- rejected: shapes no order has, before the reference validator recurses into them ---------


@pytest.mark.parametrize("depth", [MAX_DEPTH + 1, 300, 1000, 1024])
def test_arrays_nested_past_the_depth_limit_are_a_schema_rejection_naming_where(depth):
    got = rejection(b"[" * depth + b"]" * depth)
    assert got == Rejection(
        "schema",
        f"the document nests deeper than {MAX_DEPTH} levels (an order nests 3)",
        "$" + "[0]" * MAX_DEPTH,
    )


def test_objects_nested_1000_deep_are_a_schema_rejection():
    got = rejection(b'{"a":' * 1000 + b"1" + b"}" * 1000)
    assert (got.reason, got.path) == ("schema", "$" + ".a" * MAX_DEPTH)


def test_nesting_beyond_what_json_allows_is_a_decode_rejection():
    assert rejection(b"[" * 5000 + b"]" * 5000).error.startswith("invalid JSON: depth limit exceeded")


def test_deep_nesting_inside_an_otherwise_valid_order_is_rejected_at_its_path():
    def nest(order: dict) -> None:
        value: list = []
        for _ in range(200):  # orjson serializes no deeper than 254 levels
            value = [value]
        order["items"][0]["name"] = value

    got = rejection(spoiled(nest))
    assert got.reason == "schema"
    assert got.path == "$.items[0].name" + "[0]" * (MAX_DEPTH - 3)


def test_a_document_as_deep_as_the_limit_is_explained_by_the_reference_validator():
    got = rejection(b"[" * MAX_DEPTH + b"]" * MAX_DEPTH)
    assert (got.reason, got.path) == ("schema", "$")
    assert "is not of type 'object'" in got.error


def test_a_document_of_more_values_than_an_order_can_hold_is_a_schema_rejection():
    got = rejection(orjson.dumps({"order_uid": "x", "filler": [0] * (MAX_VALUES + 1)}))
    assert got == Rejection("schema", f"the document holds more than {MAX_VALUES:,} values", "$")


# --- properties ----------------------------------------------------------------------------------


@given(strategies.orders())
def test_generated_valid_orders_are_accepted_and_round_trip(order):
    raw = orjson.dumps(order)
    accepted = VALIDATOR.check(raw, order["order_uid"].encode())
    assert accepted == order
    assert orjson.loads(raw) == accepted


@given(strategies.spoiled_orders())
def test_spoiled_orders_are_rejected_with_the_right_reason(case):
    document, reason = case
    got = check(orjson.dumps(document))
    assert isinstance(got, Rejection)
    assert got.reason == reason
    assert got.path.startswith("$") and got.error


@settings(max_examples=300)
@given(
    strategies.orders() | strategies.spoiled_orders().map(lambda case: case[0]) | strategies.tampered_orders()
)
def test_the_fast_and_the_reference_validator_agree(document):
    assert FAST(document) == REFERENCE.is_valid(document)


@given(st.binary(max_size=2048), st.none() | st.binary(max_size=64))
def test_any_bytes_are_accepted_or_rejected_never_raised_with_a_bounded_explanation(raw, key):
    got = VALIDATOR.check(raw, key)
    assert isinstance(got, dict | Rejection)
    if isinstance(got, Rejection):
        assert len(got.error) <= 1000 and len(got.path) <= 300


@settings(max_examples=300)
@given(strategies.hostile_documents())
def test_any_json_text_that_is_not_an_order_is_rejected_with_a_bounded_explanation(raw):
    got = check(raw)
    assert isinstance(got, Rejection)
    assert len(got.error) <= 1000 and len(got.path) <= 300


@given(strategies.tampered_orders())
def test_every_schema_rejection_is_explained_by_the_reference_validator(document):
    got = check(orjson.dumps(document))
    if isinstance(got, Rejection) and got.reason == "schema":
        assert "fast validator" not in got.error


def test_json_paths_are_dotted_for_names_and_bracketed_otherwise():
    assert json_path([]) == "$"
    assert json_path(["items", 0, "track_number"]) == "$.items[0].track_number"
    assert json_path(["a b", "it's", "x\\y"]) == "$['a b']['it\\'s']['x\\\\y']"


def test_the_database_canary_is_a_valid_order_but_for_an_order_uid_no_producer_can_send() -> None:
    """A producer's order cannot take the canary's place in the read model (where it would make
    every later canary collide, and the worker stop as if the database refused every order)."""
    canary = postgres.CANARY
    rejected = VALIDATOR.check(orjson.dumps(canary), str(canary["order_uid"]).encode())
    assert isinstance(rejected, Rejection) and rejected.path == "$.order_uid"
    valid = dict(canary, order_uid="canary0")
    assert isinstance(VALIDATOR.check(orjson.dumps(valid), b"canary0"), dict)
