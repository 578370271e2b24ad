"""Passwords made on first start, kept in files: `python -m orderview.passwords DIR VARIABLE...`.

compose.yaml runs this once before anything else, on a volume that every other service mounts
read-only: each VARIABLE (e.g. ORDERVIEW_PG_API_PASSWORD) gets the file DIR/VARIABLE, which the
services read through ORDERVIEW_<NAME>_FILE and PostgreSQL's image through POSTGRES_PASSWORD_FILE.
A file that exists is kept (the database was made with it). A variable set in the environment is
the password its file is made with; set later to a different one, it is refused rather than
silently ignored.
"""

from __future__ import annotations

import os
import secrets
import sys
from collections.abc import Iterable, Mapping
from pathlib import Path

# Read by PostgreSQL's user and the services' user, in containers that mount the volume only.
MODE = 0o444


def ensure(directory: Path, variables: Iterable[str], environ: Mapping[str, str]) -> list[str]:
    """Make the missing password files; the variables whose files were made now."""
    directory.mkdir(parents=True, exist_ok=True)
    made = []
    for variable in variables:
        path = directory / variable
        given = environ.get(variable, "")
        if path.exists():
            if given and path.read_text(encoding="utf-8") != given:
                raise ValueError(
                    f"{variable} differs from the password made on the first start and kept in "
                    f"{path}: unset it, or remove the volume (and with it the database's data)"
                )
            continue
        _write(path, given or secrets.token_urlsafe(24))
        made.append(variable)
    return made


def _write(path: Path, password: str) -> None:
    """Whole or not at all: a file cut short by a crash would be a wrong password for good."""
    partial = path.with_name(f".{path.name}.partial")
    partial.unlink(missing_ok=True)
    partial.write_text(password, encoding="utf-8")
    partial.chmod(MODE)
    os.replace(partial, path)


def main(argv: list[str]) -> None:
    if len(argv) < 2:
        sys.exit("usage: python -m orderview.passwords DIR VARIABLE...")
    directory, variables = Path(argv[0]), argv[1:]
    try:
        made = ensure(directory, variables, os.environ)
    except (ValueError, OSError) as exc:
        sys.exit(f"[orderview] {exc}")
    kept = [v for v in variables if v not in made]
    print(
        f"[orderview] passwords in {directory}: made {', '.join(made) or 'none'}; kept {', '.join(kept) or 'none'}"
    )


if __name__ == "__main__":
    main(sys.argv[1:])
