"""The read baseline: a bare aiohttp handler answering GET /order/{uid} with prebuilt bytes from a dict.

    python -m bench.baseline_server --port P     (settings from ORDERVIEW_* as the API reads them)

The bodies are the bytes the API serves (body_json), with the headers of the API's cache hit
(Content-Type, X-Cache, Vary, the security headers, an ETag and a Server-Timing of the same
length), prebuilt per order: the same bytes on the wire. The server runs like one API replica:
one process, uvloop, no access log. No middleware, no metrics, no checks, no headers built per
request: what is left is aiohttp's own cost of answering, the ceiling for the cache-hit path.
"""

from __future__ import annotations

import argparse

import psycopg
import uvloop
from aiohttp import hdrs, web
from multidict import CIMultiDict, CIMultiDictProxy

from api.encoding import strong_etag
from api.handlers import HIT_HEADERS, SERVER_TIMING, TIMING_HIT
from orderview.settings import get_settings


def load_bodies() -> dict[str, tuple[bytes, CIMultiDictProxy[str]]]:
    settings = get_settings()
    answers = {}
    # One statement reads every order: no statement timeout for it.
    with psycopg.connect(settings.dsn("api", statement_timeout=0)) as conn:
        for uid, body_json in conn.execute("SELECT order_uid, body_json FROM order_snapshots"):
            data = body_json.encode()  # the bytes the API serves
            headers = CIMultiDict(HIT_HEADERS)
            headers[hdrs.ETAG] = strong_etag(data)
            headers[SERVER_TIMING] = TIMING_HIT + "0.004"
            answers[uid] = (data, CIMultiDictProxy(headers))
    return answers


def make_app(answers: dict[str, tuple[bytes, CIMultiDictProxy[str]]]) -> web.Application:
    async def order(request: web.Request) -> web.Response:
        found = answers.get(request.match_info["uid"])
        if found is None:
            raise web.HTTPNotFound()
        return web.Response(body=found[0], headers=found[1])

    async def ready(request: web.Request) -> web.Response:
        return web.Response(text="ready")

    app = web.Application()
    app.router.add_get("/order/{uid}", order)
    app.router.add_get("/readyz", ready)
    return app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    app = make_app(load_bodies())
    # The same server settings as api.main.serve.
    web.run_app(
        app,
        host="127.0.0.1",
        port=args.port,
        reuse_port=True,
        access_log=None,
        print=None,
        shutdown_timeout=5.0,
        loop=uvloop.new_event_loop(),
    )


if __name__ == "__main__":
    main()
