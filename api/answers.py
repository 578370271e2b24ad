"""Errors become JSON answers and every request is counted, here.

`error_answer` is the one place where exceptions (the domain's first) turn into HTTP answers.
`answering` wraps each route's handler with it when routes are added, rather than an aiohttp
middleware: the middleware machinery alone (a cached chain, a partial called with keywords, one
more coroutine) measured ~1.4 µs per request here, about 5% of a whole cache hit, and the hit
path has to stay within 10% of a bare handler. For the same reason the order handler, the hot
path, times itself and calls `error_answer` directly (see api/handlers.py).
Unknown paths and methods reach `fallback`, a catch-all route, so they answer JSON too.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from time import perf_counter

import orjson
import psycopg
from aiohttp import hdrs, web

from api.edge import SECURITY_HEADERS, VARY, Cors, HostGuard
from api.errors import BadOrderUid, BadQuery, DatabaseTimeout, OrderNotFound, UnknownHost
from api.metrics import RouteMetrics

log = logging.getLogger("orderview.api")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

_JSON_HEADERS = {hdrs.CONTENT_TYPE: "application/json", **VARY, **SECURITY_HEADERS}
_EDGE_HEADERS = {**VARY, **SECURITY_HEADERS}
_HTTP_ERROR_CODES = {403: "forbidden", 404: "not_found", 405: "method_not_allowed"}


def error_response(status: int, code: str, message: str, allow: str | None = None) -> web.Response:
    headers = {**_JSON_HEADERS, hdrs.ALLOW: allow} if allow is not None else _JSON_HEADERS
    return web.Response(
        status=status, body=orjson.dumps({"error": code, "message": message}), headers=headers
    )


def _from_http_exception(exc: web.HTTPException) -> web.StreamResponse:
    if exc.status < 400:  # 304 and redirects are answers, not errors
        return exc
    code = _HTTP_ERROR_CODES.get(exc.status) or exc.reason.lower().replace(" ", "_")
    message = "no such resource" if exc.status == 404 else exc.reason
    return error_response(exc.status, code, message, exc.headers.get(hdrs.ALLOW))


def error_answer(request: web.Request, exc: Exception) -> web.StreamResponse:
    """The HTTP answer to an exception raised while handling `request`."""
    if isinstance(exc, OrderNotFound):
        return error_response(404, "not_found", str(exc))
    if isinstance(exc, BadOrderUid):
        return error_response(400, "bad_order_uid", str(exc))
    if isinstance(exc, BadQuery):
        return error_response(400, exc.code, str(exc))
    if isinstance(exc, UnknownHost):
        return error_response(421, "misdirected_request", str(exc))
    if isinstance(exc, web.HTTPException):
        return _from_http_exception(exc)
    if isinstance(exc, psycopg.OperationalError | DatabaseTimeout):  # the pool's timeout is one too
        log.warning("database unavailable: %s", exc)
        return error_response(503, "unavailable", "the order database is unavailable, retry later")
    log.error(
        "unexpected error answering %s %s",
        request.method,
        request.rel_url.raw_path,
        exc_info=(type(exc), exc, exc.__traceback__),
    )
    return error_response(500, "internal", "internal error")


def answering(handler: Handler, metrics: RouteMetrics, hosts: HostGuard | None, cors: Cors | None) -> Handler:
    """`handler`, timed and counted, behind the Host allow-list, with its exceptions answered by
    `error_answer`, and every answer with the security headers (and CORS's, when allowed)."""
    observe = metrics.observe

    async def answer(request: web.Request) -> web.StreamResponse:
        started = perf_counter()
        try:
            if hosts is not None and hosts.refuses(request):
                raise UnknownHost()
            response = await handler(request)
        except Exception as exc:
            response = error_answer(request, exc)
        response.headers.update(_EDGE_HEADERS)
        if cors is not None:
            cors.apply(request, response)
        observe(response.status, perf_counter() - started)
        return response

    return answer


def fallback(cors: Cors | None) -> Handler:
    """No route for this method and path: a CORS preflight's answer if it is one, else 405 if
    the path exists with other methods, else 404."""

    async def unmatched(request: web.Request) -> web.Response:
        if request.method == hdrs.METH_OPTIONS and cors is not None:
            allowed = cors.preflight(request)
            if allowed:
                return web.Response(status=204, headers=cors.preflight_headers(request))
            if allowed is False:
                return error_response(403, "cors_refused", "this origin, method or header is not allowed")
        return await no_route(request)

    return unmatched


async def no_route(request: web.Request) -> web.Response:
    allowed: set[str] = set()
    for resource in request.app.router.resources():
        if resource is not request.match_info.route.resource:
            _, methods = await resource.resolve(request)
            allowed |= methods - {hdrs.METH_ANY}  # the catch-alls (api/routes.py) allow no method
    if allowed:
        allow = ",".join(sorted(allowed))
        message = f"method {request.method} is not allowed here; allowed: {allow}"
        return error_response(405, "method_not_allowed", message, allow)
    return error_response(404, "not_found", "no such resource")
