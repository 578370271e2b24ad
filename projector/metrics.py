"""What the projector exposes at /metrics, and whether it is ready."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram


class ProjectorMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.consumed = Counter(
            "orderview_projector_consumed", "Messages taken from the orders topic", registry=r
        )
        self.projected = Counter("orderview_projector_projected", "Valid order events applied", registry=r)
        self.changed = Counter("orderview_projector_changed", "Orders whose read model changed", registry=r)
        self.dead_lettered = Counter(
            "orderview_projector_dead_lettered", "Messages sent to the DLQ", ["reason"], registry=r
        )
        self.redeliveries = Counter(
            "orderview_projector_redeliveries_skipped", "Already-applied messages seen again", registry=r
        )
        self.discarded = Counter(
            "orderview_projector_discarded",
            "Messages fetched past the recorded position, dropped to be read again in order",
            registry=r,
        )
        self.db_retries = Counter(
            "orderview_projector_db_retries",
            "Batch attempts retried after a database or broker outage",
            registry=r,
        )
        self.batch_size = Histogram(
            "orderview_projector_batch_size",
            "Messages per batch",
            buckets=(1, 5, 10, 50, 100, 250, 500, 1000, 2000),
            registry=r,
        )
        self.batch_seconds = Histogram(
            "orderview_projector_batch_seconds",
            "Time to apply one batch, retries included",
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
            registry=r,
        )
        self.last_applied_offset = Gauge(
            "orderview_projector_last_applied_offset", "Last offset applied", ["partition"], registry=r
        )
        self.ready = Gauge("orderview_projector_ready", "1 when the projector can make progress", registry=r)


class Readiness:
    """Ready until something stops progress; `reason` says what."""

    def __init__(self, metrics: ProjectorMetrics) -> None:
        self._metrics = metrics
        self.reason: str | None = "starting"
        metrics.ready.set(0)

    @property
    def ready(self) -> bool:
        return self.reason is None

    def set_ready(self) -> None:
        self.reason = None
        self._metrics.ready.set(1)

    def set_not_ready(self, reason: str) -> None:
        self.reason = reason
        self._metrics.ready.set(0)
