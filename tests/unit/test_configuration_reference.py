"""docs/configuration.md says what orderview/settings.py says, and keeps up with what is added."""

from __future__ import annotations

import importlib.util
import re
import sys
from pathlib import Path
from types import ModuleType

from orderview import configuration_reference as reference
from orderview import settings as settings_module
from orderview.settings import Settings

SOURCE = Path(settings_module.__file__).read_text()


def test_docs_configuration_is_written_from_settings_py() -> None:
    assert reference.PAGE.read_text() == reference.render(), (
        f"docs/configuration.md differs from orderview/settings.py: run `{reference.COMMAND}`"
    )


def test_the_reference_lists_every_setting_once_with_its_default() -> None:
    page = reference.render()
    for name, value in Settings().to_env().items():
        (row,) = [line for line in page.splitlines() if line.startswith(f"| `{name}` |")]
        assert (f"`{value}`" if value else "empty") in row, row


def test_a_setting_added_with_comments_appears_where_and_as_settings_py_puts_it(tmp_path: Path) -> None:
    """What another engineer would add: a field in an existing section with a note above it and a
    comment on its line, and a new section after a blank line."""
    added = SOURCE.replace(
        "    pg_connect_timeout_s: int = 5",
        "\n    # Tried in turn until one answers.\n"
        "    pg_hosts: str = ''  # comma-separated host:port\n\n"
        "    pg_connect_timeout_s: int = 5",
        1,
    ).replace(
        "    log_level: str",
        "    # Examples: what a new section says\n    example_secret: str = 'changeme'\n\n    log_level: str",
        1,
    )
    assert added.count("pg_hosts") == added.count("example_secret") == 1
    page = reference.render(_module(added, tmp_path))
    postgres = _section(page, "PostgreSQL")
    assert (
        "| `ORDERVIEW_PG_HOSTS` | text | empty | Tried in turn until one answers. comma-separated host:port |"
        in (postgres)
    )
    assert (
        "| `ORDERVIEW_PG_CONNECT_TIMEOUT_S` | integer | `5` | how long a new connection may take |"
        in postgres
    )
    redrive = _section(page, "Examples")
    assert redrive.splitlines()[2] == "What a new section says."
    assert "| `ORDERVIEW_EXAMPLE_SECRET` | text | `changeme` |  |" in redrive
    assert "ORDERVIEW_LOG_LEVEL" in redrive  # after a blank line, still the section above it


def test_the_check_command_names_the_command_that_rewrites_the_page(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(reference, "PAGE", tmp_path / "docs" / "configuration.md")
    monkeypatch.setattr(reference, "ROOT", tmp_path)
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "configuration.md").write_text("# out of date\n")
    try:
        reference.main(["--check"])
    except SystemExit as stop:
        assert f"run `{reference.COMMAND}`" in str(stop.code)
    else:
        raise AssertionError("--check accepted a page that differs")
    reference.main([])
    reference.main(["--check"])


def _module(source: str, folder: Path) -> ModuleType:
    """settings.py with changes, as a module of its own."""
    path = folder / "changed_settings.py"
    path.write_text(source)
    spec = importlib.util.spec_from_file_location("changed_settings", path)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the class is made
    try:
        spec.loader.exec_module(module)
    finally:
        del sys.modules[spec.name]
    return module


def _section(page: str, title: str) -> str:
    match = re.search(rf"^## {re.escape(title)}\n(.*?)(?=^## |\Z)", page, re.S | re.M)
    assert match, f"no section {title!r}"
    return match.group(0)
