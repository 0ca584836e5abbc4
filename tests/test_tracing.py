"""Exemplars from traces (METRICS_EXEMPLARS): trace ids on the request counter and latency buckets."""

from __future__ import annotations

import pytest
from django.test import Client, override_settings
from prometheus_client.openmetrics.parser import text_string_to_metric_families as parse_openmetrics

from metrics.core import exposition
from metrics.tracing import trace_id_from_traceparent

TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
HEADER = f"00-{TRACE}-00f067aa0ba902b7-01"


@pytest.mark.parametrize(
    ("header", "trace_id"),
    [
        (HEADER, TRACE),
        (f" {HEADER} ", TRACE),
        (f"00-{'0' * 32}-00f067aa0ba902b7-01", None),
        (f"00-{TRACE}-{'0' * 16}-01", None),
        (f"ff-{TRACE}-00f067aa0ba902b7-01", None),
        (HEADER.upper(), None),
        ("00-abc-def-01", None),
        ("", None),
    ],
)
def test_traceparent(header: str, trace_id: str | None) -> None:
    """Only a valid W3C traceparent (lower-case hex, non-zero ids, version not ff) gives a trace id."""
    assert trace_id_from_traceparent(header) == trace_id


def exemplars_of(view: str) -> dict[str, set[str]]:
    text = exposition(openmetrics=True).decode()
    found: dict[str, set[str]] = {}
    for fam in parse_openmetrics(text):
        for s in fam.samples:
            if s.exemplar is not None and s.labels.get("view") == view:
                found.setdefault(s.name, set()).add(s.exemplar.labels["trace_id"])
    return found


@override_settings(METRICS_EXEMPLARS=True)
def test_request_with_traceparent_leaves_its_trace_id(env) -> None:
    """The latency bucket and the request counter carry the request's trace id."""
    Client().get("/ok/", HTTP_TRACEPARENT=HEADER)
    found = exemplars_of("ok")
    assert found.get("django_http_request_duration_seconds_bucket") == {TRACE}
    assert found.get("django_http_requests_total") == {TRACE}


@override_settings(METRICS_EXEMPLARS=True)
def test_no_trace_no_exemplar(env) -> None:
    """Without a (valid) trace the request is counted, with no exemplar."""
    client = Client()
    assert client.get("/stream/").status_code == 200
    assert client.get("/stream/", HTTP_TRACEPARENT="00-garbage-01").status_code == 200
    assert exemplars_of("stream") == {}


def test_off_by_default(env) -> None:
    """METRICS_EXEMPLARS is off unless set: a traceparent leaves nothing."""
    assert Client().get("/shop/items/1/", HTTP_TRACEPARENT=HEADER).status_code == 200
    assert exemplars_of("shop:item") == {}
