"""The Dockerfile as far as a machine without Docker or a registry can check it: BuildKit's own
frontend parses it and converts it to a build graph (`docker build --check`), its COPY sources are
in the context, and the image holds and runs only the project's own code.

Not checked here: pulling the base image, running its RUN steps (pip install), the image's files."""

from __future__ import annotations

import json
import shlex
import shutil
import tomllib
from importlib.util import find_spec
from pathlib import Path

import pytest

from tests.dockertools import ROOT, compose_config, dockerfile


def stages() -> list[dict]:
    out = dockerfile()
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def test_the_dockerfile_passes_buildkits_frontend() -> None:
    (image,) = stages()
    assert image["base"].startswith("python:3.")


def test_the_image_copies_every_package_pip_installs_before_installing_them() -> None:
    (image,) = stages()
    steps = image["steps"]
    install = next(
        i for i, s in enumerate(steps) if s["name"] == "run" and "pip install" in " ".join(s["command"])
    )
    copied = {Path(src).parts[0] for s in steps[:install] if s["name"] == "copy" for src in s["sources"]}
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    needed = {"pyproject.toml", project["project"]["readme"], *project["tool"]["setuptools"]["packages"]}
    assert needed <= copied, f"not copied before pip install: {sorted(needed - copied)}"


def test_the_image_runs_only_the_projects_commands_as_an_unprivileged_user() -> None:
    (image,) = stages()
    commands = [shlex.split(" ".join(s["command"])) for s in image["steps"] if s["name"] == "run"]
    programs = [words[0] for command in commands for words in _and_lists(command)]
    assert programs == ["pip", "useradd"], programs
    users = [s["value"] for s in image["steps"] if s["name"] == "user"]
    assert users and users[-1] not in ("root", "0")
    copied = {Path(src).parts[0] for s in image["steps"] if s["name"] == "copy" for src in s["sources"]}
    project = compose_config(("*",))
    for name, service in project["services"].items():
        if "build" not in service:
            continue
        python, dash_m, module, *args = service["command"]
        assert (python, dash_m) == ("python", "-m"), name
        assert module.split(".")[0] in copied and find_spec(module) is not None, f"{name}: {module}"
        for arg in args:  # the files a command names are in the image too
            if "/" in arg and (ROOT / arg).exists():
                assert Path(arg).parts[0] in copied, f"{name}: {arg} is not copied into the image"


def _and_lists(words: list[str]) -> list[list[str]]:
    """`a x && b y` as [[a, x], [b, y]]."""
    lists: list[list[str]] = [[]]
    for word in words:
        if word == "&&":
            lists.append([])
        else:
            lists[-1].append(word)
    return lists


BROKEN = {
    "a COPY source that is not in the context": ("COPY nowhere /app/nowhere", "COPY nowhere: not found"),
    "a lint rule of docker build --check": ("CMD python -m api", "JSONArgsRecommended"),
    "an instruction BuildKit does not know": ("FROBNICATE x", "unknown instruction: FROBNICATE"),
}


@pytest.mark.parametrize("case", BROKEN)
def test_a_dockerfile_the_build_would_refuse_is_refused(case: str, tmp_path: Path) -> None:
    line, message = BROKEN[case]
    broken = tmp_path / "Dockerfile"
    broken.write_text((ROOT / "Dockerfile").read_text() + line + "\n")
    out = dockerfile(ROOT, broken)
    assert out.returncode != 0 and message in out.stderr, out.stderr


def test_a_copy_source_that_dockerignore_excludes_is_refused(tmp_path: Path) -> None:
    (image,) = stages()
    sources = [src for s in image["steps"] if s["name"] == "copy" for src in s["sources"]]
    for source in ["Dockerfile", *sources]:
        copy = shutil.copytree if (ROOT / source).is_dir() else shutil.copy
        copy(ROOT / source, tmp_path / source)
    assert dockerfile(tmp_path).returncode == 0
    (tmp_path / ".dockerignore").write_text(f"# not sent to the builder\n{sources[-1]}\n")
    out = dockerfile(tmp_path)
    assert out.returncode != 0 and f"COPY {sources[-1]}: is excluded by .dockerignore" in out.stderr, (
        out.stderr
    )
