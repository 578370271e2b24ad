"""What every answer carries at the edge: security headers, the Host allow-list, CORS.

The headers are constants, merged once into each cached order's header maps (api/cache.py) and
into every other answer by `answering`. CORS exists only when configured. The Host allow-list is
ORDERVIEW_API_ALLOWED_HOSTS, or by default, when the API binds to loopback, the loopback names:
a page that rebinds its own name to 127.0.0.1 reaches a loopback API through the browser of
someone on that machine, and sends its own name as Host. `*` answers any Host. A Host header
value once allowed is remembered, so the hot path pays one set lookup for it.
"""

from __future__ import annotations

from aiohttp import hdrs, web

from orderview.settings import LOOPBACK_NAMES, Settings, is_loopback

# Self only; no inline script (the pages have none); never framed.
CSP = "default-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'; object-src 'none'"
SECURITY_HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}
# Answers may differ by Origin (CORS): shared caches must keep them apart.
VARY = {hdrs.VARY: "Origin"}
EXPOSED = "ETag, X-Cache, Server-Timing"
PREFLIGHT_MAX_AGE_S = "600"
METHODS = "GET, HEAD"
REQUEST_HEADERS = {"if-none-match", "accept", "accept-language", "content-language"}


def host_name(host: str) -> str:
    """The name of a Host header, without its port: `[::1]:8081` → `::1`."""
    if host.startswith("["):
        return host[1 : host.find("]")].lower()
    return host.rpartition(":")[0].lower() if host.count(":") == 1 else host.lower()


ANY_HOST = "*"
LOOPBACK_HOSTS = frozenset({*LOOPBACK_NAMES, "127.0.0.1", "::1"})
ALLOWED_SEEN_MAX = 256  # Host values remembered as allowed (the names times the ports they come with)


class HostGuard:
    """The Host allow-list: a page that rebinds its own name to this API's address sends its
    own name as Host; it gets 421 instead of the orders."""

    def __init__(self, names: list[str]) -> None:
        self.names = frozenset(name.lower() for name in names)
        self._allowed: set[str] = set()

    def refuses(self, request: web.Request) -> bool:
        host = request.headers.get(hdrs.HOST)
        if host in self._allowed:
            return False
        if host is None or host_name(host) not in self.names:
            return True
        if len(self._allowed) < ALLOWED_SEEN_MAX:
            self._allowed.add(host)
        return False

    @classmethod
    def from_settings(cls, settings: Settings) -> HostGuard | None:
        names = settings.listed("api_allowed_hosts")
        if names == [ANY_HOST]:
            return None
        if names:
            return cls(names)
        if is_loopback(settings.api_host):
            return cls([*LOOPBACK_HOSTS, host_name(settings.api_host)])
        return None


def exposure_warning(settings: Settings) -> str | None:
    """One sentence when the API binds off loopback and answers any Host without saying so."""
    if is_loopback(settings.api_host) or settings.listed("api_allowed_hosts"):
        return None
    return (
        f"the API binds to {settings.api_host}, which is not loopback, and ORDERVIEW_API_ALLOWED_HOSTS is "
        "empty: it answers any Host header, so a page that rebinds its own name to this address can "
        "read orders through the browser of anyone who reaches it; set ORDERVIEW_API_ALLOWED_HOSTS "
        "to the names clients use (or * to say any is meant)"
    )


NULL_ORIGIN = "null"


def null_origin_warning(settings: Settings) -> str | None:
    """One sentence when CORS allows the `null` origin: not only pages opened from files have it."""
    if NULL_ORIGIN not in settings.listed("api_cors_origins"):
        return None
    return (
        "ORDERVIEW_API_CORS_ORIGINS allows the null origin: besides pages opened from files, any "
        "site's page can read every order through the browser of anyone who reaches this API, by "
        "calling it from a sandboxed iframe or a data: URL, whose origin is null too; list the "
        "origins of the pages meant to call it instead"
    )


class Cors:
    """ORDERVIEW_API_CORS_ORIGINS: origins whose pages may read the API (`*` any, `null` file pages)."""

    def __init__(self, origins: list[str]) -> None:
        self.any = "*" in origins
        self.origins = frozenset(origins)

    def allows(self, origin: str) -> bool:
        return self.any or origin in self.origins

    def apply(self, request: web.Request, response: web.StreamResponse) -> None:
        origin = request.headers.get(hdrs.ORIGIN)
        if origin is not None and (self.any or origin in self.origins):
            headers = response.headers
            headers[hdrs.ACCESS_CONTROL_ALLOW_ORIGIN] = "*" if self.any else origin
            headers[hdrs.ACCESS_CONTROL_EXPOSE_HEADERS] = EXPOSED

    def preflight(self, request: web.Request) -> bool | None:
        """None if `request` is no preflight; else whether it is allowed."""
        origin = request.headers.get(hdrs.ORIGIN)
        method = request.headers.get(hdrs.ACCESS_CONTROL_REQUEST_METHOD)
        if origin is None or method is None:
            return None
        asked = request.headers.get(hdrs.ACCESS_CONTROL_REQUEST_HEADERS, "")
        names = {name.strip().lower() for name in asked.split(",") if name.strip()}
        return self.allows(origin) and method in ("GET", "HEAD") and names <= REQUEST_HEADERS

    def preflight_headers(self, request: web.Request) -> dict[str, str]:
        return {
            hdrs.ACCESS_CONTROL_ALLOW_ORIGIN: "*" if self.any else request.headers[hdrs.ORIGIN],
            hdrs.ACCESS_CONTROL_ALLOW_METHODS: METHODS,
            hdrs.ACCESS_CONTROL_ALLOW_HEADERS: ", ".join(sorted(REQUEST_HEADERS)),
            hdrs.ACCESS_CONTROL_MAX_AGE: PREFLIGHT_MAX_AGE_S,
            **VARY,
            **SECURITY_HEADERS,
        }

    @classmethod
    def from_settings(cls, settings: Settings) -> Cors | None:
        origins = settings.listed("api_cors_origins")
        return cls(origins) if origins else None
