#!/usr/bin/env bash
# Prometheus on loopback, with the project's scrape config and rules (ops/prometheus/).
#   ops/prometheus.sh install   Debian's prometheus and promtool, when missing (make test runs this)
#   ops/prometheus.sh start     scrape what `make run` starts (the API, the projector on its
#                               ORDERVIEW_PROJECTOR_PORT), serve on ORDERVIEW_PROMETHEUS_PORT
#   ops/prometheus.sh stop | status
# Its data and copy of the configuration live in $ORDERVIEW_RUN_DIR/prometheus.
set -euo pipefail
source "$(dirname "$0")/common.sh"
PROMETHEUS_PORT=${ORDERVIEW_PROMETHEUS_PORT:-9090}
HERE="$RUN/prometheus"
PIDFILE="$HERE/prometheus.pid"

install() {
    command -v prometheus >/dev/null && command -v promtool >/dev/null && return 0
    [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null \
        || die "Prometheus is needed for the rule and monitoring tests: install it (Debian: apt-get install prometheus) so that prometheus and promtool are on the PATH."
    say "installing Prometheus from Debian's packages (for the rule and monitoring tests)"
    apt-get update -qq >/dev/null
    # Without recommends: no node exporter. The package's own service is not started without an
    # init system; ours runs on loopback with the project's configuration.
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus >/dev/null
}

# The shipped configuration, with targets of this machine: the API and `make run`'s projector workers.
configure() {
    mkdir -p "$HERE/etc/targets" "$HERE/data"
    cp "$ROOT/ops/prometheus/prometheus.yml" "$ROOT/ops/prometheus/rules.yml" "$HERE/etc/"
    printf -- '- targets: ["%s:%s"]\n' "${ORDERVIEW_API_HOST:-127.0.0.1}" "${ORDERVIEW_API_PORT:-8081}" \
        >"$HERE/etc/targets/api.yml"
    # `make run`'s workers: one per partition, on consecutive ports (ops/run.sh).
    local host=${ORDERVIEW_PROJECTOR_HOST:-127.0.0.1} port=${ORDERVIEW_PROJECTOR_PORT:-6066} targets=() i
    for (( i = 0; i < ${ORDERVIEW_ORDERS_PARTITIONS:-3}; i++ )); do targets+=("\"$host:$(( port + i ))\""); done
    local IFS=,
    printf -- '- targets: [%s]\n' "${targets[*]}" >"$HERE/etc/targets/projector.yml"
}

ready() { curl -fsS "http://127.0.0.1:$PROMETHEUS_PORT/-/ready" >/dev/null 2>&1; }

start() {
    if pid_alive "$PIDFILE"; then say "Prometheus already runs on 127.0.0.1:$PROMETHEUS_PORT"; return 0; fi
    install
    configure
    say "starting Prometheus on 127.0.0.1:$PROMETHEUS_PORT (log: $HERE/prometheus.log)"
    nohup prometheus --config.file="$HERE/etc/prometheus.yml" --storage.tsdb.path="$HERE/data" \
        --web.listen-address="127.0.0.1:$PROMETHEUS_PORT" >"$HERE/prometheus.log" 2>&1 &
    echo $! >"$PIDFILE"
    wait_for 30 ready || die "Prometheus did not start; see $HERE/prometheus.log"
    say "Prometheus: http://127.0.0.1:$PROMETHEUS_PORT/ (Alerts in its menu)"
}

stop() {
    pid_alive "$PIDFILE" || { rm -f "$PIDFILE"; return 0; }
    kill "$(cat "$PIDFILE")"
    wait_for 20 bash -c "! kill -0 $(cat "$PIDFILE") 2>/dev/null" || kill -9 "$(cat "$PIDFILE")" 2>/dev/null || true
    rm -f "$PIDFILE"
}

case "${1:-install}" in
    install) install ;;
    start) start ;;
    stop) stop ;;
    status) if pid_alive "$PIDFILE"; then echo running; else echo stopped; fi ;;
    *) die "usage: ops/prometheus.sh install|start|stop|status" ;;
esac
