#!/usr/bin/env bash
# The test command (`make test`): installs what is missing, starts Kafka and PostgreSQL,
# runs pytest, and stops the services it started, also when tests fail.
# Two steps: the tests on the shared Kafka and PostgreSQL, then tests/services, whose tests start
# services of their own (a three-node Kafka cluster with a SASL_SSL listener, a PostgreSQL with
# TLS). With arguments, pytest runs just those.
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
if [ $# -gt 0 ]; then
    .venv/bin/pytest "$@"
    exit
fi
status=0
.venv/bin/pytest --ignore=tests/services || status=$?
.venv/bin/pytest tests/services --durations=5 || status=$?
exit "$status"
