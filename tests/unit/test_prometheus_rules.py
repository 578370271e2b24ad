"""The alert rules (ops/prometheus/rules.yml) as shipped: promtool accepts them and their unit
tests pass, and every alert has a summary, a runbook line and a unit test that makes it fire."""

from __future__ import annotations

import subprocess

import yaml

from tests.prometheus import CONFIG_DIR, binary

RULES = yaml.safe_load((CONFIG_DIR / "rules.yml").read_text())
UNIT_TESTS = yaml.safe_load((CONFIG_DIR / "tests.yml").read_text())
ALERTS = [rule for group in RULES["groups"] for rule in group["rules"] if "alert" in rule]


def promtool(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([binary("promtool"), *args], cwd=CONFIG_DIR, capture_output=True, text=True)


def test_promtool_accepts_the_scrape_config_and_its_rules() -> None:
    done = promtool("check", "config", "prometheus.yml")
    assert done.returncode == 0, done.stdout + done.stderr


def test_the_rules_pass_their_unit_tests() -> None:
    done = promtool("test", "rules", "tests.yml")
    assert done.returncode == 0, done.stdout + done.stderr


def test_every_alert_says_what_happened_and_what_to_do() -> None:
    for alert in ALERTS:
        annotations = alert.get("annotations", {})
        assert annotations.get("summary", "").strip(), alert["alert"]
        assert annotations.get("runbook", "").strip(), alert["alert"]
        assert alert.get("labels", {}).get("severity") in ("critical", "warning"), alert["alert"]


def test_every_alert_has_a_unit_test_that_makes_it_fire() -> None:
    fired = {
        case["alertname"]
        for test in UNIT_TESTS["tests"]
        for case in test.get("alert_rule_test", [])
        if case.get("exp_alerts")
    }
    assert {a["alert"] for a in ALERTS} - fired == set()
