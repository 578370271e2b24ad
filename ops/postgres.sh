#!/usr/bin/env bash
# PostgreSQL on loopback: the server the settings reach if there is one, else a
# project-local cluster in .run/pg from Debian's binaries (installed if missing).
#   ops/postgres.sh start | stop | status | where
#   ops/postgres.sh standby start | stop | status | promote | destroy | stop-all | where   (a streaming standby)
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
# Ingest writes WAL fast: at the default 1GB, checkpoints came 10 s apart during the bench's
# bursts ("checkpoints are occurring too frequently"), each a burst of writes and fsyncs beside
# the projector's commits, and every page's first change after one is logged whole again.
max_wal_size = 4GB
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

# --- Streaming standbys (hot, read-only), each on its own port, for API replicas that read from
# one (ORDERVIEW_PG_READ_HOST/_PORT). `standby start` copies the running primary with
# pg_basebackup (streaming its WAL meanwhile), then starts the copy as a standby that follows the
# primary. The primary keeps wal_keep_size of WAL, so a standby stopped for a while catches up
# when started again; no replication slot is made, so a forgotten standby never fills the disk.
# The first of the read hosts and ports (a port of 0: unset).
STANDBY_HOST=${ORDERVIEW_PG_READ_HOST:-127.0.0.1}
STANDBY_HOST=${STANDBY_HOST%%,*}
STANDBY_PORT=${ORDERVIEW_PG_READ_PORT:-0}
STANDBY_PORT=${STANDBY_PORT%%,*}
[ "$STANDBY_PORT" = 0 ] && STANDBY_PORT=$((PG_PORT + 1))
STANDBY_WAL_KEEP=${ORDERVIEW_PG_STANDBY_WAL_KEEP:-1GB}
STANDBY="$P/standby-$STANDBY_PORT"
SDATA="$STANDBY/data"

standby_answers() {
    PGCONNECT_TIMEOUT=3 psql -X -q -h "$STANDBY_HOST" -p "$STANDBY_PORT" -U "$PG_ADMIN_USER" -d postgres \
        -tAc 'select pg_is_in_recovery()' 2>/dev/null | grep -qx t
}

admin_sql() { psql -X -q -h "$PG_HOST" -p "$PG_PORT" -U "$PG_ADMIN_USER" -d postgres -tAc "$1"; }

standby_base_backup() {
    local bin=$1
    if [ "$(admin_sql 'show wal_keep_size')" = 0 ]; then
        admin_sql "alter system set wal_keep_size = '$STANDBY_WAL_KEEP'" >/dev/null
        admin_sql 'select pg_reload_conf()' >/dev/null
    fi
    say "copying the primary at $PG_HOST:$PG_PORT into $SDATA (pg_basebackup)"
    own_dir "$STANDBY"
    # -R: standby.signal, and primary_conninfo (with the password) in postgresql.auto.conf.
    as_owner env PGPASSWORD="$PG_ADMIN_PASSWORD" "$bin/pg_basebackup" -h "$PG_HOST" -p "$PG_PORT" \
        -U "$PG_ADMIN_USER" -D "$SDATA" -R -X stream -c fast >"$STANDBY/basebackup.log" 2>&1 \
        || { rm -rf "$SDATA"; die "pg_basebackup failed; see $STANDBY/basebackup.log"; }
    # Included after the primary's orderview.conf (copied along), so the standby's own port wins.
    echo "include 'orderview-standby.conf'" >>"$SDATA/postgresql.conf"
}

standby_configure() {
    own_dir "$STANDBY/socket"
    cat >"$SDATA/orderview-standby.conf" <<CONF
listen_addresses = '$STANDBY_HOST'
port = $STANDBY_PORT
unix_socket_directories = '$STANDBY/socket'
hot_standby = on
# The primary keeps the rows a running standby query still reads: no query is cancelled for them.
hot_standby_feedback = on
CONF
    if [ "$(id -u)" = 0 ]; then chown postgres: "$SDATA/orderview-standby.conf"; fi
}

standby_start() {
    if standby_answers; then say "a standby already answers at $STANDBY_HOST:$STANDBY_PORT"; return; fi
    pg_isready -q -h "$STANDBY_HOST" -p "$STANDBY_PORT" >/dev/null 2>&1 \
        && die "a server that is not our standby listens on $STANDBY_HOST:$STANDBY_PORT; set another ORDERVIEW_PG_READ_PORT."
    answers || die "the primary does not answer at $PG_HOST:$PG_PORT; start it first (ops/postgres.sh start)."
    local bin; bin=$(bindir)
    [ -f "$SDATA/PG_VERSION" ] || standby_base_backup "$bin"
    standby_configure
    say "starting a standby of $PG_HOST:$PG_PORT on $STANDBY_HOST:$STANDBY_PORT"
    as_owner "$bin/pg_ctl" -D "$SDATA" -l "$STANDBY/server.log" -w -t 60 start >/dev/null \
        || { tail -20 "$STANDBY/server.log" >&2; die "the standby did not start; see $STANDBY/server.log"; }
    wait_for 30 standby_answers || die "the standby started but does not answer as a standby; see $STANDBY/server.log"
    say "standby is up (replaying the primary's WAL)"
}

standby_stop() {
    [ -f "$SDATA/postmaster.pid" ] || return 0
    say "stopping the standby on port $STANDBY_PORT"
    as_owner "$(bindir)/pg_ctl" -D "$SDATA" -m fast -w stop >/dev/null || true
}

# Make it the primary (a failover): it replays the WAL it holds, then takes writes on a new timeline.
standby_promote() {
    [ -f "$SDATA/postmaster.pid" ] || die "no standby runs on port $STANDBY_PORT"
    say "promoting the standby on port $STANDBY_PORT"
    as_owner "$(bindir)/pg_ctl" -D "$SDATA" -w -t 60 promote >/dev/null \
        || die "the standby was not promoted; see $STANDBY/server.log"
}

# Stop it and delete its copy (the next `standby start` copies the primary afresh).
standby_destroy() {
    standby_stop
    rm -rf "$STANDBY"
}

# Every standby of this primary, stopped (make down).
standby_stop_all() {
    local dir
    for dir in "$P"/standby-*/data; do
        [ -f "$dir/postmaster.pid" ] || continue
        say "stopping the standby in ${dir%/data}"
        as_owner "$(bindir)/pg_ctl" -D "$dir" -m fast -w stop >/dev/null || true
    done
}

standby() {
    case "${1:-}" in
        start) standby_start ;;
        stop) standby_stop ;;
        status) [ -f "$SDATA/postmaster.pid" ] && echo running || echo stopped ;;
        promote) standby_promote ;;
        destroy) standby_destroy ;;
        stop-all) standby_stop_all ;;
        where) echo "$STANDBY" ;;
        *) die "usage: ops/postgres.sh standby start|stop|status|promote|destroy|stop-all|where (port: ORDERVIEW_PG_READ_PORT)" ;;
    esac
}

case "${1:-}" in
    start) start ;;
    stop) stop ;;
    status) [ -f "$DATA/postmaster.pid" ] && echo running || echo stopped ;;
    where) echo "$P" ;;
    standby) standby "${2:-}" ;;
    *) die "usage: ops/postgres.sh start|stop|status|where|standby start|stop|status|promote|destroy|stop-all|where" ;;
esac
