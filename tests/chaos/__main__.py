"""python -m tests.chaos --seed N --duration SECONDS: one chaos run against the services of
`make up`; prints what was sent, the faults, the longest stall and the audit; exit 1 on any
problem. `make chaos` runs it."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
import time

from orderview import jsonlog
from orderview.settings import get_settings
from tests.chaos.run import run


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m tests.chaos", description=__doc__)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--duration", type=float, default=300.0, help="seconds of traffic and faults")
    parser.add_argument("--keep", action="store_true", help="keep the run's database and topics")
    args = parser.parse_args()
    jsonlog.setup("ERROR")
    for noisy in ("aiokafka", "asyncio"):  # our producers, while the broker is being restarted
        logging.getLogger(noisy).setLevel(logging.CRITICAL)
    started = time.monotonic()

    def say(text: str) -> None:
        print(f"[chaos {time.monotonic() - started:6.1f}s] {text}", file=sys.stderr, flush=True)

    report = asyncio.run(run(get_settings(), args.seed, args.duration, keep=args.keep, say=say))
    print(report.text())
    sys.exit(1 if report.problems else 0)


if __name__ == "__main__":
    main()
