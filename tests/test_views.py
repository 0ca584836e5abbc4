"""/metrics/: content negotiation, gzip, prometheus_client interop, METRICS_ENABLED."""

from __future__ import annotations

import gzip

import prometheus_client
import pytest
from django.test import Client, override_settings
from prometheus_client.openmetrics.parser import text_string_to_metric_families as parse_openmetrics
from prometheus_client.parser import text_string_to_metric_families

PROMETHEUS_ACCEPT = (
    "application/openmetrics-text;version=1.0.0;q=0.5,"
    "application/openmetrics-text;version=0.0.1;q=0.4,"
    "text/plain;version=0.0.4;q=0.3,*/*;q=0.2"
)


@pytest.fixture
def client() -> Client:
    """Return a client allowed by address (the test settings allow none: set it here)."""
    with override_settings(METRICS_ALLOWED_IPS="127.0.0.1"):
        yield Client(REMOTE_ADDR="127.0.0.1")


def test_default_is_prometheus_text(client, sample_or_zero) -> None:
    """Without an Accept header: text 0.0.4, parseable, with the request just served counted."""
    labels = {"method": "GET", "view": "ok", "status": "200"}
    before = sample_or_zero("django_http_requests_total", **labels)
    timed = sample_or_zero("django_http_request_duration_seconds_count", method="GET", view="ok")
    client.get("/ok/")
    response = client.get("/metrics/")
    assert response.status_code == 200
    assert response["Content-Type"] == "text/plain; version=0.0.4; charset=utf-8"
    served = {
        s.name: s.value
        for family in text_string_to_metric_families(response.content.decode())
        for s in family.samples
        if s.labels == labels
        or (s.name.startswith("django_http_request_duration") and s.labels == {"method": "GET", "view": "ok"})
    }
    assert served["django_http_requests_total"] == before + 1
    assert served["django_http_request_duration_seconds_count"] == timed + 1
    assert "Content-Encoding" not in response
    assert "Accept" in response["Vary"] and "Accept-Encoding" in response["Vary"]
    assert "no-cache" in response["Cache-Control"]


def test_openmetrics_when_asked(client, sample_or_zero) -> None:
    """Prometheus' own Accept header gets OpenMetrics 1.0, ending in # EOF, with the request counted."""
    labels = {"method": "GET", "view": "ok", "status": "200"}
    before = sample_or_zero("django_http_requests_total", **labels)
    client.get("/ok/")
    response = client.get("/metrics/", HTTP_ACCEPT=PROMETHEUS_ACCEPT)
    assert response["Content-Type"].startswith("application/openmetrics-text")
    text = response.content.decode()
    assert text.endswith("# EOF\n")
    counted = [
        s.value
        for f in parse_openmetrics(text)
        if f.name == "django_http_requests"
        for s in f.samples
        if s.name == "django_http_requests_total" and s.labels == labels
    ]
    assert counted == [before + 1]


def test_gzip_when_allowed(client) -> None:
    """Accept-Encoding: gzip gets a gzipped body that decompresses to the exposition."""
    response = client.get("/metrics/", HTTP_ACCEPT_ENCODING="gzip, deflate")
    assert response["Content-Encoding"] == "gzip"
    assert b"# TYPE django_http_requests_total counter" in gzip.decompress(response.content)
    plain = client.get("/metrics/", HTTP_ACCEPT_ENCODING="gzip;q=0, identity")
    assert "Content-Encoding" not in plain


def test_prometheus_client_registry_is_included(client) -> None:
    """Metrics a library registers in prometheus_client.REGISTRY appear on /metrics/."""
    counter = prometheus_client.Counter("test_views_third_party_total", "A third-party counter.")
    try:
        counter.inc(3)
        text = client.get("/metrics/").content.decode()
        assert "test_views_third_party_total 3.0" in text
    finally:
        prometheus_client.REGISTRY.unregister(counter)


def test_disabled_answers_404(client) -> None:
    """METRICS_ENABLED=False: /metrics/ does not exist."""
    with override_settings(METRICS_ENABLED=False):
        assert client.get("/metrics/").status_code == 404


def test_only_get_and_head(client) -> None:
    """GET and HEAD are served; POST is 405."""
    assert client.head("/metrics/").status_code == 200
    assert client.post("/metrics/").status_code == 405


ENDPOINTS = ["/metrics/", "/metrics/health/", "/metrics/readiness/", "/metrics/liveness/"]


@pytest.mark.django_db
@pytest.mark.parametrize("path", ENDPOINTS)
@pytest.mark.parametrize("method", ["post", "put", "patch", "delete", "options"])
def test_other_methods_are_405_not_a_csrf_page(path: str, method: str) -> None:
    """Unsafe methods and OPTIONS get 405 with `Allow: GET, HEAD`, even with CSRF checks enforced.

    The test client normally skips CSRF checks; enforcing them runs CsrfViewMiddleware as a real
    request meets it, with neither a cookie nor a token.
    """
    for caller in (Client(enforce_csrf_checks=True), Client(enforce_csrf_checks=True, REMOTE_ADDR="8.8.8.8")):
        form = "application/x-www-form-urlencoded"
        response = getattr(caller, method)(path, data=b"x=1", content_type=form)
        assert response.status_code == 405, (path, method, response.status_code)
        assert response["Allow"] == "GET, HEAD"
        assert b"CSRF" not in response.content


@pytest.mark.django_db
@override_settings(ALLOWED_HOSTS=["testserver"], METRICS_ALLOWED_IPS="127.0.0.1")
def test_probes_answer_a_pod_ip_host_without_details(env) -> None:
    """Liveness and readiness answer `Host: <pod IP>`; other paths keep ALLOWED_HOSTS; no details."""
    client = Client()
    pod = {"HTTP_HOST": "10.1.2.3:8000"}
    assert client.get("/metrics/liveness/", **pod).status_code == 200
    ready = client.get("/metrics/readiness/", **pod)
    assert ready.status_code == 200, ready.content
    assert all("error" not in c and "info" not in c for c in ready.json()["checks"].values())
    assert client.get("/metrics/", **pod).status_code == 400
    assert client.get("/metrics/health/", **pod).status_code == 400
    assert client.get("/metrics/liveness/").status_code == 200


@override_settings(ALLOWED_HOSTS=["testserver"])
def test_probes_answer_a_pod_ip_host_under_asgi() -> None:
    """The same under ASGI (the middleware's async path)."""
    import asyncio

    from django.test import AsyncClient

    async def get(path: str) -> int:
        response = await AsyncClient().get(path, headers={"host": "10.1.2.3:8000"})
        return int(response.status_code)

    assert asyncio.run(get("/metrics/liveness/")) == 200
    assert asyncio.run(get("/metrics/")) == 400


@override_settings(METRICS_ALLOWED_IPS="127.0.0.1")
def test_name_parameter_scrapes_a_subset(env) -> None:
    """`?name[]=...` (prometheus_client's parameter) serves only those samples, ours and foreign."""
    theirs = prometheus_client.Counter("subset_foreign", "F.")
    theirs.inc()
    try:
        client = Client()
        assert client.get("/ok/").status_code == 200
        response = client.get("/metrics/?name[]=django_http_requests_total&name[]=subset_foreign_total")
        assert response.status_code == 200
        names = {
            s.name for fam in text_string_to_metric_families(response.content.decode()) for s in fam.samples
        }
        assert names == {"django_http_requests_total", "subset_foreign_total"}, names
        assert client.get("/metrics/?name[]=no_such_metric").content == b""
    finally:
        prometheus_client.REGISTRY.unregister(theirs)
