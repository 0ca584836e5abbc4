"""The catalogue: every metric of the spec, by name, plus the helpers that feed the business ones.

Metric objects are created once, at import, in the default registry. Importing this module needs
no Django settings.
"""

from __future__ import annotations

from metrics.core import Counter, Gauge, Histogram, Summary

# Re-exported so the spec's "Extending the Module" example (`Histogram(...)` in collectors.py)
# works as written.
__all__ = ["Counter", "Gauge", "Histogram", "Summary"]

# Latency buckets in seconds: fine below 100 ms where most Django views live, coarse above.
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0, 30.0)
# Body sizes in bytes: 100 B to 10 MB by decades, with midpoints.
SIZE_BUCKETS = (100, 1_000, 5_000, 10_000, 50_000, 100_000, 500_000, 1_000_000, 5_000_000, 10_000_000)
# Query latency in seconds: most queries take well under a millisecond.
QUERY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
# Task run time in seconds.
TASK_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0)

# --- HTTP ---
http_requests_total = Counter(
    "django_http_requests_total",
    "Total HTTP requests by method, view and status.",
    ["method", "view", "status"],
)
http_request_duration_seconds = Histogram(
    "django_http_request_duration_seconds",
    "HTTP request latency in seconds, from middleware entry to response.",
    ["method", "view"],
    buckets=LATENCY_BUCKETS,
)
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
db_query_duration_seconds = Histogram(
    "django_db_query_duration_seconds",
    "Database query execution time in seconds.",
    ["database", "operation"],
    buckets=QUERY_BUCKETS,
)
db_query_errors_total = Counter(
    "django_db_query_errors_total",
    "Database queries that raised, by alias and operation.",
    ["database", "operation"],
)

# --- Cache ---
cache_hits_total = Counter("django_cache_hits_total", "Cache hits, counted per key.", ["cache"])
cache_misses_total = Counter("django_cache_misses_total", "Cache misses, counted per key.", ["cache"])
cache_sets_total = Counter("django_cache_sets_total", "Cache set operations, counted per key.", ["cache"])
cache_deletes_total = Counter("django_cache_deletes_total", "Cache delete operations, per key.", ["cache"])

# --- Business ---
user_registrations_total = Counter("django_user_registrations_total", "New users saved.")
user_logins_total = Counter("django_user_logins_total", "Successful logins by method.", ["method"])
user_login_failures_total = Counter("django_user_login_failures_total", "Failed login attempts.")
active_users_total = Gauge(
    "django_active_users_total",
    "Users seen recently (see METRICS_ACTIVE_USER_WINDOW).",
    multiprocess_mode="max",
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

# --- Celery ---
celery_tasks_total = Counter("celery_tasks_total", "Celery tasks finished, by task and status.", ["task", "status"])
celery_task_duration_seconds = Histogram(
    "celery_task_duration_seconds",
    "Celery task run time in seconds.",
    ["task"],
    buckets=TASK_BUCKETS,
)
