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
bash ops/prometheus.sh install
bash ops/dockercheck/build.sh  # the real Compose and BuildKit's frontend, for tests/unit/test_compose.py, test_dockerfile.py
if [ $# -gt 0 ]; then
    .venv/bin/pytest "$@"
    exit
fi
# Everything, then in steps of their own: the API replicas on a streaming standby (the step copies
# the primary into a standby and starts it), a PostgreSQL failover (a primary and standbys of its
# own, the primary killed), and the Kafka cluster and TLS services (a cluster of their own); every
# step runs even if one before failed.
status=0
.venv/bin/pytest --ignore=tests/standby --ignore=tests/failover --ignore=tests/services || status=$?
.venv/bin/pytest tests/standby || status=$?
.venv/bin/pytest tests/failover || status=$?
.venv/bin/pytest tests/services --durations=5 || status=$?
exit "$status"
