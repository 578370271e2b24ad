"""The one place that reads configuration.

Every field of Settings is read from the environment variable ORDERVIEW_<FIELD IN
UPPER CASE> (e.g. `api_port` from ORDERVIEW_API_PORT), or from the file that
ORDERVIEW_<FIELD>_FILE names; the defaults work on a local machine after `make up`.
docs/configuration.md lists them, written from this file by orderview/configuration_reference.py
(which says how it reads the comments here: above a field, of it and the fields right below it;
at the end of its line, of it alone; a line after a blank one without a full stop heads a section).
"""

from __future__ import annotations

import dataclasses
import ipaddress
import os
import re
import sys
from dataclasses import dataclass
from functools import cache

from psycopg.conninfo import make_conninfo

PREFIX = "ORDERVIEW_"
LOOPBACK_NAMES = {"localhost", "localhost.localdomain", "ip6-localhost"}
STANDBY_FALLBACKS = ("primary", "unavailable")
# libpq's target_session_attrs: those that find a server that takes writes and LISTEN, and all.
PRIMARY_SESSION_ATTRS = ("read-write", "primary", "any")
READ_SESSION_ATTRS = ("any", "read-write", "primary", "standby", "prefer-standby", "read-only")
# Read session attributes that may pick a standby: reads then follow the standby rule.
STANDBY_SESSION_ATTRS = ("any", "standby", "prefer-standby", "read-only")


@dataclass(frozen=True)
class Settings:
    # Kafka
    kafka_bootstrap: str = "127.0.0.1:9092"  # host:port, comma-separated; clients start from any that answers
    orders_topic: str = "orders"  # the event log
    dlq_topic: str = "orders.dlq"  # dead letters
    orders_partitions: int = 3  # partitions of the event log at its creation
    consumer_group: str = "orderview-projector"  # the projector's consumer group
    # Topics the bootstrap creates: 0 means min(3, brokers) replicas, and 2 in-sync replicas
    # where there are 3 or more (1 otherwise).
    kafka_replication_factor: int = 0
    kafka_min_insync_replicas: int = 0
    # How every Kafka client connects (orderview/kafka_clients.py): PLAINTEXT, SSL, SASL_PLAINTEXT
    # or SASL_SSL; SASL with PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512; TLS verifies the brokers'
    # certificates and names against the CA file (the system's CAs when empty), and shows a
    # client certificate when one is given.
    kafka_security_protocol: str = "PLAINTEXT"
    kafka_sasl_mechanism: str = "SCRAM-SHA-512"
    kafka_sasl_username: str = "orderview"
    kafka_sasl_password: str = "orderview"
    kafka_ssl_cafile: str = ""
    kafka_ssl_certfile: str = ""
    kafka_ssl_keyfile: str = ""

    # PostgreSQL: an admin that bootstraps, an owner that migrates, a writer, a reader
    # Where the primary is, as libpq takes it: comma-separated hosts, tried in turn for the first
    # that pg_target_session_attrs accepts (a primary and its standbys: whichever is the primary
    # now); one name that always leads to the primary (a VIP, HAProxy in front of Patroni) is one
    # host. Ports: one for every host, or one per host. The ops scripts use the first host and port.
    pg_host: str = "127.0.0.1"
    pg_port: str = "5432"
    # Which server of pg_host is the primary, in libpq's words: read-write (accepts writes),
    # primary (not in recovery), or any (only with one host: the address itself picks the server).
    # The projector, the bootstrap and the API's LISTEN connect to it, and the API's reads unless
    # read hosts or read session attributes say otherwise.
    pg_target_session_attrs: str = "read-write"
    pg_database: str = "orderview"  # the database
    pg_admin_user: str = "postgres"  # superuser, used by the bootstrap only
    pg_admin_password: str = "postgres"
    pg_owner_user: str = "orderview_owner"  # owns the schema, migrates
    pg_owner_password: str = "orderview_owner"
    pg_projector_user: str = "orderview_projector"  # writes the read model
    pg_projector_password: str = "orderview_projector"
    pg_api_user: str = "orderview_api"  # reads only
    pg_api_password: str = "orderview_api"
    pg_connect_timeout_s: int = 5  # how long a new connection may take
    # The API's reads (warm-up, misses, /orders) from streaming standbys: hosts and ports as for
    # pg_host and pg_port (empty: the primary's hosts; port empty or 0: pg_port), and which of them
    # to read, in libpq's words: any, read-write, primary, standby, prefer-standby, read-only
    # (empty: prefer-standby with read hosts, else the primary's, where LISTEN is). A read server
    # that is not a standby is not read (api/standby.py). LISTEN stays on the primary (a hot
    # standby never delivers NOTIFY).
    pg_read_host: str = ""
    pg_read_port: str = ""
    pg_read_target_session_attrs: str = ""
    # A connection that stops answering (a NAT forgot it, a failover) is declared dead within
    # this many seconds: TCP keepalives while idle, tcp_user_timeout while data is unacknowledged.
    pg_dead_after_s: int = 15
    # TLS to PostgreSQL, as libpq takes it: disable, allow, prefer, require, verify-ca, verify-full;
    # the CA file that verifies the server, and a client certificate and key when it asks for one.
    pg_sslmode: str = "prefer"
    pg_sslrootcert: str = ""
    pg_sslcert: str = ""
    pg_sslkey: str = ""
    # Server-side limit of one statement of the projector (the API has its own, api_db_timeout_s).
    projector_statement_timeout_s: float = 60.0

    # Projector
    projector_host: str = "127.0.0.1"  # its /metrics and /readyz
    projector_port: int = 6066
    batch_size: int = 2000  # at most this many messages per projection batch (one transaction)
    batch_wait_s: float = 0.2  # how long a batch waits to fill
    max_message_bytes: int = 1024 * 1024  # larger messages go to the DLQ as `too_large`
    db_retry_max_s: float = 5.0  # cap of the retry backoff while the database is down
    # The key that signs redrives (python -m projector.redrive) and that projectors check them
    # with: a record claiming to be a redrive without its signature is dead-lettered. A secret,
    # refused at its default off loopback like the passwords.
    redrive_secret: str = "orderview-redrive"

    # `keep`: every earlier version of an order is kept in order_history (GET /order/<uid>/history);
    # `off`: only the current one (an erasure still deletes what was kept before).
    history: str = "keep"
    notify_channel: str = "order_changed"  # LISTEN/NOTIFY channel of changed order_uids
    # How often each worker samples the lag of its partitions (projector/lag.py).
    projector_lag_interval_s: float = 5.0

    # API
    api_host: str = "127.0.0.1"  # where the API listens
    api_port: int = 8081
    api_replicas: int = 2  # API processes sharing the port
    cache_max_entries: int = 100_000  # cache bound, entries (0 disables the cache)
    cache_max_bytes: int = 256 * 1024 * 1024  # cache bound, bytes of serialized orders
    api_pool_size: int = 4  # database connections per API replica
    # Every database call of a request answers within this, or the request answers 503.
    api_db_timeout_s: float = 3.0

    api_miss_lookups_max: int = 2  # miss queries in flight per replica; later misses wait and share the next
    # Unknown order_uids are remembered this long (and forgotten by the order's NOTIFY).
    api_not_found_max_entries: int = 100_000  # unknown order_uids remembered per replica (0: none)
    api_not_found_ttl_s: float = 60.0
    # Comma-separated. Host names the API answers for (others get 421; `*`: any); empty: the loopback
    # names when the API binds to loopback, else any (and one log line at start says so).
    api_allowed_hosts: str = ""
    # Comma-separated. Origins whose pages may call the API (`*` any, `null` file pages, and with
    # them any site's sandboxed iframe: said at start); empty: none.
    api_cors_origins: str = ""
    # Slow and numerous clients (api/connections.py). A request head (request line and headers)
    # not all there this many seconds after its connection opened, or after its first byte on a
    # kept-alive connection, is closed: with a 408 if part of it came. An idle kept-alive
    # connection is not a head: aiohttp's keep-alive timeout (75 s) closes it.
    api_head_timeout_s: float = 5.0
    # Connections one replica holds at most; each is a file (the process's file limit is raised to
    # fit, else this is lowered, said at start). Past it, a new connection makes room by closing
    # the one that has waited longest for a request head, else the one idle the longest; only if
    # every one is busy with a request is the new one closed. Counted in /metrics
    # (orderview_api_connections_closed_total by reason, orderview_api_connections).
    api_max_connections: int = 4096
    # Cache misses arriving within this window, or while a lookup is in flight, share one query
    # (0.2 ms: invisible next to the query itself, enough to gather a burst).
    api_miss_batch_window_s: float = 0.0002
    api_miss_batch_max: int = 500  # most order_uids in one miss query

    api_listen_heartbeat_s: float = 1.0  # how often the LISTEN connection checks in
    api_listen_retry_max_s: float = 5.0  # cap of the LISTEN reconnect backoff
    # After a lost LISTEN connection, orders changed since the last heartbeat minus this margin
    # are re-read: a snapshot's updated_at is its transaction's start, not its commit.
    api_resync_margin_s: float = 30.0
    # After a failover to a database that lacks versions a replica served (a promoted asynchronous
    # standby), the replica waits this long at most for the projector to apply them again: misses
    # wait (503 past api_db_timeout_s), cached orders are served. Past it, it serves what the
    # database holds.
    api_catch_up_max_s: float = 60.0
    # Reading from a standby: one more than this many seconds behind the primary (or silent) is not
    # read; the replica reads from the primary instead (`primary`) or answers misses 503
    # (`unavailable`) until the standby is back within half of it.
    api_standby_max_lag_s: float = 1.0
    api_standby_fallback: str = "primary"

    # Operations
    # Where `ops/prometheus.sh start` serves Prometheus (scraping what `make run` starts).
    prometheus_port: int = 9090

    log_level: str = "INFO"  # logs are JSON lines

    def __post_init__(self) -> None:
        # Ports are lists in text; a caller of replace() may give one as a number.
        for name in ("pg_port", "pg_read_port"):
            value = getattr(self, name)
            if not isinstance(value, str):
                object.__setattr__(self, name, str(value))

    @classmethod
    def from_env(cls, environ: dict[str, str] | os._Environ = os.environ) -> Settings:
        values = {}
        names = {f.name for f in dataclasses.fields(cls)}
        for f in dataclasses.fields(cls):
            raw = environ.get(PREFIX + f.name.upper())
            if f.name + "_file" not in names:  # else ORDERVIEW_<NAME>_FILE is that field's own
                raw = _value_or_file(environ, PREFIX + f.name.upper(), raw)
            if raw is None or raw == "":
                continue
            kind = type(f.default)
            try:
                values[f.name] = kind(raw)
            except ValueError:
                what = "an integer" if kind is int else "a number"
                raise ValueError(f"{PREFIX}{f.name.upper()} must be {what}, got {raw!r}") from None
        settings = cls(**values)
        settings.refuse_unusable()
        settings.refuse_default_passwords()
        return settings

    @property
    def reads_from_standby(self) -> bool:
        """Whether the API's reads may reach a standby (and so follow the standby rule)."""
        return bool(self.pg_read_host) or self.pg_read_target_session_attrs in STANDBY_SESSION_ATTRS

    def pg_servers(self) -> list[tuple[str, int]]:
        """The primary's candidates: each host of pg_host with its port."""
        return servers(self.pg_host, self.pg_port)

    def pg_read_servers(self) -> list[tuple[str, int]]:
        """Where the API reads: the read hosts with their ports (by default the primary's)."""
        ports = self.pg_port if self.pg_read_port in ("", "0") else self.pg_read_port
        return servers(self.pg_read_host or self.pg_host, ports)

    @property
    def read_session_attrs(self) -> str:
        if self.pg_read_target_session_attrs:
            return self.pg_read_target_session_attrs
        return "prefer-standby" if self.pg_read_host else self.pg_target_session_attrs

    def read_dsn(self, role: str, **server_settings: str | int) -> str:
        """Like `dsn`, to the servers the API reads from (the same roles: a standby is a copy)."""
        user, password = self._credentials(role)
        return self._dsn(
            self.pg_database,
            user,
            password,
            {**self._role_settings(role), **server_settings},
            self.pg_read_servers(),
            self.read_session_attrs,
        )

    def refuse_unusable_servers(self) -> None:
        """Hosts, ports and session attributes libpq would refuse or misuse: one sentence each."""
        refuse_unusable_hosts("PG_HOST", self.pg_host, "PG_PORT", self.pg_port)
        if self.pg_read_host or self.pg_read_port not in ("", "0"):
            own_port = self.pg_read_port not in ("", "0")
            refuse_unusable_hosts(
                "PG_READ_HOST" if self.pg_read_host else "PG_HOST",
                self.pg_read_host or self.pg_host,
                "PG_READ_PORT" if own_port else "PG_PORT",
                self.pg_read_port if own_port else self.pg_port,
            )
        if self.pg_target_session_attrs not in PRIMARY_SESSION_ATTRS:
            raise ValueError(
                f"{PREFIX}PG_TARGET_SESSION_ATTRS must be read-write, primary or any (the projector writes "
                f"there and the API listens there), got {self.pg_target_session_attrs!r}"
            )
        if self.pg_target_session_attrs == "any" and len(self.pg_servers()) > 1:
            raise ValueError(
                f"{PREFIX}PG_TARGET_SESSION_ATTRS=any would let libpq pick a standby among the hosts of "
                f"{PREFIX}PG_HOST for the projector's writes and the API's LISTEN: use read-write or primary"
            )
        if self.pg_read_target_session_attrs not in ("", *READ_SESSION_ATTRS):
            raise ValueError(
                f"{PREFIX}PG_READ_TARGET_SESSION_ATTRS must be one of {', '.join(READ_SESSION_ATTRS)} "
                f"(or empty), got {self.pg_read_target_session_attrs!r}"
            )

    def refuse_unusable(self) -> None:
        """Names that must be one of a few, and files that must be there: one sentence each."""
        self.refuse_unusable_servers()
        for address in self.listed("kafka_bootstrap") or [""]:
            if not re.fullmatch(r"\[?[^\s,\[\]]+\]?:\d{1,5}", address):
                raise ValueError(
                    f"{PREFIX}KAFKA_BOOTSTRAP must be host:port, comma-separated, got {self.kafka_bootstrap!r}"
                )
        for name, allowed in CHOICES.items():
            if getattr(self, name) not in allowed:
                raise ValueError(
                    f"{PREFIX}{name.upper()} must be one of {', '.join(allowed)}, got {getattr(self, name)!r}"
                )
        for name in FILES:
            path = getattr(self, name)
            if path and not os.access(path, os.R_OK):
                raise ValueError(f"{PREFIX}{name.upper()} names {path!r}, which cannot be read")
        if bool(self.kafka_ssl_certfile) != bool(self.kafka_ssl_keyfile):
            raise ValueError(
                f"{PREFIX}KAFKA_SSL_CERTFILE and {PREFIX}KAFKA_SSL_KEYFILE go together: set both or neither"
            )
        if not self.api_head_timeout_s > 0:
            raise ValueError(f"{PREFIX}API_HEAD_TIMEOUT_S must be more than 0, got {self.api_head_timeout_s}")
        if self.api_max_connections < 1:
            raise ValueError(
                f"{PREFIX}API_MAX_CONNECTIONS must be at least 1, got {self.api_max_connections}"
            )

    @property
    def kafka_sasl(self) -> bool:
        return self.kafka_security_protocol.startswith("SASL_")

    @property
    def kafka_tls(self) -> bool:
        return self.kafka_security_protocol in ("SSL", "SASL_SSL")

    def kafka_hosts(self) -> list[tuple[str, int]]:
        """The bootstrap list as (host, port) pairs."""
        pairs = []
        for address in self.listed("kafka_bootstrap"):
            host, _, port = address.rpartition(":")
            pairs.append((host.strip("[]"), int(port)))
        return pairs

    def to_env(self) -> dict[str, str]:
        """The environment that makes another process read these same settings."""
        return {PREFIX + f.name.upper(): str(getattr(self, f.name)) for f in dataclasses.fields(self)}

    def dsn(self, role: str, **server_settings: str | int) -> str:
        """libpq connection string for one of the roles: admin, owner, projector, api.

        Built from parameters (quoted by psycopg), so any password works. `server_settings`
        become `-c name=value` options of the session, after the role's own."""
        user, password = self._credentials(role)
        database = "postgres" if role == "admin" else self.pg_database
        return self._dsn(
            database,
            user,
            password,
            {**self._role_settings(role), **server_settings},
            self.pg_servers(),
            self.pg_target_session_attrs,
        )

    def admin_dsn_for(self, database: str) -> str:
        return self._dsn(
            database,
            self.pg_admin_user,
            self.pg_admin_password,
            {},
            self.pg_servers(),
            self.pg_target_session_attrs,
        )

    def _credentials(self, role: str) -> tuple[str, str]:
        return {
            "admin": (self.pg_admin_user, self.pg_admin_password),
            "owner": (self.pg_owner_user, self.pg_owner_password),
            "projector": (self.pg_projector_user, self.pg_projector_password),
            "api": (self.pg_api_user, self.pg_api_password),
        }[role]

    def _role_settings(self, role: str) -> dict[str, str | int]:
        """Deadlines of the long-running services; the bootstrap and migrations have none."""
        seconds = {"projector": self.projector_statement_timeout_s, "api": self.api_db_timeout_s}.get(role)
        return {} if seconds is None else {"statement_timeout": max(1, int(seconds * 1000))}

    def _dsn(
        self,
        database: str,
        user: str,
        password: str,
        server_settings: dict[str, str | int],
        candidates: list[tuple[str, int]],
        session_attrs: str,
    ) -> str:
        idle = max(1, self.pg_dead_after_s // 3)
        options = " ".join(f"-c {name}={value}" for name, value in server_settings.items())
        return make_conninfo(
            "",
            host=",".join(host for host, _ in candidates),
            port=",".join(str(port) for _, port in candidates),
            target_session_attrs=session_attrs,
            dbname=database,
            user=user,
            password=password,
            connect_timeout=self.pg_connect_timeout_s,
            keepalives=1,
            keepalives_idle=idle,
            keepalives_interval=max(1, (self.pg_dead_after_s - idle) // 3),
            keepalives_count=3,
            tcp_user_timeout=self.pg_dead_after_s * 1000,
            sslmode=self.pg_sslmode,
            **{
                key: getattr(self, f"pg_{key}")
                for key in ("sslrootcert", "sslcert", "sslkey")
                if getattr(self, f"pg_{key}")
            },
            **({"options": options} if options else {}),
        )

    def default_passwords(self) -> list[str]:
        """The variables of passwords and secrets still at their defaults."""
        return [
            PREFIX + f.name.upper()
            for f in dataclasses.fields(self)
            if f.name.endswith(("_password", "_secret"))
            and getattr(self, f.name) == f.default
            and (f.name != "kafka_sasl_password" or self.kafka_sasl)  # unused without SASL
        ]

    def exposed_hosts(self, **listeners: str) -> list[str]:
        """The variables among these hosts (and the configured ones) that are not loopback."""
        hosts = {"ORDERVIEW_API_HOST": self.api_host, "ORDERVIEW_PROJECTOR_HOST": self.projector_host}
        hosts.update({"ORDERVIEW_PG_HOST": self.pg_host}, **listeners)
        if self.pg_read_host:
            hosts["ORDERVIEW_PG_READ_HOST"] = self.pg_read_host
        if self.kafka_sasl:  # the SASL password is only sent when SASL is used
            remote = [host for host, _ in self.kafka_hosts() if not is_loopback(host)]
            hosts["ORDERVIEW_KAFKA_BOOTSTRAP"] = remote[0] if remote else "127.0.0.1"
        return [
            name for name, host in hosts.items() if not all(is_loopback(h.strip()) for h in host.split(","))
        ]

    def refuse_default_passwords(self, **listeners: str) -> None:
        """Default passwords are for loopback development only."""
        exposed, defaults = self.exposed_hosts(**listeners), self.default_passwords()
        if exposed and defaults:
            raise ValueError(
                f"refusing to start: {', '.join(exposed)} is not loopback, and "
                f"{', '.join(defaults)} still hold the default passwords; set them, or stay on 127.0.0.1."
            )

    def listed(self, name: str) -> list[str]:
        """A comma-separated setting as a list of its non-empty items."""
        return [item.strip() for item in getattr(self, name).split(",") if item.strip()]


CHOICES = {
    "kafka_security_protocol": ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"),
    "kafka_sasl_mechanism": ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"),
    "pg_sslmode": ("disable", "allow", "prefer", "require", "verify-ca", "verify-full"),
    "history": ("keep", "off"),
    "api_standby_fallback": STANDBY_FALLBACKS,
}
FILES = (
    "kafka_ssl_cafile",
    "kafka_ssl_certfile",
    "kafka_ssl_keyfile",
    "pg_sslrootcert",
    "pg_sslcert",
    "pg_sslkey",
)


def _value_or_file(environ: dict[str, str] | os._Environ, name: str, raw: str | None) -> str | None:
    """ORDERVIEW_<NAME>_FILE names a file that holds the value (a secret mounted by Docker or
    Kubernetes, a password generated on compose's first start), its final line break dropped."""
    path = environ.get(name + "_FILE")
    if not path:
        return raw
    if raw:
        raise ValueError(f"{name} and {name}_FILE are both set: set one of them")
    try:
        with open(path, encoding="utf-8") as f:
            return f.read().removesuffix("\n").removesuffix("\r")
    except OSError:
        raise ValueError(f"{name}_FILE names {path!r}, which cannot be read") from None


def refuse_unusable_hosts(host_var: str, hosts: str, port_var: str, ports: str) -> None:
    """libpq's lists: hosts, and one port for all of them or one each."""
    names = [host.strip() for host in hosts.split(",")]
    if not all(names):
        raise ValueError(f"{PREFIX}{host_var} must name a host, or several, comma-separated; got {hosts!r}")
    numbers = [port.strip() for port in ports.split(",")]
    if not all(n.isdigit() and 0 < int(n) < 65536 for n in numbers):
        raise ValueError(
            f"{PREFIX}{port_var} must be a port (1 to 65535), or one per host, comma-separated; got {ports!r}"
        )
    if len(numbers) not in (1, len(names)):
        raise ValueError(
            f"{PREFIX}{port_var} gives {len(numbers)} ports for the {len(names)} hosts of {PREFIX}{host_var}: "
            "give one port for all of them, or one per host"
        )


def servers(hosts: str, ports: str) -> list[tuple[str, int]]:
    """libpq's host and port lists as (host, port) pairs: one port for all hosts, or one each."""
    names = [host.strip() for host in hosts.split(",")]
    numbers = [int(port) for port in ports.split(",")]
    return list(zip(names, numbers * len(names) if len(numbers) == 1 else numbers, strict=True))


def is_loopback(host: str) -> bool:
    if host.lower() in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


@cache
def get_settings() -> Settings:
    return Settings.from_env()


def main() -> None:
    """`python -m orderview.settings`: exit 1 with one sentence if the settings are unusable."""
    try:
        Settings.from_env()
    except ValueError as exc:
        sys.exit(f"[orderview] {exc}")


if __name__ == "__main__":
    main()
