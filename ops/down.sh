#!/usr/bin/env bash
# Stops exactly what ops/up.sh (and ops/prometheus.sh start) started (a server that was already
# there is left alone).
set -euo pipefail
cd "$(dirname "$0")/.."
bash ops/prometheus.sh stop
bash ops/kafka.sh stop
bash ops/postgres.sh standby stop-all  # standbys started on request (ops/postgres.sh standby start)
bash ops/postgres.sh stop
