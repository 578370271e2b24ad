"""Configuration: one rule for every variable, a clear error for a bad value, all documented."""

from pathlib import Path

import pytest
from psycopg.conninfo import conninfo_to_dict

from orderview.settings import Settings

REFERENCE = (Path(__file__).resolve().parents[2] / "docs" / "configuration.md").read_text()


def test_every_setting_is_read_from_its_orderview_variable() -> None:
    s = Settings.from_env({"ORDERVIEW_API_PORT": "9000", "ORDERVIEW_BATCH_WAIT_S": "0.5"})
    assert (s.api_port, s.batch_wait_s) == (9000, 0.5)
    assert Settings.from_env(s.to_env()) == s


def test_a_malformed_number_names_the_variable() -> None:
    with pytest.raises(ValueError, match="ORDERVIEW_API_PORT must be an integer, got 'eighty'"):
        Settings.from_env({"ORDERVIEW_API_PORT": "eighty"})


def test_the_configuration_reference_lists_every_setting() -> None:
    undocumented = [
        name
        for name in Settings().to_env()
        if name not in REFERENCE and name.rsplit("_", 1)[0] not in REFERENCE
    ]
    assert undocumented == []


def test_a_password_with_spaces_and_quotes_reaches_libpq_intact() -> None:
    password = """a b'c"d\\e f"""
    s = Settings(pg_api_password=password, pg_database="order view")
    parsed = conninfo_to_dict(s.dsn("api", TimeZone="UTC"))
    assert (parsed["password"], parsed["dbname"]) == (password, "order view")


def test_every_connection_has_keepalives_and_the_services_a_statement_timeout() -> None:
    s = Settings(pg_dead_after_s=15, api_db_timeout_s=2.5, projector_statement_timeout_s=60)
    for role in ("admin", "owner", "projector", "api"):
        parsed = conninfo_to_dict(s.dsn(role))
        assert parsed["keepalives"] == "1" and int(parsed["tcp_user_timeout"]) == 15000
        idle, interval, count = (
            int(parsed[k]) for k in ("keepalives_idle", "keepalives_interval", "keepalives_count")
        )
        assert idle + interval * count <= 15
    assert "-c statement_timeout=2500" in conninfo_to_dict(s.dsn("api"))["options"]
    assert "-c statement_timeout=60000" in conninfo_to_dict(s.dsn("projector"))["options"]


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "192.0.2.7", "orders.example.com"])
def test_default_passwords_are_refused_off_loopback_in_one_sentence(host: str) -> None:
    with pytest.raises(ValueError) as refused:
        Settings.from_env({"ORDERVIEW_API_HOST": host})
    message = str(refused.value)
    assert message.count(".") == 1 + message.count("127.0.0.1") * 3 and "\n" not in message
    assert "ORDERVIEW_API_HOST" in message and "ORDERVIEW_PG_API_PASSWORD" in message


def test_loopback_or_changed_passwords_start() -> None:
    for host in ("127.0.0.1", "localhost", "::1", "127.0.0.2"):
        assert Settings.from_env({"ORDERVIEW_API_HOST": host}).api_host == host
    changed = {f"ORDERVIEW_PG_{r}_PASSWORD": f"secret {r}" for r in ("ADMIN", "OWNER", "PROJECTOR", "API")}
    changed["ORDERVIEW_REDRIVE_SECRET"] = "a secret of our own"
    assert Settings.from_env({**changed, "ORDERVIEW_API_HOST": "0.0.0.0"}).api_host == "0.0.0.0"


def test_several_hosts_and_ports_reach_libpq_as_lists_with_the_primarys_session_attributes() -> None:
    s = Settings.from_env({"ORDERVIEW_PG_HOST": "127.0.0.1,localhost", "ORDERVIEW_PG_PORT": "5432,5433"})
    for role in ("admin", "owner", "projector", "api"):
        parsed = conninfo_to_dict(s.dsn(role))
        assert (parsed["host"], parsed["port"]) == ("127.0.0.1,localhost", "5432,5433")
        assert parsed["target_session_attrs"] == "read-write"
    assert s.pg_servers() == [("127.0.0.1", 5432), ("localhost", 5433)]
    one_port = Settings.from_env({"ORDERVIEW_PG_HOST": "127.0.0.1,::1", "ORDERVIEW_PG_PORT": "6432"})
    assert one_port.pg_servers() == [("127.0.0.1", 6432), ("::1", 6432)]
    primary = Settings.from_env({"ORDERVIEW_PG_TARGET_SESSION_ATTRS": "primary"})
    assert conninfo_to_dict(primary.admin_dsn_for("orderview"))["target_session_attrs"] == "primary"


def test_a_port_given_as_a_number_is_the_same_setting_as_its_text() -> None:
    s = Settings(pg_port=6543, pg_read_port=6544)  # type: ignore[arg-type]
    assert (s.pg_port, s.pg_read_port) == ("6543", "6544")
    assert Settings.from_env(s.to_env()) == s


def test_reads_go_to_the_read_hosts_preferring_a_standby_else_where_the_primary_is() -> None:
    primary_only = Settings.from_env({"ORDERVIEW_PG_HOST": "127.0.0.1,localhost"})
    parsed = conninfo_to_dict(primary_only.read_dsn("api"))
    assert (parsed["host"], parsed["target_session_attrs"]) == ("127.0.0.1,localhost", "read-write")
    assert not primary_only.reads_from_standby

    standbys = Settings.from_env(
        {"ORDERVIEW_PG_READ_HOST": "127.0.0.1,localhost", "ORDERVIEW_PG_READ_PORT": "5433,5434"}
    )
    parsed = conninfo_to_dict(standbys.read_dsn("api"))
    assert (parsed["host"], parsed["port"]) == ("127.0.0.1,localhost", "5433,5434")
    assert parsed["target_session_attrs"] == "prefer-standby" and standbys.reads_from_standby

    among_the_primarys = Settings.from_env(
        {"ORDERVIEW_PG_HOST": "127.0.0.1,localhost", "ORDERVIEW_PG_READ_TARGET_SESSION_ATTRS": "standby"}
    )
    parsed = conninfo_to_dict(among_the_primarys.read_dsn("api"))
    assert (parsed["host"], parsed["target_session_attrs"]) == ("127.0.0.1,localhost", "standby")
    assert among_the_primarys.reads_from_standby


@pytest.mark.parametrize(
    ("environ", "named"),
    [
        ({"ORDERVIEW_PG_PORT": "eighty"}, "ORDERVIEW_PG_PORT must be a port"),
        ({"ORDERVIEW_PG_PORT": "5432,70000"}, "ORDERVIEW_PG_PORT must be a port"),
        ({"ORDERVIEW_PG_HOST": "a,,b"}, "ORDERVIEW_PG_HOST must name a host"),
        (
            {"ORDERVIEW_PG_HOST": "127.0.0.1,::1", "ORDERVIEW_PG_PORT": "1,2,3"},
            "ORDERVIEW_PG_PORT gives 3 ports for the 2 hosts of ORDERVIEW_PG_HOST",
        ),
        (
            {"ORDERVIEW_PG_READ_HOST": "127.0.0.1", "ORDERVIEW_PG_READ_PORT": "1,2"},
            "ORDERVIEW_PG_READ_PORT gives 2 ports for the 1 hosts of ORDERVIEW_PG_READ_HOST",
        ),
        ({"ORDERVIEW_PG_TARGET_SESSION_ATTRS": "standby"}, "ORDERVIEW_PG_TARGET_SESSION_ATTRS must be"),
        (
            {"ORDERVIEW_PG_HOST": "127.0.0.1,::1", "ORDERVIEW_PG_TARGET_SESSION_ATTRS": "any"},
            "ORDERVIEW_PG_TARGET_SESSION_ATTRS=any would let libpq pick a standby",
        ),
        (
            {"ORDERVIEW_PG_READ_TARGET_SESSION_ATTRS": "replica"},
            "ORDERVIEW_PG_READ_TARGET_SESSION_ATTRS must",
        ),
    ],
)
def test_unusable_hosts_ports_and_session_attributes_are_refused_in_one_sentence(
    environ: dict[str, str], named: str
) -> None:
    with pytest.raises(ValueError) as refused:
        Settings.from_env(environ)
    message = str(refused.value)
    assert message.startswith(named) and "\n" not in message and message.count(". ") == 0


def test_every_session_attribute_libpq_knows_is_taken_for_reads() -> None:
    for attrs in ("any", "read-write", "primary", "standby", "prefer-standby", "read-only"):
        s = Settings.from_env({"ORDERVIEW_PG_READ_TARGET_SESSION_ATTRS": attrs})
        assert conninfo_to_dict(s.read_dsn("api"))["target_session_attrs"] == attrs


def test_a_host_list_with_one_remote_host_is_not_loopback() -> None:
    with pytest.raises(ValueError, match="ORDERVIEW_PG_HOST is not loopback"):
        Settings.from_env({"ORDERVIEW_PG_HOST": "127.0.0.1,db.example.com"})
