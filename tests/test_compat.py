"""django-prometheus compatibility: its families, names, types and labels, fed by our own hooks."""

from __future__ import annotations

from typing import Any

import pytest
from django.core.cache.backends.locmem import LocMemCache
from django.http import HttpResponse
from django.template.response import TemplateResponse
from django.test import Client, RequestFactory, override_settings
from django.urls import resolve

from metrics import compat
from metrics.core import REGISTRY
from metrics.instrument import cache as cache_instrument
from metrics.instrument import db as db_instrument
from metrics.middleware import MetricsMiddleware

# django-prometheus 2.5's families as exposed: name -> (type, label names). Counters carry the
# `_total` suffix prometheus_client adds to every counter name.
REFERENCE: dict[str, tuple[str, frozenset[str]]] = {
    "django_http_requests_before_middlewares_total": ("counter", frozenset()),
    "django_http_responses_before_middlewares_total": ("counter", frozenset()),
    "django_http_requests_latency_including_middlewares_seconds": ("histogram", frozenset()),
    "django_http_requests_unknown_latency_including_middlewares_total": ("counter", frozenset()),
    "django_http_requests_latency_seconds_by_view_method": ("histogram", frozenset({"view", "method"})),
    "django_http_requests_unknown_latency_total": ("counter", frozenset()),
    "django_http_ajax_requests_total": ("counter", frozenset()),
    "django_http_requests_total_by_method_total": ("counter", frozenset({"method"})),
    "django_http_requests_total_by_transport_total": ("counter", frozenset({"transport"})),
    "django_http_requests_total_by_view_transport_method_total": (
        "counter",
        frozenset({"view", "transport", "method"}),
    ),
    "django_http_requests_body_total_bytes": ("histogram", frozenset()),
    "django_http_responses_total_by_templatename_total": ("counter", frozenset({"templatename"})),
    "django_http_responses_total_by_status_total": ("counter", frozenset({"status"})),
    "django_http_responses_total_by_status_view_method_total": (
        "counter",
        frozenset({"status", "view", "method"}),
    ),
    "django_http_responses_body_total_bytes": ("histogram", frozenset()),
    "django_http_responses_total_by_charset_total": ("counter", frozenset({"charset"})),
    "django_http_responses_streaming_total": ("counter", frozenset()),
    "django_http_exceptions_total_by_type_total": ("counter", frozenset({"type"})),
    "django_http_exceptions_total_by_view_total": ("counter", frozenset({"view"})),
    "django_db_new_connections_total": ("counter", frozenset({"alias", "vendor"})),
    "django_db_new_connection_errors_total": ("counter", frozenset({"alias", "vendor"})),
    "django_db_execute_total": ("counter", frozenset({"alias", "vendor"})),
    "django_db_execute_many_total": ("counter", frozenset({"alias", "vendor"})),
    "django_db_errors_total": ("counter", frozenset({"alias", "vendor", "type"})),
    "django_cache_get_total": ("counter", frozenset({"backend"})),
    "django_cache_get_hits_total": ("counter", frozenset({"backend"})),
    "django_cache_get_misses_total": ("counter", frozenset({"backend"})),
    "django_cache_get_fail_total": ("counter", frozenset({"backend"})),
    "django_model_inserts_total": ("counter", frozenset({"model"})),
    "django_model_updates_total": ("counter", frozenset({"model"})),
    "django_model_deletes_total": ("counter", frozenset({"model"})),
    "django_migrations_unapplied_total": ("gauge", frozenset({"connection"})),
    "django_migrations_applied_total": ("gauge", frozenset({"connection"})),
}
# Shared with django-prometheus, labels kept as this package's spec has them (documented).
SHARED_WITH_OUR_LABELS = {"django_db_query_duration_seconds": frozenset({"database", "operation"})}


def _exposed() -> dict[str, tuple[str, set[frozenset[str]]]]:
    """Return every exposed family: type and the label-name sets of its samples (`le` left out)."""
    from prometheus_client.parser import text_string_to_metric_families

    families: dict[str, tuple[str, set[frozenset[str]]]] = {}
    for family in text_string_to_metric_families(REGISTRY.encode().decode()):
        labels = {frozenset(s.labels) - {"le"} for s in family.samples if not s.name.endswith("_created")}
        name = family.name + "_total" if family.type == "counter" else family.name
        families[name] = (family.type, labels)
    return families


@pytest.fixture
def compat_on() -> Any:
    """Turn compatibility on and return the families (created once per process, kept after)."""
    with override_settings(METRICS_COMPAT_DJANGO_PROMETHEUS=True):
        yield compat.families()


def test_off_leaves_the_request_path_unchanged() -> None:
    """With compatibility off, the middleware runs its own `_finish`, nothing else."""
    with override_settings(METRICS_COMPAT_DJANGO_PROMETHEUS=False):
        middleware = MetricsMiddleware(lambda request: HttpResponse(b"x"))
    assert middleware._compat is None
    assert "_finish" not in middleware.__dict__


@pytest.mark.django_db
def test_reference_families_are_exposed_with_their_types_and_labels(compat_on, sample) -> None:
    """Every django-prometheus family is on /metrics/ with its type and exactly its label names."""
    client = Client()
    client.get("/ok/")
    compat_on.migrations_applied.labels("default").set(1)
    compat_on.migrations_unapplied.labels("default").set(0)
    compat_on.cache_get.labels("locmem")
    compat_on.cache_hits.labels("locmem")
    compat_on.cache_misses.labels("locmem")
    compat_on.cache_fail.labels("locmem")
    compat_on.db_new_connections.labels("default", "sqlite")
    compat_on.db_new_connection_errors.labels("default", "sqlite")
    compat_on.db_execute.labels("default", "sqlite")
    compat_on.db_execute_many.labels("default", "sqlite")
    compat_on.db_errors.labels("default", "sqlite", "OperationalError")
    compat_on.by_templatename.labels("t.html")
    compat_on.exceptions_by_type.labels("RuntimeError")
    compat_on.exceptions_by_view.labels("boom")
    from metrics.instrument.models import prepare_label

    prepare_label("auth.Group")
    exposed = _exposed()
    for name, (kind, labels) in REFERENCE.items():
        assert name in exposed, name
        assert exposed[name][0] == kind, name
        assert exposed[name][1] == {labels}, name
    for name, labels in SHARED_WITH_OUR_LABELS.items():
        assert exposed[name][1] <= {labels}


def test_requests_feed_the_http_families(compat_on, sample_or_zero) -> None:
    """One request through the one middleware counts in every HTTP family, with their label values."""
    view = {"view": "ok", "method": "GET"}

    def read() -> dict[str, float]:
        return {
            "by_view": sample_or_zero(
                "django_http_requests_total_by_view_transport_method_total", transport="http", **view
            ),
            "by_status": sample_or_zero(
                "django_http_responses_total_by_status_view_method_total", status="200", **view
            ),
            "latency": sample_or_zero("django_http_requests_latency_seconds_by_view_method_count", **view),
            "method": sample_or_zero("django_http_requests_total_by_method_total", method="GET"),
            "transport": sample_or_zero("django_http_requests_total_by_transport_total", transport="http"),
            "status": sample_or_zero("django_http_responses_total_by_status_total", status="200"),
            "charset": sample_or_zero("django_http_responses_total_by_charset_total", charset="utf-8"),
            "before": sample_or_zero("django_http_requests_before_middlewares_total"),
            "after": sample_or_zero("django_http_responses_before_middlewares_total"),
            "including": sample_or_zero("django_http_requests_latency_including_middlewares_seconds_count"),
            "body": sample_or_zero("django_http_responses_body_total_bytes_sum"),
            "request_body": sample_or_zero("django_http_requests_body_total_bytes_count"),
        }

    before = read()
    assert Client().get("/ok/").status_code == 200
    after = read()
    increments = {key: after[key] - before[key] for key in before}
    assert increments == {**dict.fromkeys(before, 1), "body": 5}


def test_compat_label_values_follow_django_prometheus(compat_on, sample, sample_or_zero) -> None:
    """Unnamed patterns: the view's dotted path; other methods: `<invalid method>`; 404s: `<unnamed view>`."""
    unnamed = {"view": "tests.urls.unnamed", "method": "GET", "status": "200"}
    missing = {"view": "<unnamed view>", "method": "<invalid method>", "status": "404"}
    b_unnamed = sample_or_zero("django_http_responses_total_by_status_view_method_total", **unnamed)
    b_missing = sample_or_zero("django_http_responses_total_by_status_view_method_total", **missing)
    b_https = sample_or_zero("django_http_requests_total_by_transport_total", transport="https")
    client = Client()
    client.get("/unnamed/a/")
    client.generic("BREW", "/no-such-page/")
    client.get("/ok/", secure=True)
    assert sample("django_http_responses_total_by_status_view_method_total", **unnamed) == b_unnamed + 1
    assert sample("django_http_responses_total_by_status_view_method_total", **missing) == b_missing + 1
    assert sample("django_http_requests_total_by_transport_total", transport="https") == b_https + 1


def test_ajax_streaming_body_and_templates(compat_on, sample, sample_or_zero) -> None:
    """XHR requests, streamed responses, request bodies and template names count as in django-prometheus."""
    ajax = sample_or_zero("django_http_ajax_requests_total")
    streaming = sample_or_zero("django_http_responses_streaming_total")
    body = sample_or_zero("django_http_requests_body_total_bytes_sum")
    Client().post("/echo/", b"12345678", content_type="text/plain", HTTP_X_REQUESTED_WITH="XMLHttpRequest")
    Client().get("/stream/")
    assert sample("django_http_ajax_requests_total") == ajax + 1
    assert sample("django_http_responses_streaming_total") == streaming + 1
    assert sample("django_http_requests_body_total_bytes_sum") == body + 8

    request = RequestFactory().get("/ok/")
    request.resolver_match = resolve("/ok/")
    template = sample_or_zero("django_http_responses_total_by_templatename_total", templatename="compat.html")

    def view(request: Any) -> TemplateResponse:
        response = TemplateResponse(request, "compat.html")
        response.content = b"rendered"  # No template needed: the name is what is counted.
        return response

    with override_settings(METRICS_COMPAT_DJANGO_PROMETHEUS=True):
        MetricsMiddleware(view)(request)
    assert (
        sample("django_http_responses_total_by_templatename_total", templatename="compat.html")
        == template + 1
    )


def test_view_exception_counts_natively_and_in_compat(compat_on, sample, sample_or_zero) -> None:
    """A view's exception counts in django_http_exceptions_total{view,type} and both compat families, once."""
    native = sample_or_zero("django_http_exceptions_total", view="boom", type="RuntimeError")
    by_type = sample_or_zero("django_http_exceptions_total_by_type_total", type="RuntimeError")
    by_view = sample_or_zero("django_http_exceptions_total_by_view_total", view="boom")
    client = Client(raise_request_exception=False)
    assert client.get("/boom/").status_code == 500
    assert sample("django_http_exceptions_total", view="boom", type="RuntimeError") == native + 1
    assert sample("django_http_exceptions_total_by_type_total", type="RuntimeError") == by_type + 1
    assert sample("django_http_exceptions_total_by_view_total", view="boom") == by_view + 1


def test_native_exception_counter_without_compat(sample, sample_or_zero) -> None:
    """django_http_exceptions_total is native: counted with compatibility off too."""
    before = sample_or_zero("django_http_exceptions_total", view="boom", type="RuntimeError")
    with override_settings(METRICS_COMPAT_DJANGO_PROMETHEUS=False):
        assert Client(raise_request_exception=False).get("/boom/").status_code == 500
    assert sample("django_http_exceptions_total", view="boom", type="RuntimeError") == before + 1


def test_propagated_exception_is_counted_once(sample, sample_or_zero) -> None:
    """With DEBUG_PROPAGATE_EXCEPTIONS it also reaches the middleware's except path: still one count."""
    before = sample_or_zero("django_http_exceptions_total", view="boom", type="RuntimeError")
    with override_settings(DEBUG_PROPAGATE_EXCEPTIONS=True), pytest.raises(RuntimeError):
        Client().get("/boom/")
    assert sample("django_http_exceptions_total", view="boom", type="RuntimeError") == before + 1


def test_exception_type_is_bounded(sample, sample_or_zero) -> None:
    """Exception class names are bounded like other user-controlled labels: past the limit, `other`."""
    from metrics.collectors import reset_label_bounds

    reset_label_bounds()
    request = RequestFactory().get("/boom/")
    request.resolver_match = resolve("/boom/")
    middleware = MetricsMiddleware(lambda r: HttpResponse())
    other = sample_or_zero("django_http_exceptions_total", view="boom", type="other")
    kept = [
        sample_or_zero("django_http_exceptions_total", view="boom", type=f"Generated{n}Error")
        for n in range(5)
    ]
    try:
        with override_settings(METRICS_MAX_LABEL_VALUES=2):
            for n in range(5):
                middleware.process_exception(request, type(f"Generated{n}Error", (Exception,), {})())
    finally:
        reset_label_bounds()
    # The first two names keep their series; the three after them count under `other` and get none.
    after = [sample("django_http_exceptions_total", view="boom", type=f"Generated{n}Error") for n in range(5)]
    assert after == [kept[0] + 1, kept[1] + 1, None, None, None]
    assert sample("django_http_exceptions_total", view="boom", type="other") == other + 3


def test_execute_wrapper_feeds_the_database_families(compat_on, sample) -> None:
    """execute() counts 1, executemany() one per parameter set in both families, a failure by class name."""
    labels = {"alias": "compat-test", "vendor": "sqlite"}
    observer = db_instrument._make_observer("compat-test", "sqlite", compat_on)

    def execute(sql: Any, params: Any, many: bool, context: Any) -> None:
        if sql.startswith("BAD"):
            raise ValueError("bad statement")

    observer(execute, "SELECT 1", None, False, {})
    observer(execute, "INSERT INTO t VALUES (%s)", [(1,), (2,), (3,)], True, {})
    with pytest.raises(ValueError):
        observer(execute, "BAD", None, False, {})
    assert sample("django_db_execute_total", **labels) == 5
    assert sample("django_db_execute_many_total", **labels) == 3
    assert sample("django_db_errors_total", type="ValueError", **labels) == 1
    # Our own families saw the same statements.
    assert sample("django_db_queries_total", database="compat-test", operation="insert") == 1
    assert sample("django_db_query_errors_total", database="compat-test", operation="other") == 1


def test_execute_wrapper_without_compat_is_the_plain_one() -> None:
    """Without the families, the wrapper is the native one (no second layer per query)."""
    observer = db_instrument._make_observer("compat-off", "sqlite", None)
    assert observer.__name__ == "observe_query"


@pytest.mark.django_db
def test_new_connections_are_counted_by_alias_and_vendor(compat_on, sample, sample_or_zero) -> None:
    """Opening a connection counts in django_db_new_connections_total{alias,vendor}."""
    from django.db import connections

    wrapper = connections.create_connection("default")
    labels = {"alias": "default", "vendor": wrapper.vendor}
    before = sample_or_zero("django_db_new_connections_total", **labels)
    wrapper.connect()
    wrapper.close()
    assert sample("django_db_new_connections_total", **labels) == before + 1


def test_cache_get_feeds_the_cache_families(compat_on, sample, sample_or_zero) -> None:
    """get() hits, misses and failures count in django-prometheus's families, with backend=locmem."""
    cache = cache_instrument.instrument_cache(LocMemCache("compat-test", {}), "compat-test")
    labels = {"backend": "locmem"}
    before = {
        n: sample_or_zero(n, **labels)
        for n in ("django_cache_get_total", "django_cache_get_hits_total", "django_cache_get_misses_total")
    }
    cache.set("k", 0)
    assert cache.get("k") == 0  # A cached falsy value is a hit.
    assert cache.get("missing", "d") == "d"
    cache.has_key("k")  # Not a get(): not in django-prometheus's families.
    assert sample("django_cache_get_total", **labels) == before["django_cache_get_total"] + 2
    assert sample("django_cache_get_hits_total", **labels) == before["django_cache_get_hits_total"] + 1
    assert sample("django_cache_get_misses_total", **labels) == before["django_cache_get_misses_total"] + 1
    assert sample("django_cache_hits_total", cache="compat-test") == 2


def test_cache_get_failure_counts_as_fail(compat_on, sample, sample_or_zero) -> None:
    """A get() that raises counts in django_cache_get_fail_total and django_cache_get_total."""

    class Broken(LocMemCache):
        def get(self, key: Any, default: Any = None, version: Any = None) -> Any:
            raise ConnectionError("down")

    cache = cache_instrument.instrument_cache(Broken("compat-broken", {}), "compat-broken")
    before = sample_or_zero("django_cache_get_fail_total", backend="locmem")
    with pytest.raises(ConnectionError):
        cache.get("k")
    assert sample("django_cache_get_fail_total", backend="locmem") == before + 1


@pytest.mark.parametrize(
    ("backend", "label"),
    [
        ("django.core.cache.backends.locmem.LocMemCache", "locmem"),
        ("django.core.cache.backends.filebased.FileBasedCache", "filebased"),
        ("django.core.cache.backends.redis.RedisCache", "native_redis"),
        ("django.core.cache.backends.memcached.PyMemcacheCache", "memcached"),
        ("django.core.cache.backends.db.DatabaseCache", "databasecache"),
    ],
)
def test_cache_backend_labels(backend: str, label: str) -> None:
    """Backends are named as django-prometheus's backends name themselves."""
    from django.utils.module_loading import import_string

    assert compat.cache_backend_label(import_string(backend)) == label


@pytest.mark.django_db
def test_migration_gauges_in_both_names(compat_on, sample) -> None:
    """At scrape, every database's applied and unapplied counts are set, in both families."""
    from metrics.health import forget_migrations, migrations_at_scrape

    forget_migrations()
    migrations_at_scrape()
    applied = sample("django_migrations_applied", database="default")
    assert applied is not None and applied > 0
    assert sample("django_migrations_unapplied", database="default") == 0
    assert sample("django_migrations_applied_total", connection="default") == applied
    assert sample("django_migrations_unapplied_total", connection="default") == 0


def test_every_database_but_dummy_ones_has_migration_gauges(monkeypatch) -> None:
    """Every alias is counted; aliases on the dummy backend are skipped (nothing to read)."""
    from metrics import health

    databases = {
        "default": {"ENGINE": "django.db.backends.sqlite3", "NAME": ":memory:"},
        "replica": {"ENGINE": "django.db.backends.postgresql", "NAME": "x"},
        "nothing": {"ENGINE": "django.db.backends.dummy"},
    }
    monkeypatch.setattr(health, "django_setting", {"DATABASES": databases}.get)
    assert health.migration_aliases() == ["default", "replica"]


def test_compat_families_count_again_after_clear(compat_on) -> None:
    """After `clear()` on compatibility families, the request recorder's bundles count in fresh series."""
    client = Client()
    assert client.get("/ok/").status_code == 200
    families = compat.families()
    families.by_method.clear()
    families.by_status_view_method.clear()
    families.latency_by_view_method.clear()
    for _ in range(3):
        assert client.get("/ok/").status_code == 200
    view = {"view": "ok", "method": "GET"}
    assert REGISTRY.get_sample_value("django_http_requests_total_by_method_total", {"method": "GET"}) == 3
    assert (
        REGISTRY.get_sample_value(
            "django_http_responses_total_by_status_view_method_total", {"status": "200", **view}
        )
        == 3
    )
    assert REGISTRY.get_sample_value("django_http_requests_latency_seconds_by_view_method_count", view) == 3
