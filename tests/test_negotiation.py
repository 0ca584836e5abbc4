"""Content negotiation of the metrics endpoints: format by q-value and Prometheus's order, escaping, gzip."""

from __future__ import annotations

import urllib.request

import pytest

from metrics import _core
from metrics.negotiation import (
    CONTENT_TYPE_PLAIN_0_0_4,
    CONTENT_TYPE_PLAIN_1_0_0,
    OPENMETRICS_CONTENT_TYPE,
    PROTOBUF_CONTENT_TYPE,
    Exposition,
    accepts_gzip,
    negotiate,
    wants_openmetrics,
)

PROTO = "application/vnd.google.protobuf;proto=io.prometheus.client.MetricFamily;encoding=delimited"
# What Prometheus 3 sends with its protobuf-first scrape_protocols and UTF-8 names allowed.
PROMETHEUS_3 = (
    f"{PROTO};q=0.6,application/openmetrics-text;version=1.0.0;escaping=allow-utf-8;q=0.5,"
    "application/openmetrics-text;version=0.0.1;q=0.4,text/plain;version=1.0.0;escaping=allow-utf-8;q=0.3,"
    "text/plain;version=0.0.4;q=0.2,*/*;q=0.1"
)
# Its default (no protobuf), and Prometheus 2's.
PROMETHEUS_3_TEXT = (
    "application/openmetrics-text;version=1.0.0;escaping=allow-utf-8;q=0.6,"
    "application/openmetrics-text;version=0.0.1;q=0.5,text/plain;version=1.0.0;escaping=allow-utf-8;q=0.4,"
    "text/plain;version=0.0.4;q=0.3,*/*;q=0.2"
)
PROMETHEUS_2 = (
    "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,"
    "text/plain;version=0.0.4;q=0.5,*/*;q=0.1"
)
PROMETHEUS_2_PROTO = (
    f"{PROTO};q=0.6,application/openmetrics-text;version=1.0.0;q=0.5,"
    "application/openmetrics-text;version=0.0.1;q=0.4,text/plain;version=0.0.4;q=0.3,*/*;q=0.2"
)


def test_content_types_match_the_core() -> None:
    """The negotiation's content types are the ones the core's encoders declare."""
    assert OPENMETRICS_CONTENT_TYPE == _core.OPENMETRICS_CONTENT_TYPE
    assert PROTOBUF_CONTENT_TYPE == _core.PROTOBUF_CONTENT_TYPE
    assert CONTENT_TYPE_PLAIN_0_0_4 == _core.TEXT_CONTENT_TYPE


@pytest.mark.parametrize(
    ("accept", "expected"),
    [
        ("", Exposition("text", "underscores", CONTENT_TYPE_PLAIN_0_0_4)),
        ("*/*", Exposition("text", "underscores", CONTENT_TYPE_PLAIN_0_0_4)),
        ("text/html", Exposition("text", "underscores", CONTENT_TYPE_PLAIN_0_0_4)),
        (PROMETHEUS_3, Exposition("protobuf", "underscores", PROTOBUF_CONTENT_TYPE)),
        (PROMETHEUS_2_PROTO, Exposition("protobuf", "underscores", PROTOBUF_CONTENT_TYPE)),
        (
            f"{PROTO};escaping=allow-utf-8",
            Exposition("protobuf", "allow-utf-8", PROTOBUF_CONTENT_TYPE + "; escaping=allow-utf-8"),
        ),
        (
            PROMETHEUS_3_TEXT,
            Exposition("openmetrics", "allow-utf-8", OPENMETRICS_CONTENT_TYPE + "; escaping=allow-utf-8"),
        ),
        (
            PROMETHEUS_2,
            Exposition("openmetrics", "underscores", OPENMETRICS_CONTENT_TYPE + "; escaping=underscores"),
        ),
        ("application/openmetrics-text", Exposition("openmetrics", "underscores", OPENMETRICS_CONTENT_TYPE)),
        (
            "application/openmetrics-text; charset=utf-8; escaping=allow-utf-8",
            Exposition("openmetrics", "underscores", OPENMETRICS_CONTENT_TYPE),
        ),
        (
            "application/openmetrics-text; version=1.0.0; escaping=dots",
            Exposition("openmetrics", "dots", OPENMETRICS_CONTENT_TYPE + "; escaping=dots"),
        ),
        (
            "text/plain; version=1.0.0; escaping=values",
            Exposition("text", "values", CONTENT_TYPE_PLAIN_1_0_0 + "; escaping=values"),
        ),
        (
            "text/plain; version=1.0.0; escaping=bogus",
            Exposition("text", "underscores", CONTENT_TYPE_PLAIN_1_0_0 + "; escaping=underscores"),
        ),
        ("text/plain; escaping=allow-utf-8", Exposition("text", "underscores", CONTENT_TYPE_PLAIN_0_0_4)),
        # q-values decide before the order of preference.
        (
            "text/plain;q=1, application/openmetrics-text;q=0.1",
            Exposition("text", "underscores", CONTENT_TYPE_PLAIN_0_0_4),
        ),
        (
            f"{PROTO};q=0.2,text/plain;version=0.0.4;q=0.9",
            Exposition("text", "underscores", CONTENT_TYPE_PLAIN_0_0_4),
        ),
        (f"{PROTO};q=0, */*;q=0.1", Exposition("text", "underscores", CONTENT_TYPE_PLAIN_0_0_4)),
        # A protobuf we do not write (another message, or a text encoding) is not chosen.
        (
            "application/vnd.google.protobuf;proto=io.prometheus.client.MetricFamily;encoding=text",
            Exposition("text", "underscores", CONTENT_TYPE_PLAIN_0_0_4),
        ),
        (
            "application/vnd.google.protobuf;proto=other.Message",
            Exposition("text", "underscores", CONTENT_TYPE_PLAIN_0_0_4),
        ),
        # Equal q-values: Prometheus's order (protobuf, OpenMetrics, text).
        (
            f"text/plain;version=0.0.4, application/openmetrics-text, {PROTO}",
            Exposition("protobuf", "underscores", PROTOBUF_CONTENT_TYPE),
        ),
        (
            "APPLICATION/OPENMETRICS-TEXT;q=0.5",
            Exposition("openmetrics", "underscores", OPENMETRICS_CONTENT_TYPE),
        ),
        ("application/openmetrics-text;q=0", Exposition("text", "underscores", CONTENT_TYPE_PLAIN_0_0_4)),
        ("application/openmetrics-text;q=bogus", Exposition("text", "underscores", CONTENT_TYPE_PLAIN_0_0_4)),
    ],
)
def test_negotiation(accept: str, expected: Exposition) -> None:
    """Each Accept header gets the format, escaping and Content-Type Prometheus expects."""
    assert negotiate(accept) == expected


def test_wants_openmetrics_follows_negotiation() -> None:
    """`wants_openmetrics` is True exactly when OpenMetrics is the answer."""
    assert wants_openmetrics(PROMETHEUS_2)
    assert not wants_openmetrics(PROMETHEUS_3)
    assert not wants_openmetrics("text/plain")


@pytest.mark.parametrize(
    ("header", "expected"),
    [("", False), ("gzip", True), ("br, gzip;q=0.8", True), ("gzip;q=0", False), ("deflate", False)],
)
def test_accept_encoding_parsing(header: str, expected: bool) -> None:
    """gzip is used when listed with q > 0."""
    assert accepts_gzip(header) is expected


def test_worker_port_negotiates_like_the_site() -> None:
    """The standalone metrics port (Celery worker, gunicorn master) serves protobuf and escaping too."""
    from metrics.worker_http import serve
    from tests.promstack import http_get

    server = serve("127.0.0.1", 0)
    try:
        url = f"http://127.0.0.1:{server.port}/metrics"
        request = urllib.request.Request(
            url, headers={"X-Metrics-Token": "test-token", "Accept": PROMETHEUS_3}
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            assert response.headers["Content-Type"] == PROTOBUF_CONTENT_TYPE
            body = response.read()
        # A length-delimited MetricFamily whose field 1 (the name) comes first.
        assert body[0] < 0x80 or body[1] < 0x80
        assert b"\x0a\x23django_metrics_store_problems_total" in body
        accept = {"X-Metrics-Token": "test-token", "Accept": "text/plain;version=1.0.0;escaping=allow-utf-8"}
        status, text = http_get(url, accept)
        assert status == 200 and b"# TYPE django_metrics_store_problems_total counter" in text
    finally:
        server.stop()
