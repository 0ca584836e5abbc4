"""django-prometheus 2.5's metric families, as a second view of the events this package records.

With `METRICS_COMPAT_DJANGO_PROMETHEUS` on, `/metrics/` also carries the families that
django-prometheus's middleware pair, database backends, cache backends and migration export
produce, with their names, types, label names and label values, so dashboards and alerts written
for it keep working. Nothing here hooks into Django: the one middleware (`metrics.middleware`),
the one execute wrapper (`metrics.instrument.db`) and the cache wrapper
(`metrics.instrument.cache`) feed these families from the events they already see, and decide
whether to do so once (middleware construction, connection and cache instrumentation); with the
setting off, no family here is created and no event pays for it.

`ExportModelOperationsMixin("name")` keeps django-prometheus's model mixin working for code that
uses it; new code lists models in `METRICS_MODELS` instead (`metrics.instrument.models`).

Where django-prometheus and this package use one name with different labels
(`django_db_query_duration_seconds`), the package's own family stays: see
docs/migrating-from-django-prometheus.md.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

from metrics.core import CompatRecorder, Counter, Gauge, Histogram

__all__ = ["ExportModelOperationsMixin", "enabled", "families"]

logger = logging.getLogger("metrics")

# django-prometheus's default PROMETHEUS_LATENCY_BUCKETS (its +Inf is implicit here).
LATENCY_BUCKETS = (
    0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0, 25.0, 50.0, 75.0,
)  # fmt: skip
# Body sizes: 0, then the powers of two from 1 B to 512 MiB (django-prometheus's buckets).
BODY_BUCKETS = (0, *(2**n for n in range(30)))

UNNAMED_VIEW = "<unnamed view>"
INVALID_METHOD = "<invalid method>"
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "DELETE", "TRACE", "OPTIONS", "CONNECT", "PATCH"})


def enabled() -> bool:
    """Return whether `METRICS_COMPAT_DJANGO_PROMETHEUS` is on (read once at each decision point)."""
    from metrics.conf import app_settings

    return bool(app_settings.COMPAT_DJANGO_PROMETHEUS)


class Families:
    """The compatibility families, created together in the default registry."""

    def __init__(self) -> None:
        # --- HTTP (django-prometheus's PrometheusBeforeMiddleware / PrometheusAfterMiddleware) ---
        self.requests_before = Counter(
            "django_http_requests_before_middlewares_total", "Total count of requests before middlewares run."
        )
        self.responses_before = Counter(
            "django_http_responses_before_middlewares_total",
            "Total count of responses before middlewares run.",
        )
        self.latency_including_middlewares = Histogram(
            "django_http_requests_latency_including_middlewares_seconds",
            "Request latency in seconds, middleware included (compatibility name).",
            buckets=LATENCY_BUCKETS,
        )
        # Every request's latency is known here; kept at 0 so queries on it still find a series.
        self.unknown_latency_including_middlewares = Counter(
            "django_http_requests_unknown_latency_including_middlewares_total",
            "Requests whose latency including middlewares was unknown (always 0 here).",
        )
        self.latency_by_view_method = Histogram(
            "django_http_requests_latency_seconds_by_view_method",
            "Request latency in seconds by view and method (compatibility name).",
            ["view", "method"],
            buckets=LATENCY_BUCKETS,
        )
        self.unknown_latency = Counter(
            "django_http_requests_unknown_latency_total",
            "Requests whose latency was unknown (always 0 here).",
        )
        self.ajax = Counter(
            "django_http_ajax_requests_total", "Requests sent with X-Requested-With: XMLHttpRequest."
        )
        self.by_method = Counter("django_http_requests_total_by_method", "Requests by method.", ["method"])
        self.by_transport = Counter(
            "django_http_requests_total_by_transport", "Requests by transport (http, https).", ["transport"]
        )
        self.by_view_transport_method = Counter(
            "django_http_requests_total_by_view_transport_method",
            "Requests that reached a view, by view, transport and method.",
            ["view", "transport", "method"],
        )
        self.request_body = Histogram(
            "django_http_requests_body_total_bytes", "Request body sizes in bytes.", buckets=BODY_BUCKETS
        )
        self.by_templatename = Counter(
            "django_http_responses_total_by_templatename",
            "Template responses by template name.",
            ["templatename"],
        )
        self.by_status = Counter("django_http_responses_total_by_status", "Responses by status.", ["status"])
        self.by_status_view_method = Counter(
            "django_http_responses_total_by_status_view_method",
            "Responses by status, view and method.",
            ["status", "view", "method"],
        )
        self.response_body = Histogram(
            "django_http_responses_body_total_bytes",
            "Response body sizes in bytes (streaming responses excluded).",
            buckets=BODY_BUCKETS,
        )
        self.by_charset = Counter(
            "django_http_responses_total_by_charset", "Responses by charset.", ["charset"]
        )
        self.streaming = Counter("django_http_responses_streaming_total", "Streaming responses.")
        self.exceptions_by_type = Counter(
            "django_http_exceptions_total_by_type", "Exceptions raised by views, by class name.", ["type"]
        )
        self.exceptions_by_view = Counter(
            "django_http_exceptions_total_by_view", "Exceptions raised by views, by view.", ["view"]
        )
        # --- Database (django-prometheus's database backends) ---
        self.db_new_connections = Counter(
            "django_db_new_connections_total",
            "Attempts to open a database connection, by alias and vendor.",
            ["alias", "vendor"],
        )
        self.db_new_connection_errors = Counter(
            "django_db_new_connection_errors_total",
            "Failed attempts to open a database connection, by alias and vendor.",
            ["alias", "vendor"],
        )
        self.db_execute = Counter(
            "django_db_execute_total",
            "Statements executed, by alias and vendor; executemany() counts each parameter set.",
            ["alias", "vendor"],
        )
        self.db_execute_many = Counter(
            "django_db_execute_many_total",
            "Statements executed through executemany(), one per parameter set, by alias and vendor.",
            ["alias", "vendor"],
        )
        self.db_errors = Counter(
            "django_db_errors_total",
            "Statements that raised, by alias, vendor and exception class name.",
            ["alias", "vendor", "type"],
        )
        # --- Cache (django-prometheus's cache backends) ---
        self.cache_get = Counter("django_cache_get_total", "Cache get() calls, by backend.", ["backend"])
        self.cache_hits = Counter("django_cache_get_hits_total", "Cache get() hits, by backend.", ["backend"])
        self.cache_misses = Counter(
            "django_cache_get_misses_total", "Cache get() misses, by backend.", ["backend"]
        )
        self.cache_fail = Counter(
            "django_cache_get_fail_total", "Cache get() calls that raised, by backend.", ["backend"]
        )
        # --- Migrations (django-prometheus's PROMETHEUS_EXPORT_MIGRATIONS) ---
        self.migrations_unapplied = Gauge(
            "django_migrations_unapplied_total",
            "Unapplied migrations by database connection, as last seen at scrape time.",
            ["connection"],
            multiprocess_mode="mostrecent",
        )
        self.migrations_applied = Gauge(
            "django_migrations_applied_total",
            "Applied migrations by database connection, as last seen at scrape time.",
            ["connection"],
            multiprocess_mode="mostrecent",
        )


_families: Families | None = None
_lock = threading.Lock()


def families() -> Families:
    """Return the compatibility families, creating them on first call (then on every /metrics/)."""
    global _families
    if _families is None:
        with _lock:
            if _families is None:
                made = Families()
                # Kept children (bundles, cache and database counters) follow a user's
                # `remove()`/`clear()` to the new series, as the built-in families' do.
                for metric in vars(made).values():
                    metric._reattach_after_removal()
                _families = made
    return _families


def created() -> Families | None:
    """Return the compatibility families if they exist, without creating them."""
    return _families


# --- HTTP ---


class RequestRecorder:
    """The HTTP compatibility families, recorded by `MetricsMiddleware` in its own call into the core.

    `core` is the core's `CompatRecorder`: the middleware hands it over when it is built, and
    every request then counts in django-prometheus's families from what the middleware read of
    it, with the duration it measured, so both views of a request agree. Exceptions raised by
    views are counted here, from Python (rare).
    """

    def __init__(self) -> None:
        f = self.families = families()
        # Without a proxy header to trust, the scheme is the server's (read from the WSGI
        # environ); with one, Django's own answer (`request.scheme`).
        from metrics.conf import django_setting

        self.core = CompatRecorder(
            requests_before=f.requests_before,
            responses_before=f.responses_before,
            latency_including=f.latency_including_middlewares,
            request_body=f.request_body,
            response_body=f.response_body,
            streaming=f.streaming,
            ajax=f.ajax,
            by_method=f.by_method,
            by_transport=f.by_transport,
            by_status=f.by_status,
            by_status_view_method=f.by_status_view_method,
            by_view_transport_method=f.by_view_transport_method,
            latency_by_view_method=f.latency_by_view_method,
            by_charset=f.by_charset,
            by_templatename=f.by_templatename,
            scheme_from_environ=not django_setting("SECURE_PROXY_SSL_HEADER"),
        )

    def record_exception(self, request: Any, type_name: str) -> None:
        """Count an exception raised by the view of `request`."""
        f = self.families
        f.exceptions_by_type.labels(type_name).inc()
        match = getattr(request, "resolver_match", None)
        if match is not None:
            f.exceptions_by_view.labels(match.view_name or UNNAMED_VIEW).inc()


# --- Cache ---


def cache_backend_label(cls: type) -> str:
    """Return django-prometheus's `backend` label for a cache backend class.

    Its backends name themselves `locmem`, `filebased`, `memcached`, `redis` (django-redis) and
    `native_redis` (Django's own Redis backend); other backends, which it has none for, are
    named by their class (`databasecache`, `dummycache`).
    """
    from django.core.cache.backends.filebased import FileBasedCache
    from django.core.cache.backends.locmem import LocMemCache
    from django.core.cache.backends.memcached import BaseMemcachedCache
    from django.core.cache.backends.redis import RedisCache

    for base, label in (
        (LocMemCache, "locmem"),
        (FileBasedCache, "filebased"),
        (BaseMemcachedCache, "memcached"),
        (RedisCache, "native_redis"),
    ):
        if issubclass(cls, base):
            return label
    if any(c.__module__.startswith("django_redis") for c in cls.__mro__):
        return "redis"
    return cls.__name__.lower()


class FanOut:
    """A counter child that also increments others: one `inc()` for several views of one event."""

    __slots__ = ("_counters",)

    def __init__(self, *counters: Any) -> None:
        self._counters = counters

    def inc(self, amount: float = 1) -> None:
        """Increment every counter by `amount`."""
        for counter in self._counters:
            counter.inc(amount)


def cache_get_children(cls: type, hits: Any, misses: Any) -> tuple[Any, Any, Any]:
    """Return (hits, misses, failures) for a cache's `get()`: ours, fanned out to the compat families."""
    f = families()
    backend = cache_backend_label(cls)
    total = f.cache_get.labels(backend)
    return (
        FanOut(hits, f.cache_hits.labels(backend), total),
        FanOut(misses, f.cache_misses.labels(backend), total),
        FanOut(f.cache_fail.labels(backend), total),
    )


# --- Migrations ---


def set_migrations(alias: str, applied: int, unapplied: int) -> None:
    """Set the migration gauges of database `alias`, if the compatibility families exist."""
    f = _families
    if f is not None:
        f.migrations_applied.labels(alias).set(applied)
        f.migrations_unapplied.labels(alias).set(unapplied)


# --- Models ---


def ExportModelOperationsMixin(model_name: str) -> type:
    """Return a model mixin that counts the model's inserts, updates and deletes as `model_name`.

    Usage, as with django-prometheus: `class Dog(ExportModelOperationsMixin("dog"), models.Model)`.
    Counts go to `django_model_inserts_total`, `django_model_updates_total` and
    `django_model_deletes_total` with `model=model_name`, from the same `post_save` and
    `post_delete` signals `METRICS_MODELS` uses (a model with the mixin is not counted again
    under its `app_label.Model` label). The setting `METRICS_COMPAT_DJANGO_PROMETHEUS` is not
    needed.
    """
    from metrics.instrument import models as model_events

    model_events.prepare_label(model_name)

    class Mixin:
        _metrics_model_label = model_name

        def __init_subclass__(cls, **kwargs: Any) -> None:
            super().__init_subclass__(**kwargs)
            # Every subclass (the model itself, its proxies and children) is a signal sender.
            model_events.watch(cls, model_name)

    Mixin.__qualname__ = f"ExportModelOperationsMixin({model_name!r})"
    return Mixin
