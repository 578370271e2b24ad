"""python -m tests.chaos --seed N --duration SECONDS [--brokers N] [--failover]: one chaos run
against the services of `make up` (with --brokers 2 or more, on a Kafka cluster of its own, whose
partition leaders and controller it kills; with --failover, on a PostgreSQL primary and standby of
its own, failed over where the run would restart PostgreSQL); prints what was sent, the faults,
the longest stall and the audit; exit 1 on any problem. `make chaos` runs it."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
import time
from collections.abc import Callable

from orderview import jsonlog
from orderview.settings import get_settings
from tests.chaos.cluster import ClusterFaults
from tests.chaos.run import Report, run
from tests.clusters import KafkaCluster
from tests.pg_failover import FailoverCluster


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m tests.chaos", description=__doc__)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--duration", type=float, default=300.0, help="seconds of traffic and faults")
    parser.add_argument("--keep", action="store_true", help="keep the run's database and topics")
    parser.add_argument(
        "--brokers",
        type=int,
        default=1,
        help="2 or more: a Kafka cluster of its own, with a cluster's faults",
    )
    parser.add_argument(
        "--failover",
        action="store_true",
        help="on a PostgreSQL primary and standby of its own, failed over instead of restarted",
    )
    args = parser.parse_args()
    jsonlog.setup("ERROR")
    for noisy in ("aiokafka", "asyncio"):  # our producers, while the broker is being restarted
        logging.getLogger(noisy).setLevel(logging.CRITICAL)
    started = time.monotonic()

    def say(text: str) -> None:
        print(f"[chaos {time.monotonic() - started:6.1f}s] {text}", file=sys.stderr, flush=True)

    if args.brokers > 1:
        say(f"starting a Kafka cluster of {args.brokers} nodes")
        cluster = KafkaCluster(args.brokers).start()
        try:
            faults = ClusterFaults(cluster)
            report = asyncio.run(
                run(get_settings(), args.seed, args.duration, keep=args.keep, say=say, cluster=faults)
            )
        finally:
            cluster.stop()
    elif args.failover:
        report = asyncio.run(_failing_over(args.seed, args.duration, args.keep, say))
    else:
        report = asyncio.run(run(get_settings(), args.seed, args.duration, keep=args.keep, say=say))
    print(report.text())
    sys.exit(1 if report.problems else 0)


async def _failing_over(seed: int, duration: float, keep: bool, say: Callable[[str], None]) -> Report:
    say("starting a PostgreSQL primary and a standby of its own")
    failover = await FailoverCluster(get_settings(), cascade=False).start()
    try:
        return await run(get_settings(), seed, duration, keep=keep, say=say, failover=failover)
    finally:
        await failover.stop()


if __name__ == "__main__":
    main()
