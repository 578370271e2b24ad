"""A connection refused for its credentials or its certificate, in one sentence.

Wrong password, a certificate the CA file does not trust, a certificate for another name: these
are settings to fix, not outages, and the first thing anyone needs is which setting. The
services stay up and not ready with that sentence as the reason (`/readyz`), log it once, and
try again with capped backoff: a password changed on the server, or a CA rotated, is picked up
without a restart. Sentences name the settings, never their values (`/readyz` is public).

aiokafka does not say why it could not bootstrap (`KafkaConnectionError: Unable to bootstrap`,
the cause only in its own error log lines), so `explain_kafka` asks each bootstrap server itself,
one connection each, and maps what that raises.
"""

from __future__ import annotations

import asyncio
import ssl

import psycopg

from orderview.settings import Settings

PROBE_TIMEOUT_S = 5.0


def kafka(exc: BaseException, settings: Settings) -> str | None:
    """The sentence for a Kafka connection refused by TLS or SASL, or None."""
    # aiokafka is imported where it is used: the API imports this module and no Kafka client.
    from aiokafka.errors import SaslAuthenticationFailed, UnsupportedSaslMechanismError

    if isinstance(exc, SaslAuthenticationFailed):
        return (
            f"the Kafka broker refused the {settings.kafka_sasl_mechanism} credentials: check "
            "ORDERVIEW_KAFKA_SASL_USERNAME and ORDERVIEW_KAFKA_SASL_PASSWORD"
        )
    if isinstance(exc, UnsupportedSaslMechanismError):
        return (
            f"the Kafka broker does not offer SASL mechanism {settings.kafka_sasl_mechanism} "
            "(ORDERVIEW_KAFKA_SASL_MECHANISM)"
        )
    if isinstance(exc, ssl.SSLCertVerificationError):
        what = exc.verify_message or "verification failed"
        if exc.verify_code == 62 or "hostname" in what.lower() or "ip address mismatch" in what.lower():
            return (
                f"the Kafka broker's certificate does not name the host in ORDERVIEW_KAFKA_BOOTSTRAP ({what})"
            )
        return f"the Kafka broker's certificate is not trusted by ORDERVIEW_KAFKA_SSL_CAFILE ({what})"
    if isinstance(exc, ssl.SSLError):
        return (
            f"TLS to the Kafka broker failed ({exc.reason or exc}): check ORDERVIEW_KAFKA_SECURITY_PROTOCOL "
            "and that the bootstrap servers are its TLS listeners"
        )
    return None


async def explain_kafka(settings: Settings) -> str | None:
    """Why the bootstrap servers refuse this client, if one of them does for TLS or SASL.
    None when every server is merely unreachable, or one of them accepts."""
    from aiokafka.conn import create_conn
    from aiokafka.errors import KafkaError

    from orderview import kafka_clients

    opts = kafka_clients.options(settings)
    del opts["bootstrap_servers"]
    refused: str | None = None
    for host, port in settings.kafka_hosts():
        try:
            conn = await asyncio.wait_for(
                create_conn(host, port, request_timeout_ms=int(PROBE_TIMEOUT_S * 1000), **opts),
                PROBE_TIMEOUT_S,
            )
        except (OSError, KafkaError, TimeoutError) as exc:
            refused = refused or kafka(_cause(exc), settings)
            continue
        conn.close()
        return None  # one server takes us: whatever failed is not the credentials
    return refused


def _cause(exc: BaseException) -> BaseException:
    """aiokafka wraps a TLS failure during connect in its own error."""
    while not isinstance(exc, ssl.SSLError) and exc.__cause__ is not None:
        exc = exc.__cause__
    return exc


def database(exc: BaseException, role: str) -> str | None:
    """The sentence for a PostgreSQL connection refused by its password or TLS, or None.
    `role` is whose connection it was: admin, owner, projector or api."""
    if not isinstance(exc, psycopg.OperationalError):
        return None
    text = str(exc)
    prefix = f"ORDERVIEW_PG_{role.upper()}"
    if "password authentication failed" in text or "no password supplied" in text:
        return (
            f"PostgreSQL refused the password of the {role} role: check {prefix}_USER and {prefix}_PASSWORD"
        )
    if "certificate verify failed" in text:
        return (
            "PostgreSQL's certificate is not trusted by ORDERVIEW_PG_SSLROOTCERT (certificate verify failed)"
        )
    if "does not match host name" in text:
        return "PostgreSQL's certificate does not name ORDERVIEW_PG_HOST (ORDERVIEW_PG_SSLMODE=verify-full)"
    if "root certificate file" in text and "does not exist" in text:
        return "ORDERVIEW_PG_SSLMODE verifies the server, but no CA file is set: set ORDERVIEW_PG_SSLROOTCERT"
    if "server does not support SSL" in text:
        return "PostgreSQL does not offer TLS, and ORDERVIEW_PG_SSLMODE requires it"
    if "no pg_hba.conf entry" in text and "no encryption" in text:
        return "PostgreSQL accepts this connection only over TLS: set ORDERVIEW_PG_SSLMODE (require or verify-full)"
    return None
