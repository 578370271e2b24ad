"""The passwords compose's first start makes (orderview/passwords.py) and how settings read them."""

from pathlib import Path

import pytest

from orderview.passwords import ensure
from orderview.settings import Settings

VARIABLES = ["ORDERVIEW_PG_ADMIN_PASSWORD", "ORDERVIEW_PG_API_PASSWORD"]


def test_missing_passwords_are_made_random_read_only_and_kept(tmp_path: Path) -> None:
    assert ensure(tmp_path / "volume", VARIABLES, {}) == VARIABLES
    first = {v: (tmp_path / "volume" / v).read_text() for v in VARIABLES}
    assert len(set(first.values())) == 2 and all(len(p) >= 24 for p in first.values())
    assert all((tmp_path / "volume" / v).stat().st_mode & 0o777 == 0o444 for v in VARIABLES)
    assert ensure(tmp_path / "volume", VARIABLES, {}) == []
    assert {v: (tmp_path / "volume" / v).read_text() for v in VARIABLES} == first
    assert sorted(p.name for p in (tmp_path / "volume").iterdir()) == sorted(VARIABLES)


def test_a_password_given_at_the_first_start_is_kept_and_a_different_one_later_refused(
    tmp_path: Path,
) -> None:
    given = {"ORDERVIEW_PG_API_PASSWORD": "chosen by me"}
    ensure(tmp_path, VARIABLES, given)
    assert (tmp_path / "ORDERVIEW_PG_API_PASSWORD").read_text() == "chosen by me"
    assert ensure(tmp_path, VARIABLES, given) == []
    with pytest.raises(
        ValueError, match="ORDERVIEW_PG_API_PASSWORD differs from the password made on the first"
    ):
        ensure(tmp_path, VARIABLES, {"ORDERVIEW_PG_API_PASSWORD": "another"})


def test_a_setting_is_read_from_the_file_its_file_variable_names(tmp_path: Path) -> None:
    (tmp_path / "secret").write_text("s3cret with spaces\n")
    (tmp_path / "port").write_text("9000")
    s = Settings.from_env(
        {
            "ORDERVIEW_PG_API_PASSWORD_FILE": str(tmp_path / "secret"),
            "ORDERVIEW_API_PORT_FILE": str(tmp_path / "port"),
        }
    )
    assert (s.pg_api_password, s.api_port) == ("s3cret with spaces", 9000)


def test_a_setting_given_twice_or_from_an_unreadable_file_is_refused_in_one_sentence(tmp_path: Path) -> None:
    (tmp_path / "secret").write_text("x")
    with pytest.raises(
        ValueError, match="ORDERVIEW_PG_API_PASSWORD and ORDERVIEW_PG_API_PASSWORD_FILE are both set"
    ):
        Settings.from_env(
            {"ORDERVIEW_PG_API_PASSWORD": "y", "ORDERVIEW_PG_API_PASSWORD_FILE": str(tmp_path / "secret")}
        )
    with pytest.raises(ValueError, match=r"ORDERVIEW_PG_API_PASSWORD_FILE names .*, which cannot be read"):
        Settings.from_env({"ORDERVIEW_PG_API_PASSWORD_FILE": str(tmp_path / "missing")})
