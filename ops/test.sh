#!/usr/bin/env bash
# The test command (`make test`): installs what is missing, starts Kafka and PostgreSQL,
# runs pytest, and stops the services it started, also when tests fail.
set -euo pipefail
cd "$(dirname "$0")/.."
kafka_before=$(bash ops/kafka.sh status)
pg_before=$(bash ops/postgres.sh status)
cleanup() {
    [ "$kafka_before" = stopped ] && bash ops/kafka.sh stop
    [ "$pg_before" = stopped ] && bash ops/postgres.sh stop
    return 0
}
trap cleanup EXIT
bash ops/up.sh
bash ops/chromium.sh
bash ops/prometheus.sh install
.venv/bin/pytest "$@"
