#!/usr/bin/env bash
# `make run`: the projector, the API replicas and the emulator, until Ctrl-C.
# Kafka and PostgreSQL are left running (`make down` stops them).
set -euo pipefail
cd "$(dirname "$0")/.."
source ops/common.sh
LOGS="$RUN/logs"
mkdir -p "$LOGS"
API="http://${ORDERVIEW_API_HOST:-127.0.0.1}:${ORDERVIEW_API_PORT:-8081}"
pids=()
stop_all() {
    trap - EXIT INT TERM
    say "stopping"
    kill "${pids[@]}" 2>/dev/null || true
    wait 2>/dev/null || true
}
trap stop_all EXIT INT TERM

.venv/bin/python -m projector >"$LOGS/projector.log" 2>&1 & pids+=($!)
.venv/bin/python -m api >"$LOGS/api.log" 2>&1 & pids+=($!)
wait_for 60 curl -sf "$API/readyz" || die "the API did not turn ready; see $LOGS/api.log"

# The reference order first, then a gentle stream of realistic orders, good and bad.
.venv/bin/python -m emulator --file examples/order.json --count 0 --rate 2 \
    --invalid-share 0.1 --repeat-share 0.1 >"$LOGS/emulator.log" 2>&1 & pids+=($!)

cat <<MSG

  orderview is running (logs in .run/logs/, Ctrl-C stops it)
    viewer            $API/
    reference order   $API/order/b563feb7b2b84b6test
    API               $API/ui/api.html   (document: $API/openapi.json)
    metrics           $API/metrics   and   http://127.0.0.1:${ORDERVIEW_PROJECTOR_PORT:-6066}/metrics (projector)

MSG
wait -n "${pids[@]}"
say "a process exited; see .run/logs/"
