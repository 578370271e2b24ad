"""Every route of the API in one place, each wrapped by `answering` (JSON errors, metrics)."""

from __future__ import annotations

from aiohttp import hdrs, web
from yarl import URL

from api import handlers
from api.answers import Handler, answering, fallback
from api.contexts import METRICS, SETTINGS
from api.edge import Cors, HostGuard
from api.openapi import document_bytes


def setup_routes(app: web.Application) -> None:
    metrics = app[METRICS]
    router = app.router
    hosts, cors = HostGuard.from_settings(app[SETTINGS]), Cors.from_settings(app[SETTINGS])
    openapi = document_bytes(cors=cors is not None, host_check=hosts is not None)

    async def openapi_json(_request: web.Request) -> web.Response:
        return web.Response(body=openapi, headers={hdrs.CONTENT_TYPE: "application/json"})

    def get(path: str, handler: Handler, label: str | None = None) -> None:
        router.add_get(path, answering(handler, metrics.route(label or path), hosts, cors))

    order_route = "/order/{order_uid}"
    order = handlers.order_handler(
        metrics.route(order_route, "miss"), metrics.route(order_route, "hit"), hosts, cors
    )
    router.add_get(order_route, order)
    get("/order/{order_uid}/history", handlers.order_history)
    get("/orders", handlers.list_orders)
    get("/healthz", handlers.healthz)
    get("/readyz", handlers.readyz)
    get("/metrics", handlers.metrics)
    get("/openapi.json", openapi_json)
    get("/", handlers.index)
    get("/ui/{path:.*}", handlers.ui_file, "/ui/")
    # Last: whatever matched nothing above answers a JSON 404 or 405, also a target that is not a
    # path (`OPTIONS *`), which aiohttp would answer itself, without the security headers. (An
    # empty one, CONNECT's host:port, is matched against nothing at all: docs/security.md.)
    unmatched = answering(fallback(cors), metrics.route("unmatched"), hosts, cors)
    router.add_route(hdrs.METH_ANY, "/{path:.*}", unmatched)
    no_path = AnyTarget()
    router.register_resource(no_path)
    no_path.add_route(hdrs.METH_ANY, unmatched)


class AnyTarget(web.Resource):
    """Every request target. Indexed under `/` and registered last, it is asked only once every
    other resource has not matched: never on the way to one that does."""

    @property
    def canonical(self) -> str:
        return "/"

    def _match(self, path: str) -> dict[str, str]:
        return {}

    def raw_match(self, path: str) -> bool:
        return False

    def add_prefix(self, prefix: str) -> None:
        raise NotImplementedError("AnyTarget is the app's own last resource")

    def get_info(self) -> dict[str, str]:
        return {}

    def url_for(self) -> URL:
        return URL("/")
