"""Subsystem health checks, run in parallel threads, each with its own timeout.

Built-in checks are derived from the settings at each run: one per database alias
(`database:<alias>`), one per cache alias (`cache:<alias>`), `migrations` (default database) and,
when `PROMETHEUS_MULTIPROC_DIR` is set, `disk:multiproc`. Other parts of the package, and sites,
add theirs with `register_check()`:

    from metrics.health import register_check

    def check_broker() -> None:
        connection.ensure_connection(max_retries=1)  # raise to report a failure

    register_check("celery:broker", check_broker, timeout=0.5, readiness=False)

A check is a callable that returns (anything) when healthy and raises when not. A check that
does not answer within its timeout is reported as `timeout`; its thread is left to finish on its
own (a thread cannot be killed), so a check must not hold resources forever.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import threading
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from time import perf_counter
from typing import Any

from django.conf import settings

from metrics.collectors import health_check_status, migrations_unapplied
from metrics.conf import app_settings

logger = logging.getLogger("metrics")

OK = "ok"
ERROR = "error"
TIMEOUT = "timeout"
DEGRADED = "degraded"

CheckFunction = Callable[[], object]


class HealthCheckError(Exception):
    """A check found its subsystem unhealthy; the message is shown to authorised callers."""


@dataclass(frozen=True)
class Check:
    """A named check: the callable, its timeout, and whether readiness depends on it."""

    name: str
    function: CheckFunction
    timeout: float | None = None
    readiness: bool = False
    # A failing non-critical check makes the status `degraded` and keeps HTTP 200.
    critical: bool = True


@dataclass(frozen=True)
class Result:
    """The outcome of one check."""

    name: str
    status: str
    latency: float
    critical: bool = True
    error: str | None = None
    # What a check returned as a dict (e.g. a connection pool's state), shown with details.
    info: dict[str, Any] | None = None

    def as_dict(self, details: bool) -> dict[str, Any]:
        """Return the JSON form; the error message and info only when `details` is True."""
        data: dict[str, Any] = {"status": self.status, "latency_ms": round(self.latency * 1000, 2)}
        if not self.critical:
            data["critical"] = False
        if details and self.error:
            data["error"] = self.error
        if details and self.info:
            data["info"] = self.info
        return data


@dataclass(frozen=True)
class Report:
    """The outcomes of a run of checks."""

    results: tuple[Result, ...]

    @property
    def status(self) -> str:
        """Return `ok`, `degraded` (only non-critical checks failed) or `error`."""
        failed = [r for r in self.results if r.status != OK]
        if not failed:
            return OK
        if all(not r.critical for r in failed):
            return DEGRADED
        return ERROR

    @property
    def http_status(self) -> int:
        """Return 200 when the critical checks pass, else 503."""
        return 503 if self.status == ERROR else 200

    def as_dict(self, details: bool) -> dict[str, Any]:
        """Return the JSON form of the report."""
        return {
            "status": self.status,
            "checks": {r.name: r.as_dict(details) for r in self.results},
        }


_registry: dict[str, Check] = {}
_registry_lock = threading.Lock()


def register_check(
    name: str,
    function: CheckFunction,
    *,
    timeout: float | None = None,
    readiness: bool = False,
    critical: bool = True,
) -> Check:
    """Add (or replace) a check shown on `/metrics/health/` and, with `readiness`, on readiness."""
    check = Check(name, function, timeout, readiness, critical)
    with _registry_lock:
        _registry[name] = check
    return check


def unregister_check(name: str) -> None:
    """Remove a registered check (no error when absent)."""
    with _registry_lock:
        _registry.pop(name, None)


def registered_checks() -> list[Check]:
    """Return the registered (non built-in) checks."""
    with _registry_lock:
        return list(_registry.values())


# --- built-in checks ---


def check_database(alias: str) -> dict[str, Any] | None:
    """Run a trivial query on database `alias`; return its connection pool's state, if pooled."""
    from django.db import connections

    from metrics.instrument.db import pool_stats

    with connections[alias].cursor() as cursor:
        cursor.execute("SELECT 1")
        cursor.fetchone()
    pool = pool_stats(alias)
    return {"pool": pool} if pool is not None else None


def check_cache(cache: Any) -> None:
    """Write, read back and delete a unique key in `cache` (a Django cache backend)."""
    from django.core.cache.backends.dummy import DummyCache

    if isinstance(cache, DummyCache):
        # Configured not to cache (development): nothing to check, and nothing wrong.
        return
    key = f"metrics:health:{uuid.uuid4().hex}"
    value = uuid.uuid4().hex
    cache.set(key, value, timeout=30)
    try:
        if cache.get(key) != value:
            # A full or evicting cache, or a broken backend: writes do not stick.
            raise HealthCheckError("a value written to the cache could not be read back")
    finally:
        cache.delete(key)


# Aliases whose migrations were all applied once. Code does not change under a running
# process, and migrations only move forward in deployments, so once applied stays applied;
# this keeps readiness probes from rebuilding the migration graph every few seconds.
_migrated: set[str] = set()


def check_migrations(alias: str = "default") -> None:
    """Fail when migrations of the installed apps are not applied to database `alias`."""
    if alias in _migrated:
        return
    from django.db import connections
    from django.db.migrations.executor import MigrationExecutor

    executor = MigrationExecutor(connections[alias])
    plan = executor.migration_plan(executor.loader.graph.leaf_nodes())
    _set_gauge(migrations_unapplied, alias, len(plan))
    if plan:
        names = ", ".join(f"{m.app_label}.{m.name}" for m, _ in plan[:3])
        more = f" and {len(plan) - 3} more" if len(plan) > 3 else ""
        raise HealthCheckError(f"{len(plan)} unapplied migration(s): {names}{more}")
    _migrated.add(alias)


def migrations_at_scrape() -> None:
    """Refresh `django_migrations_unapplied` for the default database (a collect hook).

    Free once every migration is applied (the result is cached); a failure is the health page's
    to report, not the scrape's.
    """
    try:
        check_migrations("default")
    except Exception:
        # Reported by /metrics/health/ and readiness, with details.
        pass


def _set_gauge(gauge: Any, label: str, value: float) -> None:
    try:
        gauge.labels(label).set(value)
    except Exception:
        logger.exception("metrics: could not record a health result")


def forget_migrations() -> None:
    """Make the next `migrations` check look at the database again (after a test changes it)."""
    _migrated.clear()


def check_disk(path: str, min_free_mb: float) -> None:
    """Fail when `path` is not a writable directory or has less than `min_free_mb` free."""
    if not os.path.isdir(path):
        raise HealthCheckError("the multiprocess directory does not exist")
    if not os.access(path, os.W_OK | os.X_OK):
        raise HealthCheckError("the multiprocess directory is not writable")
    free_mb = shutil.disk_usage(path).free / 1_000_000
    if free_mb < min_free_mb:
        raise HealthCheckError(f"{free_mb:.1f} MB free, less than the {min_free_mb:g} MB required")


def builtin_checks(*, readiness: bool) -> list[Check]:
    """Return the checks derived from the settings: databases, caches, migrations, disk."""
    databases = list(getattr(settings, "DATABASES", {}) or {})
    caches = list(getattr(settings, "CACHES", {}) or {})
    if readiness:
        databases = [a for a in databases if a == "default"]
        caches = [a for a in caches if a == "default"]
    checks = [Check(f"database:{a}", _bind(check_database, a), readiness=True) for a in databases]
    checks += [Check(f"cache:{a}", _cache_check(a), readiness=True) for a in caches]
    if "default" in databases:
        checks.append(Check("migrations", check_migrations, readiness=True))
    directory = app_settings.MULTIPROC_DIR
    if directory and not readiness:
        checks.append(Check("disk:multiproc", _bind(check_disk, directory, app_settings.HEALTH_MIN_FREE_MB)))
    return checks


def _cache_check(alias: str) -> CheckFunction:
    """Bind the cache check to the calling thread's backend object.

    Django keeps one backend object per thread; looking it up in the check thread would open a
    new connection pool (Redis, Memcached) on every probe.
    """
    from django.core.cache import caches

    try:
        cache = caches[alias]
    except Exception as exc:
        error = exc

        def fail() -> None:
            raise error

        return fail
    return _bind(check_cache, cache)


def _bind(function: Callable[..., object], *args: object) -> CheckFunction:
    return lambda: function(*args)


def checks_for(*, readiness: bool) -> list[Check]:
    """Return the checks of `/metrics/readiness/` (readiness=True) or `/metrics/health/`."""
    checks = builtin_checks(readiness=readiness)
    checks += [c for c in registered_checks() if c.readiness or not readiness]
    return checks


# --- running ---

_URL_USERINFO = re.compile(r"(?<=://)[^/@\s]+@")


def _secrets() -> list[str]:
    secrets = [getattr(settings, "SECRET_KEY", ""), app_settings.AUTH_TOKEN]
    for db in (getattr(settings, "DATABASES", {}) or {}).values():
        secrets.append(str(db.get("PASSWORD") or ""))
    for cache in (getattr(settings, "CACHES", {}) or {}).values():
        options = cache.get("OPTIONS") or {}
        secrets.append(str(options.get("password") or options.get("PASSWORD") or ""))
    return [s for s in secrets if isinstance(s, str) and len(s) >= 4]


def describe_error(exc: BaseException) -> str:
    """Return a one-line description of `exc`: no traceback, no password, no URL credentials."""
    if isinstance(exc, HealthCheckError):
        text = str(exc)
    else:
        text = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
    text = " ".join(text.split())
    text = _URL_USERINFO.sub("***@", text)
    for secret in _secrets():
        text = text.replace(secret, "***")
    return text[:300]


def _run(check: Check, box: list[Result]) -> None:
    start = perf_counter()
    try:
        returned = check.function()
    except BaseException as exc:
        box.append(Result(check.name, ERROR, perf_counter() - start, check.critical, describe_error(exc)))
    else:
        info = returned if isinstance(returned, dict) else None
        box.append(Result(check.name, OK, perf_counter() - start, check.critical, info=info))
    finally:
        _close_thread_connections()


def _close_thread_connections() -> None:
    """Close the database connections this check thread opened (the ORM opens them per thread).

    Without this, every probe would leave connections behind until the server runs out.
    """
    from django.db import connections

    for connection in connections.all(initialized_only=True):
        try:
            connection.close()
        except Exception:
            logger.warning("metrics: could not close connection %r after a health check", connection.alias)


def run_checks(checks: Iterable[Check], *, default_timeout: float | None = None) -> Report:
    """Run `checks` in parallel threads and wait for each up to its timeout."""
    if default_timeout is None:
        default_timeout = app_settings.HEALTH_TIMEOUT
    started = time.monotonic()
    running = []
    for check in checks:
        box: list[Result] = []
        thread = threading.Thread(
            target=_run, args=(check, box), name=f"metrics-health-{check.name}", daemon=True
        )
        thread.start()
        running.append((check, thread, box))
    results = []
    for check, thread, box in running:
        timeout = check.timeout if check.timeout is not None else default_timeout
        thread.join(max(0.0, started + timeout - time.monotonic()))
        if box:
            results.append(box[0])
        else:
            results.append(
                Result(check.name, TIMEOUT, timeout, check.critical, f"no answer within {timeout:g} s")
            )
    for result in results:
        _set_gauge(health_check_status, result.name, 1.0 if result.status == OK else 0.0)
    return Report(tuple(results))
