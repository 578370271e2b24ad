#!/usr/bin/env bash
# PostgreSQL on loopback: the server the settings reach if there is one, else a
# project-local cluster in .run/pg from Debian's binaries (installed if missing).
#   ops/postgres.sh start | stop | status | where
# The local cluster asks every connection for a password (scram), sockets included, and keeps
# its socket in a directory only its owner can enter.
set -euo pipefail
source "$(dirname "$0")/common.sh"
export PGPASSWORD="$PG_ADMIN_PASSWORD"

# Root's clusters belong to `postgres`, which must be able to reach them: under a directory it
# cannot enter (a clone in root's 0700 home), the cluster lives in postgres's home instead.
cluster_dir() {
    if [ "$(id -u)" = 0 ] && id postgres >/dev/null 2>&1 && ! runuser -u postgres -- test -x "$RUN"; then
        local home; home=$(getent passwd postgres | cut -d: -f6)
        echo "$home/orderview/$(printf '%s' "$RUN" | sha1sum | cut -c1-12)"
    else
        echo "$RUN/pg"
    fi
}
P=$(cluster_dir)
DATA="$P/data"
SOCKETS="$P/socket"

answers() {
    PGCONNECT_TIMEOUT=3 psql -X -q -h "$PG_HOST" -p "$PG_PORT" -U "$PG_ADMIN_USER" -d postgres -c 'select 1' >/dev/null 2>&1
}

listening() { pg_isready -q -h "$PG_HOST" -p "$PG_PORT" >/dev/null 2>&1; }

bindir() {
    local dir
    dir=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1)
    if [ -z "$dir" ]; then
        [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null \
            || die "PostgreSQL is not installed: install it (Debian: apt-get install postgresql) or point ORDERVIEW_PG_* at a server."
        say "installing PostgreSQL from Debian's packages"
        apt-get update -qq >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null
        # The package may start its own cluster on our port; ours is the project-local one.
        command -v pg_ctlcluster >/dev/null && for c in $(pg_lsclusters -h 2>/dev/null | awk '$4=="online"{print $1"/"$2}'); do
            pg_ctlcluster "${c%/*}" "${c#*/}" stop || true
        done
        dir=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)
    fi
    echo "$dir"
}

# Root may not run postgres itself: the cluster belongs to the `postgres` user then.
as_owner() {
    if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}

own_dir() {
    mkdir -p "$1"
    chmod 700 "$1"
    if [ "$(id -u)" = 0 ]; then chown postgres: "$1"; fi
}

init_cluster() {
    local bin=$1
    [ "$P" = "$RUN/pg" ] || say "user postgres cannot enter $RUN: the cluster lives in $P (ops/postgres.sh where)"
    say "creating a PostgreSQL cluster in $DATA"
    own_dir "$P"
    local pwfile="$P/.pw"
    (umask 077 && printf '%s\n' "$PG_ADMIN_PASSWORD" >"$pwfile")
    if [ "$(id -u)" = 0 ]; then chown postgres: "$pwfile"; fi
    as_owner "$bin/initdb" -D "$DATA" -U "$PG_ADMIN_USER" --pwfile="$pwfile" \
        --auth-local=scram-sha-256 --auth-host=scram-sha-256 -E UTF8 --locale=C.UTF-8 >"$P/initdb.log" 2>&1 \
        || die "initdb failed; see $P/initdb.log"
    rm -f "$pwfile"
}

# Every start: our settings in orderview.conf (included last, so they win), and no `trust`
# left in pg_hba.conf by a cluster made before local connections needed a password.
configure() {
    own_dir "$P"
    own_dir "$SOCKETS"
    cat >"$DATA/orderview.conf" <<CONF
listen_addresses = '$PG_HOST'
port = $PG_PORT
unix_socket_directories = '$SOCKETS'
unix_socket_permissions = 0700
max_connections = 200
shared_buffers = 256MB
logging_collector = off
CONF
    [ "${ORDERVIEW_PG_SERVER_SSL:-off}" = on ] && configure_tls
    grep -qx "include 'orderview.conf'" "$DATA/postgresql.conf" || echo "include 'orderview.conf'" >>"$DATA/postgresql.conf"
    sed -i -E '/^[[:space:]]*#/!s/[[:space:]]trust[[:space:]]*$/ scram-sha-256/' "$DATA/pg_hba.conf"
    if [ "$(id -u)" = 0 ]; then chown postgres: "$DATA/orderview.conf" "$DATA/pg_hba.conf"; fi
}

# ORDERVIEW_PG_SERVER_SSL=on: TLS with a certificate from the run folder's CA (ops/tls.sh), for
# clients that verify it (ORDERVIEW_PG_SSLMODE=verify-full, ORDERVIEW_PG_SSLROOTCERT=.run/tls/ca.pem);
# the CA also checks client certificates. The files are copied where the cluster's owner reads them.
configure_tls() {
    bash "$ROOT/ops/tls.sh" make
    local tls; tls=$(bash "$ROOT/ops/tls.sh" dir)
    own_dir "$P/tls"
    cp "$tls/server.pem" "$tls/server.key" "$tls/ca.pem" "$P/tls/"
    chmod 600 "$P/tls/server.key"
    if [ "$(id -u)" = 0 ]; then chown postgres: "$P/tls/"*; fi
    cat >>"$DATA/orderview.conf" <<CONF
ssl = on
ssl_cert_file = '$P/tls/server.pem'
ssl_key_file = '$P/tls/server.key'
ssl_ca_file = '$P/tls/ca.pem'
CONF
}

start() {
    if answers; then say "PostgreSQL already answers at $PG_HOST:$PG_PORT; using it"; return; fi
    listening && die "a server listens on $PG_HOST:$PG_PORT but refuses user $PG_ADMIN_USER; set ORDERVIEW_PG_ADMIN_USER/PASSWORD or another ORDERVIEW_PG_PORT."
    local bin; bin=$(bindir)
    [ -f "$DATA/PG_VERSION" ] || init_cluster "$bin"
    configure
    say "starting PostgreSQL on $PG_HOST:$PG_PORT"
    as_owner "$bin/pg_ctl" -D "$DATA" -l "$P/server.log" -w -t 60 start >/dev/null \
        || { tail -20 "$P/server.log" >&2; die "PostgreSQL did not start; see $P/server.log"; }
    wait_for 30 answers || die "PostgreSQL started but does not accept $PG_ADMIN_USER; see $P/server.log"
    say "PostgreSQL is up"
}

stop() {
    [ -f "$DATA/postmaster.pid" ] || return 0
    say "stopping PostgreSQL"
    as_owner "$(bindir)/pg_ctl" -D "$DATA" -m fast -w stop >/dev/null || true
}

case "${1:-}" in
    start) start ;;
    stop) stop ;;
    status) [ -f "$DATA/postmaster.pid" ] && echo running || echo stopped ;;
    where) echo "$P" ;;
    *) die "usage: ops/postgres.sh start|stop|status|where" ;;
esac
