"""Decides whether one Kafka message is a valid order event, and if not, exactly why.

The pipeline: size limit → UTF-8 → JSON (orjson) → schema → invariants (the Kafka key among
them). The valid path costs a few microseconds: the schema is checked by jsonschema-rs. Only a
rejected message pays for the reference validator (jsonschema, ~0.3 ms), which names the error
and its path, and only after the document's shape is known to be bounded (depth and number of
values): jsonschema renders offending values with `repr`, which recurses.
"""

from __future__ import annotations

import functools
import re
import reprlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from operator import itemgetter
from typing import Any

import jsonschema
import jsonschema_rs
import orjson
from jsonschema import Draft202012Validator, FormatChecker, ValidationError

from schemas import ORDER_SCHEMA
from schemas.formats import FORMATS

DEFAULT_MAX_BYTES = 1024 * 1024
# An order nests three containers deep (order → items → item) and holds at most ~15,000 values
# (1,000 items of 13 fields): anything far beyond is rejected before the reference validator,
# whose explanations recurse into the value.
MAX_DEPTH = 8
MAX_VALUES = 50_000

# A Rejection's text ends up in Kafka headers of the DLQ record: keep it well under any record limit
# even when the offending value or key is huge.
_MAX_ERROR_CHARS = 1000
_MAX_PATH_CHARS = 300
_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")


@dataclass(frozen=True, slots=True)
class Rejection:
    """Why a message is not a valid order event."""

    reason: str  # "too_large" | "decode" | "schema" | "invariant"
    error: str  # precise human message
    path: str  # JSON path of the offending value; "$" for the whole document

    @classmethod
    def of(cls, reason: str, error: str, path: str = "$") -> Rejection:
        return cls(reason, _clip(error, _MAX_ERROR_CHARS), _clip(path, _MAX_PATH_CHARS))


class Validator:
    """Checks messages against the order schema and invariants; one instance serves many messages."""

    def __init__(self, max_bytes: int = DEFAULT_MAX_BYTES) -> None:
        self.max_bytes = max_bytes
        self._fast_is_valid = fast_validator()
        self._reference = reference_validator()

    def check(self, raw: bytes | None, key: bytes | None) -> dict | Rejection:
        """Return the parsed order, or why it is rejected. `key` is the message's Kafka key."""
        if not raw:
            return Rejection.of(
                "decode", "the message has no value" if raw is None else "the message is empty"
            )
        if len(raw) > self.max_bytes:
            return Rejection.of(
                "too_large", f"the message is {len(raw)} bytes, over the limit of {self.max_bytes}"
            )
        try:
            doc = orjson.loads(raw)  # orjson checks the UTF-8 itself
        except orjson.JSONDecodeError as exc:
            return _undecodable(raw, exc)
        try:
            valid = self._fast_is_valid(doc)
        except ValueError:  # jsonschema-rs refuses documents nested deeper than it recurses
            valid = False
        if not valid:
            return self._explain(doc)
        return invariant_violation(doc, key) or doc

    def _explain(self, doc: Any) -> Rejection:
        too_big = shape_violation(doc)
        if too_big is not None:
            return too_big
        error = jsonschema.exceptions.best_match(self._reference.iter_errors(doc))
        if error is None:  # the validators disagree; the property tests exist to keep this unreachable
            return Rejection.of("schema", "rejected by the fast validator, accepted by the reference one")
        return Rejection.of("schema", *_describe(error))


def _undecodable(raw: bytes, exc: orjson.JSONDecodeError) -> Rejection:
    """Why orjson refused a message: its UTF-8, said with the offset of the first bad byte (orjson
    would say "char 0"), or its JSON."""
    try:
        str(raw, "utf-8")
    except UnicodeDecodeError as bad:
        return Rejection.of("decode", f"invalid UTF-8 at byte {bad.start}: {bad.reason}")
    return Rejection.of("decode", f"invalid JSON: {exc}")


def fast_validator() -> Callable[[Any], bool]:
    """The hot-path schema check: a callable returning True for a schema-valid document."""
    is_valid = jsonschema_rs.validator_for(ORDER_SCHEMA, formats=FORMATS, validate_formats=True).is_valid

    def check(doc: Any) -> bool:
        return is_valid(doc) and _integers_exact(doc)

    return check


def reference_validator() -> Draft202012Validator:
    """jsonschema with the same meaning as the fast check: our formats, ECMA-262 patterns, and
    integers that are ints (JSON Schema alone counts 1.0 as an integer)."""
    checker = FormatChecker(formats=())
    for name, function in FORMATS.items():
        checker.checks(name)(function)
    return _ReferenceValidator(ORDER_SCHEMA, format_checker=checker)


def shape_violation(doc: Any) -> Rejection | None:
    """Whether a document nests deeper than MAX_DEPTH or holds more than MAX_VALUES values, found
    without recursion; the path names the first container past the depth limit."""
    # Each container seen: (its parent's index, its name or position in the parent).
    seen: list[tuple[int, str | int]] = [(-1, "")]
    stack: list[tuple[Any, int, int]] = [(doc, 1, 0)]
    values = 0
    while stack:
        value, depth, index = stack.pop()
        if isinstance(value, dict):
            children: Iterable[tuple[str | int, Any]] = value.items()
        elif isinstance(value, list):
            children = enumerate(value)
        else:
            continue
        if depth > MAX_DEPTH:
            return Rejection.of(
                "schema",
                f"the document nests deeper than {MAX_DEPTH} levels (an order nests 3)",
                json_path(_path_of(seen, index)),
            )
        for name, child in children:
            values += 1
            if values > MAX_VALUES:
                return Rejection.of("schema", f"the document holds more than {MAX_VALUES:,} values")
            if isinstance(child, dict | list):
                seen.append((index, name))
                stack.append((child, depth + 1, len(seen) - 1))
    return None


def _path_of(seen: list[tuple[int, str | int]], index: int) -> list[str | int]:
    parts: list[str | int] = []
    while index > 0:
        index, name = seen[index]
        parts.append(name)
    return parts[::-1]


def invariant_violation(doc: dict, key: bytes | None) -> Rejection | None:
    """The first broken rule beyond the schema, for a schema-valid order."""
    order_uid = doc["order_uid"]
    if key is None:
        return Rejection.of(
            "invariant",
            f"the message has no Kafka key; it must be the order_uid {order_uid!r}, which keeps "
            "an order's versions in one partition and so in order",
            "$.order_uid",
        )
    if key != order_uid.encode():
        return Rejection.of(
            "invariant", f"the Kafka key {_show_key(key)} != order_uid {order_uid!r}", "$.order_uid"
        )
    payment, items = doc["payment"], doc["items"]
    goods_total = payment["goods_total"]
    items_total = sum(item["total_price"] for item in items)
    if goods_total != items_total:
        return Rejection.of(
            "invariant",
            f"payment.goods_total {goods_total} != sum of items.total_price {items_total}",
            "$.payment.goods_total",
        )
    amount, delivery_cost, custom_fee = payment["amount"], payment["delivery_cost"], payment["custom_fee"]
    expected = goods_total + delivery_cost + custom_fee
    if amount != expected:
        return Rejection.of(
            "invariant",
            f"payment.amount {amount} != goods_total {goods_total} + delivery_cost {delivery_cost}"
            f" + custom_fee {custom_fee} = {expected}",
            "$.payment.amount",
        )
    track_number = doc["track_number"]
    for position, item in enumerate(items):
        if item["track_number"] != track_number:
            return Rejection.of(
                "invariant",
                f"items[{position}].track_number {item['track_number']!r} != track_number {track_number!r}",
                f"$.items[{position}].track_number",
            )
    return None


def json_path(parts: Iterable[str | int]) -> str:
    """`$.payment.goods_total`, `$.items[0].name`; other names as RFC 9535 `['a b']`."""
    path = "$"
    for part in parts:
        if isinstance(part, int):
            path += f"[{part}]"
        elif _IDENTIFIER.match(part):
            path += "." + part
        else:
            path += "['" + part.replace("\\", "\\\\").replace("'", "\\'") + "']"
    return path


# --- the hot path's integer check ------------------------------------------------------------


def _integer_fields(schema: dict) -> Callable[[dict], tuple[Any, ...]]:
    """A getter of the values of an object's integer fields, as a tuple."""
    names = [name for name, sub in schema["properties"].items() if sub.get("type") == "integer"]
    get = itemgetter(*names)
    return get if len(names) > 1 else lambda obj: (get(obj),)


_ORDER_INTS = _integer_fields(ORDER_SCHEMA)
_PAYMENT_INTS = _integer_fields(ORDER_SCHEMA["properties"]["payment"])
_ITEM_INTS = _integer_fields(ORDER_SCHEMA["properties"]["items"]["items"])


def _integers_exact(doc: dict) -> bool:
    """True when every integer field of a schema-valid order is an int, not a float like 1.0."""
    for value in (*_ORDER_INTS(doc), *_PAYMENT_INTS(doc["payment"])):
        if type(value) is not int:
            return False
    for item in doc["items"]:
        for value in _ITEM_INTS(item):
            if type(value) is not int:
                return False
    return True


# --- the reference validator -----------------------------------------------------------------


@functools.lru_cache(maxsize=64)
def _ecma_regex(pattern: str) -> re.Pattern[str]:
    # ECMA-262 `$` (no multiline flag) is the end of the string; Python's also matches before a final
    # newline. Our schema's patterns end in `$` at most, so that is the one spot to translate.
    if pattern.endswith("$") and not pattern.endswith("\\$"):
        pattern = pattern[:-1] + r"\Z"
    return re.compile(pattern)


def _ecma_pattern(validator: Any, pattern: str, instance: Any, schema: dict) -> Iterable[ValidationError]:
    if validator.is_type(instance, "string") and not _ecma_regex(pattern).search(instance):
        yield ValidationError(f"{instance!r} does not match {pattern!r}")


def _is_int(checker: Any, instance: Any) -> bool:
    return isinstance(instance, int) and not isinstance(instance, bool)


_ReferenceValidator = jsonschema.validators.extend(
    Draft202012Validator,
    validators={"pattern": _ecma_pattern},
    type_checker=Draft202012Validator.TYPE_CHECKER.redefine("integer", _is_int),
)


def _describe(error: ValidationError) -> tuple[str, str]:
    """The message and path of a schema error, pointing at the field itself where jsonschema
    points at its parent (a missing or an unexpected property)."""
    parts = list(error.absolute_path)
    instance = error.instance
    if error.validator == "required":
        missing = [name for name in error.validator_value if name not in instance]
        parts += [next((n for n in missing if error.message == f"{n!r} is a required property"), missing[0])]
    elif error.validator == "additionalProperties":
        parts += [min(name for name in instance if name not in error.schema.get("properties", {}))]
    elif error.validator == "pattern" and "\x00" in instance:
        return "the string contains U+0000 (NUL), which PostgreSQL text cannot store", json_path(parts)
    message = _shorten(error.message, instance)
    if error.validator in _SIZE_UNITS:
        message += f" ({len(instance)} {_SIZE_UNITS[error.validator]}, at most {error.validator_value})"
    return message, json_path(parts)


_SIZE_UNITS = {"maxLength": "characters", "maxItems": "items"}


def _shorten(message: str, instance: Any) -> str:
    """jsonschema starts most messages with the whole offending value; abbreviate a long one so the
    words after it (e.g. "is too long") survive."""
    full = repr(instance)
    return message.replace(full, _SHORT.repr(instance), 1) if len(full) > _SHORT.maxstring else message


_SHORT = reprlib.Repr()
_SHORT.maxstring, _SHORT.maxother, _SHORT.maxlist, _SHORT.maxdict, _SHORT.maxlevel = 80, 80, 3, 3, 2


def _show_key(key: bytes) -> str:
    try:
        return repr(key.decode())
    except UnicodeDecodeError:
        return repr(key)


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"
