"""The one place that reads configuration.

Every field of Settings is read from the environment variable ORDERVIEW_<FIELD IN
UPPER CASE> (e.g. `api_port` from ORDERVIEW_API_PORT); the defaults work on a
local machine after `make up`. README.md › Configuration lists them.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from functools import cache

PREFIX = "ORDERVIEW_"


@dataclass(frozen=True)
class Settings:
    # Kafka
    kafka_bootstrap: str = "127.0.0.1:9092"
    orders_topic: str = "orders"
    dlq_topic: str = "orders.dlq"
    orders_partitions: int = 3
    consumer_group: str = "orderview-projector"

    # PostgreSQL: an admin that bootstraps, an owner that migrates, a writer, a reader
    pg_host: str = "127.0.0.1"
    pg_port: int = 5432
    pg_database: str = "orderview"
    pg_admin_user: str = "postgres"
    pg_admin_password: str = "postgres"
    pg_owner_user: str = "orderview_owner"
    pg_owner_password: str = "orderview_owner"
    pg_projector_user: str = "orderview_projector"
    pg_projector_password: str = "orderview_projector"
    pg_api_user: str = "orderview_api"
    pg_api_password: str = "orderview_api"

    # Projector (its /metrics and /readyz)
    projector_host: str = "127.0.0.1"
    projector_port: int = 6066
    batch_size: int = 500
    batch_wait_s: float = 0.05
    max_message_bytes: int = 1024 * 1024
    db_retry_max_s: float = 5.0
    notify_channel: str = "order_changed"

    # API
    api_host: str = "127.0.0.1"
    api_port: int = 8081
    api_replicas: int = 2
    cache_max_entries: int = 100_000
    cache_max_bytes: int = 256 * 1024 * 1024
    api_pool_size: int = 4
    # Cache misses arriving within this window, or while a lookup is in flight, share one query
    # (0.2 ms: invisible next to the query itself, enough to gather a burst).
    api_miss_batch_window_s: float = 0.0002
    api_miss_batch_max: int = 500
    api_listen_heartbeat_s: float = 1.0
    api_listen_retry_max_s: float = 5.0
    # After a lost LISTEN connection, orders changed since the last heartbeat minus this margin
    # are re-read: a snapshot's updated_at is its transaction's start, not its commit.
    api_resync_margin_s: float = 30.0

    log_level: str = "INFO"

    @classmethod
    def from_env(cls, environ: dict[str, str] | os._Environ = os.environ) -> Settings:
        values = {}
        for f in dataclasses.fields(cls):
            raw = environ.get(PREFIX + f.name.upper())
            if raw is None or raw == "":
                continue
            kind = type(f.default)
            try:
                values[f.name] = kind(raw)
            except ValueError:
                what = "an integer" if kind is int else "a number"
                raise ValueError(f"{PREFIX}{f.name.upper()} must be {what}, got {raw!r}") from None
        return cls(**values)

    def to_env(self) -> dict[str, str]:
        """The environment that makes another process read these same settings."""
        return {PREFIX + f.name.upper(): str(getattr(self, f.name)) for f in dataclasses.fields(self)}

    def dsn(self, role: str) -> str:
        """libpq connection string for one of the roles: admin, owner, projector, api."""
        user, password = {
            "admin": (self.pg_admin_user, self.pg_admin_password),
            "owner": (self.pg_owner_user, self.pg_owner_password),
            "projector": (self.pg_projector_user, self.pg_projector_password),
            "api": (self.pg_api_user, self.pg_api_password),
        }[role]
        database = "postgres" if role == "admin" else self.pg_database
        return self._dsn(database, user, password)

    def admin_dsn_for(self, database: str) -> str:
        return self._dsn(database, self.pg_admin_user, self.pg_admin_password)

    def _dsn(self, database: str, user: str, password: str) -> str:
        return (
            f"host={self.pg_host} port={self.pg_port} dbname={database} "
            f"user={user} password={password} connect_timeout=5"
        )


@cache
def get_settings() -> Settings:
    return Settings.from_env()
