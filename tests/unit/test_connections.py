"""How every client connects: one set of settings for Kafka (bootstrap list, TLS, SASL) and
PostgreSQL (sslmode), the topics' replication, and one sentence for each refusal."""

from __future__ import annotations

import ssl

import psycopg
import pytest
from aiokafka.errors import SaslAuthenticationFailed
from faust.auth import SASLCredentials, SSLCredentials
from psycopg.conninfo import conninfo_to_dict

from orderview import kafka_clients, refusals
from orderview.bootstrap import replication
from orderview.settings import Settings
from projector.adapters.faust import broker_url

CA = ssl.get_default_verify_paths().cafile or "/etc/ssl/certs/ca-certificates.crt"


def test_plaintext_is_the_default_and_carries_no_credentials() -> None:
    assert kafka_clients.options(Settings()) == {
        "bootstrap_servers": "127.0.0.1:9092",
        "security_protocol": "PLAINTEXT",
    }
    assert kafka_clients.faust_credentials(Settings()) is None


def test_sasl_ssl_gives_every_client_a_verifying_context_and_the_credentials() -> None:
    s = Settings(
        kafka_security_protocol="SASL_SSL",
        kafka_sasl_mechanism="SCRAM-SHA-256",
        kafka_sasl_password="secret",
        kafka_ssl_cafile=CA,
    )
    opts = kafka_clients.options(s)
    assert opts["security_protocol"] == "SASL_SSL"
    assert (opts["sasl_mechanism"], opts["sasl_plain_username"], opts["sasl_plain_password"]) == (
        "SCRAM-SHA-256",
        "orderview",
        "secret",
    )
    context = opts["ssl_context"]
    assert context.verify_mode == ssl.CERT_REQUIRED and context.check_hostname
    credentials = kafka_clients.faust_credentials(s)
    assert isinstance(credentials, SASLCredentials)
    assert credentials.protocol.value == "SASL_SSL" and credentials.mechanism.value == "SCRAM-SHA-256"
    assert kafka_clients.librdkafka_config(s) == {
        "security.protocol": "sasl_ssl",
        "ssl.endpoint.identification.algorithm": "https",
        "ssl.ca.location": CA,
        "sasl.mechanism": "SCRAM-SHA-256",
        "sasl.username": "orderview",
        "sasl.password": "secret",
    }


def test_ssl_alone_is_tls_without_sasl() -> None:
    s = Settings(kafka_security_protocol="SSL")
    assert "sasl_mechanism" not in kafka_clients.options(s)
    assert isinstance(kafka_clients.faust_credentials(s), SSLCredentials)


async def test_producers_are_idempotent_with_acks_all_unless_told_otherwise() -> None:
    producer = kafka_clients.producer(Settings())
    dlq_like = kafka_clients.producer(Settings(), enable_idempotence=False)
    try:
        # aiokafka keeps a transaction manager (producer id, sequences) for idempotent producers only.
        assert producer._txn_manager is not None and producer._sender._acks == -1
        assert dlq_like._txn_manager is None and dlq_like._sender._acks == -1
    finally:
        await producer.stop()
        await dlq_like.stop()


def test_faust_gets_every_bootstrap_server() -> None:
    assert broker_url("127.0.0.1:9092, 127.0.0.1:9094,127.0.0.1:9096") == (
        "kafka://127.0.0.1:9092;127.0.0.1:9094;127.0.0.1:9096"
    )


@pytest.mark.parametrize(
    "environ, says",
    [
        ({"ORDERVIEW_KAFKA_BOOTSTRAP": "kafka"}, "ORDERVIEW_KAFKA_BOOTSTRAP must be host:port"),
        ({"ORDERVIEW_KAFKA_SECURITY_PROTOCOL": "TLS"}, "ORDERVIEW_KAFKA_SECURITY_PROTOCOL must be one of"),
        ({"ORDERVIEW_PG_SSLMODE": "strict"}, "ORDERVIEW_PG_SSLMODE must be one of"),
        (
            {"ORDERVIEW_KAFKA_SSL_CAFILE": "/no/such/ca.pem"},
            "ORDERVIEW_KAFKA_SSL_CAFILE names '/no/such/ca.pem'",
        ),
        ({"ORDERVIEW_KAFKA_SSL_CERTFILE": CA}, "set both or neither"),
    ],
)
def test_an_unusable_connection_setting_is_one_sentence(environ: dict[str, str], says: str) -> None:
    with pytest.raises(ValueError, match=says):
        Settings.from_env(environ)


def test_the_default_sasl_password_is_refused_off_loopback_only() -> None:
    remote = {
        "ORDERVIEW_KAFKA_BOOTSTRAP": "kafka.example.com:9093",
        "ORDERVIEW_KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
    }
    with pytest.raises(
        ValueError, match=r"ORDERVIEW_KAFKA_BOOTSTRAP is not loopback.*ORDERVIEW_KAFKA_SASL_PASSWORD"
    ):
        Settings.from_env(remote)
    Settings.from_env({**remote, "ORDERVIEW_KAFKA_BOOTSTRAP": "127.0.0.1:9093"})
    Settings.from_env({"ORDERVIEW_KAFKA_BOOTSTRAP": "kafka.example.com:9092"})  # no SASL, no password sent


def test_postgres_tls_settings_reach_libpq() -> None:
    parsed = conninfo_to_dict(Settings(pg_sslmode="verify-full", pg_sslrootcert=CA).dsn("api"))
    assert (parsed["sslmode"], parsed["sslrootcert"]) == ("verify-full", CA)
    assert "sslcert" not in parsed


@pytest.mark.parametrize("brokers, replicas, in_sync", [(1, 1, 1), (2, 2, 1), (3, 3, 2), (5, 3, 2)])
def test_topics_get_min_3_brokers_replicas_and_2_in_sync_where_there_are_3(
    brokers: int, replicas: int, in_sync: int
) -> None:
    assert replication(Settings(), brokers) == (replicas, in_sync)


def test_more_replicas_than_brokers_is_one_sentence() -> None:
    with pytest.raises(
        ValueError, match="ORDERVIEW_KAFKA_REPLICATION_FACTOR is 3, but the cluster has 1 broker"
    ):
        replication(Settings(kafka_replication_factor=3), 1)


@pytest.mark.parametrize(
    "message, says",
    [
        ('connection to server at "h", port 1 failed: FATAL:  password authentication failed for user "u"',
         "PostgreSQL refused the password of the api role: check ORDERVIEW_PG_API_USER and ORDERVIEW_PG_API_PASSWORD"),
        ('connection to server at "h", port 1 failed: SSL error: certificate verify failed',
         "PostgreSQL's certificate is not trusted by ORDERVIEW_PG_SSLROOTCERT"),
        ('server certificate for "localhost" does not match host name "db"',
         "PostgreSQL's certificate does not name ORDERVIEW_PG_HOST"),
        ("connection to server failed: Connection refused", None),
    ],
)  # fmt: skip
def test_a_refused_database_connection_names_the_setting(message: str, says: str | None) -> None:
    found = refusals.database(psycopg.OperationalError(message), "api")
    assert found == says if says is None else found is not None and found.startswith(says)


def test_a_refused_kafka_connection_names_the_setting() -> None:
    s = Settings(kafka_security_protocol="SASL_SSL")
    assert "ORDERVIEW_KAFKA_SASL_PASSWORD" in refusals.kafka(SaslAuthenticationFailed("bad"), s)
    untrusted = ssl.SSLCertVerificationError(1, "certificate verify failed")
    untrusted.verify_message, untrusted.verify_code = "unable to get local issuer certificate", 20
    assert refusals.kafka(untrusted, s).startswith(
        "the Kafka broker's certificate is not trusted by ORDERVIEW_KAFKA_SSL_CAFILE"
    )
    misnamed = ssl.SSLCertVerificationError(1, "certificate verify failed")
    misnamed.verify_message, misnamed.verify_code = "Hostname mismatch, certificate is not valid for 'x'", 62
    assert "does not name the host" in refusals.kafka(misnamed, s)
    assert refusals.kafka(ConnectionRefusedError(), s) is None
