"""UTF-8 metric and label names, and the escaping schemes, compared with prometheus_client's own output."""

from __future__ import annotations

from collections.abc import Iterator

import prometheus_client
import prometheus_client.openmetrics.exposition as pc_openmetrics
import pytest
from django.test import Client, override_settings
from prometheus_client import validation

from metrics import core
from metrics.core import CollectorRegistry, Counter, Gauge, Histogram
from metrics.negotiation import ALLOWUTF8, DOTS, UNDERSCORES, VALUES

NAMES = [
    "plain_name",
    "http.server.duration",
    "ünïcödé",
    "with:colon",
    "1digit_first",
    "a_b.c",
    'quote"back\\x',
]
LABELS = ["plain", "http.method", "ä", "x_y.z", "9lives"]
SCHEMES = [ALLOWUTF8, UNDERSCORES, DOTS, VALUES]


@pytest.fixture(autouse=True)
def _no_created() -> Iterator[None]:
    """Leave out `_created` samples in both libraries, so outputs compare byte for byte."""
    core.disable_created_metrics()
    prometheus_client.disable_created_metrics()
    try:
        yield
    finally:
        core.enable_created_metrics()
        prometheus_client.enable_created_metrics()


def _both(name: str, label: str) -> tuple[CollectorRegistry, prometheus_client.CollectorRegistry]:
    ours, theirs = CollectorRegistry(), prometheus_client.CollectorRegistry()
    for registry, gauge, counter, histogram in (
        (ours, Gauge, Counter, Histogram),
        (theirs, prometheus_client.Gauge, prometheus_client.Counter, prometheus_client.Histogram),
    ):
        gauge(name, "Help.", [label], registry=registry).labels("v\n").set(1.5)
        counter(name + "_c", "Help.", registry=registry).inc()
        histogram(name + "_h", "Help.", [label], buckets=[1.0], registry=registry).labels("w").observe(0.5)
    return ours, theirs


@pytest.mark.parametrize("scheme", SCHEMES)
@pytest.mark.parametrize(("name", "label"), list(zip(NAMES, LABELS * 2, strict=False)))
def test_text_matches_prometheus_client(name: str, label: str, scheme: str) -> None:
    """Text exposition under every scheme is byte for byte prometheus_client's."""
    ours, theirs = _both(name, label)
    assert core.generate_latest(ours, escaping=scheme) == prometheus_client.generate_latest(theirs, scheme)


@pytest.mark.parametrize("scheme", [ALLOWUTF8, UNDERSCORES, DOTS])
@pytest.mark.parametrize(
    ("name", "label"), [(n, lbl) for n, lbl in zip(NAMES, LABELS * 2, strict=False) if ":" not in n]
)
def test_openmetrics_matches_prometheus_client(name: str, label: str, scheme: str) -> None:
    """OpenMetrics under the schemes where prometheus_client escapes consistently is byte for byte its output.

    (prometheus_client escapes OpenMetrics sample names, unlike their `# HELP` lines, without
    keeping `:` and with `values` even when already classic; ours follows Prometheus's model.)
    """
    ours, theirs = _both(name, label)
    assert core.generate_latest_openmetrics(ours, escaping=scheme) == pc_openmetrics.generate_latest(
        theirs, scheme
    )


def test_quoted_names_in_text_and_openmetrics() -> None:
    """`allow-utf-8` puts a UTF-8 name inside the braces, quoted; `underscores` writes it classic."""
    reg = CollectorRegistry()
    Counter("http.server.requests", "Requests.", ["http.method"], registry=reg).labels("GET").inc(4)
    text = core.generate_latest(reg, escaping=ALLOWUTF8).decode()
    assert '{"http.server.requests_total","http.method"="GET"} 4.0\n' in text
    assert '# TYPE "http.server.requests_total" counter\n' in text
    om = core.generate_latest_openmetrics(reg, escaping=ALLOWUTF8).decode()
    assert '{"http.server.requests_total","http.method"="GET"} 4.0\n' in om
    plain = core.generate_latest(reg).decode()
    assert 'http_server_requests_total{http_method="GET"} 4.0\n' in plain


def test_legacy_validation_follows_prometheus_client() -> None:
    """prometheus_client's legacy switch refuses UTF-8 names here too; off, they are accepted."""
    reg = CollectorRegistry()
    validation.enable_legacy_validation()
    try:
        with pytest.raises(ValueError, match="Invalid metric name"):
            Counter("a.b", "d", registry=reg)
        with pytest.raises(ValueError, match="Invalid label"):
            Counter("ok", "d", ["a-b"], registry=reg)
    finally:
        validation.disable_legacy_validation()
    Counter("a.b", "d", ["a-b"], registry=reg)
    with pytest.raises(ValueError, match="Reserved label"):
        Counter("c", "d", ["__x"], registry=reg)


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("accept", "line", "content_type"),
    [
        (
            "text/plain;version=1.0.0;escaping=allow-utf-8",
            '{"acc.utf8.jobs_total"} 1.0',
            "text/plain; version=1.0.0; charset=utf-8; escaping=allow-utf-8",
        ),
        (
            "application/openmetrics-text;version=1.0.0;escaping=dots",
            "acc_dot_utf8_dot_jobs__total 1.0",
            "application/openmetrics-text; version=1.0.0; charset=utf-8; escaping=dots",
        ),
        ("text/plain;version=0.0.4", "acc_utf8_jobs_total 1.0", "text/plain; version=0.0.4; charset=utf-8"),
        ("", "acc_utf8_jobs_total 1.0", "text/plain; version=0.0.4; charset=utf-8"),
    ],
)
def test_metrics_view_escapes_as_asked(accept: str, line: str, content_type: str) -> None:
    """/metrics/ writes a UTF-8 name as the Accept header's escaping asks, and says so."""
    jobs = Counter("acc.utf8.jobs", "Jobs.")
    try:
        jobs.inc()
        with override_settings(METRICS_ALLOWED_IPS="127.0.0.1"):
            response = Client(REMOTE_ADDR="127.0.0.1").get("/metrics/", HTTP_ACCEPT=accept)
    finally:
        core.REGISTRY.unregister(jobs)
    assert response["Content-Type"] == content_type
    assert f"\n{line}\n" in response.content.decode()
