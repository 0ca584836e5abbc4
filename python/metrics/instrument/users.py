"""User metrics from Django's own signals, plus the active-user gauge read at scrape time.

- `django_user_registrations_total`: a user model instance saved for the first time
  (`post_save` with `created`; fixtures loaded with `loaddata` and `bulk_create` are not
  registrations and send no such signal).
- `django_user_logins_total{method}`: `user_logged_in`, sent by `django.contrib.auth.login()`.
  `method` is the authentication backend's class name, lower-cased, without a trailing
  `backend` (`django.contrib.auth.backends.ModelBackend` -> `model`), bounded like every label
  value users control (see `metrics.collectors.bounded_label`).
- `django_user_login_failures_total`: `user_login_failed`, sent by `authenticate()`.
- `django_active_users_total`: users whose `last_login` lies within the last
  `METRICS_ACTIVE_USER_WINDOW` seconds (default 300; 0 turns the gauge off). Django updates
  `last_login` at every login, so this is "users who logged in within the window", the same for
  every process that shares the database. It is one `COUNT` query on the user model's read
  database at collection time, at most once per `ACTIVE_USERS_MIN_INTERVAL` seconds; no query
  runs per request.
"""

from __future__ import annotations

import logging
import time
from datetime import timedelta
from typing import Any

from django.apps import apps
from django.contrib.auth import BACKEND_SESSION_KEY
from django.core.exceptions import SynchronousOnlyOperation
from django.db.models.signals import post_save
from django.utils import timezone

from metrics import core
from metrics.collectors import (
    active_users_total,
    bounded_label,
    user_login_failures_total,
    user_logins_total,
    user_registrations_total,
)
from metrics.conf import app_settings

logger = logging.getLogger("metrics")

# Several Prometheus servers (or a scrape storm) cost the database one query per this many seconds.
ACTIVE_USERS_MIN_INTERVAL = 10.0
_next_query_at = 0.0


def active_user_window() -> int:
    """Return `METRICS_ACTIVE_USER_WINDOW` in seconds (default 300; a bad value reads as 300)."""
    # Parsed as the system check metrics.E011 parses it.
    return app_settings.ACTIVE_USER_WINDOW


def login_method(backend_path: str | None) -> str:
    """Return the `method` label for an authentication backend's dotted path."""
    if not backend_path:
        return "unknown"
    name = backend_path.rsplit(".", 1)[-1].lower()
    if name.endswith("backend") and len(name) > len("backend"):
        name = name[: -len("backend")]
    return name


def _on_user_saved(sender: Any, created: bool = False, raw: bool = False, **kwargs: Any) -> None:
    if created and not raw:
        user_registrations_total.inc()


def _on_logged_in(sender: Any, request: Any = None, user: Any = None, **kwargs: Any) -> None:
    # login() has just stored the backend it used in the session; `user.backend` is what
    # authenticate() found, which login(backend=...) may override.
    backend = None
    session = getattr(request, "session", None)
    if session is not None:
        backend = session.get(BACKEND_SESSION_KEY)
    if backend is None:
        backend = getattr(user, "backend", None)
    method = bounded_label("django_user_logins_total", "method", login_method(backend))
    user_logins_total.labels(method).inc()


def _on_login_failed(sender: Any, **kwargs: Any) -> None:
    user_login_failures_total.inc()


def count_active_users(window: int) -> int:
    """Return how many users logged in within the last `window` seconds (one query)."""
    from django.contrib.auth import get_user_model

    user_model = get_user_model()
    since = timezone.now() - timedelta(seconds=window)
    return int(user_model._default_manager.filter(last_login__gte=since).count())


def collect_active_users(force: bool = False) -> None:
    """Refresh `django_active_users_total` (a collect hook), at most every few seconds unless `force`."""
    global _next_query_at
    window = active_user_window()
    if window == 0:
        return
    now = time.monotonic()
    if not force and now < _next_query_at:
        return
    _next_query_at = now + ACTIVE_USERS_MIN_INTERVAL
    try:
        count = count_active_users(window)
    except SynchronousOnlyOperation:
        # Collected from inside an event loop (an async view): no blocking query there; the
        # next collection from a sync context refreshes the value.
        _next_query_at = 0.0
        return
    active_users_total.set(count)


def _has_last_login() -> bool:
    from django.contrib.auth import get_user_model

    try:
        user_model = get_user_model()
        user_model._meta.get_field("last_login")
    except Exception:
        return False
    return True


def install() -> None:
    """Connect the signal receivers and the active-user hook; calling it again does nothing."""
    if not apps.is_installed("django.contrib.auth"):
        return
    from django.contrib.auth import get_user_model
    from django.contrib.auth.signals import user_logged_in, user_login_failed

    user_logged_in.connect(_on_logged_in, dispatch_uid="metrics.instrument.users.logged_in")
    user_login_failed.connect(_on_login_failed, dispatch_uid="metrics.instrument.users.login_failed")
    try:
        user_model = get_user_model()
    except Exception:
        logger.exception("metrics: AUTH_USER_MODEL cannot be loaded; registrations are not counted")
        return
    post_save.connect(_on_user_saved, sender=user_model, dispatch_uid="metrics.instrument.users.registered")
    if _has_last_login():
        core.add_collect_hook(collect_active_users)
