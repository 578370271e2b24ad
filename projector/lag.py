"""How far behind the log the projector is, per partition, as /metrics shows it.

A task of each worker samples, every `projector_lag_interval_s`, the partitions assigned to it:

- the log end offset (the last stable offset: the projector reads committed records only),
- the recorded position (the next offset to apply, from `applied_offsets`: the database, not the
  group's offsets, is where the projector stands),
- the lag in records between the two (from the log's first offset when retention deleted the
  records before the position; 0 when no committed record lies past the position: transaction
  markers at the log's end are nothing to apply),
- the age of the oldest record not yet applied: now minus the timestamp of the record at the
  position (0 when there is none).

A partition that leaves the worker leaves its series: the worker that takes it reports it, so no
partition is counted twice. A sample that cannot reach the database uses the last positions read
(nothing is applied while it is down); one that cannot reach the broker is skipped.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import psycopg
from prometheus_client import CollectorRegistry, Gauge

from orderview.settings import Settings
from projector import faults
from projector.adapters import postgres
from projector.adapters.kafka import KafkaLog

log = logging.getLogger("orderview.projector.lag")

READ_COMMITTED = "read_committed"


class LagMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        labels = ["partition"]
        self.log_end_offset = Gauge(
            "orderview_projector_log_end_offset",
            "Offset after the last committed record of the partition",
            labels,
            registry=registry,
        )
        self.position = Gauge(
            "orderview_projector_position",
            "Next offset to apply, as the read model recorded it",
            labels,
            registry=registry,
        )
        self.lag_records = Gauge(
            "orderview_projector_lag_records",
            "Records of the partition not applied yet",
            labels,
            registry=registry,
        )
        self.oldest_unapplied_age = Gauge(
            "orderview_projector_oldest_unapplied_age_seconds",
            "Age of the oldest record not applied yet (its Kafka timestamp); 0 when none",
            labels,
            registry=registry,
        )
        self.gauges = (self.log_end_offset, self.position, self.lag_records, self.oldest_unapplied_age)

    def forget(self, partition: int) -> None:
        for gauge in self.gauges:
            try:
                gauge.remove(str(partition))
            except KeyError:
                pass


@dataclass(frozen=True, slots=True)
class PartitionLag:
    partition: int
    log_end_offset: int
    position: int
    lag_records: int
    oldest_unapplied_age_s: float


def partition_lag(
    partition: int, start: int, end: int, position: int, oldest_ts_ms: int | None, now_s: float
) -> PartitionLag:
    """One partition's figures from what the log and the read model say."""
    if oldest_ts_ms is None:  # nothing committed to apply past the position
        return PartitionLag(partition, end, position, 0, 0.0)
    lag = max(0, end - max(position, start))
    return PartitionLag(partition, end, position, lag, max(0.0, now_s - oldest_ts_ms / 1000))


class LagSampler:
    """Samples the lag of the partitions `assigned()` returns, into gauges of `registry`."""

    def __init__(
        self,
        settings: Settings,
        registry: CollectorRegistry,
        assigned: Callable[[], Iterable[int]],
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.settings = settings
        self.topic = settings.orders_topic
        self.metrics = LagMetrics(registry)
        self.assigned = assigned
        self.clock = clock
        self._log: KafkaLog | None = None
        self._conn: psycopg.AsyncConnection | None = None
        self._positions: dict[int, int] = {}  # last read from the database
        self._timestamps: dict[tuple[int, int], int] = {}  # (partition, offset) -> record timestamp
        self._reported: set[int] = set()
        self._failing: str | None = None

    async def run(self) -> None:
        """Sample forever; never raises (a sample that fails is logged and tried again)."""
        try:
            while True:
                try:
                    await self.sample()
                    self._recovered()
                except asyncio.CancelledError:
                    raise
                except Exception as exc:
                    await self._failed(exc)
                await asyncio.sleep(self.settings.projector_lag_interval_s)
        finally:
            await self.close()

    async def sample(self) -> list[PartitionLag]:
        partitions = sorted(set(self.assigned()))
        for gone in self._reported - set(partitions):
            self.metrics.forget(gone)
        self._reported &= set(partitions)
        if not partitions:
            return []
        positions = await self._read_positions()
        kafka_log = await self._started()
        now = self.clock()
        sampled = []
        for partition in partitions:
            start, end = await kafka_log.start_offset(partition), await kafka_log.end_offset(partition)
            position = positions.get(partition, 0)
            oldest = await self._timestamp_at(partition, max(position, start), end)
            sampled.append(partition_lag(partition, start, end, position, oldest, now))
        self._report(sampled)
        return sampled

    def _report(self, sampled: list[PartitionLag]) -> None:
        m = self.metrics
        for s in sampled:
            label = str(s.partition)
            m.log_end_offset.labels(label).set(s.log_end_offset)
            m.position.labels(label).set(s.position)
            m.lag_records.labels(label).set(s.lag_records)
            m.oldest_unapplied_age.labels(label).set(s.oldest_unapplied_age_s)
            self._reported.add(s.partition)

    async def _read_positions(self) -> dict[int, int]:
        try:
            if self._conn is None or self._conn.closed:
                self._conn = await psycopg.AsyncConnection.connect(
                    self.settings.dsn("projector"), autocommit=True, application_name="orderview-lag"
                )
            positions = await postgres.read_positions(self._conn, self.topic)
            self._positions = {p: position.next_offset for p, position in positions.items()}
        except Exception as exc:
            if faults.outage(exc) is None:
                raise
            await self._close_connection()
            # Nothing is applied while the database is down: the last positions still hold.
            log.debug("positions not read, using the last ones: %s", exc)
        return self._positions

    async def _timestamp_at(self, partition: int, offset: int, end: int) -> int | None:
        """The timestamp of the first committed record at or after `offset` and before `end`."""
        if offset >= end:
            return None
        key = (partition, offset)
        if key not in self._timestamps:
            record = await (await self._started()).first_record(partition, offset)
            if record is None or record.offset >= end:
                return None
            # One entry per partition: the position only moves forward.
            self._timestamps = {k: v for k, v in self._timestamps.items() if k[0] != partition}
            self._timestamps[key] = record.timestamp_ms or 0
        return self._timestamps[key]

    async def _started(self) -> KafkaLog:
        if self._log is None:
            kafka_log = KafkaLog(self.settings, self.topic)
            await kafka_log.start()
            self._log = kafka_log
        return self._log

    async def _failed(self, exc: Exception) -> None:
        reason = faults.outage(exc) or faults.describe(exc)
        if reason != self._failing:  # once per kind of failure, not every interval
            log.warning("cannot sample the lag: %s", reason)
            self._failing = reason
        if isinstance(exc, TimeoutError) or faults.outage(exc) is not None:
            await self._close_consumer()

    def _recovered(self) -> None:
        if self._failing is not None:
            log.info("sampling the lag again")
            self._failing = None

    async def close(self) -> None:
        await self._close_consumer()
        await self._close_connection()

    async def _close_consumer(self) -> None:
        if self._log is not None:
            kafka_log, self._log = self._log, None
            await faults.close_quietly(kafka_log, "stop")

    async def _close_connection(self) -> None:
        if self._conn is not None:
            conn, self._conn = self._conn, None
            await faults.close_quietly(conn)
