"""System checks: every bad setting is an error naming the setting and the bad value."""

from __future__ import annotations

import pytest
from django.core.management import call_command
from django.core.management.base import SystemCheckError
from django.test import override_settings

from metrics.checks import MIDDLEWARE_PATH, check_middleware, check_settings


@pytest.mark.parametrize(
    ("setting", "value", "check_id"),
    [
        ("METRICS_ENABLED", "maybe", "metrics.E001"),
        ("METRICS_ALLOWED_IPS", "127.0.0.1,10.0.0.0/33", "metrics.E002"),
        ("METRICS_ALLOWED_IPS", ["example.com"], "metrics.E002"),
        ("METRICS_AUTH_TOKEN", 12345, "metrics.E003"),
        ("PROMETHEUS_MULTIPROC_DIR", 3.5, "metrics.E004"),
        ("METRICS_STORE_IN_DB", "sometimes", "metrics.E005"),
        ("METRICS_RETENTION_DAYS", -1, "metrics.E006"),
        ("METRICS_RETENTION_DAYS", "a week", "metrics.E006"),
        ("METRICS_TRUSTED_PROXIES", "proxy.local", "metrics.E007"),
        ("METRICS_EXCLUDE_PATHS", "static/", "metrics.E008"),
        ("METRICS_HEALTH_TIMEOUT", 0, "metrics.E009"),
        ("METRICS_HEALTH_MIN_FREE_MB", -5, "metrics.E010"),
        ("METRICS_ACTIVE_USER_WINDOW", "five minutes", "metrics.E011"),
        ("METRICS_MAX_LABEL_VALUES", 0, "metrics.E012"),
        ("METRICS_CELERY_ENABLED", "perhaps", "metrics.E013"),
        ("METRICS_CELERY_WORKER_PORT", 70000, "metrics.E014"),
        ("METRICS_CELERY_WORKER_ADDRESS", "", "metrics.E015"),
        ("METRICS_CELERY_HEALTH_CHECK", "often", "metrics.E016"),
        ("METRICS_LATENCY_BUCKETS", "0.5,0.1", "metrics.E017"),
        ("METRICS_LATENCY_BUCKETS", [], "metrics.E017"),
        ("METRICS_LATENCY_BUCKETS", "0.1,fast", "metrics.E017"),
        ("METRICS_EXPORT_PORT", "70000", "metrics.E019"),
        ("METRICS_EXEMPLARS", "sometimes", "metrics.E024"),
        ("METRICS_NATIVE_HISTOGRAMS", "sparse", "metrics.E026"),
        ("METRICS_EXPORT_PORT", "host:", "metrics.E019"),
        ("METRICS_EXPORT_PORT", ":9100", "metrics.E019"),
        ("METRICS_CELERY_QUEUES", "celery," + "q" * 256, "metrics.E020"),
        ("METRICS_CELERY_QUEUES", 42, "metrics.E020"),
        ("METRICS_CELERY_QUEUES", ["celery", None], "metrics.E020"),
        ("METRICS_CELERY_QUEUE_TIMEOUT", 0, "metrics.E021"),
        ("METRICS_CELERY_QUEUE_TIMEOUT", "soon", "metrics.E021"),
        ("METRICS_COMPAT_DJANGO_PROMETHEUS", "maybe", "metrics.E022"),
        ("METRICS_MODELS", "shop", "metrics.E023"),
        ("METRICS_MODELS", ["auth.User.extra"], "metrics.E023"),
        ("METRICS_MODELS", 7, "metrics.E023"),
        ("METRICS_MODELS", ["auth.NoSuchModel"], "metrics.E023"),
        ("METRICS_STORE_FILE_MODE", "0644", "metrics.E018"),
        ("METRICS_STORE_FILE_MODE", 0o666, "metrics.E018"),
        ("METRICS_STORE_FILE_MODE", "rw-------", "metrics.E018"),
    ],
)
def test_bad_setting_is_an_error_naming_setting_and_value(setting: str, value: object, check_id: str) -> None:
    """The error carries the setting's id, its name and the offending value."""
    with override_settings(**{setting: value}):
        errors = check_settings()
    assert [e.id for e in errors] == [check_id]
    assert setting in errors[0].msg
    assert repr(value) in errors[0].msg
    assert errors[0].hint


def test_bad_environment_variable_is_reported_as_such(env, settings) -> None:
    """A bad value from the environment says it came from there."""
    del settings.METRICS_ALLOWED_IPS
    env(METRICS_ALLOWED_IPS="10.0.0.1,bogus")
    errors = check_settings()
    assert [e.id for e in errors] == ["metrics.E002"]
    assert "METRICS_ALLOWED_IPS (environment variable) = '10.0.0.1,bogus'" in errors[0].msg
    assert "'bogus'" in errors[0].msg


def test_missing_multiproc_dir_is_an_error(tmp_path) -> None:
    """PROMETHEUS_MULTIPROC_DIR must be an existing directory."""
    missing = tmp_path / "nope"
    with override_settings(PROMETHEUS_MULTIPROC_DIR=str(missing)):
        errors = check_settings()
    assert [e.id for e in errors] == ["metrics.E004"]
    assert str(missing) in errors[0].msg
    assert "does not exist" in errors[0].msg

    a_file = tmp_path / "file"
    a_file.write_text("")
    with override_settings(PROMETHEUS_MULTIPROC_DIR=str(a_file)):
        assert [e.id for e in check_settings()] == ["metrics.E004"]

    with override_settings(PROMETHEUS_MULTIPROC_DIR=str(tmp_path)):
        assert check_settings() == []


# Django 6.1's model checks ask the database whether it supports JSONField.
@pytest.mark.django_db
def test_valid_settings_pass_manage_py_check() -> None:
    """The test project's settings raise no error, and `check` exits cleanly."""
    assert check_settings() == []
    call_command("check", verbosity=0)


# Django 6.1's model checks ask the database whether it supports JSONField.
@pytest.mark.django_db
def test_manage_py_check_fails_on_a_bad_setting() -> None:
    """`manage.py check` (and so migrate/runserver) stops on a bad value."""
    with override_settings(METRICS_ALLOWED_IPS="300.1.1.1"), pytest.raises(SystemCheckError, match="E002"):
        call_command("check", verbosity=0)


def test_middleware_position_is_checked(settings) -> None:
    """Missing middleware is W001, middleware not first is W002."""
    assert check_middleware() == []
    settings.MIDDLEWARE = [m for m in settings.MIDDLEWARE if m != MIDDLEWARE_PATH]
    assert [w.id for w in check_middleware()] == ["metrics.W001"]
    settings.MIDDLEWARE = [*settings.MIDDLEWARE, MIDDLEWARE_PATH]
    assert [w.id for w in check_middleware()] == ["metrics.W002"]


@pytest.mark.parametrize("value", ["0600", "0640", "660", 0o660, "0o640"])
def test_store_file_modes_that_keep_other_users_out_are_accepted(value: object) -> None:
    """0600, 0640 and 0660, as octal strings or numbers, pass the check."""
    with override_settings(METRICS_STORE_FILE_MODE=value):
        assert check_settings() == []


def test_store_directory_writable_by_others_is_a_warning(tmp_path) -> None:
    """A world-writable store directory is reported (metrics.W003), not silently trusted."""
    tmp_path.chmod(0o777)
    with override_settings(PROMETHEUS_MULTIPROC_DIR=str(tmp_path)):
        messages = check_settings()
    assert [m.id for m in messages] == ["metrics.W003"]
    assert "writable by other users" in messages[0].msg
    tmp_path.chmod(0o700)
    with override_settings(PROMETHEUS_MULTIPROC_DIR=str(tmp_path)):
        assert check_settings() == []
