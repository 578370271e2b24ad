"""A real Prometheus for tests: Debian's binary (ops/prometheus.sh installs it), on a free
loopback port, with the project's scrape config and rules (ops/prometheus/) and targets of the
test's own.

What differs from the shipped files, and only that: the targets, 1 s scrape and evaluation
intervals, and the `for:` of the alerts a test waits for (`short_for`), so that a test waits
seconds where an operator's alert waits minutes. Expressions, labels and annotations are the
shipped ones; promtool's unit tests (ops/prometheus/tests.yml) check the shipped `for:`s.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import urllib.parse
import urllib.request
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import yaml

from harness import ROOT
from harness.ports import free_port
from harness.processes import LOGS
from harness.readiness import answers_200, wait_until

CONFIG_DIR = ROOT / "ops" / "prometheus"
INTERVAL = "1s"


def binary(name: str) -> str:
    path = shutil.which(name)
    assert path, f"{name} is missing: `bash ops/prometheus.sh install` installs Debian's prometheus"
    return path


def rules_with_for(rules: dict, short_for: dict[str, str]) -> dict:
    """The rules with the `for:` of the named alerts replaced; anything else as it is."""
    unknown = set(short_for) - {r["alert"] for g in rules["groups"] for r in g["rules"] if "alert" in r}
    assert not unknown, f"no such alerts in rules.yml: {unknown}"
    for group in rules["groups"]:
        for rule in group["rules"]:
            if rule.get("alert") in short_for:
                rule["for"] = short_for[rule["alert"]]
    return rules


def write_config(
    directory: Path, api: Iterable[str], projectors: Iterable[str], short_for: dict[str, str]
) -> Path:
    """The shipped configuration in `directory`, for these targets (host:port)."""
    (directory / "targets").mkdir(parents=True, exist_ok=True)
    config = yaml.safe_load((CONFIG_DIR / "prometheus.yml").read_text())
    config["global"].update(scrape_interval=INTERVAL, evaluation_interval=INTERVAL)
    (directory / "prometheus.yml").write_text(yaml.safe_dump(config))
    rules = rules_with_for(yaml.safe_load((CONFIG_DIR / "rules.yml").read_text()), short_for)
    (directory / "rules.yml").write_text(yaml.safe_dump(rules, sort_keys=False))
    for job, targets in (("api", api), ("projector", projectors)):
        (directory / "targets" / f"{job}.yml").write_text(yaml.safe_dump([{"targets": list(targets)}]))
    return directory / "prometheus.yml"


class Prometheus:
    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen | None = None
        LOGS.mkdir(parents=True, exist_ok=True)
        self.log_path = LOGS / "prometheus.log"

    def start(self, config: Path, timeout: float = 30.0) -> Prometheus:
        log = self.log_path.open("wb")
        self.proc = subprocess.Popen(
            [
                binary("prometheus"),
                f"--config.file={config}",
                f"--storage.tsdb.path={self.directory / 'data'}",
                f"--web.listen-address=127.0.0.1:{self.port}",
            ],
            stdout=log,
            stderr=log,
        )
        log.close()
        wait_until(
            lambda: answers_200(f"{self.url}/-/ready"),
            timeout,
            f"prometheus not ready after {timeout}s; see {self.log_path}",
            check=self._running,
        )
        return self

    def _running(self) -> None:
        assert self.proc and self.proc.poll() is None, f"prometheus exited; see {self.log_path}"

    def stop(self) -> int:
        assert self.proc
        self.proc.terminate()
        try:
            return self.proc.wait(20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)
            raise AssertionError("prometheus ignored SIGTERM for 20 s") from None

    def api(self, path: str, **params: str) -> Any:
        """The `data` of an answer of Prometheus' HTTP API (v1), which must be a success."""
        query = f"?{urllib.parse.urlencode(params)}" if params else ""
        with urllib.request.urlopen(f"{self.url}/api/v1/{path}{query}", timeout=10) as r:
            answer = json.loads(r.read())
        assert answer["status"] == "success", answer
        return answer["data"]

    def query(self, expr: str) -> list[dict]:
        """An instant query's samples: [{"metric": {...}, "value": [t, "v"]}, ...]."""
        data = self.api("query", query=expr)
        assert data["resultType"] == "vector", data
        return data["result"]

    def targets(self) -> list[dict]:
        return self.api("targets", state="active")["activeTargets"]

    def alerts(self, name: str, state: str | None = None) -> list[dict]:
        found = [a for a in self.api("alerts")["alerts"] if a["labels"]["alertname"] == name]
        return [a for a in found if state is None or a["state"] == state]
