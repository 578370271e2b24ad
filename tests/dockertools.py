"""The real Compose and BuildKit's Dockerfile frontend, without Docker (ops/dockercheck/).

Both are built with the machine's Go on first use (ops/dockercheck/build.sh, cached in
ops/dockercheck/bin) and run in an environment of their own: no variable of this shell and no
.env file reaches them, as on a fresh clone.
"""

from __future__ import annotations

import json
import os
import subprocess
import tempfile
from functools import cache
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TOOLS = ROOT / "ops" / "dockercheck"
COMPOSE_FILE = ROOT / "compose.yaml"


@cache
def _built() -> Path:
    """The folder of the built programs; a missing Go or module fails here, with build.sh's words."""
    out = subprocess.run(["bash", str(TOOLS / "build.sh")], capture_output=True, text=True, timeout=1200)
    assert out.returncode == 0, f"ops/dockercheck/build.sh failed:\n{out.stderr}"
    return TOOLS / "bin"


def _run(program: str, *args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    with tempfile.TemporaryDirectory() as home:
        return subprocess.run(
            [str(_built() / program), *args],
            capture_output=True,
            text=True,
            cwd=cwd,
            env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": home},
            timeout=120,
        )


def compose(
    *args: str, file: Path = COMPOSE_FILE, profiles: tuple[str, ...] = ()
) -> subprocess.CompletedProcess[str]:
    """`docker compose -f FILE --profile P… ARGS` with no environment and no .env file."""
    with tempfile.NamedTemporaryFile("w", suffix=".env") as no_env:
        options = ["-f", str(file), "--env-file", no_env.name]
        for profile in profiles:
            options += ["--profile", profile]
        return _run("docker-compose", *options, *args, cwd=file.parent)


def compose_config(profiles: tuple[str, ...] = (), file: Path = COMPOSE_FILE) -> dict:
    """The project as `docker compose config` resolves it (interpolated, profiles applied)."""
    out = compose("config", "--format", "json", file=file, profiles=profiles)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def dockerfile(context: Path = ROOT, file: Path | None = None) -> subprocess.CompletedProcess[str]:
    """BuildKit's frontend on a Dockerfile; on success its stages as JSON on stdout."""
    return _run("dockerfile", str(context), *([str(file)] if file else []))
