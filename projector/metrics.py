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
        self.resent = Counter(
            "orderview_projector_resent",
            "Valid records that changed nothing but the version (the same order again)",
            registry=r,
        )
        self.erased = Counter("orderview_projector_erased", "Orders erased by a tombstone", registry=r)
        self.history_rows = Counter(
            "orderview_projector_history_rows", "Earlier versions written to order_history", registry=r
        )
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
        self.stale_versions = Counter(
            "orderview_projector_stale_versions",
            "Versions not applied because the read model holds a newer one (dead-lettered as stale_version)",
            registry=r,
        )
        self.records_lost = Counter(
            "orderview_projector_records_lost",
            "Records deleted from the log (retention, delete-records) before they were applied",
            ["reason"],
            registry=r,
        )
        self.applied_deleted = Counter(
            "orderview_projector_applied_record_deleted",
            "Times the last record applied in a partition was found deleted since (expected)",
            ["reason"],
            registry=r,
        )
        self.topic_missing = Gauge(
            "orderview_projector_topic_missing",
            "1 while a topic the projector needs does not exist",
            ["topic"],
            registry=r,
        )
        self.redrives_skipped = Counter(
            "orderview_projector_redrives_skipped",
            "Redriven dead letters seen again after their first copy was processed",
            registry=r,
        )

        # Every series an alert watches exists from the start: an increase from nothing is invisible.
        self.records_lost.labels("deleted_before_applied")
        for reason in ("compaction", "retention"):
            self.applied_deleted.labels(reason)

    def lost(self, partition: int, first: int, end: int) -> None:
        self.records_lost.labels("deleted_before_applied").inc(end - first)

    def applied_record_deleted(self, partition: int, reason: str) -> None:
        self.applied_deleted.labels(reason).inc()


class Readiness:
    """Ready while nothing stops progress; `reason` says what does. Each source (the batch being
    written, the topics, the agent) sets and clears its own reason."""

    def __init__(self, metrics: ProjectorMetrics) -> None:
        self._metrics = metrics
        self._reasons: dict[str, str] = {"start": "starting"}
        metrics.ready.set(0)

    @property
    def reason(self) -> str | None:
        return next(iter(self._reasons.values()), None)

    @property
    def ready(self) -> bool:
        return not self._reasons

    def set_ready(self, source: str = "batch") -> None:
        self._reasons.pop(source, None)
        self._metrics.ready.set(0 if self._reasons else 1)

    def set_not_ready(self, reason: str, source: str = "batch") -> None:
        self._reasons[source] = reason
        self._metrics.ready.set(0)
