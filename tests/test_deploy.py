"""The shipped Prometheus configuration and alert rules pass promtool's own checks and unit tests."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

DEPLOY = Path(__file__).resolve().parent.parent / "deploy"


def promtool(*args: str) -> subprocess.CompletedProcess[str]:
    """Run promtool in deploy/ (relative rule_files resolve there) and return the finished process."""
    exe = shutil.which("promtool")
    if exe is None:
        pytest.fail("promtool is missing: run `make system-deps` (Debian package prometheus)")
    return subprocess.run([exe, *args], cwd=DEPLOY, capture_output=True, text=True, timeout=60, check=False)


def test_check_config() -> None:
    """`promtool check config` accepts prometheus.yml and the rule file it loads."""
    result = promtool("check", "config", "prometheus.yml")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS: prometheus.yml is valid" in result.stdout
    assert "SUCCESS: 7 rules found" in result.stdout


def test_check_rules() -> None:
    """`promtool check rules` accepts alerts.yml."""
    result = promtool("check", "rules", "alerts.yml")
    assert result.returncode == 0, result.stdout + result.stderr


def test_rules_unit_tests() -> None:
    """`promtool test rules` passes every case of alerts_test.yml."""
    result = promtool("test", "rules", "alerts_test.yml")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_every_alert_has_a_unit_test() -> None:
    """Every alert of alerts.yml is exercised by alerts_test.yml, both firing and silent."""
    rules = yaml.safe_load((DEPLOY / "alerts.yml").read_text())
    alerts = {rule["alert"] for group in rules["groups"] for rule in group["rules"] if "alert" in rule}
    cases = yaml.safe_load((DEPLOY / "alerts_test.yml").read_text())["tests"]
    firing: set[str] = set()
    silent: set[str] = set()
    for case in cases:
        for check in case["alert_rule_test"]:
            (firing if check["exp_alerts"] else silent).add(check["alertname"])
    assert alerts == {
        "DjangoTargetDown",
        "DjangoHigh5xxRatio",
        "DjangoHighLatencyP95",
        "DjangoHealthCheckFailing",
        "DjangoUnappliedMigrations",
        "DjangoMemoryGrowth",
        "CeleryHighTaskFailureRatio",
    }
    assert firing == alerts
    assert silent == alerts


def test_scrape_config_shape() -> None:
    """The site and worker jobs send a Bearer token; the Pushgateway job keeps the pushed job labels."""
    config = yaml.safe_load((DEPLOY / "prometheus.yml").read_text())
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    assert set(jobs) == {"django_app", "celery_worker", "pushgateway"}
    assert jobs["django_app"]["metrics_path"] == "/metrics/"
    assert jobs["django_app"]["authorization"]["type"] == "Bearer"
    assert jobs["celery_worker"]["authorization"]["type"] == "Bearer"
    assert jobs["pushgateway"]["honor_labels"] is True
    assert jobs["celery_worker"]["static_configs"][0]["targets"] == ["localhost:9808"]
    assert config["rule_files"] == ["alerts.yml"]
