"""Configuration: one rule for every variable, a clear error for a bad value, all documented."""

from pathlib import Path

import pytest

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
