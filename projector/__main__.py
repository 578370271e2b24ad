"""`python -m projector`: run a projector worker (extra arguments go to Faust's worker command)."""

import asyncio
import sys

import uvloop

from orderview import jsonlog
from orderview.settings import get_settings

# Faust's worker takes these names for Python's levels.
FAUST_LEVELS = {"CRITICAL": "crit", "ERROR": "error", "WARNING": "warn", "INFO": "info", "DEBUG": "debug"}


def main() -> None:
    try:
        settings = get_settings()
    except ValueError as exc:  # a bad value, or default passwords off loopback: one sentence
        sys.exit(f"[orderview] {exc}")
    # uvloop: the projector's throughput depends on it (bench/findings.md). Installed before
    # faust is imported: faust reads its own --loop option from sys.argv at import, which was too
    # early for the one passed below, so the worker had been running on the stock loop.
    uvloop.install()
    from projector.adapters.faust import create_app
    from projector.batch import collect_less_often
    from projector.startup import wait_for_broker

    args = sys.argv[1:]
    if not args:
        jsonlog.setup(settings.log_level)
        asyncio.run(wait_for_broker(settings))
        args = [
            "--quiet",
            "worker",
            "--loglevel",
            FAUST_LEVELS.get(settings.log_level.upper(), settings.log_level.lower()),
        ]
    sys.argv = [sys.argv[0], *args]
    collect_less_often()
    create_app(settings).main()


if __name__ == "__main__":
    main()
