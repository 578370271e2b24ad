#!/usr/bin/env bash
# `make run`: the projector's workers, the API replicas and the emulator, until Ctrl-C.
# Kafka and PostgreSQL are left running (`make down` stops them).
# A projector stops itself on an error it cannot handle (docs/positions.md › Failures); this script
# starts it again, with a growing pause, and says so.
set -euo pipefail
cd "$(dirname "$0")/.."
source ops/common.sh
LOGS="$RUN/logs"
mkdir -p "$LOGS"
API="http://${ORDERVIEW_API_HOST:-127.0.0.1}:${ORDERVIEW_API_PORT:-8081}"
pids=()
stop_all() {
    trap - EXIT INT TERM
    say "stopping the projector, the API and the emulator (Kafka and PostgreSQL keep running; make down stops them)"
    kill "${pids[@]}" 2>/dev/null || true
    wait 2>/dev/null || true
}
trap stop_all EXIT INT TERM

# Why a process stopped: the message of the last critical line of its JSON log.
last_words() {
    grep '"level":"critical"' "$1" 2>/dev/null | tail -1 | .venv/bin/python -c \
        'import json, sys; print(json.loads(sys.stdin.read() or "{}").get("msg", ""))' 2>/dev/null || true
}

# Run a command again whenever it stops: 1 s, then twice as long each time up to 30 s, and
# back to 1 s once it has run for a minute. SIGTERM stops the command and the loop.
keep_running() {
    local name=$1; shift
    local log="$LOGS/$name.log" delay=1 child=
    trap '[ -n "$child" ] && kill "$child" 2>/dev/null; wait; exit 0' TERM INT
    while true; do
        local started=$SECONDS
        "$@" >>"$log" 2>&1 & child=$!
        local status=0
        wait "$child" 2>/dev/null || status=$?
        child=
        (( SECONDS - started < 60 )) || delay=1
        if (( status > 128 )); then
            say "$name was killed (signal $(( status - 128 )))"
        else
            say "$name stopped (status $status): $(last_words "$log")"
        fi
        say "restarting $name in ${delay}s (log: $log)"
        sleep "$delay"
        delay=$(( delay * 2 > 30 ? 30 : delay * 2 ))
    done
}

# One projector worker per partition of the orders topic, each on a port of its own: each takes
# one partition and Python uses every core (two workers on three partitions would leave one
# with twice the other's work; bench/findings.md has the figures).
WORKERS=${ORDERVIEW_ORDERS_PARTITIONS:-3}
PROJECTOR_PORT=${ORDERVIEW_PROJECTOR_PORT:-6066}
for (( i = 1; i <= WORKERS; i++ )); do
    ORDERVIEW_PROJECTOR_PORT=$(( PROJECTOR_PORT + i - 1 )) \
        keep_running "projector-$i" .venv/bin/python -m projector & pids+=($!)
done
.venv/bin/python -m api >"$LOGS/api.log" 2>&1 & pids+=($!)
wait_for 60 curl -sf "$API/readyz" || die "the API did not turn ready; see $LOGS/api.log"

# The reference order first, then a gentle stream of realistic orders, good and bad: later
# versions of orders sent before (their histories) and now and then an erasure (a tombstone).
.venv/bin/python -m emulator --file examples/order.json --count 0 --rate 2 \
    --invalid-share 0.1 --repeat-share 0.3 --erase-share 0.02 >"$LOGS/emulator.log" 2>&1 & pids+=($!)

cat <<MSG

  orderview is running (logs in .run/logs/, Ctrl-C stops it)
    viewer            $API/
    reference order   $API/order/b563feb7b2b84b6test
    API               $API/ui/api.html   (document: $API/openapi.json)
    metrics           $API/metrics   and   http://127.0.0.1:$PROJECTOR_PORT/metrics (projector-1 of $WORKERS; the next on the ports after it)
    audit             .venv/bin/python -m projector.audit

MSG
wait -n "${pids[@]}"
say "a process exited; see .run/logs/"
