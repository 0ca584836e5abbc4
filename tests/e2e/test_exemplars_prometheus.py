"""Exemplars reach a real Prometheus (exemplar storage on) from the example site under gunicorn."""

from __future__ import annotations

import json
import time
import urllib.parse
from pathlib import Path

import pytest
import requests

from tests.e2e.test_multiprocess_gunicorn import start_gunicorn, stop
from tests.promstack import http_get, start_prometheus, wait_for

pytestmark = pytest.mark.slow


def config(target: str) -> str:
    return f"""
global:
  scrape_interval: 1s
scrape_configs:
  - job_name: django_app
    metrics_path: /metrics/
    static_configs:
      - targets: ["{target}"]
"""


@pytest.mark.parametrize("workers", [1, 2], ids=["single-process", "multiprocess"])
def test_trace_ids_reach_prometheus_as_exemplars(tmp_path: Path, workers: int) -> None:
    """After requests carrying a traceparent, Prometheus' exemplar API returns their trace ids."""
    store = {} if workers > 1 else {"PROMETHEUS_MULTIPROC_DIR": ""}
    site, base, _ = start_gunicorn(tmp_path, workers=workers, max_requests=0, METRICS_EXEMPLARS="1", **store)
    prometheus = None
    try:
        prometheus = start_prometheus(
            config(base.removeprefix("http://")),
            tmp_path / "prom",
            flags=("--enable-feature=exemplar-storage",),
        )
        started = time.time() - 5
        sent = set()
        for i in range(12):
            trace_id = f"{i + 1:032x}"
            sent.add(trace_id)
            header = f"00-{trace_id}-00f067aa0ba902b7-01"
            assert (
                requests.get(f"{base}/about/", headers={"traceparent": header}, timeout=10).status_code == 200
            )

        def found() -> set[str] | None:
            query = urllib.parse.urlencode(
                {
                    "query": 'django_http_request_duration_seconds_bucket{view="about/"}',
                    "start": started,
                    "end": time.time() + 5,
                }
            )
            status, body = http_get(f"{prometheus.url}/api/v1/query_exemplars?{query}")
            if status != 200:
                return None
            ids = {
                exemplar["labels"]["trace_id"]
                for series in json.loads(body)["data"]
                for exemplar in series["exemplars"]
            }
            return ids or None

        ids = wait_for(found, 60, "exemplars in Prometheus")
        # One exemplar per bucket is kept, the newest: some of the trace ids sent, none other.
        assert ids <= sent, ids - sent
    finally:
        if prometheus is not None:
            prometheus.stop()
        stop(site)
