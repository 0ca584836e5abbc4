"""The catalogue: every metric of the spec, by name, plus the helpers that feed the business ones.

Metric objects are created once, at import, in the default registry, except the request-latency
histogram, whose buckets come from a setting: it is made when first used (see
`request_duration_histogram`). Importing this module reads no setting and needs no Django
settings (the helpers read `METRICS_MAX_LABEL_VALUES` when they first meet a value).

Gauges carry the `multiprocess_mode` that makes sense once several workers share a store:
`livesum` for per-process quantities that add up (memory, threads, open connections), `mostrecent`
for values every process computes the same way (active users, custom gauges).
"""

from __future__ import annotations

import logging
import re
import threading
from typing import TYPE_CHECKING

from django.core.signals import setting_changed

from metrics.conf import AppSettings, app_settings
from metrics.core import REGISTRY, Counter, Gauge, Histogram, Summary

# Re-exported so the spec's "Extending the Module" example (`Histogram(...)` in collectors.py)
# works as written.
__all__ = [
    "Counter",
    "Gauge",
    "Histogram",
    "Summary",
    "bounded_label",
    "track_custom_metric",
    "track_user_activity",
]

logger = logging.getLogger("metrics")


# Body sizes in bytes: 100 B to 10 MB by decades, with midpoints.
SIZE_BUCKETS = (100, 1_000, 5_000, 10_000, 50_000, 100_000, 500_000, 1_000_000, 5_000_000, 10_000_000)
# Query latency in seconds: most queries take well under a millisecond.
QUERY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
# Task run time in seconds.
TASK_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0)
# Celery queue waits: from a few milliseconds on an idle worker to an hour of backlog.
QUEUE_WAIT_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 3600)
# Native buckets of the latency histograms under `METRICS_NATIVE_HISTOGRAMS`: the Go client's usual
# factor (schema 3: 8 buckets per doubling, at most 9% apart); 160 buckets span 1 ms to 1,000 s.
NATIVE_BUCKET_FACTOR = 1.1


def _native_factor() -> float | None:
    """Return the native bucket factor of the latency histograms under the current settings."""
    return NATIVE_BUCKET_FACTOR if app_settings.NATIVE_HISTOGRAMS else None


# The query and task latency histograms: (help, labels, buckets), made on first use so that
# `METRICS_NATIVE_HISTOGRAMS` is read then, not at import; kept once made.
_LATENCY = {
    "db_query_duration_seconds": (
        "django_db_query_duration_seconds",
        "Database query execution time in seconds.",
        ("database", "operation"),
        QUERY_BUCKETS,
    ),
    "celery_task_duration_seconds": (
        "celery_task_duration_seconds",
        "Celery task run time in seconds.",
        ("task",),
        TASK_BUCKETS,
    ),
}
_latency_made: dict[str, Histogram] = {}
_latency_lock = threading.Lock()


def latency_histogram(attribute: str) -> Histogram:
    """Return the query or task latency histogram (`db_query_duration_seconds`, ...), made on first use.

    Native buckets follow `METRICS_NATIVE_HISTOGRAMS` as it is then (at the latest when the app
    is ready); the family is kept for the process's life, as its buckets are fixed once made.
    """
    found = _latency_made.get(attribute)
    if found is not None:
        return found
    with _latency_lock:
        found = _latency_made.get(attribute)
        if found is None:
            name, documentation, labels, buckets = _LATENCY[attribute]
            found = Histogram(
                name,
                documentation,
                list(labels),
                buckets=buckets,
                native_histogram_bucket_factor=_native_factor(),
            )
            found._reattach_after_removal()
            _latency_made[attribute] = found
    return found


# --- HTTP ---
http_requests_total = Counter(
    "django_http_requests_total",
    "Total HTTP requests by method, view and status.",
    ["method", "view", "status"],
)
# `django_http_request_duration_seconds` and the current `METRICS_LATENCY_BUCKETS`: module
# attributes resolved on each access by `__getattr__` below, so that neither is read at import.
http_request_duration_seconds: Histogram
LATENCY_BUCKETS: tuple[float, ...]
# The latency histogram of each (bucket set, native factor) used so far, and the key of the one
# registered now.
_latency_families: dict[tuple[tuple[float, ...], float | None], Histogram] = {}
_latency_buckets: tuple[tuple[float, ...], float | None] | None = None


def request_duration_histogram() -> Histogram:
    """Return `django_http_request_duration_seconds`, with the buckets `METRICS_LATENCY_BUCKETS` sets now.

    The family is made on first use, at the latest when the app is ready, so settings configured
    after this module was imported (a late `settings.configure()`) apply. Its buckets are fixed
    once made, as in prometheus_client; when the setting changes (`override_settings`), the
    family of the new buckets takes its place in the default registry, and the old one comes
    back with its series when the setting does. A middleware records into the family it was
    built with. A bad value falls back to the default; `manage.py check` reports it
    (metrics.E017).
    """
    global _latency_buckets
    key = (app_settings.LATENCY_BUCKETS, _native_factor())
    if key == _latency_buckets:
        return _latency_families[key]
    with _latency_lock:
        if _latency_buckets is not None:
            if key == _latency_buckets:
                return _latency_families[key]
            # Its name is free again for the family of the new buckets.
            REGISTRY.unregister(_latency_families[_latency_buckets])
        family = _latency_families.get(key)
        if family is None:
            family = _latency_families[key] = Histogram(
                "django_http_request_duration_seconds",
                "HTTP request latency in seconds, from middleware entry to response.",
                ["method", "view"],
                buckets=key[0],
                native_histogram_bucket_factor=key[1],
            )
            # Counting goes on after a user's clear() (see _keep_counting_after_removal).
            family._reattach_after_removal()
        else:
            REGISTRY.register(family)
        _latency_buckets = key
        return family


def _on_setting_changed(*, setting: str, **kwargs: object) -> None:
    # Swapped at once, so that scrapes show the buckets of the settings in force even before
    # anything uses the histogram again. `metrics.conf`'s receiver, connected before this one
    # (this module imports it), has already dropped the cached value.
    if (
        setting in (AppSettings.LATENCY_BUCKETS.name, AppSettings.NATIVE_HISTOGRAMS.name)
        and _latency_buckets is not None
    ):
        request_duration_histogram()


setting_changed.connect(_on_setting_changed, dispatch_uid="metrics.collectors.setting_changed")


if not TYPE_CHECKING:
    # Hidden from mypy, which types the two names from their declarations above instead of
    # letting any attribute of the module through.

    def __getattr__(name: str) -> object:
        """Resolve the attributes read from settings when they are used (PEP 562)."""
        if name == "http_request_duration_seconds":
            return request_duration_histogram()
        if name in _LATENCY:
            return latency_histogram(name)
        if name == "LATENCY_BUCKETS":
            return app_settings.LATENCY_BUCKETS
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


http_requests_in_progress = Gauge(
    "django_http_requests_in_progress",
    "HTTP requests being processed now.",
    ["method"],
    multiprocess_mode="livesum",
)
http_request_size_bytes = Histogram(
    "django_http_request_size_bytes",
    "HTTP request body size in bytes.",
    ["method", "view"],
    buckets=SIZE_BUCKETS,
)
http_response_size_bytes = Histogram(
    "django_http_response_size_bytes",
    "HTTP response body size in bytes.",
    ["method", "view"],
    buckets=SIZE_BUCKETS,
)

# --- Database ---
db_connections_total = Gauge(
    "django_db_connections_total",
    "Open database connections by alias.",
    ["database"],
    multiprocess_mode="livesum",
)
db_queries_total = Counter(
    "django_db_queries_total",
    "Database queries by alias and operation (select, insert, update, delete, other).",
    ["database", "operation"],
)
# `django_db_query_duration_seconds`: made on first use (see `latency_histogram`).
db_query_duration_seconds: Histogram
db_query_errors_total = Counter(
    "django_db_query_errors_total",
    "Database queries that raised, by alias and operation.",
    ["database", "operation"],
)
db_connection_errors_total = Counter(
    "django_db_connection_errors_total",
    "Failed attempts to open a database connection, by alias.",
    ["database"],
)

# --- Cache ---
cache_hits_total = Counter("django_cache_hits_total", "Cache hits, counted per key.", ["cache"])
cache_misses_total = Counter("django_cache_misses_total", "Cache misses, counted per key.", ["cache"])
cache_sets_total = Counter("django_cache_sets_total", "Cache set operations, counted per key.", ["cache"])
cache_deletes_total = Counter("django_cache_deletes_total", "Cache delete operations, per key.", ["cache"])
cache_errors_total = Counter(
    "django_cache_errors_total",
    "Cache operations that raised (backend unreachable, bad key...), by alias and operation.",
    ["cache", "operation"],
)

# --- Database connection pool (Django 5.1+ PostgreSQL `OPTIONS["pool"]`, read at scrape) ---
db_pool_size = Gauge(
    "django_db_pool_size",
    "Connections currently open in the pool (idle or in use).",
    ["database"],
    multiprocess_mode="livesum",
)
db_pool_max = Gauge(
    "django_db_pool_max",
    "Most connections the pool may open.",
    ["database"],
    multiprocess_mode="livesum",
)
db_pool_idle = Gauge(
    "django_db_pool_idle",
    "Idle connections in the pool, ready to be handed out.",
    ["database"],
    multiprocess_mode="livesum",
)
db_pool_waiting = Gauge(
    "django_db_pool_waiting",
    "Requests waiting for a connection from the pool.",
    ["database"],
    multiprocess_mode="livesum",
)

# --- System (read with psutil at scrape time) ---
process_memory_bytes = Gauge(
    "django_process_memory_bytes",
    "Resident set size of the process in bytes.",
    multiprocess_mode="liveworker",
)
process_cpu_percent = Gauge(
    "django_process_cpu_percent",
    "CPU used by the process since the previous scrape, in percent of one core.",
    multiprocess_mode="liveworker",
)
process_threads_total = Gauge(
    "django_process_threads_total",
    "Threads of the process.",
    multiprocess_mode="liveworker",
)
process_open_files_total = Gauge(
    "django_process_open_files_total",
    "Open file descriptors of the process.",
    multiprocess_mode="liveworker",
)
python_gc_collections_total = Counter(
    "django_python_gc_collections_total",
    "Garbage collector runs by generation, since the process started.",
    ["generation"],
)

# --- Business ---
user_registrations_total = Counter("django_user_registrations_total", "New users saved.")
user_logins_total = Counter("django_user_logins_total", "Successful logins by method.", ["method"])
user_login_failures_total = Counter("django_user_login_failures_total", "Failed login attempts.")
# Every process runs the same query at scrape, so the freshest value is the right one; `max` would
# keep a stale peak from a worker scraped long ago.
active_users_total = Gauge(
    "django_active_users_total",
    "Users who logged in within the last METRICS_ACTIVE_USER_WINDOW seconds.",
    multiprocess_mode="mostrecent",
)
user_activity_total = Counter(
    "django_user_activity_total",
    "Other user activities passed to track_user_activity(), by activity.",
    ["activity"],
)
custom_metric_counter = Counter(
    "django_custom_metric_total", "Custom business events by type and action.", ["type", "action"]
)
custom_metric_gauge = Gauge(
    "django_custom_metric_current",
    "Custom business values by type.",
    ["type"],
    multiprocess_mode="mostrecent",
)

# --- Health ---
health_check_status = Gauge(
    "django_health_check_status",
    "1 when the check last passed on /metrics/health/ or /metrics/readiness/, 0 when it failed.",
    ["check"],
    multiprocess_mode="mostrecent",
)
migrations_unapplied = Gauge(
    "django_migrations_unapplied",
    "Migrations not applied to the database, as last seen by the migrations check.",
    ["database"],
    multiprocess_mode="mostrecent",
)

# --- Celery ---
celery_tasks_total = Counter(
    "celery_tasks_total", "Celery tasks finished, by task and status.", ["task", "status"]
)
# `celery_task_duration_seconds`: made on first use (see `latency_histogram`).
celery_task_duration_seconds: Histogram
celery_tasks_published_total = Counter(
    "celery_tasks_published_total",
    "Celery tasks this process sent to the broker, by task and queue.",
    ["task", "queue"],
)
celery_queue_length_errors_total = Counter(
    "celery_queue_length_errors_total",
    "Scrapes that found no Celery queue length: the broker failed or did not answer in time.",
)
# Recorded by metrics.instrument.celery (see docs/celery.md).
celery_tasks_in_progress = Gauge(
    "celery_tasks_in_progress",
    "Celery task bodies running now, by task.",
    ["task"],
    multiprocess_mode="livesum",
)
celery_task_queue_wait_seconds = Histogram(
    "celery_task_queue_wait_seconds",
    "Seconds from publish (or the ETA, when later) to the start of the run, by task.",
    ["task"],
    buckets=QUEUE_WAIT_BUCKETS,
)
celery_worker_up = Gauge(
    "celery_worker_up",
    "1 while the Celery worker's main process is consuming, by worker node name.",
    ["worker"],
    multiprocess_mode="livesum",
)
celery_worker_last_heartbeat_timestamp_seconds = Gauge(
    "celery_worker_last_heartbeat_timestamp_seconds",
    "When the Celery worker last sent its heartbeat (seconds since the epoch), by worker.",
    ["worker"],
    multiprocess_mode="max",
)
celery_worker_pool_processes = Gauge(
    "celery_worker_pool_processes",
    "Pool processes of the Celery worker alive now, by worker.",
    ["worker"],
    multiprocess_mode="livesum",
)
celery_worker_consuming = Gauge(
    "celery_worker_consuming",
    "1 for each queue the Celery worker's main process consumes from, by worker and queue.",
    ["worker", "queue"],
    multiprocess_mode="livesum",
)

# --- The metrics module's own health ---
labels_folded_total = Counter(
    "django_metrics_labels_folded_total",
    "Label values folded into `other` by track_custom_metric/track_user_activity, by metric and label.",
    ["metric", "label"],
)


# --- Label values passed by users ---
OTHER = "other"
LABEL_VALUE_RE = re.compile(r"[A-Za-z0-9_.:-]{1,64}")

_seen_values: dict[tuple[str, str], set[str]] = {}
_warned: set[tuple[str, str, str]] = set()
_seen_lock = threading.Lock()


def max_label_values() -> int:
    """Return how many distinct values one label may take (`METRICS_MAX_LABEL_VALUES`, default 100)."""
    # Parsed as the system check metrics.E012 parses it; a bad value reads as the default.
    return app_settings.MAX_LABEL_VALUES


def _fold(metric: str, label: str, why: str, value: object) -> str:
    labels_folded_total.labels(metric, label).inc()
    key = (metric, label, why)
    if key not in _warned:
        # Once per metric, label and reason: a flood of bad values must not flood the log too.
        _warned.add(key)
        logger.warning(
            "metrics: label %s=%r of %s folded into %r (%s); further occurrences are only counted in "
            "django_metrics_labels_folded_total",
            label,
            value,
            metric,
            OTHER,
            why,
        )
    return OTHER


def bounded_label(metric: str, label: str, value: object) -> str:
    """Return `value` as a label value that cannot grow a metric without bound.

    A value must be 1 to 64 characters of `A-Z a-z 0-9 _ . : -` and be among the first
    `METRICS_MAX_LABEL_VALUES` distinct values seen for this metric and label in this process;
    anything else becomes `other`, with a warning logged once and
    `django_metrics_labels_folded_total{metric,label}` incremented.
    """
    text = value if isinstance(value, str) else str(value)
    seen = _seen_values.get((metric, label))
    if seen is not None and text in seen:
        return text
    if text == OTHER:
        return text
    if not LABEL_VALUE_RE.fullmatch(text):
        return _fold(metric, label, "not 1-64 characters of A-Z a-z 0-9 _ . : -", value)
    with _seen_lock:
        seen = _seen_values.setdefault((metric, label), set())
        if text in seen:
            return text
        if len(seen) >= max_label_values():
            full = True
        else:
            seen.add(text)
            full = False
    if full:
        return _fold(metric, label, "METRICS_MAX_LABEL_VALUES distinct values reached", value)
    return text


def reset_label_bounds() -> None:
    """Forget the label values seen so far (for tests; the series already exposed stay)."""
    with _seen_lock:
        _seen_values.clear()
        _warned.clear()


def track_custom_metric(type: str, action: str, value: float = 1, gauge_value: float | None = None) -> None:
    """Count `value` events of `type`/`action`; when `gauge_value` is given, set the `type` gauge to it.

    `django_custom_metric_total{type,action}` grows by `value` (which must not be negative) and
    `django_custom_metric_current{type}` is set to `gauge_value`. Label values are bounded as
    `bounded_label` says.
    """
    type_label = bounded_label("django_custom_metric_total", "type", type)
    action_label = bounded_label("django_custom_metric_total", "action", action)
    custom_metric_counter.labels(type_label, action_label).inc(value)
    if gauge_value is not None:
        custom_metric_gauge.labels(bounded_label("django_custom_metric_current", "type", type)).set(
            gauge_value
        )


_ACTIVITY_LABELS: dict[str, frozenset[str]] = {
    "registration": frozenset(),
    "login": frozenset({"method"}),
    "login_failed": frozenset(),
}


def track_user_activity(activity: str, **labels: str) -> None:
    """Record one user activity.

    `registration` increments `django_user_registrations_total`, `login` increments
    `django_user_logins_total{method}` (`method` defaults to `unknown`), `login_failed` increments
    `django_user_login_failures_total`; any other activity increments
    `django_user_activity_total{activity}` and takes no labels. A label these metrics do not have
    raises `ValueError`; label values are bounded as `bounded_label` says.

    Logins through `django.contrib.auth.login()`, failures reported by `authenticate()` and users
    saved for the first time are already counted from Django's signals once
    `metrics.instrument.install()` has run: call this for the ones Django does not see (token APIs,
    external identity providers), or they are counted twice.
    """
    allowed = _ACTIVITY_LABELS.get(activity, frozenset())
    unknown = set(labels) - allowed
    if unknown:
        raise ValueError(
            f"track_user_activity({activity!r}) takes no label {', '.join(sorted(unknown))}"
            + (f" (allowed: {', '.join(sorted(allowed))})" if allowed else "")
        )
    if activity == "registration":
        user_registrations_total.inc()
    elif activity == "login":
        method = labels.get("method", "unknown")
        user_logins_total.labels(bounded_label("django_user_logins_total", "method", method)).inc()
    elif activity == "login_failed":
        user_login_failures_total.inc()
    else:
        user_activity_total.labels(bounded_label("django_user_activity_total", "activity", activity)).inc()


# --- Exceptions, models, migrations (see docs/metrics.md) ---
http_exceptions_total = Counter(
    "django_http_exceptions_total",
    "Exceptions raised by views, by view and exception class name.",
    ["view", "type"],
)
model_inserts_total = Counter(
    "django_model_inserts_total", "Model instances saved for the first time, by model.", ["model"]
)
model_updates_total = Counter(
    "django_model_updates_total", "Saves of existing model instances, by model.", ["model"]
)
model_deletes_total = Counter("django_model_deletes_total", "Model instances deleted, by model.", ["model"])
migrations_applied = Gauge(
    "django_migrations_applied",
    "Migrations recorded as applied in the database, as last seen at scrape time.",
    ["database"],
    multiprocess_mode="mostrecent",
)


def _keep_counting_after_removal() -> None:
    """Let every built-in family's kept children follow `remove()`/`clear()` to the new series.

    The instruments keep the children they record on (per connection, per cache, per task
    name); a user's `clear()` on a built-in family must not switch that counting off for the
    life of the process, so those children find the family's new series on their next write.
    """
    for metric in list(globals().values()):
        if isinstance(metric, (Counter, Gauge, Histogram, Summary)):
            metric._reattach_after_removal()


_keep_counting_after_removal()
