"""Configuration: one rule for every variable, a clear error for a bad value, all documented."""

from pathlib import Path

import pytest
from psycopg.conninfo import conninfo_to_dict

from orderview.settings import Settings

README = (Path(__file__).resolve().parents[2] / "README.md").read_text()


def test_every_setting_is_read_from_its_orderview_variable() -> None:
    s = Settings.from_env({"ORDERVIEW_API_PORT": "9000", "ORDERVIEW_BATCH_WAIT_S": "0.5"})
    assert (s.api_port, s.batch_wait_s) == (9000, 0.5)
    assert Settings.from_env(s.to_env()) == s


def test_a_malformed_number_names_the_variable() -> None:
    with pytest.raises(ValueError, match="ORDERVIEW_API_PORT must be an integer, got 'eighty'"):
        Settings.from_env({"ORDERVIEW_API_PORT": "eighty"})


def test_the_readme_lists_every_setting() -> None:
    undocumented = [
        name for name in Settings().to_env() if name not in README and name.rsplit("_", 1)[0] not in README
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
