"""Chaos on a Kafka cluster: `make chaos BROKERS=3`.

The run starts a cluster of its own (tests/clusters.py, ops/kafka.sh), and its broker faults are
a cluster's: the leader of a partition killed -9, then the active controller killed -9, each
restarted a few seconds later, again and again. The run then reports how long after the last
restart every partition had caught up with what the broker acknowledged (target: 15 s).
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable
from dataclasses import replace

from orderview.settings import Settings
from tests.clusters import KafkaCluster

CATCH_UP_TARGET_S = 15.0


class ClusterFaults:
    kinds = ("kill_partition_leader", "kill_controller")

    def __init__(self, cluster: KafkaCluster) -> None:
        self.cluster = cluster
        self.replicas = min(3, cluster.nodes)

    def settings(self, base: Settings) -> Settings:
        return replace(base, kafka_bootstrap=self.cluster.bootstrap)

    def schedule(self, n: int) -> list[str]:
        """Leader, controller, leader, ...: at least one of each."""
        return [self.kinds[i % 2] for i in range(max(2, n))]

    async def inject(self, kind: str, s: Settings, rng: random.Random, say: Callable[[str], None]) -> str:
        """Kill -9 the node the fault names, restart it 1-5 s later; say which node it was."""
        if kind == "kill_partition_leader":
            partition = rng.randrange(s.orders_partitions)
            node = await self.cluster.leader(s, s.orders_topic, partition)
            what = f"node {node}, leader of partition {partition}"
        else:
            node = await asyncio.to_thread(self.cluster.controller)
            what = f"node {node}, the active controller"
        say(f"kill -9 {what}")
        await asyncio.to_thread(self.cluster.kill, node)
        await asyncio.sleep(rng.uniform(1, 5))
        await asyncio.to_thread(self.cluster.start_node, node)
        say(f"node {node} restarted")
        return what


def caught_up_line(seconds: float | None) -> str:
    if seconds is None:
        return "  caught up after the last fault: never, within the run"
    mark = "✓" if seconds <= CATCH_UP_TARGET_S else "✗"
    return f"  caught up {seconds:.1f} s after the last fault ended (target {CATCH_UP_TARGET_S:.0f} s {mark})"
