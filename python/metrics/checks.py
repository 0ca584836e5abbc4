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

from metrics.conf import SETTINGS, django_setting

# One id per setting, stable across releases (documented in docs/configuration.md).
SETTING_ERROR_IDS = {
    "METRICS_ENABLED": "metrics.E001",
    "METRICS_ALLOWED_IPS": "metrics.E002",
    "METRICS_AUTH_TOKEN": "metrics.E003",
    "PROMETHEUS_MULTIPROC_DIR": "metrics.E004",
    "METRICS_STORE_IN_DB": "metrics.E005",
    "METRICS_RETENTION_DAYS": "metrics.E006",
    "METRICS_TRUSTED_PROXIES": "metrics.E007",
    "METRICS_EXCLUDE_PATHS": "metrics.E008",
    "METRICS_HEALTH_TIMEOUT": "metrics.E009",
    "METRICS_HEALTH_MIN_FREE_MB": "metrics.E010",
    "METRICS_ACTIVE_USER_WINDOW": "metrics.E011",
    "METRICS_MAX_LABEL_VALUES": "metrics.E012",
    "METRICS_CELERY_ENABLED": "metrics.E013",
    "METRICS_CELERY_WORKER_PORT": "metrics.E014",
    "METRICS_CELERY_WORKER_ADDRESS": "metrics.E015",
    "METRICS_CELERY_HEALTH_CHECK": "metrics.E016",
    "METRICS_LATENCY_BUCKETS": "metrics.E017",
    "METRICS_STORE_FILE_MODE": "metrics.E018",
    "METRICS_EXPORT_PORT": "metrics.E019",
    "METRICS_EXEMPLARS": "metrics.E024",
    "METRICS_CELERY_QUEUES": "metrics.E020",
    "METRICS_CELERY_QUEUE_TIMEOUT": "metrics.E021",
    "METRICS_COMPAT_DJANGO_PROMETHEUS": "metrics.E022",
    "METRICS_MODELS": "metrics.E023",
    "METRICS_MULTIPROCESS": "metrics.E025",
    "METRICS_NATIVE_HISTOGRAMS": "metrics.E026",
}

_HINTS = {
    "METRICS_ENABLED": "Use True or False (in the environment: 1/0, true/false, yes/no, on/off).",
    "METRICS_ALLOWED_IPS": "Use comma-separated IPv4/IPv6 addresses or CIDR networks, e.g. "
    "'127.0.0.1,10.0.0.0/8,::1'.",
    "METRICS_AUTH_TOKEN": "Use a string (an empty string disables token access).",
    "PROMETHEUS_MULTIPROC_DIR": "Create the directory, writable by the server's user, before start-up.",
    "METRICS_STORE_IN_DB": "Use True or False.",
    "METRICS_RETENTION_DAYS": "Use a whole number of days, 0 or more.",
    "METRICS_TRUSTED_PROXIES": "Use comma-separated addresses or CIDR networks of your reverse proxies.",
    "METRICS_EXCLUDE_PATHS": "Use URL path prefixes starting with '/', e.g. '/metrics/,/static/'.",
    "METRICS_HEALTH_TIMEOUT": "Use seconds, e.g. 0.8 (Kubernetes probes time out after 1 s by default).",
    "METRICS_HEALTH_MIN_FREE_MB": "Use a number of megabytes, 0 or more.",
    "METRICS_ACTIVE_USER_WINDOW": "Use a whole number of seconds, 0 or more (0 turns the gauge off).",
    "METRICS_MAX_LABEL_VALUES": "Use a whole number, 1 or more.",
    "METRICS_CELERY_ENABLED": "Use True or False.",
    "METRICS_CELERY_WORKER_PORT": "Use a TCP port, 1 to 65535, or 0 for no worker port.",
    "METRICS_CELERY_WORKER_ADDRESS": "Use an address to listen on, e.g. '0.0.0.0' or '127.0.0.1'.",
    "METRICS_CELERY_HEALTH_CHECK": "Use True or False.",
    "METRICS_CELERY_QUEUES": "Use queue names, comma-separated or a list, e.g. 'celery,emails'; [] for none.",
    "METRICS_CELERY_QUEUE_TIMEOUT": "Use seconds, e.g. 0.5: a scrape waits at most this long for the broker.",
    "METRICS_COMPAT_DJANGO_PROMETHEUS": "Use True or False.",
    "METRICS_MODELS": "Use '*' for every model, or app_label.ModelName labels, e.g. 'shop.Item,auth.User'.",
    "METRICS_LATENCY_BUCKETS": "Use increasing numbers of seconds, e.g. '0.01,0.05,0.1,0.5,1,5'.",
    "METRICS_EXEMPLARS": "Use True or False.",
    "METRICS_NATIVE_HISTOGRAMS": "Use True or False.",
    "METRICS_EXPORT_PORT": "Use a port (9100) or host:port (127.0.0.1:9100, [::1]:9100); 0 or unset: off.",
    "METRICS_MULTIPROCESS": "Use 'auto' (the default), 'off', or 'on' together with "
    "PROMETHEUS_MULTIPROC_DIR.",
    "METRICS_STORE_FILE_MODE": "Use '0600' (the default), or '0640'/'0660' when a second user in the "
    "directory's group must read or write the store.",
}

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
                    hint=_HINTS[name],
                    id=SETTING_ERROR_IDS[name],
                )
            )
    errors.extend(_check_multiproc_dir())
    errors.extend(_check_multiprocess())
    errors.extend(_check_models())
    return errors


def _check_models() -> list[CheckMessage]:
    """Report the `METRICS_MODELS` labels that name no installed model."""
    from django.apps import apps

    setting = SETTINGS["METRICS_MODELS"]
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
                    hint=_HINTS[setting.name],
                    id=SETTING_ERROR_IDS[setting.name],
                )
            )
    return errors


def _check_multiprocess() -> list[CheckMessage]:
    """Report `METRICS_MULTIPROCESS = "on"` without the directory it requires."""
    setting = SETTINGS["METRICS_MULTIPROCESS"]
    value, source, error = setting.validate()
    if error is not None or value is None or setting.parse(value) != "on":
        return []
    directory = SETTINGS["PROMETHEUS_MULTIPROC_DIR"]
    path, _, path_error = directory.validate()
    if path_error is None and directory.parse(path) is not None:
        return []
    return [
        Error(
            f"{_describe(setting.name, source)} = {value!r} requires PROMETHEUS_MULTIPROC_DIR, "
            "which is unset",
            hint=_HINTS[setting.name],
            id=SETTING_ERROR_IDS[setting.name],
        )
    ]


def _check_multiproc_dir() -> list[CheckMessage]:
    setting = SETTINGS["PROMETHEUS_MULTIPROC_DIR"]
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
            hint=_HINTS[setting.name],
            id=SETTING_ERROR_IDS[setting.name],
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
