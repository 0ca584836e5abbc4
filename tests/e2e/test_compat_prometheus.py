"""End to end: with METRICS_COMPAT_DJANGO_PROMETHEUS and METRICS_MODELS=*, dashboards built on
django-prometheus's names get data.

The example site runs under gunicorn (two workers, multiprocess mode, deploy/gunicorn.conf.py) and
a real Prometheus scrapes it every second. Traffic: items added, changed and deleted through the
admin, a failing view, cached and database-backed pages. Then every query below, written the way
django-prometheus dashboards and alerts query its families, must return a non-zero series.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

from tests.e2e.test_multiprocess_gunicorn import EXAMPLE, start_gunicorn, stop
from tests.promstack import prom_query, start_prometheus, wait_for

pytestmark = pytest.mark.slow

# Dashboard and alert expressions on django-prometheus 2.5's names; each must return data > 0.
QUERIES = [
    # Requests
    "sum(rate(django_http_requests_before_middlewares_total[1m]))",
    "sum(rate(django_http_responses_before_middlewares_total[1m]))",
    "sum by (view) (rate(django_http_requests_total_by_view_transport_method_total[1m]))",
    "sum by (method) (rate(django_http_requests_total_by_method_total[1m]))",
    'sum by (transport) (rate(django_http_requests_total_by_transport_total{transport="http"}[1m]))',
    "sum by (status) (rate(django_http_responses_total_by_status_total[1m]))",
    "sum by (charset) (rate(django_http_responses_total_by_charset_total[1m]))",
    "sum by (templatename) (rate(django_http_responses_total_by_templatename_total[1m]))",
    "sum(rate(django_http_responses_streaming_total[1m]))",
    # Errors and exceptions (alert style: 5xx ratio per view)
    'sum by (view) (rate(django_http_responses_total_by_status_view_method_total{status=~"5.."}[1m]))'
    " / sum by (view) (rate(django_http_responses_total_by_status_view_method_total[1m]))",
    "sum by (type) (rate(django_http_exceptions_total_by_type_total[1m]))",
    'sum by (view) (rate(django_http_exceptions_total_by_view_total{view="shop:boom"}[1m]))',
    # Latency
    "histogram_quantile(0.95, sum by (le, view) "
    "(rate(django_http_requests_latency_seconds_by_view_method_bucket[1m])))",
    "histogram_quantile(0.5, sum by (le) "
    "(rate(django_http_requests_latency_including_middlewares_seconds_bucket[1m])))",
    "sum(rate(django_http_requests_body_total_bytes_count[1m]))",
    "histogram_quantile(0.9, sum by (le) (rate(django_http_responses_body_total_bytes_bucket[1m])))",
    # Database
    "sum by (alias, vendor) (rate(django_db_execute_total[1m]))",
    "sum by (alias, vendor) (increase(django_db_new_connections_total[2m]))",
    "histogram_quantile(0.99, sum by (le) (rate(django_db_query_duration_seconds_bucket[1m])))",
    # Cache
    "sum by (backend) (rate(django_cache_get_total[1m]))",
    "sum by (backend) (rate(django_cache_get_hits_total[1m]))",
    "sum by (backend) (rate(django_cache_get_misses_total[1m]))",
    "sum(rate(django_cache_get_hits_total[1m])) / sum(rate(django_cache_get_total[1m]))",
    # Models
    'sum by (model) (increase(django_model_inserts_total{model="shop.Item"}[2m]))',
    'sum by (model) (increase(django_model_updates_total{model="shop.Item"}[2m]))',
    'sum by (model) (increase(django_model_deletes_total{model="shop.Item"}[2m]))',
    # Migrations
    'max by (connection) (django_migrations_applied_total{connection="default"})',
    # Native families of the same events
    'sum(rate(django_http_exceptions_total{view="shop:boom",type="RuntimeError"}[1m]))',
    'max by (database) (django_migrations_applied{database="default"})',
]
# Must exist, and be 0: a fully migrated database.
ZERO_QUERIES = ['max by (connection) (django_migrations_unapplied_total{connection="default"})']

PASSWORD = "compat-e2e-password"


def _csrf(session: requests.Session, url: str) -> str:
    page = session.get(url, timeout=10)
    assert page.status_code == 200, (url, page.status_code)
    match = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page.text)
    assert match is not None, url
    return match.group(1)


def _admin_login(base: str) -> requests.Session:
    """Log in to the admin and open the item list (template responses); return the session."""
    session = requests.Session()
    token = _csrf(session, f"{base}/admin/login/")
    login = session.post(
        f"{base}/admin/login/?next=/admin/",
        data={"username": "admin", "password": PASSWORD, "csrfmiddlewaretoken": token},
        timeout=10,
    )
    assert login.url.endswith("/admin/"), login.url
    assert session.get(f"{base}/admin/shop/item/", timeout=10).status_code == 200
    return session


def _admin_traffic(base: str, session: requests.Session) -> None:
    """Add two items, change one, delete one, through the admin's forms."""
    ids = []
    for name in ("compat-one", "compat-two"):
        token = _csrf(session, f"{base}/admin/shop/item/add/")
        added = session.post(
            f"{base}/admin/shop/item/add/",
            data={"name": name, "price": "9.99", "csrfmiddlewaretoken": token},
            timeout=10,
        )
        assert added.status_code == 200 and "/admin/shop/item/" in added.url, added.url
        found = re.search(r"/admin/shop/item/(\d+)/change/", added.text)
        assert found is not None
        ids.append(max(int(n) for n in re.findall(r"/admin/shop/item/(\d+)/change/", added.text)))
    change_url = f"{base}/admin/shop/item/{ids[0]}/change/"
    token = _csrf(session, change_url)
    changed = session.post(
        change_url, data={"name": "compat-one-b", "price": "10.00", "csrfmiddlewaretoken": token}, timeout=10
    )
    assert changed.status_code == 200
    delete_url = f"{base}/admin/shop/item/{ids[1]}/delete/"
    token = _csrf(session, delete_url)
    deleted = session.post(delete_url, data={"post": "yes", "csrfmiddlewaretoken": token}, timeout=10)
    assert deleted.status_code == 200


def _site_traffic(base: str, rounds: int) -> None:
    """Pages that use the cache and the database, a streamed page and a failing view."""
    for _ in range(rounds):
        assert requests.get(f"{base}/", timeout=10).status_code == 200
        assert requests.get(f"{base}/api/items/", timeout=10).status_code == 200
        assert requests.get(f"{base}/stream/", timeout=10).status_code == 200
        assert requests.get(f"{base}/boom/", timeout=10).status_code == 500


def test_django_prometheus_dashboard_queries_have_data(tmp_path: Path) -> None:
    """Every django-prometheus-style query returns data after admin, cache, DB and failing traffic."""
    proc, base, _ = start_gunicorn(
        tmp_path, workers=2, max_requests=0, METRICS_COMPAT_DJANGO_PROMETHEUS="True", METRICS_MODELS="*"
    )
    prometheus = None
    try:
        env = {
            **os.environ,
            "DJANGO_SETTINGS_MODULE": "server.settings",
            "DATABASE_URL": f"sqlite:///{tmp_path / 'db.sqlite3'}",
            "DJANGO_SUPERUSER_PASSWORD": PASSWORD,
        }
        made = subprocess.run(
            [sys.executable, "manage.py", "createsuperuser", "--noinput", "--username=admin"],
            cwd=EXAMPLE,
            env={**env, "DJANGO_SUPERUSER_EMAIL": "admin@example.com"},
            timeout=60,
            capture_output=True,
            text=True,
        )
        assert made.returncode == 0, made.stdout + made.stderr
        host = base.removeprefix("http://")
        config = (
            "global:\n  scrape_interval: 2s\n  scrape_timeout: 2s\n"
            "scrape_configs:\n"
            "  - job_name: django\n    metrics_path: /metrics/\n"
            f"    static_configs:\n      - targets: ['{host}']\n"
        )
        prometheus = start_prometheus(config, tmp_path / "prometheus")
        wait_for(
            lambda: prom_query(prometheus, 'up{job="django"} == 1')["data"]["result"] or None,
            30,
            "first scrape",
        )
        # A series first seen with its final value has no increase for rate() to find (Prometheus
        # does not assume it started at 0): as on a live site, the series exist before the load.
        _site_traffic(base, rounds=1)
        session = _admin_login(base)
        time.sleep(5)
        _admin_traffic(base, session)
        assert session.get(f"{base}/admin/shop/item/", timeout=10).status_code == 200
        _site_traffic(base, rounds=10)
        time.sleep(6)  # A few scrapes after the traffic.

        def empty_queries() -> list[str]:
            missing = []
            for expr in QUERIES:
                answer = prom_query(prometheus, f"({expr}) > 0")
                assert answer["status"] == "success", (expr, answer)
                if not answer["data"]["result"]:
                    missing.append(expr)
            return missing

        missing = empty_queries()
        if missing:  # One more round of scrapes, then report what is still empty.
            time.sleep(3)
            missing = empty_queries()
        up = prom_query(prometheus, 'count_over_time(up{job="django"}[1m])')["data"]["result"]
        assert missing == [], "\n".join(missing) + f"\nscrapes in the last minute: {up}"
        for expr in ZERO_QUERIES:
            result = prom_query(prometheus, expr)["data"]["result"]
            assert [float(r["value"][1]) for r in result] == [0.0], expr
    finally:
        if prometheus is not None:
            prometheus.stop()
        stop(proc)
