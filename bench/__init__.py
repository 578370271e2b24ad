"""Benchmarks of orderview against baselines measured in the same run.

    python -m bench            # full run, under 10 minutes
    python -m bench --quick    # about a minute, smaller counts

Every figure is paired with a baseline measured on the same machine in the same run and
reported as a ratio: the machine is small (2 cores shared by Kafka, PostgreSQL, the service
and the load generator) and noisy, so absolute numbers mean little on their own.
Results go to bench/RESULTS.md and bench/results.png; logs and scratch files to bench/out/.
"""
