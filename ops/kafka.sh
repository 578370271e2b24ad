#!/usr/bin/env bash
# Apache Kafka in KRaft combined mode (each node a broker and a controller), from Maven Central's
# jars, on loopback: one node, or a cluster of ORDERVIEW_KAFKA_NODES.
#   ops/kafka.sh start | stop | status          every node
#   ops/kafka.sh start-node I | stop-node I | kill-node I   one node (0-based), for failure tests
#   ops/kafka.sh bootstrap                      every node's client address, comma-separated
#   ops/kafka.sh controller                     the index of the node leading the quorum now
# Node I listens for clients on the I-th address of ORDERVIEW_KAFKA_BOOTSTRAP (past the list's
# end: the last one's port + 2 for each node more), its controller on that port + 1, and, when
# ORDERVIEW_KAFKA_SASL_SSL_PORT is set, with SASL_SSL on that port + I (a certificate from
# ops/tls.sh, SCRAM-SHA-256/512 and PLAIN users ORDERVIEW_KAFKA_SASL_USERNAME/_PASSWORD).
set -euo pipefail
source "$(dirname "$0")/common.sh"
K="$RUN/kafka"
mkdir -p "$K"

IFS=, read -r -a LISTED <<<"$KAFKA_BOOTSTRAP_LIST"
# Unless told, as many nodes as the run folder was made for (so `make down` stops them all), else
# one per bootstrap address.
NODES=${ORDERVIEW_KAFKA_NODES:-$(cat "$K/nodes" 2>/dev/null || echo "${#LISTED[@]}")}
[[ "$NODES" =~ ^[1-9][0-9]*$ ]] || die "ORDERVIEW_KAFKA_NODES must be a positive integer, got '$NODES'."
SASL_SSL_PORT=${ORDERVIEW_KAFKA_SASL_SSL_PORT:-}
SASL_USER=${ORDERVIEW_KAFKA_SASL_USERNAME:-orderview}
SASL_PASSWORD=${ORDERVIEW_KAFKA_SASL_PASSWORD:-orderview}
HEAP=${ORDERVIEW_KAFKA_HEAP:-$([ "$NODES" = 1 ] && echo 512m || echo 384m)}

# Node 0 keeps the folder a single node always had; the others have their own beside it.
node_dir() { if [ "$1" = 0 ]; then echo "$K"; else echo "$K/node-$1"; fi; }
node_host() {
    local i=$1
    if [ "$i" -lt "${#LISTED[@]}" ]; then echo "${LISTED[$i]%:*}"; else echo "${LISTED[-1]%:*}"; fi
}
node_port() {
    local i=$1 last=$((${#LISTED[@]} - 1))
    if [ "$i" -le "$last" ]; then echo "${LISTED[$i]##*:}"; else echo $((${LISTED[$last]##*:} + 2 * (i - last))); fi
}
node_address() { echo "$(node_host "$1"):$(node_port "$1")"; }
pid_file() { echo "$(node_dir "$1")/kafka.pid"; }
nodes() { local i; for ((i = 0; i < NODES; i++)); do echo "$i"; done; }

bootstrap_list() {
    local i out=()
    for i in $(nodes); do out+=("$(node_address "$i")"); done
    (IFS=,; echo "${out[*]}")
}

classpath() {
    command -v java >/dev/null || die "Java 17+ is required to run Kafka: install it (Debian: apt-get install openjdk-17-jre-headless)."
    command -v mvn >/dev/null || die "Maven is required to fetch Kafka's jars: install it (Debian: apt-get install maven)."
    if [ ! -s "$K/classpath.txt" ] || [ "$ROOT/ops/kafka/pom.xml" -nt "$K/classpath.txt" ]; then
        say "resolving Kafka jars with Maven (first time: a minute or two)"
        mvn -q -B -f "$ROOT/ops/kafka/pom.xml" dependency:build-classpath \
            -Dmdep.outputFile="$K/classpath.txt" >"$K/maven.log" 2>&1 \
            || die "Maven could not resolve Kafka's jars; see $K/maven.log"
    fi
    cat "$K/classpath.txt"
}

replicas() { if [ "$NODES" -ge 3 ]; then echo 3; else echo "$NODES"; fi; }
min_isr() { if [ "$NODES" -ge 3 ]; then echo 2; else echo 1; fi; }

write_config() {
    local i=$1 dir; dir=$(node_dir "$i")
    local host port voters="" j
    host=$(node_host "$i"); port=$(node_port "$i")
    for j in $(nodes); do voters="$voters${voters:+,}$((j + 1))@127.0.0.1:$(($(node_port "$j") + 1))"; done
    local listeners="PLAINTEXT://$host:$port,CONTROLLER://127.0.0.1:$((port + 1))"
    local advertised="PLAINTEXT://$host:$port"
    local protocols="PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT"
    if [ -n "$SASL_SSL_PORT" ]; then
        listeners="$listeners,SASL_SSL://$host:$((SASL_SSL_PORT + i))"
        advertised="$advertised,SASL_SSL://$host:$((SASL_SSL_PORT + i))"
        protocols="$protocols,SASL_SSL:SASL_SSL"
    fi
    mkdir -p "$dir"
    cat >"$dir/server.properties" <<PROPS
process.roles=broker,controller
node.id=$((i + 1))
controller.quorum.voters=$voters
listeners=$listeners
advertised.listeners=$advertised
controller.listener.names=CONTROLLER
listener.security.protocol.map=$protocols
inter.broker.listener.name=PLAINTEXT
log.dirs=$dir/data
num.partitions=3
# Topics are created by the bootstrap, with their settings; a typo must not create one.
auto.create.topics.enable=false
# The group's offsets and the transactions' state are replicated as the orders are (min(3, nodes)).
offsets.topic.replication.factor=$(replicas)
offsets.topic.num.partitions=3
transaction.state.log.replication.factor=$(replicas)
transaction.state.log.min.isr=$(min_isr)
share.coordinator.state.topic.replication.factor=$(replicas)
share.coordinator.state.topic.min.isr=$(min_isr)
# Tests start many consumer groups: no waiting for more members.
group.initial.rebalance.delay.ms=0
# Kafka 4 batches offset commits for 5 ms by default; a dev broker answers at once.
group.coordinator.append.linger.ms=0
log.retention.hours=-1
# The log cleaner looks for work every second, not every 15 s: a compacted topic is compacted soon.
log.cleaner.backoff.ms=1000
message.max.bytes=4194304
PROPS
    [ -z "$SASL_SSL_PORT" ] || sasl_ssl_config >>"$dir/server.properties"
    cat >"$dir/log4j2.properties" <<PROPS
status = warn
appender.file.type = File
appender.file.name = file
appender.file.fileName = $dir/server.log
appender.file.layout.type = PatternLayout
appender.file.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = info
rootLogger.appenderRef.file.ref = file
logger.kafka.name = kafka
logger.kafka.level = warn
logger.apache.name = org.apache.kafka
logger.apache.level = warn
# Why and when consumer groups rebalance: few lines, and what explains a stalled partition.
logger.groups.name = org.apache.kafka.coordinator.group
logger.groups.level = info
# Who leads the quorum: what a controller's failover looks like from here.
logger.raft.name = org.apache.kafka.raft.QuorumState
logger.raft.level = info
PROPS
}

# The SASL_SSL listener: TLS with the run folder's CA (PEM keystore and truststore), SCRAM users
# made at start (`add_users`), and PLAIN with the same user and password.
sasl_ssl_config() {
    local tls; tls=$(bash "$ROOT/ops/tls.sh" dir)
    cat <<PROPS
sasl.enabled.mechanisms=SCRAM-SHA-256,SCRAM-SHA-512,PLAIN
listener.name.sasl_ssl.ssl.keystore.type=PEM
listener.name.sasl_ssl.ssl.keystore.location=$tls/server-keystore.pem
listener.name.sasl_ssl.ssl.truststore.type=PEM
listener.name.sasl_ssl.ssl.truststore.location=$tls/ca.pem
# A client certificate is checked when one is shown (mutual TLS), not required: SASL authenticates.
listener.name.sasl_ssl.ssl.client.auth=requested
listener.name.sasl_ssl.scram-sha-256.sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required;
listener.name.sasl_ssl.scram-sha-512.sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required;
listener.name.sasl_ssl.plain.sasl.jaas.config=org.apache.kafka.common.security.plain.PlainLoginModule required user_$SASL_USER="$SASL_PASSWORD";
PROPS
}

# SCRAM credentials live in the cluster's metadata: written when the nodes are formatted, and set
# again when the user or password changed since (or the listener is new to this storage).
users_wanted() { printf '%s %s' "$SASL_USER" "$(printf '%s' "$SASL_PASSWORD" | sha256sum | cut -c1-16)"; }
scram_args() {
    local mechanism
    for mechanism in SCRAM-SHA-256 SCRAM-SHA-512; do
        printf '%s\n' --add-scram "$mechanism=[name=$SASL_USER,password=$SASL_PASSWORD]"
    done
}
add_users() {
    local cp=$1 mechanism
    [ "$(cat "$K/users" 2>/dev/null)" = "$(users_wanted)" ] && return
    for mechanism in SCRAM-SHA-256 SCRAM-SHA-512; do  # one mechanism a request
        java -cp "$cp" -Dlog4j2.configurationFile="$K/log4j2.properties" kafka.admin.ConfigCommand \
            --bootstrap-server "$(node_address 0)" --alter --entity-type users --entity-name "$SASL_USER" \
            --add-config "$mechanism=[password=$SASL_PASSWORD]" >"$K/users.log" 2>&1 \
            || die "could not set the SCRAM user $SASL_USER; see $K/users.log"
    done
    users_wanted >"$K/users"
}

# Every node is formatted with the same cluster id, and for one number of nodes: a folder made
# for another would not find its quorum.
format() {
    local i=$1 cp=$2 dir; dir=$(node_dir "$i")
    [ -f "$dir/data/meta.properties" ] && return
    if [ ! -s "$K/cluster-id" ]; then
        java -cp "$cp" kafka.tools.StorageTool random-uuid 2>/dev/null | tail -1 >"$K/cluster-id"
        echo "$NODES" >"$K/nodes"
    fi
    local scram=()
    [ -z "$SASL_SSL_PORT" ] || mapfile -t scram < <(scram_args)
    java -cp "$cp" -Dlog4j2.configurationFile="$dir/log4j2.properties" kafka.tools.StorageTool format \
        --config "$dir/server.properties" --cluster-id "$(cat "$K/cluster-id")" "${scram[@]}" \
        --ignore-formatted >"$dir/format.log" 2>&1 || die "formatting Kafka storage failed; see $dir/format.log"
    [ -z "$SASL_SSL_PORT" ] || [ "$i" != 0 ] || users_wanted >"$K/users"
}

check_layout() {
    local made; made=$(cat "$K/nodes" 2>/dev/null || echo 1)
    [ ! -f "$K/data/meta.properties" ] || [ "$made" = "$NODES" ] \
        || die "the Kafka storage in $K was made for $made node(s), not $NODES: run 'ops/kafka.sh stop' and remove $K, or use another ORDERVIEW_RUN_DIR."
}

answers() {
    "$VENV/bin/python" - "$1" "${2:-1}" 2>/dev/null <<'PY'
import asyncio, sys
from aiokafka import AIOKafkaClient

async def main() -> None:
    client = AIOKafkaClient(bootstrap_servers=sys.argv[1], request_timeout_ms=2000)
    try:
        await client.bootstrap()  # sends a metadata request
        if len(client.cluster.brokers()) < int(sys.argv[2]):
            sys.exit(1)  # not every broker has registered yet
    finally:
        await client.close()

asyncio.run(main())
PY
}

launch() {
    local i=$1 cp=$2 dir; dir=$(node_dir "$i")
    if pid_alive "$(pid_file "$i")"; then return; fi
    write_config "$i"
    format "$i" "$cp"
    # A session of its own: the Ctrl-C of a terminal running `make run` never reaches the broker.
    setsid nohup java -Xms"$HEAP" -Xmx"$HEAP" -XX:+UseG1GC -Djava.awt.headless=true \
        -Dlog4j2.configurationFile="$dir/log4j2.properties" -cp "$cp" \
        kafka.Kafka "$dir/server.properties" >"$dir/stdout.log" 2>&1 &
    echo $! >"$(pid_file "$i")"
}

# A client reconnecting to a stopped node's port inside the kernel's range for outgoing ports can
# be given that very port (a TCP self-connect) and hold it for as long as its request times out:
# the node cannot bind it when it restarts.
warn_ephemeral() {
    local low i
    low=$(cut -f1 /proc/sys/net/ipv4/ip_local_port_range 2>/dev/null) || return 0
    for i in $(nodes); do
        if [ "$(node_port "$i")" -ge "$low" ]; then
            say "note: port $(node_port "$i") is in the range the kernel gives outgoing connections (from $low): a node restarted there may find it taken for a while; ports below $low avoid that"
            return
        fi
    done
}

up_or_dead() { ! pid_alive "$(pid_file "$1")" || answers "$(node_address "$1")" "$NODES"; }

# Wait until node I answers. One that dies while starting is launched again for a minute or so:
# its port can be taken while it is free (`warn_ephemeral`).
wait_answers() {
    local i=$1 cp=$2 dir try; dir=$(node_dir "$i")
    for try in 1 2 3 4 5 6 7 8; do
        if wait_for 120 up_or_dead "$i" && pid_alive "$(pid_file "$i")"; then return; fi
        pid_alive "$(pid_file "$i")" && break  # alive but silent for 120 s: no use trying again
        [ "$try" = 8 ] && break
        say "Kafka node $i stopped while starting ($(grep -ho 'failed to bind to [^ ]*' "$dir/server.log" | tail -1 || true)); starting it again"
        sleep 3
        launch "$i" "$cp"
    done
    tail -20 "$dir/stdout.log" "$dir/server.log" >&2 || true
    die "Kafka node $i did not answer within 120 s; see $dir/server.log"
}

start() {
    local running=0 i
    for i in $(nodes); do pid_alive "$(pid_file "$i")" && running=$((running + 1)); done
    if [ "$running" = "$NODES" ]; then say "Kafka already running ($(status))"; return; fi
    if [ "$running" = 0 ] && [ "$NODES" = 1 ] && answers "$(node_address 0)"; then
        say "a Kafka broker already answers at $(node_address 0); using it"
        return
    fi
    check_layout
    local cp; cp=$(classpath)
    [ -z "$SASL_SSL_PORT" ] || bash "$ROOT/ops/tls.sh" make
    say "starting Kafka: $NODES node(s) at $(bootstrap_list)${SASL_SSL_PORT:+, SASL_SSL from port $SASL_SSL_PORT}"
    warn_ephemeral
    for i in $(nodes); do launch "$i" "$cp"; done
    for i in $(nodes); do wait_answers "$i" "$cp"; done
    [ -z "$SASL_SSL_PORT" ] || add_users "$cp"
    say "Kafka is up ($(status))"
}

start_node() {
    local i=$1; check_node "$i"
    local cp; cp=$(classpath)
    launch "$i" "$cp"
    wait_answers "$i" "$cp"
}

stop_node() {
    local i=$1 pid; check_node "$i"
    local file; file=$(pid_file "$i")
    pid_alive "$file" || { rm -f "$file"; return; }
    pid=$(cat "$file")
    say "stopping Kafka node $i (pid $pid)"
    kill "$pid"
    wait_for 30 bash -c "! kill -0 $pid" || kill -9 "$pid" 2>/dev/null || true
    rm -f "$file"
}

kill_node() {
    local i=$1; check_node "$i"
    local file; file=$(pid_file "$i")
    pid_alive "$file" || return 0
    local pid; pid=$(cat "$file")
    kill -9 "$pid"
    wait_for 10 bash -c "! kill -0 $pid" || true
    rm -f "$file"
}

stop() {
    # Every node at once: one by one, the last ones wait for a quorum that has already left.
    local i pids=()
    for i in $(nodes); do
        if pid_alive "$(pid_file "$i")"; then pids+=("$(cat "$(pid_file "$i")")"); else rm -f "$(pid_file "$i")"; fi
    done
    [ "${#pids[@]}" -gt 0 ] || return 0
    say "stopping Kafka (pid ${pids[*]})"
    kill "${pids[@]}" 2>/dev/null || true
    wait_for 30 bash -c "! kill -0 ${pids[*]} 2>/dev/null" || kill -9 "${pids[@]}" 2>/dev/null || true
    for i in $(nodes); do rm -f "$(pid_file "$i")"; done
}

status() {
    local i up=() down=()
    for i in $(nodes); do
        if pid_alive "$(pid_file "$i")"; then up+=("$i:$(cat "$(pid_file "$i")")"); else down+=("$i"); fi
    done
    if [ "${#up[@]}" = 0 ]; then echo stopped
    elif [ "${#down[@]}" = 0 ] && [ "$NODES" = 1 ]; then echo "running (pid ${up[0]#*:})"
    elif [ "${#down[@]}" = 0 ]; then echo "running (node:pid ${up[*]})"
    else echo "partly running (node:pid ${up[*]}; stopped: ${down[*]})"
    fi
}

# The quorum's leader, from the quorum-state files of the nodes that run: the highest epoch wins.
controller() {
    local i best_epoch=-1 best=""
    for i in $(nodes); do
        pid_alive "$(pid_file "$i")" || continue
        local state; state="$(node_dir "$i")/data/__cluster_metadata-0/quorum-state"
        [ -s "$state" ] || continue
        local leader epoch
        leader=$(grep -o '"leaderId":-\?[0-9]*' "$state" | cut -d: -f2)
        epoch=$(grep -o '"leaderEpoch":[0-9]*' "$state" | cut -d: -f2)
        if [ -n "$leader" ] && [ "$leader" -gt 0 ] && [ "$epoch" -gt "$best_epoch" ]; then
            best_epoch=$epoch best=$((leader - 1))
        fi
    done
    [ -n "$best" ] || die "no running node knows a quorum leader"
    echo "$best"
}

check_node() {
    [[ "${1:-}" =~ ^[0-9]+$ ]] && [ "$1" -lt "$NODES" ] || die "no Kafka node '${1:-}': nodes are 0 to $((NODES - 1))"
}

case "${1:-}" in
    start) start ;;
    stop) stop ;;
    status) status ;;
    start-node) start_node "${2:-}" ;;
    stop-node) stop_node "${2:-}" ;;
    kill-node) kill_node "${2:-}" ;;
    bootstrap) bootstrap_list ;;
    controller) controller ;;
    *) die "usage: ops/kafka.sh start|stop|status|bootstrap|controller|start-node I|stop-node I|kill-node I" ;;
esac
