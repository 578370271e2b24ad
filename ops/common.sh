# Shared by the ops scripts: paths and settings read the same way as orderview/settings.py.
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
RUN="${ORDERVIEW_RUN_DIR:-$ROOT/.run}"
VENV="$ROOT/.venv"
# A comma-separated list of host:port; the first is where the ops scripts reach Kafka.
KAFKA_BOOTSTRAP_LIST=${ORDERVIEW_KAFKA_BOOTSTRAP:-127.0.0.1:9092}
KAFKA_BOOTSTRAP=${KAFKA_BOOTSTRAP_LIST%%,*}
KAFKA_HOST=${KAFKA_BOOTSTRAP%:*}
KAFKA_PORT=${KAFKA_BOOTSTRAP##*:}
# Comma-separated hosts and ports, as libpq takes them; the ops scripts run and reach the first.
PG_HOST_LIST=${ORDERVIEW_PG_HOST:-127.0.0.1}
PG_PORT_LIST=${ORDERVIEW_PG_PORT:-5432}
PG_HOST=${PG_HOST_LIST%%,*}
PG_PORT=${PG_PORT_LIST%%,*}
PG_ADMIN_USER=${ORDERVIEW_PG_ADMIN_USER:-postgres}
PG_ADMIN_PASSWORD=${ORDERVIEW_PG_ADMIN_PASSWORD:-postgres}
mkdir -p "$RUN"

say() { printf '[orderview] %s\n' "$*" >&2; }
die() { printf '[orderview] %s\n' "$*" >&2; exit 1; }

# Wait until a command succeeds, up to $1 seconds.
wait_for() {
    local seconds=$1; shift
    local deadline=$((SECONDS + seconds))
    until "$@" >/dev/null 2>&1; do
        [ "$SECONDS" -lt "$deadline" ] || return 1
        sleep 0.5
    done
}

pid_alive() { [ -f "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }
