"""Creates the database, its roles and the topics, and applies sql/ migrations.

    python -m orderview.bootstrap

Idempotent: a second run changes nothing. Migrations are the files of sql/, applied
in name order as the owner role, each in its own transaction, recorded in
schema_migrations.
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import psycopg
from aiokafka.admin import NewTopic
from aiokafka.errors import TopicAlreadyExistsError
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
    """`orders` is the event log: never deleted by age. The DLQ keeps what it is given too."""
    admin = kafka_clients.admin(settings)
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        wanted = [
            NewTopic(
                settings.orders_topic, settings.orders_partitions, 1, topic_configs={"retention.ms": "-1"}
            ),
            NewTopic(settings.dlq_topic, 1, 1, topic_configs={"retention.ms": "-1"}),
        ]
        missing = [t for t in wanted if t.name not in existing]
        for topic in missing:
            try:
                await admin.create_topics([topic])
                log.info("created topic %s", topic.name)
            except TopicAlreadyExistsError:
                pass
    finally:
        await admin.close()


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
    bootstrap(get_settings())


if __name__ == "__main__":
    main()
