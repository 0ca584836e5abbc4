"""The catalogue: every metric family of the spec with its type and labels, and the label bounds."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest
from django.test import override_settings
from prometheus_client.parser import text_string_to_metric_families

from metrics import generate_latest
from metrics.collectors import OTHER, bounded_label, reset_label_bounds

# name -> (type, label names), as the spec lists them (plus this module's additions).
CATALOGUE = {
    "django_http_requests": ("counter", {"method", "view", "status"}),
    "django_http_request_duration_seconds": ("histogram", {"method", "view"}),
    "django_http_requests_in_progress": ("gauge", {"method"}),
    "django_http_request_size_bytes": ("histogram", {"method", "view"}),
    "django_http_response_size_bytes": ("histogram", {"method", "view"}),
    "django_db_connections_total": ("gauge", {"database"}),
    "django_db_queries": ("counter", {"database", "operation"}),
    "django_db_query_duration_seconds": ("histogram", {"database", "operation"}),
    "django_db_query_errors": ("counter", {"database", "operation"}),
    "django_db_connection_errors": ("counter", {"database"}),
    "django_cache_hits": ("counter", {"cache"}),
    "django_cache_misses": ("counter", {"cache"}),
    "django_cache_sets": ("counter", {"cache"}),
    "django_cache_deletes": ("counter", {"cache"}),
    "django_cache_errors": ("counter", {"cache", "operation"}),
    "django_process_memory_bytes": ("gauge", set()),
    "django_process_cpu_percent": ("gauge", set()),
    "django_process_threads_total": ("gauge", set()),
    "django_process_open_files_total": ("gauge", set()),
    "django_python_gc_collections": ("counter", {"generation"}),
    "django_user_registrations": ("counter", set()),
    "django_user_logins": ("counter", {"method"}),
    "django_user_login_failures": ("counter", set()),
    "django_active_users_total": ("gauge", set()),
    "django_custom_metric": ("counter", {"type", "action"}),
    "django_custom_metric_current": ("gauge", {"type"}),
    "celery_tasks": ("counter", {"task", "status"}),
    "celery_task_duration_seconds": ("histogram", {"task"}),
    "celery_tasks_in_progress": ("gauge", {"task"}),
    "celery_task_queue_wait_seconds": ("histogram", {"task"}),
    "celery_tasks_published": ("counter", {"task", "queue"}),
    "celery_worker_up": ("gauge", {"worker"}),
    "celery_worker_last_heartbeat_timestamp_seconds": ("gauge", {"worker"}),
    "celery_worker_pool_processes": ("gauge", {"worker"}),
    "celery_worker_consuming": ("gauge", {"worker", "queue"}),
}


@pytest.fixture(autouse=True)
def _fresh_label_bounds() -> Iterator[None]:
    reset_label_bounds()
    yield
    reset_label_bounds()


def test_every_family_of_the_spec_is_exposed_with_its_type() -> None:
    """Each spec metric is in the exposition under its spec name, with the expected type."""
    import metrics.collectors as c

    # Families with labels appear once they have a child; touch one of each.
    c.http_requests_total.labels("GET", "v", "200")
    c.http_request_duration_seconds.labels("GET", "v")
    c.http_requests_in_progress.labels("GET")
    c.http_request_size_bytes.labels("GET", "v")
    c.http_response_size_bytes.labels("GET", "v")
    c.db_connections_total.labels("default")
    c.db_queries_total.labels("default", "select")
    c.db_query_duration_seconds.labels("default", "select")
    c.db_query_errors_total.labels("default", "select")
    c.db_connection_errors_total.labels("default")
    for counter in (c.cache_hits_total, c.cache_misses_total, c.cache_sets_total, c.cache_deletes_total):
        counter.labels("default")
    c.cache_errors_total.labels("default", "get")
    c.python_gc_collections_total.labels("0")
    c.user_logins_total.labels("model")
    c.custom_metric_counter.labels("order", "created")
    c.custom_metric_gauge.labels("inventory")
    c.celery_tasks_total.labels("t", "success")
    c.celery_task_duration_seconds.labels("t")
    c.celery_tasks_in_progress.labels("t")
    c.celery_task_queue_wait_seconds.labels("t")
    c.celery_tasks_published_total.labels("t", "q")
    for gauge in (
        c.celery_worker_up,
        c.celery_worker_last_heartbeat_timestamp_seconds,
        c.celery_worker_pool_processes,
    ):
        gauge.labels("w@host")
    c.celery_worker_consuming.labels("w@host", "q")
    families = {f.name: f for f in text_string_to_metric_families(generate_latest().decode())}
    for name, (kind, labels) in CATALOGUE.items():
        assert name in families, name
        family = families[name]
        assert family.type == kind, name
        sample_labels = {k for s in family.samples for k in s.labels if k not in ("le", "quantile")}
        assert sample_labels == labels, name


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("order", "order"),
        ("checkout.v2:eu-west_1", "checkout.v2:eu-west_1"),
        ("x" * 64, "x" * 64),
        ("x" * 65, OTHER),
        ("", OTHER),
        ("two words", OTHER),
        ("café", OTHER),
        ("a/b", OTHER),
        ('quote"', OTHER),
        (17, "17"),
        (OTHER, OTHER),
    ],
)
def test_label_value_rule(value: object, expected: str) -> None:
    """A label value is kept when it is 1-64 characters of A-Z a-z 0-9 _ . : -, else folded."""
    assert bounded_label("test_metric", "label", value) == expected


@override_settings(METRICS_MAX_LABEL_VALUES=50)
def test_the_limit_holds_under_threads() -> None:
    """Eight threads offering 100 distinct values each keep exactly 50 of them, the rest fold."""
    kept: list[str] = []
    lock = threading.Lock()

    def offer(base: int) -> None:
        for i in range(100):
            value = bounded_label("threaded", "label", f"v{base}-{i}")
            if value != OTHER:
                with lock:
                    kept.append(value)

    threads = [threading.Thread(target=offer, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(kept) == len(set(kept)) == 50


def test_limits_are_per_metric_and_label() -> None:
    """Values used up on one metric's label do not count against another's."""
    with override_settings(METRICS_MAX_LABEL_VALUES=2):
        assert bounded_label("m1", "a", "x") == "x"
        assert bounded_label("m1", "a", "y") == "y"
        assert bounded_label("m1", "a", "z") == OTHER
        assert bounded_label("m1", "b", "z") == "z"
        assert bounded_label("m2", "a", "z") == "z"
        assert bounded_label("m1", "a", "x") == "x"  # seen before: kept


@pytest.mark.parametrize("setting", ["0", "-3", "many", None])
def test_a_bad_limit_reads_as_the_default(setting: str | None) -> None:
    """A bad METRICS_MAX_LABEL_VALUES means the default of 100 distinct values."""
    with override_settings(METRICS_MAX_LABEL_VALUES=setting):
        kept = [bounded_label("bad_limit", "l", f"v{i}") for i in range(150)]
    assert sum(1 for v in kept if v != OTHER) == 100


@pytest.mark.parametrize("value", ["1", None])
def test_native_histograms_setting_gives_the_latency_histograms_native_buckets(value: str | None) -> None:
    """METRICS_NATIVE_HISTOGRAMS adds native buckets to the request, query and task latencies only."""
    import os
    import subprocess
    import sys

    from tests.core.test_protobuf import decode

    code = (
        "import sys, metrics.collectors as c, metrics.core as core; "
        "c.http_request_duration_seconds.labels('GET', 'v').observe(0.2); "
        "c.db_query_duration_seconds.labels('default', 'select').observe(0.001); "
        "c.celery_task_duration_seconds.labels('t').observe(3.0); "
        "c.http_request_size_bytes.labels('GET', 'v').observe(100); "
        "sys.stdout.buffer.write(core.generate_latest_protobuf(core.REGISTRY))"
    )
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("DJANGO_SETTINGS_MODULE", "METRICS_NATIVE_HISTOGRAMS")
    }
    if value is not None:
        env["METRICS_NATIVE_HISTOGRAMS"] = value
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, check=True)
    families = decode(out.stdout)
    latencies = [
        "django_http_request_duration_seconds",
        "django_db_query_duration_seconds",
        "celery_task_duration_seconds",
    ]
    for name in latencies:
        hist = families[name].metric[0].histogram
        assert hist.HasField("schema") == (value is not None), name
        if value is not None:
            assert (hist.schema, hist.sample_count) == (3, 1)
            assert sum(hist.positive_delta) == 1
    assert not families["django_http_request_size_bytes"].metric[0].histogram.HasField("schema")
