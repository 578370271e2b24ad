#!/usr/bin/env bash
# A single-node Apache Kafka in KRaft combined mode, from Maven Central's jars, on loopback.
#   ops/kafka.sh start | stop | status
set -euo pipefail
source "$(dirname "$0")/common.sh"
K="$RUN/kafka"
PID="$K/kafka.pid"
mkdir -p "$K"

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

write_config() {
    cat >"$K/server.properties" <<PROPS
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@127.0.0.1:$((KAFKA_PORT + 1))
listeners=PLAINTEXT://$KAFKA_HOST:$KAFKA_PORT,CONTROLLER://127.0.0.1:$((KAFKA_PORT + 1))
advertised.listeners=PLAINTEXT://$KAFKA_HOST:$KAFKA_PORT
controller.listener.names=CONTROLLER
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT
inter.broker.listener.name=PLAINTEXT
log.dirs=$K/data
num.partitions=3
# Topics are created by the bootstrap, with their settings; a typo must not create one.
auto.create.topics.enable=false
offsets.topic.replication.factor=1
offsets.topic.num.partitions=3
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
# One node, tests start many consumer groups: no waiting for more members.
group.initial.rebalance.delay.ms=0
# Kafka 4 batches offset commits for 5 ms by default; a dev broker answers at once.
group.coordinator.append.linger.ms=0
log.retention.hours=-1
# The log cleaner looks for work every second, not every 15 s: a compacted topic is compacted soon.
log.cleaner.backoff.ms=1000
message.max.bytes=4194304
PROPS
    cat >"$K/log4j2.properties" <<PROPS
status = warn
appender.file.type = File
appender.file.name = file
appender.file.fileName = $K/server.log
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
PROPS
}

answers() {
    "$VENV/bin/python" - "$KAFKA_BOOTSTRAP" 2>/dev/null <<'PY'
import asyncio, sys
from aiokafka import AIOKafkaClient

async def main() -> None:
    client = AIOKafkaClient(bootstrap_servers=sys.argv[1], request_timeout_ms=2000)
    try:
        await client.bootstrap()  # sends a metadata request
    finally:
        await client.close()

asyncio.run(main())
PY

}

start() {
    if pid_alive "$PID"; then say "Kafka already running (pid $(cat "$PID"))"; return; fi
    if answers; then say "a Kafka broker already answers at $KAFKA_BOOTSTRAP; using it"; return; fi
    local cp; cp=$(classpath)
    write_config
    if [ ! -f "$K/data/meta.properties" ]; then
        say "formatting Kafka storage in .run/kafka/data"
        java -cp "$cp" -Dlog4j2.configurationFile="$K/log4j2.properties" kafka.tools.StorageTool format \
            --config "$K/server.properties" --cluster-id "$(java -cp "$cp" kafka.tools.StorageTool random-uuid 2>/dev/null | tail -1)" \
            --ignore-formatted >"$K/format.log" 2>&1 || die "formatting Kafka storage failed; see $K/format.log"
    fi
    say "starting Kafka on $KAFKA_BOOTSTRAP"
    # A session of its own: the Ctrl-C of a terminal running `make run` never reaches the broker.
    setsid nohup java -Xms512m -Xmx512m -XX:+UseG1GC -Djava.awt.headless=true \
        -Dlog4j2.configurationFile="$K/log4j2.properties" -cp "$cp" \
        kafka.Kafka "$K/server.properties" >"$K/stdout.log" 2>&1 &
    echo $! >"$PID"
    if ! wait_for 90 answers; then
        tail -20 "$K/stdout.log" "$K/server.log" >&2 || true
        die "Kafka did not answer within 90 s; see .run/kafka/server.log"
    fi
    say "Kafka is up (pid $(cat "$PID"))"
}

stop() {
    pid_alive "$PID" || { rm -f "$PID"; return; }
    local pid; pid=$(cat "$PID")
    say "stopping Kafka (pid $pid)"
    kill "$pid"
    wait_for 30 bash -c "! kill -0 $pid" || kill -9 "$pid" 2>/dev/null || true
    rm -f "$PID"
}

case "${1:-}" in
    start) start ;;
    stop) stop ;;
    status) pid_alive "$PID" && echo "running (pid $(cat "$PID"))" || echo "stopped" ;;
    *) die "usage: ops/kafka.sh start|stop|status" ;;
esac
