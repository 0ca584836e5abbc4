"""Subsystem health checks, run in parallel threads, each with its own timeout.

Built-in checks are derived from the settings at each run: one per database alias
(`database:<alias>`), one per cache alias (`cache:<alias>`), `migrations` (default database; the
migration gauges of every database are refreshed at scrape time) and,
when `PROMETHEUS_MULTIPROC_DIR` is set, `disk:multiproc`. Other parts of the package, and sites,
add theirs with `register_check()`:

    from metrics.health import register_check

    def check_broker() -> None:
        connection.ensure_connection(max_retries=1)  # raise to report a failure

    register_check("celery:broker", check_broker, timeout=0.5, readiness=False)

A check is a callable that returns (anything) when healthy and raises when not. A check that
does not answer within its timeout is reported as `timeout`; it is left to finish on its own (a
thread cannot be killed), so a check must not hold resources forever.

Checks run in a small pool of threads made once per process (and again in a forked child), never
in a thread per request: anyone may call `/metrics/health/`, and per-thread state outside Python's
control (libuuid keeps a file open per thread it ran in, reached through kombu and redis-py) would
otherwise grow with every call. A check name has at most one run in flight: a caller asking while
one is pending or running waits for that run's result, so a check that hangs holds one thread, not
one per probe. A check that cannot start within its timeout (every thread busy) is reported as
`timeout`, and a run that nobody waits for any more is dropped before it starts.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from time import perf_counter
from typing import Any

from metrics.collectors import health_check_status, migrations_applied, migrations_unapplied
from metrics.conf import app_settings, django_setting

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
    """Fail when migrations of the installed apps are not applied to database `alias`.

    Also sets `django_migrations_unapplied{database}` and `django_migrations_applied{database}`
    (and django-prometheus's two migration gauges when compatibility is on).
    """
    if alias in _migrated:
        return
    from django.db import connections
    from django.db.migrations.executor import MigrationExecutor

    from metrics import compat

    executor = MigrationExecutor(connections[alias])
    plan = executor.migration_plan(executor.loader.graph.leaf_nodes())
    applied = len(executor.loader.applied_migrations or ())
    _set_gauge(migrations_unapplied, alias, len(plan))
    _set_gauge(migrations_applied, alias, applied)
    try:
        compat.set_migrations(alias, applied, len(plan))
    except Exception:
        logger.exception("metrics: could not record a health result")
    if plan:
        names = ", ".join(f"{m.app_label}.{m.name}" for m, _ in plan[:3])
        more = f" and {len(plan) - 3} more" if len(plan) > 3 else ""
        raise HealthCheckError(f"{len(plan)} unapplied migration(s): {names}{more}")
    _migrated.add(alias)


# A database whose migrations could not be read at scrape time is tried again after this many
# seconds, not at every scrape: an unreachable secondary database must not slow each one down.
MIGRATIONS_RETRY_SECONDS = 60.0
_scrape_failed_at: dict[str, float] = {}


def _aliases(name: str) -> dict[str, Any]:
    """Return Django's `DATABASES` or `CACHES` setting: configuration by alias, empty when unset."""
    value = django_setting(name)
    return value if isinstance(value, dict) else {}


def migration_aliases() -> list[str]:
    """Return the database aliases whose migrations are counted: all but dummy backends."""
    databases = _aliases("DATABASES")
    return [
        alias
        for alias, config in databases.items()
        if (config or {}).get("ENGINE", "django.db.backends.dummy") != "django.db.backends.dummy"
    ]


def migrations_at_scrape() -> None:
    """Refresh the migration gauges of every database alias (a collect hook).

    Free once every migration of an alias is applied (the result is cached); a failure is the
    health page's to report, not the scrape's, and that alias is skipped for
    `MIGRATIONS_RETRY_SECONDS`.
    """
    now = time.monotonic()
    for alias in migration_aliases():
        if alias in _migrated:
            continue
        failed_at = _scrape_failed_at.get(alias)
        if failed_at is not None and now - failed_at < MIGRATIONS_RETRY_SECONDS:
            continue
        try:
            check_migrations(alias)
        except HealthCheckError:
            # Unapplied migrations: counted; the migrations check reports the details.
            _scrape_failed_at.pop(alias, None)
        except Exception:
            # Database unreachable: reported by /metrics/health/ and readiness, with details.
            _scrape_failed_at[alias] = now
        else:
            _scrape_failed_at.pop(alias, None)


def _set_gauge(gauge: Any, label: str, value: float) -> None:
    try:
        gauge.labels(label).set(value)
    except Exception:
        logger.exception("metrics: could not record a health result")


def forget_migrations() -> None:
    """Make the next `migrations` check look at the database again (after a test changes it)."""
    _migrated.clear()
    _scrape_failed_at.clear()


def check_disk(path: str, min_free_mb: float) -> None:
    """Fail when `path` is not a writable directory or has less than `min_free_mb` free."""
    if not os.path.isdir(path):
        raise HealthCheckError("the multiprocess directory does not exist")
    if not os.access(path, os.W_OK | os.X_OK):
        raise HealthCheckError("the multiprocess directory is not writable")
    free_mb = shutil.disk_usage(path).free / 1_000_000
    if free_mb < min_free_mb:
        raise HealthCheckError(f"{free_mb:.1f} MB free, less than the {min_free_mb:g} MB required")


def check_celery(app: Any, timeout: float | None = None) -> None:
    """Fail unless `app`'s broker accepts a connection and a worker answers a ping, within `timeout`.

    Registered as `celery` (not critical) by `metrics.instrument.celery.install()`.
    """
    if timeout is None:
        timeout = app_settings.HEALTH_TIMEOUT
    started = time.monotonic()
    # Leave a margin so the check answers before run_checks gives up on it.
    budget = timeout * 0.9
    with app.connection_for_write(connect_timeout=budget / 2) as connection:
        connection.ensure_connection(max_retries=0, timeout=budget / 2)
        remaining = max(0.05, budget - (time.monotonic() - started))
        replies = app.control.ping(timeout=remaining, limit=1, connection=connection)
    if not replies:
        raise HealthCheckError(f"the broker answered, but no worker answered a ping within {remaining:.2g} s")


def builtin_checks(*, readiness: bool) -> list[Check]:
    """Return the checks derived from the settings: databases, caches, migrations, disk."""
    databases = list(_aliases("DATABASES"))
    caches = list(_aliases("CACHES"))
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
    secrets: list[object] = [django_setting("SECRET_KEY"), app_settings.AUTH_TOKEN]
    for db in _aliases("DATABASES").values():
        secrets.append(str(db.get("PASSWORD") or ""))
    for cache in _aliases("CACHES").values():
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


def _execute(check: Check) -> Result:
    start = perf_counter()
    try:
        returned = check.function()
    except BaseException as exc:
        return Result(check.name, ERROR, perf_counter() - start, check.critical, describe_error(exc))
    else:
        info = returned if isinstance(returned, dict) else None
        return Result(check.name, OK, perf_counter() - start, check.critical, info=info)
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


# Threads of the pool; a run beyond them waits in the queue (its start deadline bounds the wait).
POOL_SIZE = 8
# Runs waiting for a thread. One run per check name can be in flight, so the queue never holds
# more than the number of distinct checks; this bound only guards against a site registering
# checks without end.
MAX_PENDING = 64


class _Run:
    """One run of a check in the pool, shared by every caller that asked while it was in flight."""

    __slots__ = ("check", "deadline", "done", "result", "started")

    def __init__(self, check: Check, deadline: float) -> None:
        self.check = check
        # The latest time any caller still waits for the result (time.monotonic()).
        self.deadline = deadline
        self.started = False
        self.result: Result | None = None
        self.done = threading.Event()


class CheckPool:
    """A bounded set of threads, made on demand and reused, that run checks (one run per name)."""

    def __init__(self, size: int = POOL_SIZE, max_pending: int = MAX_PENDING) -> None:
        self.size = size
        self.max_pending = max_pending
        self._lock = threading.Lock()
        self._wakeup = threading.Condition(self._lock)
        self._pending: deque[_Run] = deque()
        self._in_flight: dict[str, _Run] = {}
        self._threads: list[threading.Thread] = []
        self._idle = 0

    @property
    def thread_count(self) -> int:
        """Return how many threads the pool has made (they live as long as the process)."""
        with self._lock:
            return len(self._threads)

    def submit(self, check: Check, deadline: float) -> _Run:
        """Return the run of `check`: the one in flight under its name, else a new queued one.

        The caller waits for it up to `deadline`; a run refused because the queue is full is
        returned already done, without a result.
        """
        with self._lock:
            run = self._in_flight.get(check.name)
            if run is not None:
                run.deadline = max(run.deadline, deadline)
                return run
            run = _Run(check, deadline)
            if len(self._pending) >= self.max_pending:
                run.done.set()
                return run
            self._in_flight[check.name] = run
            self._pending.append(run)
            if self._idle < len(self._pending) and len(self._threads) < self.size:
                thread = threading.Thread(
                    target=self._work, name=f"metrics-health-{len(self._threads)}", daemon=True
                )
                self._threads.append(thread)
                thread.start()
            self._wakeup.notify()
        return run

    def _work(self) -> None:
        while True:
            with self._lock:
                self._idle += 1
                while not self._pending:
                    self._wakeup.wait()
                self._idle -= 1
                run = self._pending.popleft()
                if time.monotonic() >= run.deadline:
                    # Every caller has given up on it: starting it would only add load.
                    self._finish(run)
                    continue
                run.started = True
            try:
                run.result = _execute(run.check)
            except BaseException:
                # _execute catches everything a check raises; this is a bug here, and the
                # thread must live on to serve the next probe.
                logger.exception("metrics: health check %r could not run", run.check.name)
            with self._lock:
                self._finish(run)

    def _finish(self, run: _Run) -> None:
        # Called with the lock held.
        if self._in_flight.get(run.check.name) is run:
            del self._in_flight[run.check.name]
        run.done.set()


_pool = CheckPool()


def _new_pool_after_fork() -> None:
    # The parent's threads do not exist in a forked child, and its lock may have been held by
    # one of them at the fork: start from an empty pool.
    global _pool
    _pool = CheckPool()


os.register_at_fork(after_in_child=_new_pool_after_fork)


def run_checks(checks: Iterable[Check], *, default_timeout: float | None = None) -> Report:
    """Run `checks` in parallel in the check pool and wait for each up to its timeout."""
    if default_timeout is None:
        default_timeout = app_settings.HEALTH_TIMEOUT
    started = time.monotonic()
    pool = _pool
    runs = []
    for check in checks:
        timeout = check.timeout if check.timeout is not None else default_timeout
        runs.append((check, timeout, pool.submit(check, started + timeout)))
    results = []
    for check, timeout, run in runs:
        run.done.wait(max(0.0, started + timeout - time.monotonic()))
        result = run.result
        if result is not None:
            # A run shared with another caller: report it with this caller's check.
            results.append(replace(result, name=check.name, critical=check.critical))
        elif run.started:
            results.append(
                Result(check.name, TIMEOUT, timeout, check.critical, f"no answer within {timeout:g} s")
            )
        else:
            message = f"not started within {timeout:g} s: every health check thread was busy"
            results.append(Result(check.name, TIMEOUT, timeout, check.critical, message))
    for result in results:
        _set_gauge(health_check_status, result.name, 1.0 if result.status == OK else 0.0)
    return Report(tuple(results))
