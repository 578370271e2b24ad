"""The ingest peer: Quix Streams' `PostgreSQLSink` reading the same topic into one JSONB table.

    python -m bench.quix_peer --topic T --group G --table orders_quix --count N --commit-interval S
    (settings from ORDERVIEW_*; prints one JSON line)

What a Python user would write to get Kafka orders into PostgreSQL with the library built for it:
a JSON topic, each order as one row (order_uid as primary key, upserted so that a redelivery
changes nothing, the whole order in a JSONB column), no validation, no normalized tables, no
dead letters. Quix checkpoints (flushes its sinks and commits offsets) every `--commit-interval`
seconds. The figures are taken inside the process, around the sink's writes: when the first
message reached the pipeline, when each flush ended and how many rows it wrote.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time

STARTED = time.perf_counter()

from quixstreams import Application  # noqa: E402  (the imports are part of the process start)
from quixstreams.sinks import SinkBatch  # noqa: E402
from quixstreams.sinks.community.postgresql import PostgreSQLSink  # noqa: E402

from orderview import kafka_clients  # noqa: E402
from orderview.settings import get_settings  # noqa: E402


class TimedSink(PostgreSQLSink):
    """PostgreSQLSink, recording when each batch became visible (its write committed)."""

    def __init__(self, **kwargs: object) -> None:
        super().__init__(**kwargs)  # type: ignore[arg-type]
        self.writes: list[tuple[float, int]] = []  # (seconds since start, rows)

    def write(self, batch: SinkBatch) -> None:
        super().write(batch)
        self.writes.append((time.perf_counter() - STARTED, batch.size))


def run(topic: str, group: str, table: str, count: int, commit_interval: float) -> dict[str, object]:
    settings = get_settings()
    app = Application(
        broker_address=settings.kafka_bootstrap,
        # TLS and SASL as every other client of the project has them (librdkafka's names).
        consumer_extra_config=kafka_clients.librdkafka_config(settings),
        producer_extra_config=kafka_clients.librdkafka_config(settings),
        consumer_group=group,
        auto_offset_reset="earliest",
        commit_interval=commit_interval,
        loglevel="WARNING",
        state_dir=tempfile.mkdtemp(prefix="orderview-bench-quix-"),  # stateless: an empty folder
    )
    sink = TimedSink(
        host=settings.pg_host,
        port=settings.pg_port,
        dbname=settings.pg_database,
        user=settings.pg_owner_user,  # it creates its table
        password=settings.pg_owner_password,
        table_name=table,
        primary_key_columns="order_uid",
        upsert_on_primary_key=True,
    )
    first: list[float] = []

    def as_row(order: dict) -> dict:
        if not first:
            first.append(time.perf_counter() - STARTED)
        return {"order_uid": order["order_uid"], "body": order}

    sdf = app.dataframe(app.topic(topic, value_deserializer="json", key_deserializer="str"))
    sdf.apply(as_row).sink(sink)
    app.run(count=count, timeout=60, collect=False)
    return {"first_message_s": first[0] if first else None, "writes": sink.writes}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--topic", required=True)
    parser.add_argument("--group", required=True)
    parser.add_argument("--table", required=True)
    parser.add_argument("--count", type=int, required=True)
    parser.add_argument("--commit-interval", type=float, default=5.0)
    args = parser.parse_args()
    print(json.dumps(run(args.topic, args.group, args.table, args.count, args.commit_interval)), flush=True)


if __name__ == "__main__":
    main()
