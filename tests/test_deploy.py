"""The shipped Prometheus configuration and rule files pass promtool's own checks and unit tests."""

from __future__ import annotations

import re
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
    """`promtool check config` accepts prometheus.yml and both rule files it loads."""
    result = promtool("check", "config", "prometheus.yml")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS: prometheus.yml is valid" in result.stdout
    assert "SUCCESS: 2 rule files found" in result.stdout
    for name in ("alerts.yml", "recording_rules.yml"):
        groups = yaml.safe_load((DEPLOY / name).read_text())["groups"]
        count = sum(len(group["rules"]) for group in groups)
        assert f"Checking {name}\n  SUCCESS: {count} rules found" in result.stdout


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
        "CeleryQueueBacklogGrowing",
        "CeleryQueueWithoutConsumers",
        "CeleryQueueLengthUnreadable",
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
    assert config["rule_files"] == ["alerts.yml", "recording_rules.yml"]


def test_recording_rules_unit_tests() -> None:
    """`promtool test rules` passes every case of recording_rules_test.yml."""
    result = promtool("test", "rules", "recording_rules_test.yml")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def recording_rules() -> dict[str, str]:
    """Return the recording rules of recording_rules.yml, name to expression."""
    groups = yaml.safe_load((DEPLOY / "recording_rules.yml").read_text())["groups"]
    return {rule["record"]: rule["expr"] for group in groups for rule in group["rules"]}


def test_recording_rules_names_and_coverage() -> None:
    """Each rule is named `level:metric:operations`, keeps the labels its level names, and is unit-tested."""
    rules = recording_rules()
    assert set(rules) == {
        "job_view:django_http_requests:rate5m",
        "job_view:django_http_requests_5xx:rate5m",
        "job_view:django_http_requests_5xx:ratio_rate5m",
        "job_view_le:django_http_request_duration_seconds_bucket:rate5m",
        "job_view:django_http_request_duration_seconds:p50_rate5m",
        "job_view:django_http_request_duration_seconds:p95_rate5m",
        "job_view:django_http_request_duration_seconds:p99_rate5m",
    }
    for name, expr in rules.items():
        level, _, operations = name.split(":")
        # Every aggregation keeps exactly the labels of the level; the ratio and the quantiles are
        # computed from rules that already did.
        for kept in re.findall(r"sum by \(([^)]*)\)", expr):
            assert kept.replace(" ", "").split(",") == level.split("_"), name
        # The window named in the operations is the one every rate() uses.
        assert operations.endswith("rate5m"), name
        assert set(re.findall(r"\[(\w+)\]", expr)) <= {"5m"}, name
    cases = yaml.safe_load((DEPLOY / "recording_rules_test.yml").read_text())["tests"]
    tested = {
        check["expr"].split("{")[0].split(" ")[0] for case in cases for check in case["promql_expr_test"]
    }
    assert tested == set(rules)
