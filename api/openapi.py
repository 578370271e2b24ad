"""The OpenAPI 3.1 document of the API. The order's schema is the event's own JSON Schema
(schemas.ORDER_SCHEMA), embedded as components/schemas/Order, never restated."""

from __future__ import annotations

import copy
from typing import Any

import orjson

from api.cursor import CURSOR_PATTERN, DEFAULT_LIMIT, MAX_LIMIT
from api.edge import EXPOSED, METHODS, PREFLIGHT_MAX_AGE_S, REQUEST_HEADERS
from api.history import HISTORY_CURSOR_PATTERN, TIMESTAMP_TYPES
from schemas import ORDER_SCHEMA, ORDER_UID_PATTERN


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(schema_name: str, description: str, headers: dict | None = None) -> dict[str, Any]:
    response: dict[str, Any] = {
        "description": description,
        "content": {"application/json": {"schema": _ref(schema_name)}},
    }
    if headers:
        response["headers"] = headers
    return response


def _error(description: str, codes: list[str], headers: dict | None = None) -> dict[str, Any]:
    response: dict[str, Any] = {
        "description": description,
        "content": {
            "application/json": {
                "schema": {
                    "allOf": [_ref("Error"), {"properties": {"error": {"enum": codes}}}],
                }
            }
        },
    }
    if headers:
        response["headers"] = headers
    return response


def order_schema() -> dict[str, Any]:
    """The event's schema as a component: `$schema`/`$id` dropped (3.1 documents are 2020-12
    already, and an `$id` would re-base the references inside the document)."""
    schema = copy.deepcopy(ORDER_SCHEMA)
    schema.pop("$schema", None)
    schema.pop("$id", None)
    return schema


SUMMARY = {
    "type": "object",
    "additionalProperties": False,
    "required": [
        "order_uid",
        "date_created",
        "customer_id",
        "name",
        "city",
        "amount",
        "currency",
        "items_count",
        "updated_at",
    ],
    "properties": {
        "order_uid": {"type": "string", "pattern": ORDER_UID_PATTERN},
        "date_created": {"type": "string", "description": "As in the order."},
        "customer_id": {"type": "string"},
        "name": {"type": "string", "description": "delivery.name"},
        "city": {"type": "string", "description": "delivery.city"},
        "amount": {
            "type": "integer",
            "minimum": 0,
            "description": "payment.amount, in minor units of currency (1817 USD is 18.17 USD)",
        },
        "currency": {"type": "string", "description": "payment.currency"},
        "items_count": {"type": "integer", "minimum": 0},
        "updated_at": {
            "type": "string",
            "format": "date-time",
            "description": "When this version was stored.",
        },
    },
}

_POINTER = {
    "type": "string",
    "description": "A JSON Pointer (RFC 6901) into the order, e.g. /delivery/address.",
}


def _patch_operation(ops: list[str], fields: dict[str, Any]) -> dict[str, Any]:
    return {
        "type": "object",
        "additionalProperties": False,
        "required": ["op", *fields],
        "properties": {"op": {"enum": ops}, **fields},
    }


JSON_PATCH = {
    "type": "array",
    "description": "RFC 6902 operations that turn the version before into this one, in order.",
    "items": {
        "oneOf": [
            _patch_operation(["add", "replace", "test"], {"path": _POINTER, "value": {}}),
            _patch_operation(["remove"], {"path": _POINTER}),
            _patch_operation(["move", "copy"], {"from": _POINTER, "path": _POINTER}),
        ]
    },
}

ORDER_VERSION = {
    "type": "object",
    "additionalProperties": False,
    "required": ["version", "current", "source", "record_time", "timestamp_type", "applied_at"],
    "oneOf": [{"required": ["order"]}, {"required": ["patch"]}],
    "properties": {
        "version": {
            "type": "integer",
            "minimum": 1,
            "description": "Its number: 1 is the oldest version the read model keeps, the current one the highest.",
        },
        "current": {
            "type": "boolean",
            "description": "Whether this is the version GET /order/{order_uid} serves.",
        },
        "source": {
            "type": ["object", "null"],
            "additionalProperties": False,
            "required": ["partition", "offset"],
            "properties": {
                "partition": {"type": "integer", "minimum": 0},
                "offset": {"type": "integer", "minimum": 0},
            },
            "description": "Where its record is in the orders topic; null when not known (kept by a rebuild).",
        },
        "record_time": {
            "type": ["string", "null"],
            "format": "date-time",
            "description": "The Kafka record's timestamp (UTC); null when it had none.",
        },
        "timestamp_type": {
            "enum": [*TIMESTAMP_TYPES.values(), None],
            "description": "CreateTime: set by the producer (the event's time); LogAppendTime: by the broker; null: unknown.",
        },
        "applied_at": {
            "type": "string",
            "format": "date-time",
            "description": "When the projector applied it to the read model (UTC).",
        },
        "order": {**_ref("Order"), "description": "The whole order: on a page's first entry."},
        "patch": JSON_PATCH,
    },
}

COMPONENTS: dict[str, Any] = {
    "Order": order_schema(),
    "OrderVersion": ORDER_VERSION,
    "OrderHistory": {
        "type": "object",
        "additionalProperties": False,
        "required": ["order_uid", "total_versions", "versions", "next_before"],
        "properties": {
            "order_uid": {"type": "string", "pattern": ORDER_UID_PATTERN},
            "total_versions": {"type": "integer", "minimum": 1},
            "versions": {
                "type": "array",
                "items": _ref("OrderVersion"),
                "maxItems": MAX_LIMIT,
                "description": "Oldest first; the first whole, each later one as a patch of the one before.",
            },
            "next_before": {
                "type": ["string", "null"],
                "pattern": HISTORY_CURSOR_PATTERN,
                "description": "Pass as `before` for the older versions; null when this page holds the first.",
            },
        },
    },
    "OrderSummary": SUMMARY,
    "OrderPage": {
        "type": "object",
        "additionalProperties": False,
        "required": ["orders", "next_before"],
        "properties": {
            "orders": {"type": "array", "items": _ref("OrderSummary"), "maxItems": MAX_LIMIT},
            "next_before": {
                "type": ["string", "null"],
                "pattern": CURSOR_PATTERN,
                "description": "Pass as `before` for the next page; null on the last page.",
            },
        },
    },
    "Error": {
        "type": "object",
        "additionalProperties": False,
        "required": ["error", "message"],
        "properties": {
            "error": {"type": "string", "description": "A stable code, e.g. not_found, bad_order_uid."},
            "message": {"type": "string", "description": "For people."},
        },
    },
    "Status": {
        "type": "object",
        "required": ["status"],
        "properties": {
            "status": {"type": "string"},
            "reason": {"type": "string"},
            "degraded": {
                "type": "string",
                "description": "Ready, but the standby it reads from is behind or down: why, and that it reads from the primary meanwhile.",
            },
        },
    },
}

ETAG = {"description": "Strong validator of this version of the order.", "schema": {"type": "string"}}
X_CACHE = {
    "description": "Whether this replica's cache had the order.",
    "schema": {"type": "string", "enum": ["hit", "miss"]},
}
SERVER_TIMING = {
    "description": (
        "Where the answer came from and how long the server took (W3C Server-Timing, `dur` in ms "
        'with µs precision): `cache;desc="cache hit";dur=0.004` or `db;desc="database";dur=0.850`.'
    ),
    "schema": {"type": "string"},
}
ALLOW_ORIGIN = {
    "description": "When the request's Origin is in ORDERVIEW_API_CORS_ORIGINS: that origin, or `*`.",
    "schema": {"type": "string"},
}
EXPOSE_HEADERS = {
    "description": "With Access-Control-Allow-Origin: the headers a page may read.",
    "schema": {"type": "string", "const": EXPOSED},
}
ORDER_HEADERS = {
    "ETag": ETAG,
    "X-Cache": X_CACHE,
    "Server-Timing": SERVER_TIMING,
    "Access-Control-Allow-Origin": ALLOW_ORIGIN,
    "Access-Control-Expose-Headers": EXPOSE_HEADERS,
}
UNAVAILABLE = _error("The database is unavailable and the order is not cached.", ["unavailable"])
NOT_FOUND = _error("No route for this path.", ["not_found"])
MISDIRECTED = _error(
    "The Host header names no host of ORDERVIEW_API_ALLOWED_HOSTS (only when that allow-list is set).",
    ["misdirected_request"],
)
NOT_ALLOWED = _error(
    "Not a preflight this API answers (no Origin or Access-Control-Request-Method, or CORS is off).",
    ["method_not_allowed"],
    {"Allow": {"description": "The methods of this path.", "schema": {"type": "string"}}},
)


def _preflight(path: str) -> dict[str, Any]:
    """OPTIONS as a browser sends it before a cross-origin GET, answered by api/answers.fallback."""
    parameters = [p for p in ORDER_PARAMETERS if p["in"] == "path"] if "{" in path else []
    return {
        "summary": "CORS preflight (when ORDERVIEW_API_CORS_ORIGINS is set)",
        "parameters": [
            *parameters,
            {"name": "Origin", "in": "header", "required": True, "schema": {"type": "string"}},
            {
                "name": "Access-Control-Request-Method",
                "in": "header",
                "required": True,
                "schema": {"type": "string"},
            },
            {
                "name": "Access-Control-Request-Headers",
                "in": "header",
                "required": False,
                "description": f"Allowed: {', '.join(sorted(REQUEST_HEADERS))}.",
                "schema": {"type": "string"},
            },
        ],
        "responses": {
            "204": {
                "description": f"Allowed: this origin may send {METHODS} with the listed headers.",
                "headers": {
                    "Access-Control-Allow-Origin": ALLOW_ORIGIN,
                    "Access-Control-Allow-Methods": {"schema": {"type": "string", "const": METHODS}},
                    "Access-Control-Allow-Headers": {"schema": {"type": "string"}},
                    "Access-Control-Max-Age": {"schema": {"type": "string", "const": PREFLIGHT_MAX_AGE_S}},
                },
            },
            "403": _error("This origin, method or header is not allowed.", ["cors_refused"]),
            "405": NOT_ALLOWED,
        },
    }


ORDER_PARAMETERS = [
    {
        "name": "order_uid",
        "in": "path",
        "required": True,
        "schema": {"type": "string", "pattern": ORDER_UID_PATTERN},
        "example": "b563feb7b2b84b6test",
    },
    {
        "name": "If-None-Match",
        "in": "header",
        "required": False,
        "description": "An ETag from an earlier answer: 304 if the order is still that version.",
        "schema": {"type": "string"},
    },
]


def _order_operation(summary: str, body: bool) -> dict[str, Any]:
    ok = _json("Order", "The order, as accepted from the event log.", ORDER_HEADERS)
    if not body:
        ok = {"description": "Headers of the answer to GET.", "headers": ok["headers"]}
    return {
        "summary": summary,
        "parameters": ORDER_PARAMETERS,
        "responses": {
            "200": ok,
            "304": {
                "description": "Not modified: If-None-Match holds the current ETag.",
                "headers": ORDER_HEADERS,
            },
            "400": _error("order_uid is not 1-64 of A-Z a-z 0-9 _ -.", ["bad_order_uid"]),
            "404": _error("No order with this order_uid.", ["not_found"]),
            "503": UNAVAILABLE,
        },
    }


HISTORY_HEADERS = {
    "ETag": {"description": "Strong validator of this page.", "schema": {"type": "string"}},
    "Access-Control-Allow-Origin": ALLOW_ORIGIN,
    "Access-Control-Expose-Headers": EXPOSE_HEADERS,
}

HISTORY_OPERATION = {
    "summary": "An order's versions, oldest first, each with what changed (newest page first)",
    "description": (
        "The versions the read model kept of the order: where each came from in the topic, its "
        "record time, when it was applied. Within a page the first version is the whole order and "
        "each later one an RFC 6902 JSON Patch from the one before. The first page ends with the "
        "current version; `next_before` leads to older ones. From the database, never the cache. "
        "404 for an order never seen or erased."
    ),
    "parameters": [
        ORDER_PARAMETERS[0],
        {
            "name": "If-None-Match",
            "in": "header",
            "required": False,
            "description": "An ETag from an earlier answer: 304 if this page is still the same.",
            "schema": {"type": "string"},
        },
        {
            "name": "limit",
            "in": "query",
            "required": False,
            "description": "Versions on the page.",
            "schema": {"type": "integer", "minimum": 1, "maximum": MAX_LIMIT, "default": DEFAULT_LIMIT},
        },
        {
            "name": "before",
            "in": "query",
            "required": False,
            "description": "The next_before of the previous page (opaque).",
            "schema": {"type": "string", "pattern": HISTORY_CURSOR_PATTERN},
        },
    ],
    "responses": {
        "200": _json("OrderHistory", "A page of the order's versions.", HISTORY_HEADERS),
        "304": {
            "description": "Not modified: If-None-Match holds this page's ETag.",
            "headers": HISTORY_HEADERS,
        },
        "400": _error(
            "order_uid is not 1-64 of A-Z a-z 0-9 _ -, or limit or before is not usable.",
            ["bad_order_uid", "bad_limit", "bad_cursor"],
        ),
        "404": _error("No order with this order_uid, or it was erased.", ["not_found"]),
        "503": _error("The database is unavailable.", ["unavailable"]),
    },
}

PATHS: dict[str, Any] = {
    "/order/{order_uid}": {
        "get": _order_operation("One order by its order_uid", body=True),
        "head": _order_operation("Whether an order exists, and its ETag", body=False),
    },
    "/order/{order_uid}/history": {"get": HISTORY_OPERATION},
    "/orders": {
        "get": {
            "summary": "Recent orders, newest first (by when they last changed)",
            "parameters": [
                {
                    "name": "limit",
                    "in": "query",
                    "required": False,
                    "schema": {
                        "type": "integer",
                        "minimum": 1,
                        "maximum": MAX_LIMIT,
                        "default": DEFAULT_LIMIT,
                    },
                },
                {
                    "name": "before",
                    "in": "query",
                    "required": False,
                    "description": "The next_before of the previous page (opaque).",
                    "schema": {"type": "string", "pattern": CURSOR_PATTERN},
                },
            ],
            "responses": {
                "200": _json("OrderPage", "A page of order summaries."),
                "400": _error("limit or before is not usable.", ["bad_limit", "bad_cursor"]),
                "503": UNAVAILABLE,
            },
        },
    },
    "/healthz": {
        "get": {
            "summary": "Liveness: the process answers",
            "responses": {"200": _json("Status", "Alive.")},
        }
    },
    "/readyz": {
        "get": {
            "summary": "Readiness: cache warmed, database reachable, LISTEN connected",
            "responses": {
                "200": _json(
                    "Status",
                    "Ready to serve (`degraded` when reading from the primary instead of its standby).",
                ),
                "503": _json("Status", "Not ready; `reason` says why."),
            },
        }
    },
    "/metrics": {
        "get": {
            "summary": "Prometheus metrics",
            "responses": {
                "200": {
                    "description": "Prometheus text exposition format.",
                    "content": {"text/plain": {"schema": {"type": "string"}}},
                }
            },
        }
    },
    "/openapi.json": {
        "get": {
            "summary": "This document",
            "responses": {
                "200": {
                    "description": "OpenAPI 3.1.",
                    "content": {"application/json": {"schema": {"type": "object"}}},
                }
            },
        }
    },
    "/": {
        "get": {
            "summary": "The order viewer (ui/index.html)",
            "responses": {
                "200": {"description": "The page.", "content": {"text/html": {"schema": {"type": "string"}}}},
                "404": NOT_FOUND,
            },
        }
    },
}


CROSS_ORIGIN_PATHS = ("/order/{order_uid}", "/order/{order_uid}/history", "/orders")


def paths(cors: bool, host_check: bool) -> dict[str, Any]:
    """The operations of this deployment: OPTIONS answers preflights only when CORS origins are
    set, and 421 stands before every operation only when the Host allow-list is."""
    result = {path: dict(operations) for path, operations in PATHS.items()}
    if cors:
        for path in CROSS_ORIGIN_PATHS:
            result[path]["options"] = _preflight(path)
    if host_check:
        for operations in result.values():
            for method, operation in operations.items():
                operations[method] = {
                    **operation,
                    "responses": {**operation["responses"], "421": MISDIRECTED},
                }
    return result


def document(cors: bool = False, host_check: bool = False) -> dict[str, Any]:
    return {
        "openapi": "3.1.0",
        "jsonSchemaDialect": "https://json-schema.org/draft/2020-12/schema",
        "info": {
            "title": "orderview API",
            "version": "1.0.0",
            "description": (
                "Orders from the event log, served from an in-process cache kept fresh by "
                'LISTEN/NOTIFY. Every error is JSON: {"error": code, "message": text}; '
                "unknown paths answer 404 and unsupported methods 405 in that shape. "
                "Money (amount, goods_total, delivery_cost, custom_fee, price, total_price) is an "
                "integer in minor units of payment.currency: 1817 USD is 18.17 USD. "
                "The viewer's assets are served under /ui/. Pages of other origins may read "
                "the orders when ORDERVIEW_API_CORS_ORIGINS lists them (OPTIONS answers their "
                "preflight); with ORDERVIEW_API_ALLOWED_HOSTS set, any other Host gets 421."
            ),
        },
        "paths": paths(cors, host_check),
        "components": {"schemas": COMPONENTS},
    }


def document_bytes(cors: bool = False, host_check: bool = False) -> bytes:
    return orjson.dumps(document(cors, host_check))
