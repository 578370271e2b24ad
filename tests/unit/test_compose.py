"""compose.yaml as the real Compose (docker/compose v5, ops/dockercheck/) loads it, on a fresh
clone with nothing set: every profile, and the first start's passwords."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from orderview.settings import Settings
from tests.dockertools import ROOT, compose, compose_config, dockerfile

PASSWORDS = "passwords"  # the volume and the one-shot service that fills it


def profiles() -> list[str]:
    out = compose("config", "--profiles")
    assert out.returncode == 0, out.stderr
    return out.stdout.split()


def test_compose_file_loads_with_every_profile() -> None:
    found = profiles()
    assert {"cluster", "observability"} <= set(found)
    for chosen in [(), *((p,) for p in found), tuple(found)]:
        out = compose("config", "--quiet", profiles=chosen)
        assert out.returncode == 0, f"profiles {chosen or '(none)'}: {out.stderr}"


def test_each_profile_adds_its_services_and_the_bootstrap_waits_for_every_broker_it_starts() -> None:
    plain = compose_config()["services"]
    cluster = compose_config(("cluster",))["services"]
    observability = compose_config(("observability",))["services"]
    assert {"kafka-1", "kafka-2", "kafka-3"} == set(cluster) - set(plain)
    assert {"prometheus", "grafana"} == set(observability) - set(plain)
    waits = plain["bootstrap"]["depends_on"]
    assert all(waits[s]["required"] for s in ("kafka", "postgres", PASSWORDS))
    for broker in ("kafka-1", "kafka-2", "kafka-3"):  # waited for when the profile starts them
        assert waits[broker] == {"condition": "service_healthy", "required": False}
        assert cluster["bootstrap"]["depends_on"][broker]["condition"] == "service_healthy"


BROKEN = {
    "a variable that must be set": (
        "services:\n  db:\n    image: postgres:15\n    environment:\n"
        "      POSTGRES_PASSWORD: ${UNSET_PASSWORD:?set the password}\n",
        "required variable UNSET_PASSWORD is missing a value: set the password",
    ),
    "a key the specification does not have": (
        "services:\n  db:\n    image: postgres:15\n    depends_on:\n"
        "      other: {condition: service_healthy, requried: false}\n  other:\n    image: postgres:15\n",
        "requried",
    ),
    "a dependency on no service": (
        "services:\n  db:\n    image: postgres:15\n    depends_on: [nowhere]\n",
        "depends on undefined service",
    ),
}


@pytest.mark.parametrize("case", BROKEN)
def test_a_broken_compose_file_is_refused_with_the_loaders_message(case: str, tmp_path: Path) -> None:
    text, message = BROKEN[case]
    (tmp_path / "compose.yaml").write_text(text)
    out = compose("config", "--quiet", file=tmp_path / "compose.yaml")
    assert out.returncode != 0 and message in out.stderr, out.stderr


def test_the_first_start_makes_passwords_that_every_service_reads(tmp_path: Path) -> None:
    """The `passwords` service's own command, run here on a folder standing for its volume; each
    service then reads its settings from compose's environment (and the image's) with that folder
    where compose mounts the volume: no default password is left to refuse."""
    project = compose_config()
    services = project["services"]
    maker = services[PASSWORDS]
    (mount,) = [v["target"] for v in maker["volumes"] if v["source"] == PASSWORDS]
    python, dash_m, module, directory, *variables = maker["command"]
    assert (python, dash_m, directory) == ("python", "-m", mount)
    run = [sys.executable, "-m", module, str(tmp_path), *variables]
    made = subprocess.run(run, capture_output=True, text=True, cwd=ROOT, env={})
    assert made.returncode == 0, made.stderr
    passwords = {v: (tmp_path / v).read_text() for v in variables}
    assert len(set(passwords.values())) == len(variables) and all(len(p) >= 24 for p in passwords.values())

    image_env = dict(
        pair.split("=", 1)
        for stage in [_final_stage()]
        for step in stage["steps"]
        if step["name"] == "env"
        for pair in step["value"].split()
    )
    built = [name for name, s in services.items() if "build" in s and name != PASSWORDS]
    assert {"bootstrap", "projector", "api", "emulator"} <= set(built)
    for name in [*built, "postgres"]:
        service = services[name]
        assert {"source": PASSWORDS, "target": mount, "read_only": True} in [
            {k: v.get(k, False) for k in ("source", "target", "read_only")} for v in service["volumes"]
        ], f"{name} does not mount the passwords read-only"
        waits_for = PASSWORDS if name in ("postgres", "bootstrap") else "bootstrap"
        assert service["depends_on"][waits_for]["condition"] == "service_completed_successfully", name
    for name in built:
        env = {**image_env, **services[name]["environment"]}
        env = {k: v.replace(mount, str(tmp_path)) for k, v in env.items() if v is not None}
        settings = Settings.from_env(env)  # refuses default passwords off loopback
        assert settings.default_passwords() == [], name
        assert {v: getattr(settings, v.removeprefix("ORDERVIEW_").lower()) for v in variables} == passwords
    postgres = services["postgres"]["environment"]["POSTGRES_PASSWORD_FILE"]
    assert postgres == f"{mount}/ORDERVIEW_PG_ADMIN_PASSWORD"

    again = subprocess.run(run, capture_output=True, text=True, cwd=ROOT, env={})
    assert again.returncode == 0, again.stderr
    assert {v: (tmp_path / v).read_text() for v in variables} == passwords, "a restart changed a password"


def _final_stage() -> dict:
    out = dockerfile()
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)[-1]
