"""A real Prometheus scrapes the example site (gunicorn, 2 workers, multiprocess) over protobuf.

Debian's Prometheus asks for the protobuf format first once native histograms are enabled
(`--enable-feature=native-histograms`), then reads what we send with its own parser. That the
scrape was protobuf shows in what Prometheus stores: OpenMetrics `_created` lines become series
of their own, protobuf's `created_timestamp` fields do not.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import requests

from tests.e2e.test_multiprocess_gunicorn import start_gunicorn, stop
from tests.e2e.test_prometheus import promql_blocks
from tests.promstack import ROOT, free_port, prom_query, start_prometheus, wait_for

pytestmark = pytest.mark.slow

REQUESTS = 24


def config(site: str, export: str | None) -> str:
    master = f"""
  - job_name: master
    metrics_path: /metrics
    static_configs:
      - targets: ["{export}"]
"""
    return f"""
global:
  scrape_interval: 1s
scrape_configs:
  - job_name: site
    metrics_path: /metrics/
    static_configs:
      - targets: ["{site}"]
{master if export else ""}"""


def scalar(prometheus, expr: str) -> float | None:
    """Return the single value of `expr`, or None while it has none."""
    result = prom_query(prometheus, expr)["data"]["result"]
    return float(result[0]["value"][1]) if len(result) == 1 else None


def test_prometheus_reads_our_protobuf(tmp_path: Path) -> None:
    """Counter, histogram and gauge values scraped over protobuf answer PromQL like the text does."""
    export_port = free_port()
    site, base, _ = start_gunicorn(tmp_path, workers=2, max_requests=0, METRICS_EXPORT_PORT=str(export_port))
    prometheus = None
    try:
        for _ in range(REQUESTS):
            assert requests.get(f"{base}/about/", timeout=10).status_code == 200
        # The same site in OpenMetrics writes `_created` lines (the control for the check below).
        om = requests.get(
            f"{base}/metrics/", headers={"Accept": "application/openmetrics-text;version=1.0.0"}, timeout=10
        )
        assert "\ndjango_http_requests_created{" in om.text
        prometheus = start_prometheus(
            config(base.removeprefix("http://"), f"127.0.0.1:{export_port}"),
            tmp_path / "prom",
            flags=("--enable-feature=native-histograms",),
        )
        about = 'django_http_requests_total{job="site",view="about/",method="GET",status="200"}'
        assert wait_for(lambda: scalar(prometheus, about), 60, "the counter in Prometheus") == REQUESTS
        count = 'django_http_request_duration_seconds_count{job="site",view="about/",method="GET"}'
        assert scalar(prometheus, count) == REQUESTS
        quantile = (
            "histogram_quantile(0.5, sum by (le) "
            '(django_http_request_duration_seconds_bucket{job="site",view="about/"}))'
        )
        median = scalar(prometheus, quantile)
        assert median is not None and 0 < median < 10
        # Protobuf: the creation times travelled as fields, not as `_created` series.
        assert prom_query(prometheus, "django_http_requests_created")["data"]["result"] == []
        # The master's export port is scraped over protobuf too, and is up with the same counter.
        assert wait_for(lambda: scalar(prometheus, 'up{job="master"}'), 30, "the export port scraped") == 1
        master = about.replace('job="site"', 'job="master"')
        assert wait_for(lambda: scalar(prometheus, master), 30, "the counter via the master") == REQUESTS
        targets = requests.get(f"{prometheus.url}/api/v1/targets", timeout=10).json()["data"]["activeTargets"]
        assert {t["labels"]["job"]: t["health"] for t in targets} == {"site": "up", "master": "up"}
        assert all(not t["lastError"] for t in targets)
    finally:
        if prometheus is not None:
            prometheus.stop()
        stop(site)


def test_prometheus_reads_native_histograms_merged_across_workers(tmp_path: Path) -> None:
    """With METRICS_NATIVE_HISTOGRAMS, Prometheus stores the request latency as a native histogram.

    Two workers recycled every few requests: the native buckets of live and dead processes are
    merged, so the histogram counts every request the counter counts.
    """
    site, base, _ = start_gunicorn(tmp_path, workers=2, max_requests=8, METRICS_NATIVE_HISTOGRAMS="1")
    prometheus = None
    try:
        for _ in range(REQUESTS):
            assert requests.get(f"{base}/about/", timeout=10).status_code == 200
        # Database queries too, for the query latency examples of docs/promql.md.
        assert requests.get(f"{base}/api/items/", timeout=10).status_code == 200
        prometheus = start_prometheus(
            config(base.removeprefix("http://"), None),
            tmp_path / "prom",
            flags=("--enable-feature=native-histograms",),
        )
        selector = '{job="site",view="about/",method="GET"}'
        counter = f"sum(django_http_requests_total{selector})"
        assert wait_for(lambda: scalar(prometheus, counter), 60, "the counter in Prometheus") == REQUESTS
        count = f"histogram_count(django_http_request_duration_seconds{selector})"
        assert wait_for(lambda: scalar(prometheus, count), 30, "the native histogram") == REQUESTS
        assert scalar(prometheus, count) == scalar(prometheus, counter)
        median = scalar(
            prometheus, f"histogram_quantile(0.5, django_http_request_duration_seconds{selector})"
        )
        assert median is not None and 0 < median < 10
        # Native, so no classic series were stored for it.
        assert prom_query(prometheus, "django_http_request_duration_seconds_bucket")["data"]["result"] == []
        # The native histogram examples of docs/promql.md answer (`rate` needs two scrapes).
        examples = [e for e in promql_blocks(ROOT / "docs" / "promql.md") if "duration_seconds[5m]" in e]
        assert len(examples) >= 5
        for expr in examples:
            answer = prom_query(prometheus, expr)
            if answer.get("status") != "success" and "histogram_fraction" in expr:
                # Newer than Debian's Prometheus 2.42; valid PromQL for the versions that have it.
                assert "unknown function" in str(answer.get("error")), answer
                continue
            assert answer.get("status") == "success", (expr, answer)
            assert wait_for(lambda e=expr: prom_query(prometheus, e)["data"]["result"], 30, expr)
    finally:
        if prometheus is not None:
            prometheus.stop()
        stop(site)
