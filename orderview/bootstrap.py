"""Creates the database, its roles and the topics, and applies sql/ migrations.

    python -m orderview.bootstrap

Idempotent: a second run changes nothing. Migrations are the files of sql/, applied
in name order as the owner role, each in its own transaction, recorded in
schema_migrations.
"""

from __future__ import annotations

import asyncio
import logging
import sys
import time
from pathlib import Path

import psycopg
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import TopicAlreadyExistsError
from aiokafka.protocol.metadata import MetadataRequest
from psycopg import sql

from orderview import kafka_clients
from orderview.settings import Settings, get_settings

log = logging.getLogger("orderview.bootstrap")

SQL_DIR = Path(__file__).resolve().parent.parent / "sql"

ROLE_EXISTS = "SELECT 1 FROM pg_roles WHERE rolname = %s"
DATABASE_EXISTS = "SELECT 1 FROM pg_database WHERE datname = %s"
CREATE_MIGRATIONS = """
CREATE TABLE IF NOT EXISTS schema_migrations (
    version    text        PRIMARY KEY,
    applied_at timestamptz NOT NULL DEFAULT now()
)"""
APPLIED_MIGRATIONS = "SELECT version FROM schema_migrations"
# The project's own tables: a DBA's table or a monitoring view in the same schema is not ours to grant.
OWN_TABLES = """
SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE n.nspname = 'public' AND c.relkind IN ('r', 'p', 'v', 'm') AND pg_get_userbyid(c.relowner) = current_user
  AND c.relname <> 'schema_migrations'
ORDER BY c.relname
"""
RECORD_MIGRATION = "INSERT INTO schema_migrations (version) VALUES (%s)"


def ensure_roles_and_database(settings: Settings) -> None:
    roles = [
        (settings.pg_owner_user, settings.pg_owner_password),
        (settings.pg_projector_user, settings.pg_projector_password),
        (settings.pg_api_user, settings.pg_api_password),
    ]
    with psycopg.connect(settings.dsn("admin"), autocommit=True) as conn:
        for user, password in roles:
            verb = "ALTER" if conn.execute(ROLE_EXISTS, [user]).fetchone() else "CREATE"
            conn.execute(
                sql.SQL("{} ROLE {} LOGIN PASSWORD {}").format(
                    sql.SQL(verb), sql.Identifier(user), sql.Literal(password)
                )
            )
        if not conn.execute(DATABASE_EXISTS, [settings.pg_database]).fetchone():
            log.info("creating database %s", settings.pg_database)
            conn.execute(
                sql.SQL("CREATE DATABASE {} OWNER {} ENCODING 'UTF8'").format(
                    sql.Identifier(settings.pg_database), sql.Identifier(settings.pg_owner_user)
                )
            )
    # PostgreSQL 15 gives `public` to the database owner only after this.
    with psycopg.connect(settings.admin_dsn_for(settings.pg_database), autocommit=True) as conn:
        conn.execute(
            sql.SQL("ALTER SCHEMA public OWNER TO {}").format(sql.Identifier(settings.pg_owner_user))
        )


def migrate(settings: Settings) -> list[str]:
    """Apply the sql/ files not applied yet; return their names."""
    applied_now = []
    with psycopg.connect(settings.dsn("owner")) as conn:
        conn.execute(CREATE_MIGRATIONS)
        conn.commit()
        done = {row[0] for row in conn.execute(APPLIED_MIGRATIONS)}
        for path in sorted(SQL_DIR.glob("*.sql")):
            if path.name in done:
                continue
            with conn.transaction():
                conn.execute(path.read_text())
                conn.execute(RECORD_MIGRATION, [path.name])
            log.info("applied migration %s", path.name)
            applied_now.append(path.name)
        grant_role_privileges(conn, settings)
        conn.commit()
    return applied_now


def grant_role_privileges(conn: psycopg.Connection, settings: Settings) -> None:
    """The projector writes the read model; the API can only read it. Only the tables the owner
    role owns are granted on (run as that role, it could not grant on any other)."""
    roles = {
        "db": sql.Identifier(settings.pg_database),
        "projector": sql.Identifier(settings.pg_projector_user),
        "api": sql.Identifier(settings.pg_api_user),
    }
    for statement in [
        "REVOKE ALL ON DATABASE {db} FROM PUBLIC",
        "GRANT CONNECT ON DATABASE {db} TO {projector}, {api}",
        "REVOKE CREATE ON SCHEMA public FROM PUBLIC",
        "GRANT USAGE ON SCHEMA public TO {projector}, {api}",
        "REVOKE ALL ON schema_migrations FROM {projector}, {api}",
        "GRANT SELECT ON schema_migrations TO {api}",
    ]:
        conn.execute(sql.SQL(statement).format(**roles))
    for (table,) in conn.execute(OWN_TABLES).fetchall():
        for statement in [
            "GRANT SELECT ON {table} TO {api}",
            "GRANT SELECT, INSERT, UPDATE, DELETE ON {table} TO {projector}",
        ]:
            conn.execute(sql.SQL(statement).format(table=sql.Identifier(table), **roles))


async def ensure_topics(settings: Settings) -> None:
    """`orders` is the event log: never deleted by age. The DLQ keeps what it is given too. Both
    are replicated to min(3, brokers) nodes, and a write is acknowledged (acks=all) once 2 of 3
    replicas hold it: one broker may die without losing or refusing an acknowledged order."""
    admin = kafka_clients.admin(settings)
    await admin.start()
    try:
        brokers = len((await admin.describe_cluster())["brokers"])
        replicas, in_sync = replication(settings, brokers)
        configs = {"retention.ms": "-1", "min.insync.replicas": str(in_sync)}
        existing = set(await admin.list_topics())
        wanted = [
            NewTopic(settings.orders_topic, settings.orders_partitions, replicas, topic_configs=configs),
            NewTopic(settings.dlq_topic, 1, replicas, topic_configs=configs),
        ]
        for topic in wanted:
            if topic.name in existing:
                continue
            try:
                response = await admin.create_topics([topic])
            except TopicAlreadyExistsError:
                continue
            if not _created(response):
                continue
            log.info("created topic %s: %d replica(s), min.insync.replicas %d", topic.name, replicas, in_sync)
        await _wait_until_known(settings, [t.name for t in wanted])
        await _warn_under_replicated(admin, [t.name for t in wanted if t.name in existing], replicas)
    finally:
        await admin.close()


def replication(settings: Settings, brokers: int) -> tuple[int, int]:
    """(replication factor, min.insync.replicas) of the topics the bootstrap creates."""
    replicas = settings.kafka_replication_factor or min(3, brokers)
    if replicas > brokers:
        raise ValueError(
            f"ORDERVIEW_KAFKA_REPLICATION_FACTOR is {replicas}, but the cluster has {brokers} broker(s)"
        )
    in_sync = settings.kafka_min_insync_replicas or (2 if replicas >= 3 else 1)
    if in_sync > replicas:
        raise ValueError(
            f"ORDERVIEW_KAFKA_MIN_INSYNC_REPLICAS is {in_sync}, over the {replicas} replica(s) of each partition"
        )
    return replicas, in_sync


def _created(response: object) -> bool:
    """aiokafka returns the broker's refusal in the response instead of raising it: raise it,
    unless the topic exists already (made meanwhile, or not yet in the metadata asked)."""
    for name, code, *rest in getattr(response, "topic_errors", []):
        if code == TopicAlreadyExistsError.errno:
            return False
        if code != 0:
            message = next((r for r in rest if isinstance(r, str) and r), "")
            raise RuntimeError(f"the broker refused to create topic {name} (error {code}): {message}")
    return True


async def _wait_until_known(settings: Settings, topics: list[str], timeout_s: float = 30.0) -> None:
    """On a cluster a new topic reaches the other brokers' metadata a moment later: the services
    started next must find it on whichever broker they ask, so every broker is asked."""
    client = kafka_clients.client(settings)
    await client.bootstrap()
    try:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            answers = [
                await client.send(broker.nodeId, MetadataRequest(topics))
                for broker in client.cluster.brokers()
            ]
            if all(error == 0 and partitions for a in answers for error, _, _, partitions, *_ in a.topics):
                return
            await asyncio.sleep(0.2)
    finally:
        await client.close()


async def _warn_under_replicated(admin: AIOKafkaAdminClient, topics: list[str], replicas: int) -> None:
    """Topics made earlier (on a single broker, say) keep their replicas: say so."""
    for described in await admin.describe_topics(topics) if topics else []:
        held = [len(p["replicas"]) for p in described.get("partitions", [])]
        if held and min(held) < replicas:
            log.warning(
                "topic %s has %d replica(s) per partition, fewer than %d: reassign its partitions "
                "(kafka-reassign-partitions) to survive the loss of a broker",
                described["topic"],
                min(held),
                replicas,
            )


def create_database(settings: Settings) -> None:
    """The roles, the database and its migrations."""
    ensure_roles_and_database(settings)
    migrate(settings)


def drop_database(settings: Settings) -> None:
    """For disposable databases (tests, the bench): closes whatever is connected to it."""
    with psycopg.connect(settings.dsn("admin"), autocommit=True) as conn:
        conn.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(settings.pg_database))
        )


def bootstrap(settings: Settings) -> None:
    create_database(settings)
    asyncio.run(ensure_topics(settings))


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="[orderview] %(message)s")
    try:
        bootstrap(get_settings())
    except ValueError as exc:  # settings that do not fit the cluster: one sentence
        sys.exit(f"[orderview] {exc}")


if __name__ == "__main__":
    main()
