"""How big each benchmark is: the full run and the quick one."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Scale:
    name: str
    read_orders: int  # orders in the database for the read benchmark
    wrk_seconds: int  # one measured wrk run
    wrk_warm_seconds: int  # an unmeasured run before it
    wrk_threads: int
    wrk_connections: int
    ingest_orders: int  # orders produced for the ingest benchmark
    latency_seconds: float  # fixed-rate produce→visible run
    burst_orders: int  # full-speed produce→visible run
    boot_orders: int  # orders in the database at boot
    boot_cache_entries: int  # entries warmed at boot
    pss_cache_entries: int  # entries per replica for the memory of the default two replicas
    quix_commit_interval_s: float  # Quix Streams' checkpoint (sink flush) interval
    mixed_orders: int  # orders the projector ingests while cached reads are measured
    mixed_seconds: int  # one measured wrk run of the mixed-load comparison
    redrive_letters: int  # dead letters redriven, twice
    history_orders: int  # orders given five versions each for the history section


FULL = Scale(
    name="full",
    read_orders=100_000,
    wrk_seconds=10,
    wrk_warm_seconds=2,
    wrk_threads=1,
    wrk_connections=32,
    ingest_orders=200_000,
    latency_seconds=15.0,
    burst_orders=20_000,
    boot_orders=1_000_000,
    boot_cache_entries=100_000,
    pss_cache_entries=20_000,
    quix_commit_interval_s=1.0,
    mixed_orders=150_000,
    mixed_seconds=8,
    redrive_letters=10_000,
    history_orders=16_000,
)

QUICK = Scale(
    name="quick",
    read_orders=10_000,
    wrk_seconds=3,
    wrk_warm_seconds=1,
    wrk_threads=1,
    wrk_connections=32,
    ingest_orders=20_000,
    latency_seconds=5.0,
    burst_orders=5_000,
    boot_orders=100_000,
    boot_cache_entries=20_000,
    pss_cache_entries=20_000,
    quix_commit_interval_s=1.0,
    mixed_orders=40_000,
    mixed_seconds=3,
    redrive_letters=1_000,
    history_orders=2_000,
)
