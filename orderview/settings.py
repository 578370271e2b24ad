"""The one place that reads configuration: environment variables with local defaults.

Every option is listed in README.md › Configuration.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from functools import cache


def _env(name: str, default: str) -> str:
    return os.environ.get(name, default)


def _int(name: str, default: int) -> int:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        return int(raw)
    except ValueError:
        raise ValueError(f"{name} must be an integer, got {raw!r}") from None


def _float(name: str, default: float) -> float:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        return float(raw)
    except ValueError:
        raise ValueError(f"{name} must be a number, got {raw!r}") from None


def _dsn(host: str, port: int, db: str, user: str, password: str) -> str:
    return f"host={host} port={port} dbname={db} user={user} password={password} connect_timeout=5"


@dataclass(frozen=True)
class Settings:
    # Kafka
    kafka_bootstrap: str = field(default_factory=lambda: _env("ORDERVIEW_KAFKA_BOOTSTRAP", "127.0.0.1:9092"))
    orders_topic: str = field(default_factory=lambda: _env("ORDERVIEW_ORDERS_TOPIC", "orders"))
    dlq_topic: str = field(default_factory=lambda: _env("ORDERVIEW_DLQ_TOPIC", "orders.dlq"))
    orders_partitions: int = field(default_factory=lambda: _int("ORDERVIEW_ORDERS_PARTITIONS", 3))
    consumer_group: str = field(default_factory=lambda: _env("ORDERVIEW_CONSUMER_GROUP", "orderview-projector"))

    # PostgreSQL
    pg_host: str = field(default_factory=lambda: _env("ORDERVIEW_PG_HOST", "127.0.0.1"))
    pg_port: int = field(default_factory=lambda: _int("ORDERVIEW_PG_PORT", 5432))
    pg_database: str = field(default_factory=lambda: _env("ORDERVIEW_PG_DATABASE", "orderview"))
    pg_admin_user: str = field(default_factory=lambda: _env("ORDERVIEW_PG_ADMIN_USER", "postgres"))
    pg_admin_password: str = field(default_factory=lambda: _env("ORDERVIEW_PG_ADMIN_PASSWORD", "postgres"))
    pg_owner_user: str = field(default_factory=lambda: _env("ORDERVIEW_PG_OWNER_USER", "orderview_owner"))
    pg_owner_password: str = field(default_factory=lambda: _env("ORDERVIEW_PG_OWNER_PASSWORD", "orderview_owner"))
    pg_projector_user: str = field(default_factory=lambda: _env("ORDERVIEW_PG_PROJECTOR_USER", "orderview_projector"))
    pg_projector_password: str = field(
        default_factory=lambda: _env("ORDERVIEW_PG_PROJECTOR_PASSWORD", "orderview_projector")
    )
    pg_api_user: str = field(default_factory=lambda: _env("ORDERVIEW_PG_API_USER", "orderview_api"))
    pg_api_password: str = field(default_factory=lambda: _env("ORDERVIEW_PG_API_PASSWORD", "orderview_api"))

    # Projector
    projector_port: int = field(default_factory=lambda: _int("ORDERVIEW_PROJECTOR_PORT", 6066))
    batch_size: int = field(default_factory=lambda: _int("ORDERVIEW_BATCH_SIZE", 500))
    batch_wait_s: float = field(default_factory=lambda: _float("ORDERVIEW_BATCH_WAIT_S", 0.05))
    max_message_bytes: int = field(default_factory=lambda: _int("ORDERVIEW_MAX_MESSAGE_BYTES", 1024 * 1024))
    db_retry_max_s: float = field(default_factory=lambda: _float("ORDERVIEW_DB_RETRY_MAX_S", 5.0))
    notify_channel: str = field(default_factory=lambda: _env("ORDERVIEW_NOTIFY_CHANNEL", "order_changed"))

    # API
    api_host: str = field(default_factory=lambda: _env("ORDERVIEW_API_HOST", "127.0.0.1"))
    api_port: int = field(default_factory=lambda: _int("ORDERVIEW_API_PORT", 8081))
    api_replicas: int = field(default_factory=lambda: _int("ORDERVIEW_API_REPLICAS", 2))
    cache_max_entries: int = field(default_factory=lambda: _int("ORDERVIEW_CACHE_MAX_ENTRIES", 100_000))
    cache_max_bytes: int = field(default_factory=lambda: _int("ORDERVIEW_CACHE_MAX_BYTES", 256 * 1024 * 1024))
    api_pool_size: int = field(default_factory=lambda: _int("ORDERVIEW_API_POOL_SIZE", 4))

    # Logging
    log_level: str = field(default_factory=lambda: _env("ORDERVIEW_LOG_LEVEL", "INFO"))

    def dsn(self, role: str) -> str:
        """libpq connection string for one of the roles: admin, owner, projector, api."""
        user, password = {
            "admin": (self.pg_admin_user, self.pg_admin_password),
            "owner": (self.pg_owner_user, self.pg_owner_password),
            "projector": (self.pg_projector_user, self.pg_projector_password),
            "api": (self.pg_api_user, self.pg_api_password),
        }[role]
        db = "postgres" if role == "admin" else self.pg_database
        return _dsn(self.pg_host, self.pg_port, db, user, password)

    def admin_dsn_for(self, database: str) -> str:
        return _dsn(self.pg_host, self.pg_port, database, self.pg_admin_user, self.pg_admin_password)


@cache
def get_settings() -> Settings:
    return Settings()
