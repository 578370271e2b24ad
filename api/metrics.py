"""What the API exposes at /metrics. One registry per app, so replicas in one test process
do not collide. The cache's counters are plain ints read at scrape time by a collector."""

from __future__ import annotations

import time
from bisect import bisect_left
from collections.abc import Iterator
from itertools import accumulate
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

from api.cache import OrderCache
from api.missing import MissingOrders

if TYPE_CHECKING:
    from api.connections import Connections
    from api.standby import StandbyWatch

# A cache hit takes tens of µs in the handler, a miss about a millisecond.
LATENCY_BUCKETS = (1e-4, 2.5e-4, 5e-4, 1e-3, 2.5e-3, 5e-3, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5)
_FIRST_BUCKET = LATENCY_BUCKETS[0]
QUERY_KINDS = ("lookup", "refresh", "warm_up", "resync", "list", "history")


class CacheCollector(Collector):
    def __init__(self) -> None:
        self.cache: OrderCache | None = None
        self.missing: MissingOrders | None = None

    def collect(self) -> Iterator[Metric]:
        c, m = self.cache, self.missing
        if m is not None:
            yield CounterMetricFamily(
                "orderview_api_not_found_cached", "Unknown order_uids answered 404 without a query", m.hits
            )
            yield GaugeMetricFamily(
                "orderview_api_not_found_entries", "order_uids remembered as absent", len(m)
            )
        if c is None:
            return
        yield CounterMetricFamily("orderview_api_cache_hits", "Lookups served from the cache", c.hits)
        yield CounterMetricFamily("orderview_api_cache_misses", "Lookups the cache could not serve", c.misses)
        yield CounterMetricFamily("orderview_api_cache_evictions", "Entries evicted for room", c.evictions)
        yield GaugeMetricFamily("orderview_api_cache_entries", "Orders in the cache", len(c))
        yield GaugeMetricFamily("orderview_api_cache_bytes", "Bytes accounted to the cache", c.bytes)


class ConnectionCollector(Collector):
    """A replica's connections (api/connections.py): how many it holds, and those it closed."""

    def __init__(self) -> None:
        self.connections: Connections | None = None

    def collect(self) -> Iterator[Metric]:
        c = self.connections
        if c is None:
            return
        yield GaugeMetricFamily(
            "orderview_api_connections", "Client connections this replica holds", len(c.open)
        )
        yield GaugeMetricFamily(
            "orderview_api_connections_max",
            "Client connections this replica holds at most",
            c.max_connections,
        )
        closed = CounterMetricFamily(
            "orderview_api_connections_closed",
            "Client connections the replica closed: head_timeout (the request head took longer than "
            "ORDERVIEW_API_HEAD_TIMEOUT_S), made_room (waiting or idle, closed for a new one past "
            "ORDERVIEW_API_MAX_CONNECTIONS), refused (new, while every one was busy), unreadable "
            "(answered 400: a request line or header it could not read)",
            labels=["reason"],
        )
        closed.add_metric(["head_timeout"], c.slow_heads)
        closed.add_metric(["made_room"], c.made_room)
        closed.add_metric(["refused"], c.refused)
        closed.add_metric(["unreadable"], c.unreadable)
        yield closed


class _Stats:
    __slots__ = ("buckets", "count", "sum")

    def __init__(self) -> None:
        self.count = 0
        self.sum = 0.0
        self.buckets = [0] * (len(LATENCY_BUCKETS) + 1)  # the last one is +Inf


def outcome(status: int, served: str) -> str:
    """What became of a request: `served` (ok, or hit / miss for an order) below 400."""
    if status < 400:
        return served
    if status == 404:
        return "not_found"
    return "error" if status >= 500 else "rejected"


class RouteMetrics:
    """One route's request counts and latency by status, as plain numbers.

    prometheus_client's Counter and Histogram take a lock per update (~1.7 µs per request for
    both, measured); one event loop needs none, and a cache hit is ~30 µs in all.
    `served` is the outcome of its answers under 400: the order route keeps one RouteMetrics
    for cache hits and one for the rest (misses), so the hot path chooses, never computes.
    """

    def __init__(self, route: str, served: str = "ok") -> None:
        self.route = route
        self.served = served
        self.by_status: dict[int, _Stats] = {}

    def observe(self, status: int, seconds: float) -> None:
        stats = self.by_status.get(status)
        if stats is None:
            stats = self.by_status[status] = _Stats()
        stats.count += 1
        stats.sum += seconds
        # Most requests are cache hits, inside the first bucket: skip the search for them.
        stats.buckets[0 if seconds <= _FIRST_BUCKET else bisect_left(LATENCY_BUCKETS, seconds)] += 1


class RequestCollector(Collector):
    def __init__(self) -> None:
        self.routes: dict[tuple[str, str], RouteMetrics] = {}

    def route(self, label: str, served: str = "ok") -> RouteMetrics:
        if (label, served) not in self.routes:
            self.routes[label, served] = RouteMetrics(label, served)
        return self.routes[label, served]

    def collect(self) -> Iterator[Metric]:
        labels = ["route", "status", "outcome"]
        requests = CounterMetricFamily("orderview_api_requests", "HTTP requests answered", labels=labels)
        latency = HistogramMetricFamily(
            "orderview_api_request_seconds",
            "Time to answer a request, by route, status and outcome",
            labels=labels,
        )
        bounds = [*map(floatToGoString, LATENCY_BUCKETS), "+Inf"]
        for route in list(self.routes.values()):
            for status, stats in list(route.by_status.items()):
                values = [route.route, str(status), outcome(status, route.served)]
                requests.add_metric(values, stats.count)
                buckets = list(zip(bounds, accumulate(stats.buckets), strict=True))
                latency.add_metric(values, buckets, stats.sum)
        yield requests
        yield latency


class StandbyMetrics:
    """A replica that reads from a standby: how far behind it is, and where reads went.

    `orderview_api_standby_replay_lag_seconds` is what alert rules watch: how long ago the primary
    had flushed WAL the standby has not replayed; while the standby does not answer, at least how
    long it has been silent. Each replica reports its own (the `replica` label)."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self._registry = registry
        reads = Counter(
            "orderview_api_standby_reads",
            "Reads of a replica with a standby, by where they went (refused: a 503, fallback unavailable)",
            ["source"],
            registry=registry,
        )
        self.reads = {source: reads.labels(source) for source in ("standby", "primary", "refused")}
        self.waits = Histogram(
            "orderview_api_standby_wait_seconds",
            "Time reads waited for the standby to replay what they need",
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
            registry=registry,
        )

    def watch(self, standby: StandbyWatch) -> None:
        """Gauges read from the standby's watch (api/standby.py) at each scrape."""
        lag = Gauge(
            "orderview_api_standby_replay_lag_seconds",
            "How long ago the primary had flushed WAL the standby has not replayed (or has been silent)",
            registry=self._registry,
        )
        lag.set_function(standby.lag_s)
        up = Gauge(
            "orderview_api_standby_up", "1 while the standby answers as a standby", registry=self._registry
        )
        up.set_function(lambda: 1.0 if standby.answered and standby.in_recovery else 0.0)
        in_use = Gauge(
            "orderview_api_standby_in_use",
            "1 while reads go to the standby (it answers, within the lag bound)",
            registry=self._registry,
        )
        in_use.set_function(lambda: 1.0 if standby.usable else 0.0)


class ApiMetrics:
    def __init__(self) -> None:
        self.registry = r = CollectorRegistry()
        self.cache = CacheCollector()
        r.register(self.cache)
        self.requests = RequestCollector()
        r.register(self.requests)
        self.connections = ConnectionCollector()
        r.register(self.connections)
        self.route = self.requests.route
        self._db_queries = Counter(
            "orderview_api_db_queries", "Queries sent to PostgreSQL, by purpose", ["kind"], registry=r
        )
        self.db_queries = {kind: self._db_queries.labels(kind) for kind in QUERY_KINDS}
        self.lookup_batch = Histogram(
            "orderview_api_lookup_batch_size",
            "order_uids per coalesced miss query",
            buckets=(1, 2, 5, 10, 20, 50, 100, 200, 500, 1000),
            registry=r,
        )
        invalidations = Counter(
            "orderview_api_invalidations",
            "Cached orders refreshed or evicted because they changed",
            ["action"],
            registry=r,
        )
        self.refreshed = invalidations.labels("refreshed")
        self.invalidated = invalidations.labels("evicted")
        self.notifications = Counter(
            "orderview_api_notifications", "order_uids received by LISTEN", registry=r
        )
        self.listen_connected = Gauge(
            "orderview_api_listen_connected", "1 while the LISTEN connection is up", registry=r
        )
        self.listen_reconnects = Counter(
            "orderview_api_listen_reconnects", "Times the LISTEN connection was lost", registry=r
        )
        self.resyncs = Counter("orderview_api_resyncs", "Re-syncs after a lost LISTEN connection", registry=r)
        self.catch_ups = Counter(
            "orderview_api_database_catch_ups",
            "LISTEN reconnections to a database that lacked versions this replica had served (a failover)",
            registry=r,
        )
        self.database_behind = Gauge(
            "orderview_api_database_behind",
            "1 while the database lacks versions this replica served: misses wait, refreshes are held",
            registry=r,
        )
        self.ready = Gauge("orderview_api_ready", "1 when /readyz would answer 200", registry=r)
        self.notifications_applied = Gauge(
            "orderview_api_notifications_applied_timestamp_seconds",
            "Unix time up to which every order change notified was applied to the cache "
            "(moves with the LISTEN heartbeat, also when nothing changes)",
            registry=r,
        )
        # Nothing was missed before the replica started: its warm-up reads what came before.
        self.notifications_applied.set(time.time())
