"""System checks: every bad setting is reported by `manage.py check` (and `migrate`, `runserver`).

Each error names the setting, the bad value and where it came from (Django settings or the
environment), so a typo is caught at deploy time rather than at scrape time.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

from django.apps import AppConfig
from django.core.checks import CheckMessage, Error, Tags, Warning, register

from metrics.conf import SETTINGS, AppSettings, django_setting

MIDDLEWARE_PATH = "metrics.middleware.MetricsMiddleware"


def _describe(name: str, source: str) -> str:
    return name if source == "settings" else f"{name} (environment variable)"


@register(Tags.compatibility, Tags.security)
def check_settings(app_configs: Sequence[AppConfig] | None = None, **kwargs: Any) -> list[CheckMessage]:
    """Report every setting whose value cannot be parsed."""
    errors: list[CheckMessage] = []
    for name, setting in SETTINGS.items():
        value, source, error = setting.validate()
        if error is not None:
            errors.append(
                Error(
                    f"{_describe(name, source)} = {value!r} is invalid: {error}",
                    hint=setting.hint,
                    id=setting.check,
                )
            )
    errors.extend(_check_multiproc_dir())
    errors.extend(_check_multiprocess())
    errors.extend(_check_models())
    return errors


def _check_models() -> list[CheckMessage]:
    """Report the `METRICS_MODELS` labels that name no installed model."""
    from django.apps import apps

    setting = AppSettings.MODELS
    value, source, error = setting.validate()
    if error is not None or value is None:
        return []
    labels = setting.parse(value)
    if isinstance(labels, str):
        return []
    errors: list[CheckMessage] = []
    for label in labels:
        try:
            apps.get_model(label)
        except (LookupError, ValueError):
            errors.append(
                Error(
                    f"{_describe(setting.name, source)} = {value!r} names {label!r}, which is not an "
                    "installed model",
                    hint=setting.hint,
                    id=setting.check,
                )
            )
    return errors


def _check_multiprocess() -> list[CheckMessage]:
    """Report `METRICS_MULTIPROCESS = "on"` without the directory it requires."""
    setting = AppSettings.MULTIPROCESS
    value, source, error = setting.validate()
    if error is not None or value is None or setting.parse(value) != "on":
        return []
    directory = AppSettings.MULTIPROC_DIR
    path, _, path_error = directory.validate()
    if path_error is None and directory.parse(path) is not None:
        return []
    return [
        Error(
            f"{_describe(setting.name, source)} = {value!r} requires PROMETHEUS_MULTIPROC_DIR, "
            "which is unset",
            hint=setting.hint,
            id=setting.check,
        )
    ]


def _check_multiproc_dir() -> list[CheckMessage]:
    setting = AppSettings.MULTIPROC_DIR
    value, source, error = setting.validate()
    if error is not None or value is None:
        return []
    path = setting.parse(value)
    if path is None:
        return []
    problem = None
    if not os.path.isdir(path):
        problem = "does not exist or is not a directory"
    elif not os.access(path, os.W_OK | os.X_OK):
        problem = "is not writable by this process"
    if problem is None:
        return _check_multiproc_dir_owner(path, _describe(setting.name, source), value)
    return [
        Error(
            f"{_describe(setting.name, source)} = {value!r} {problem}",
            hint=setting.hint,
            id=setting.check,
        )
    ]


def _check_multiproc_dir_owner(path: str, described: str, value: object) -> list[CheckMessage]:
    """Warn when another user owns the store directory or may write into it (docs/security.md)."""
    info = os.stat(path)
    problems = []
    if os.geteuid() != 0 and info.st_uid != os.geteuid():
        problems.append(f"belongs to uid {info.st_uid}, not to this process's user (uid {os.geteuid()})")
    if info.st_mode & 0o022:
        problems.append(f"is writable by other users (mode {info.st_mode & 0o7777:04o})")
    if not problems:
        return []
    return [
        Warning(
            f"{described} = {value!r} {' and '.join(problems)}: they can block or tamper with the store.",
            hint="Make the directory 0700, owned by the user the workers run as (docs/security.md).",
            id="metrics.W003",
        )
    ]


@register(Tags.compatibility)
def check_middleware(app_configs: Sequence[AppConfig] | None = None, **kwargs: Any) -> list[CheckMessage]:
    """Warn when the middleware is missing, or placed where it misses other middleware's time."""
    configured = django_setting("MIDDLEWARE")
    middleware = list(configured) if isinstance(configured, (list, tuple)) else []
    if MIDDLEWARE_PATH not in middleware:
        return [
            Warning(
                f"{MIDDLEWARE_PATH} is not in MIDDLEWARE: no HTTP request metrics are recorded.",
                hint=f"Add '{MIDDLEWARE_PATH}' as the first entry of MIDDLEWARE.",
                id="metrics.W001",
            )
        ]
    if middleware.index(MIDDLEWARE_PATH) != 0:
        return [
            Warning(
                f"{MIDDLEWARE_PATH} is not the first entry of MIDDLEWARE: the time spent in the "
                "middleware above it, and the responses they return themselves, are not measured.",
                hint=f"Move '{MIDDLEWARE_PATH}' to the top of MIDDLEWARE.",
                id="metrics.W002",
            )
        ]
    return []
