#!/usr/bin/env bash
# Creates .venv and installs the project with its test extra; quick when nothing changed.
set -euo pipefail
source "$(dirname "$0")/common.sh"
command -v python3 >/dev/null || die "Python 3.11+ is required: install python3 (Debian: apt-get install python3 python3-venv)."
python3 -c 'import sys; sys.exit(sys.version_info < (3, 11))' || die "Python 3.11+ is required, found $(python3 --version)."
stamp="$VENV/.installed"
if [ ! -x "$VENV/bin/python" ]; then
    say "creating virtualenv in .venv"
    python3 -m venv "$VENV"
fi
if [ ! -f "$stamp" ] || [ "$ROOT/pyproject.toml" -nt "$stamp" ]; then
    say "installing Python packages"
    "$VENV/bin/pip" install -q --disable-pip-version-check -e "$ROOT[test]"
    touch "$stamp"
fi
