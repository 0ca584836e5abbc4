"""End to end on real servers: the example site under gunicorn (two workers, multiprocess mode)
and a Celery worker (prefork, its own metrics port), scraped by Prometheus with the shipped
deploy/prometheus.yml and alerts.yml, plus a Pushgateway fed by `export_metrics`.

After generated traffic, every PromQL expression of docs/promql.md and README.md and every panel
query of dashboards/django.json (Grafana variables substituted) must return data from Prometheus's
HTTP API. The few that need something this site cannot produce are listed in PENDING with the
reason; they must still be valid PromQL, and must return nothing (so the list stays honest).
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
import urllib.parse
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import requests
import yaml
from prometheus_client.parser import text_string_to_metric_families

import metrics.compat
from metrics.core import exposition
from tests.promstack import (
    EXAMPLE,
    ROOT,
    Server,
    free_port,
    http_get,
    prom_query,
    site_env,
    spawn,
    start_gunicorn,
    start_prometheus,
    start_pushgateway,
    wait_for,
)

pytestmark = pytest.mark.slow

TOKEN = "e2e-secret-token"
# A Redis database of its own, and a queue named per run below: other suites use Redis too.
BROKER = "redis://127.0.0.1:6379/13"
SUCCEEDING_TASKS = 20
FAILING_TASKS = 5
PUSH_JOB = "nightly"

# Grafana's variables, as Grafana renders them for this test's single site ("All" = allValue).
GRAFANA_VARIABLES = {
    "$__rate_interval": "1m",
    "$__interval": "15s",
    "$__range": "5m",
    "$celery_job": ".*",
    "$instance": ".*",
    "$job": "django_app",
}

# Expressions the example site cannot produce here: (pattern found in the expression, reason).
PENDING: list[tuple[str, str]] = [
    (
        "duration_seconds[5m]",
        "native histogram queries; this stack scrapes classic ones, "
        "tests/e2e/test_protobuf_prometheus.py runs them against native histograms",
    ),
    ("django_db_pool_", "needs Django's PostgreSQL connection pool; the example site runs on SQLite"),
    ("django_metrics_labels_folded_total", "this traffic passes no bad label values"),
    ("django_cache_errors_total", "no cache operation fails in this traffic"),
    ("django_db_connection_errors_total", "no database connection fails in this traffic"),
    ("offset 1h", "needs an hour of history"),
    ("celery_queue_consumers", "RabbitMQ counts consumers; this stack's broker is Redis"),
    (
        "django_model_",
        "METRICS_MODELS is off here; tests/e2e/test_compat_prometheus.py counts model operations",
    ),
    (
        "celery_tasks_published_total",
        "the tasks are sent by the test process, which no Prometheus job scrapes",
    ),
    # prometheus_client's default collectors describe one process; in multiprocess mode they are
    # left out of /metrics/, as prometheus_client leaves them out.
    ("(process_", "single-process mode only; this site runs two workers in multiprocess mode"),
    ("(python_", "single-process mode only; this site runs two workers in multiprocess mode"),
]


@dataclass
class Stack:
    """The running servers of the end-to-end tests."""

    site: Server
    worker: Server
    pushgateway: Server
    prometheus: Server
    push_output: str
    printed: str
    # Requests the traffic generator sent to the site, by status.
    sent: dict[str, int]


def manage(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    """Run the example site's manage.py and fail with its output when it fails."""
    result = subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=EXAMPLE,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, f"manage.py {' '.join(args)}:\n{result.stdout}\n{result.stderr}"
    return result


def prometheus_config(site: Server, worker: Server, pushgateway: Server) -> str:
    """Return deploy/prometheus.yml with this test's targets, token and 1 s intervals.

    Only values are replaced; a second copy of the site job without the token is added to prove
    the refusal, and a second worker target where nothing listens (a worker host that is down).
    """
    config = yaml.safe_load((ROOT / "deploy" / "prometheus.yml").read_text())
    config["global"]["scrape_interval"] = "1s"
    config["global"]["evaluation_interval"] = "1s"
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    jobs["django_app"]["static_configs"] = [{"targets": [site.address]}]
    jobs["django_app"]["authorization"]["credentials"] = TOKEN
    jobs["celery_worker"]["static_configs"] = [{"targets": [worker.address, f"127.0.0.1:{free_port()}"]}]
    jobs["celery_worker"]["authorization"]["credentials"] = TOKEN
    jobs["pushgateway"]["static_configs"] = [{"targets": [pushgateway.address]}]
    no_token = {key: value for key, value in jobs["django_app"].items() if key != "authorization"}
    no_token["job_name"] = "django_app_no_token"
    config["scrape_configs"].append(no_token)
    return yaml.safe_dump(config, sort_keys=False)


def generate_traffic(base: str, seconds: float) -> dict[str, int]:
    """Drive every kind of view of the example site for `seconds`, including logins and failures.

    Return the requests sent, by status (the health page is under `/metrics/`: not counted).
    """
    session = requests.Session()
    deadline = time.monotonic() + seconds
    sent: dict[str, int] = {}
    while time.monotonic() < deadline:
        for path, expected in [
            ("/", 200),
            ("/items/1/", 200),
            ("/items/999999/", 404),
            ("/api/items/", 200),
            ("/async/", 200),
            ("/stream/", 200),
            ("/about/", 200),
            ("/no/such/page/", 404),
            ("/boom/", 500),
        ]:
            response = session.get(base + path, timeout=10)
            assert response.status_code == expected, (path, response.status_code)
            sent[str(expected)] = sent.get(str(expected), 0) + 1
        # The health page records each check's result in django_health_check_status.
        assert session.get(base + "/metrics/health/", timeout=10).status_code in (200, 503)
        for password, expected in [("wrong", 200), ("e2e-password", 302)]:
            login = requests.Session()
            assert login.get(base + "/accounts/login/", timeout=10).status_code == 200
            response = login.post(
                base + "/accounts/login/",
                data={
                    "username": "admin",
                    "password": password,
                    "csrfmiddlewaretoken": login.cookies["csrftoken"],
                },
                allow_redirects=False,
                timeout=10,
            )
            assert response.status_code == expected, response.text[:500]
            sent["200"] = sent.get("200", 0) + 1
            sent[str(expected)] = sent.get(str(expected), 0) + 1
        time.sleep(0.3)
    return sent


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """Start the site, the Pushgateway and Prometheus; generate traffic and one push."""
    workdir = tmp_path_factory.mktemp("e2e")
    env = site_env(workdir, TOKEN, DJANGO_SUPERUSER_PASSWORD="e2e-password")
    manage(env, "migrate", "--noinput")
    manage(env, "createsuperuser", "--noinput", "--username", "admin", "--email", "admin@example.com")
    started: list[Server] = []
    try:
        # Two workers sharing the store: every scrape must see the merged values of both.
        site = start_gunicorn("server.wsgi:application", workdir / "site", env, chdir=EXAMPLE, workers=2)
        started.append(site)
        site.wait_ready("/metrics/liveness/")
        queue = uuid.uuid4().hex[:10]
        # The worker runs as on a host of its own: its own store, its own port.
        worker_env = {
            **env,
            "PROMETHEUS_MULTIPROC_DIR": str(workdir / "worker-multiproc"),
            "CELERY_BROKER_URL": BROKER,
            "CELERY_RESULT_BACKEND": "",
        }
        (workdir / "worker-multiproc").mkdir()
        worker = start_worker(worker_env, workdir / "worker", queue)
        started.append(worker)
        pushgateway = start_pushgateway(workdir / "pushgateway")
        started.append(pushgateway)
        prometheus = start_prometheus(
            prometheus_config(site, worker, pushgateway),
            workdir / "prometheus",
            rule_files={"alerts.yml": (ROOT / "deploy" / "alerts.yml").read_text()},
        )
        started.append(prometheus)
        wait_for(
            lambda: prom_query(prometheus, 'up{job="django_app"} == 1')["data"]["result"],
            30,
            "the first successful scrape of the site",
        )
        # Two waves: Prometheus must see each series before it grows, or rate() has nothing to
        # compare (a series first scraped at 5 has not increased, as far as PromQL knows).
        send_tasks(queue, succeeding=2, failing=1)
        first_failure = 'celery_tasks_total{job="celery_worker", status="failure"}'
        wait_for(
            lambda: prom_query(prometheus, first_failure)["data"]["result"],
            30,
            "the first task outcomes in Prometheus",
        )
        send_tasks(queue, succeeding=SUCCEEDING_TASKS - 2, failing=FAILING_TASKS - 1)
        sent = generate_traffic(site.url, seconds=6)
        wait_for(lambda: worker_finished(worker), 60, "the worker to run every task")
        # The same directory as the site: the push carries the merged values of its workers.
        printed = manage(env, "export_metrics", "--print").stdout
        push = manage(
            env,
            "export_metrics",
            "--pushgateway",
            pushgateway.address,
            "--job",
            PUSH_JOB,
            "--grouping-key",
            "instance=batch1",
        )
        # Let a few more scrapes and rule evaluations see the traffic and the push.
        time.sleep(4)
        yield Stack(
            site=site,
            worker=worker,
            pushgateway=pushgateway,
            prometheus=prometheus,
            push_output=push.stdout,
            printed=printed,
            sent=sent,
        )
    finally:
        for server in reversed(started):
            server.stop()


def start_worker(env: dict[str, str], workdir: Path, queue: str) -> Server:
    """Start `celery -A server worker` (prefork, 2 processes) with its metrics port on a free port."""
    port = free_port()
    worker = spawn(
        "celery-worker",
        [
            sys.executable,
            "-m",
            "celery",
            "-A",
            "server",
            "worker",
            "--pool=prefork",
            "--concurrency=2",
            "--loglevel=INFO",
            f"--hostname=e2e-{queue}@localhost",
            f"--queues={queue}",
            "--without-mingle",
            "--without-gossip",
            f"--metrics-port={port}",
            "--metrics-address=127.0.0.1",
        ],
        workdir,
        port,
        env,
    )
    try:
        worker.wait_ready("/metrics", timeout=60)
    except AssertionError:
        worker.stop()
        raise
    return worker


def send_tasks(queue: str, succeeding: int, failing: int) -> None:
    """Publish succeeding and failing tasks of the example site to `queue`."""
    from celery import Celery

    from metrics.instrument.celery import install

    app = Celery(f"e2e-client-{queue}", broker=BROKER, set_as_current=False)
    app.conf.broker_connection_retry_on_startup = True
    # Stamps the publish time in the headers: the worker's queue-wait histogram needs it.
    install(app)
    for i in range(succeeding):
        app.send_task("shop.tasks.add", args=(i, 1), queue=queue, ignore_result=True)
    for _ in range(failing):
        app.send_task("shop.tasks.fail", queue=queue, ignore_result=True)
    app.close()


def worker_finished(worker: Server) -> bool:
    """Return True once the worker's port counts every task sent."""
    status, body = http_get(worker.url + "/metrics", headers={"Authorization": f"Bearer {TOKEN}"})
    if status != 200:
        return False
    done = 0.0
    for family in text_string_to_metric_families(body.decode()):
        for sample in family.samples:
            if sample.name == "celery_tasks_total":
                done += sample.value
    return done >= SUCCEEDING_TASKS + FAILING_TASKS


def promql_blocks(path: Path) -> list[str]:
    """Return the expressions of the ```promql blocks of a Markdown file.

    Expressions are separated by blank lines; `#` lines are comments.
    """
    expressions = []
    for block in re.findall(r"```promql\n(.*?)```", path.read_text(), flags=re.S):
        for chunk in re.split(r"\n\s*\n", block):
            lines = [
                line for line in chunk.splitlines() if line.strip() and not line.lstrip().startswith("#")
            ]
            if lines:
                expressions.append(" ".join(line.strip() for line in lines))
    return expressions


def dashboard() -> dict[str, Any]:
    """Return the parsed Grafana dashboard."""
    data: dict[str, Any] = json.loads((ROOT / "dashboards" / "django.json").read_text())
    return data


def dashboard_queries() -> list[tuple[str, str]]:
    """Return (panel title, expression with Grafana variables substituted) for every panel target."""
    queries = []
    for panel in dashboard()["panels"]:
        for target in panel.get("targets", []):
            expr = target["expr"]
            # Longest names first, so `$instance` is never cut by a shorter variable.
            for name in sorted(GRAFANA_VARIABLES, key=len, reverse=True):
                expr = expr.replace(name, GRAFANA_VARIABLES[name])
            queries.append((panel["title"], expr))
    return queries


def pending_reason(expr: str) -> str | None:
    """Return why `expr` cannot have data in this test, or None when it must."""
    for pattern, reason in PENDING:
        if pattern in expr:
            return reason
    return None


def check_expressions(prometheus: Server, named: list[tuple[str, str]]) -> None:
    """Assert each expression is valid, returns data unless pending, and nothing when pending."""
    failures = []
    for where, expr in named:
        answer = prom_query(prometheus, expr)
        if answer.get("status") != "success":
            failures.append(f"{where}: invalid PromQL {expr!r}: {answer.get('error')}")
            continue
        result = answer["data"]["result"]
        reason = pending_reason(expr)
        if reason is None and not result:
            failures.append(f"{where}: no data for {expr!r}")
        elif reason is not None and result:
            failures.append(f"{where}: {expr!r} now returns data; remove it from PENDING ({reason})")
    assert not failures, "\n".join(failures)


def test_site_is_up_with_the_token_and_refused_without(stack: Stack) -> None:
    """The site job scrapes with the Bearer token; the same job without it is down with a 401."""
    up = prom_query(stack.prometheus, 'up{job=~"django_app|django_app_no_token"}')["data"]["result"]
    assert {r["metric"]["job"]: r["value"][1] for r in up} == {"django_app": "1", "django_app_no_token": "0"}
    status, body = http_get(stack.prometheus.url + "/api/v1/targets")
    assert status == 200
    targets = {
        (t["labels"]["job"], t["labels"]["instance"]): t for t in json.loads(body)["data"]["activeTargets"]
    }
    assert targets["django_app", stack.site.address]["health"] == "up"
    refused = targets["django_app_no_token", stack.site.address]
    assert refused["health"] == "down"
    assert "401" in refused["lastError"]
    assert targets["pushgateway", stack.pushgateway.address]["health"] == "up"
    assert targets["celery_worker", stack.worker.address]["health"] == "up"
    down = [t for (job, _), t in targets.items() if job == "celery_worker" and t["health"] == "down"]
    assert len(down) == 1


def test_traffic_is_counted(stack: Stack) -> None:
    """The requests of the traffic generator appear in Prometheus with their view and status."""
    answer = prom_query(stack.prometheus, 'sum by (status) (django_http_requests_total{job="django_app"})')
    by_status = {r["metric"]["status"]: float(r["value"][1]) for r in answer["data"]["result"]}
    # Exactly what the generator sent: its requests are the only ones counted on the site.
    assert by_status == {status: float(n) for status, n in stack.sent.items()}
    assert stack.sent["500"] >= 1
    views = prom_query(stack.prometheus, 'count by (view) (django_http_requests_total{job="django_app"})')
    names = {r["metric"]["view"] for r in views["data"]["result"]}
    assert {"shop:home", "shop:item-detail", "shop:boom"} <= names


def http_totals(text: str) -> dict[str, float]:
    """Return django_http_requests_total of a text exposition summed by status."""
    totals: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "django_http_requests_total":
                status = sample.labels["status"]
                totals[status] = totals.get(status, 0.0) + sample.value
    return totals


def test_print_and_push_carry_the_merged_store(stack: Stack) -> None:
    """export_metrics in the site's multiprocess directory prints and pushes both workers' counts."""
    status, body = http_get(stack.site.url + "/metrics/", headers={"Authorization": f"Bearer {TOKEN}"})
    assert status == 200
    scraped = http_totals(body.decode())
    assert http_totals(stack.printed) == scraped
    pushed = prom_query(stack.prometheus, f'sum by (status) (django_http_requests_total{{job="{PUSH_JOB}"}})')
    assert {r["metric"]["status"]: float(r["value"][1]) for r in pushed["data"]["result"]} == scraped
    # The printing process served no request: equal non-zero totals can only come from the store
    # both workers write to.
    # At least one full round of the traffic generator (13 requests).
    assert sum(scraped.values()) >= 13


def test_spec_and_docs_promql_return_data(stack: Stack) -> None:
    """Every expression of docs/promql.md and README.md is valid and returns data (or is pending)."""
    docs = promql_blocks(ROOT / "docs" / "promql.md")
    assert len(docs) >= 30
    readme = promql_blocks(ROOT / "README.md")
    check_expressions(
        stack.prometheus,
        [("docs/promql.md", expr) for expr in docs] + [("README.md", expr) for expr in readme],
    )


def test_dashboard_queries_return_data(stack: Stack) -> None:
    """Every panel query of dashboards/django.json, variables substituted, returns data (or is pending)."""
    queries = dashboard_queries()
    assert len(queries) >= 50
    check_expressions(stack.prometheus, queries)


def test_pending_list_is_needed(stack: Stack) -> None:
    """Every PENDING entry still matches an expression that is shipped (no stale excuses)."""
    shipped = [expr for _, expr in dashboard_queries()] + promql_blocks(ROOT / "docs" / "promql.md")
    for pattern, reason in PENDING:
        assert any(pattern in expr for expr in shipped), (
            f"PENDING entry {pattern!r} ({reason}) matches nothing"
        )


def test_dashboard_variables(stack: Stack) -> None:
    """The dashboard's job/instance variables find the site through Prometheus's label API."""
    variables = {v["name"]: v for v in dashboard()["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    assert variables["job"]["query"]["query"] == "label_values(django_http_requests_total, job)"
    params = urllib.parse.urlencode({"match[]": "django_http_requests_total"})
    status, body = http_get(f"{stack.prometheus.url}/api/v1/label/job/values?{params}")
    assert status == 200
    assert "django_app" in json.loads(body)["data"]
    params = urllib.parse.urlencode({"match[]": 'django_http_requests_total{job="django_app"}'})
    status, body = http_get(f"{stack.prometheus.url}/api/v1/label/instance/values?{params}")
    assert json.loads(body)["data"] == [stack.site.address]
    for panel in dashboard()["panels"]:
        if panel["type"] != "row":
            assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, panel["title"]


def test_push_lands_in_prometheus(stack: Stack) -> None:
    """`manage.py export_metrics --pushgateway` lands in the Pushgateway and Prometheus scrapes it."""
    assert f"PUT http://{stack.pushgateway.address}/metrics/job/{PUSH_JOB}/instance/batch1: HTTP 200" in (
        stack.push_output
    )
    pushed = prom_query(stack.prometheus, f'django_user_registrations_total{{job="{PUSH_JOB}"}}')
    result = pushed["data"]["result"]
    assert len(result) == 1
    # honor_labels: the pushed job and instance win over the Pushgateway's own target labels.
    assert result[0]["metric"]["instance"] == "batch1"
    age = prom_query(stack.prometheus, f'time() - push_time_seconds{{job="{PUSH_JOB}"}}')
    assert 0 <= float(age["data"]["result"][0]["value"][1]) < 300


def test_alert_rules_run_on_live_data(stack: Stack) -> None:
    """alerts.yml loads, and the 5xx-ratio and target-down alerts go pending on this traffic."""
    status, body = http_get(stack.prometheus.url + "/api/v1/rules")
    assert status == 200
    rules = [rule for group in json.loads(body)["data"]["groups"] for rule in group["rules"]]
    shipped = yaml.safe_load((ROOT / "deploy" / "alerts.yml").read_text())
    assert len(rules) == sum(len(group["rules"]) for group in shipped["groups"])
    assert all(rule["health"] == "ok" for rule in rules), [(r["name"], r.get("lastError")) for r in rules]
    status, body = http_get(stack.prometheus.url + "/api/v1/alerts")
    alerts = [(a["labels"], a["state"]) for a in json.loads(body)["data"]["alerts"]]

    def state(name: str, **labels: str) -> str | None:
        for alert_labels, alert_state in alerts:
            if alert_labels["alertname"] == name and labels.items() <= alert_labels.items():
                return alert_state
        return None

    # /boom/ is one request in thirteen: about 8 % of 5xx, above the 5 % threshold.
    assert state("DjangoHigh5xxRatio", job="django_app") in {"pending", "firing"}, alerts
    # The second worker target, where nothing listens.
    assert state("DjangoTargetDown", job="celery_worker") in {"pending", "firing"}, alerts
    assert state("DjangoTargetDown", job="celery_worker", instance=stack.worker.address) is None
    assert state("DjangoTargetDown", job="django_app") is None
    # shop.tasks.fail always fails; shop.tasks.add never does.
    assert state("CeleryHighTaskFailureRatio", task="shop.tasks.fail") in {"pending", "firing"}, alerts
    assert state("CeleryHighTaskFailureRatio", task="shop.tasks.add") is None


def test_celery_tasks_are_counted(stack: Stack) -> None:
    """The worker's port, scraped with the token, reports every task by outcome."""
    answer = prom_query(stack.prometheus, 'sum by (task, status) (celery_tasks_total{job="celery_worker"})')
    counts = {
        (r["metric"]["task"], r["metric"]["status"]): float(r["value"][1]) for r in answer["data"]["result"]
    }
    assert counts[("shop.tasks.add", "success")] == SUCCEEDING_TASKS
    assert counts[("shop.tasks.fail", "failure")] == FAILING_TASKS


def test_dashboard_covers_every_family() -> None:
    """Every metric family /metrics/ serves (ours and prometheus_client's defaults) has a panel."""
    # The Celery families are in the catalogue (metrics.collectors), declared at import.
    served = re.findall(r"^# TYPE (\S+) \S+$", exposition().decode(), flags=re.M)
    families = {name for name in served if not name.endswith("_created")}
    # django-prometheus's names (METRICS_COMPAT_DJANGO_PROMETHEUS, on in other tests of this
    # run) serve the dashboards built for them, not this one.
    compat = metrics.compat.created()
    if compat is not None:
        families -= {
            getattr(metric, "_name", "") + suffix
            for metric in vars(compat).values()
            for suffix in ("", "_total")
        }
    assert {"django_http_requests_total", "celery_worker_up"} <= families
    queries = [expr for _, expr in dashboard_queries()]
    missing = sorted(name for name in families if not any(name in expr for expr in queries))
    assert not missing, f"families without a dashboard panel: {missing}"
