"""Many instances, one Prometheus: three copies of the example site, as three pods would run it.

Each instance is gunicorn with deploy/gunicorn.conf.py (two workers, multiprocess mode) with ports,
a store and an SQLite database of its own. One Prometheus scrapes the export port of each
(METRICS_EXPORT_PORT: gunicorn's master, as deploy/kubernetes/ deploys it) with the site job of
deploy/prometheus.yml and evaluates deploy/recording_rules.yml, every second. After a known number
of requests to each instance, Prometheus must hold exactly those counts per instance and summed,
and every recording rule must equal its raw query evaluated at the same instant.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import pytest
import requests
import yaml

from tests.promstack import (
    EXAMPLE,
    ROOT,
    Server,
    free_port,
    http_get,
    prom_query,
    site_env,
    spawn,
    start_prometheus,
    wait_for,
)

pytestmark = pytest.mark.slow

TOKEN = "many-instances-token"
JOB = "django_app"
INSTANCES = 3

# (path, view label, status) and how many of each the n-th instance gets, per wave: different
# counts per instance, so a count landing on the wrong instance cannot go unnoticed.
REQUESTS = [
    ("/about/", "about/", "200", lambda n: 6 + 2 * n),
    ("/", "shop:home", "200", lambda n: 3 + n),
    ("/items/999999/", "shop:item-detail", "404", lambda n: 1 + n),
    ("/boom/", "shop:boom", "500", lambda n: 1 + (n % 2)),
]

# Each recording rule and the same computation written against the raw series.
RAW_QUERIES = {
    "job_view:django_http_requests:rate5m": "sum by (job, view) (rate(django_http_requests_total[5m]))",
    "job_view:django_http_requests_5xx:rate5m": (
        'sum by (job, view) (rate(django_http_requests_total{status=~"5.."}[5m]))'
    ),
    "job_view:django_http_requests_5xx:ratio_rate5m": (
        '(sum by (job, view) (rate(django_http_requests_total{status=~"5.."}[5m]))'
        " or 0 * sum by (job, view) (rate(django_http_requests_total[5m])))"
        " / sum by (job, view) (rate(django_http_requests_total[5m]))"
    ),
    "job_view_le:django_http_request_duration_seconds_bucket:rate5m": (
        "sum by (job, view, le) (rate(django_http_request_duration_seconds_bucket[5m]))"
    ),
    **{
        f"job_view:django_http_request_duration_seconds:p{percent}_rate5m": (
            f"histogram_quantile({quantile}, "
            "sum by (job, view, le) (rate(django_http_request_duration_seconds_bucket[5m])))"
        )
        for percent, quantile in [("50", "0.5"), ("95", "0.95"), ("99", "0.99")]
    },
}

Key = tuple[str, ...]


@dataclass
class Cluster:
    """Three sites (stopped once scraped), the Prometheus that scraped them, and what each was sent.

    `scraped_at`: a time when Prometheus held every count sent. `quiet_since`: a time after which
    Prometheus stores no further sample of the sites' series (the sites are stopped).
    """

    sites: list[Server]
    prometheus: Server
    sent: dict[str, Counter[tuple[str, str]]]
    scraped_at: float
    quiet_since: float


def instance_env(workdir: Path, port: int, export_port: int) -> dict[str, str]:
    """Return the environment of one instance: its own ports, store and database."""
    return site_env(
        workdir,
        TOKEN,
        GUNICORN_BIND=f"127.0.0.1:{port}",
        GUNICORN_WORKERS="2",
        # As in deploy/kubernetes/site.yaml: gunicorn's master serves /metrics/ on a port of its own.
        METRICS_EXPORT_PORT=f"127.0.0.1:{export_port}",
    )


def migrate(workdir: Path) -> Path:
    """Create a migrated SQLite database in `workdir` and return its path (copied for each site)."""
    workdir.mkdir(parents=True)
    env = instance_env(workdir, free_port(), free_port())
    result = subprocess.run(
        [sys.executable, "manage.py", "migrate", "--noinput", "-v0"],
        cwd=EXAMPLE,
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return workdir / "db.sqlite3"


def start_site(name: str, workdir: Path, database: Path) -> Server:
    """Start one instance: gunicorn with deploy/gunicorn.conf.py on free ports, a copy of `database`."""
    workdir.mkdir(parents=True)
    shutil.copy(database, workdir / "db.sqlite3")
    port = free_port()
    export_port = free_port()
    site = spawn(
        name,
        [
            sys.executable,
            "-m",
            "gunicorn",
            "-c",
            str(ROOT / "deploy" / "gunicorn.conf.py"),
            f"--chdir={EXAMPLE}",
            # gunicorn 23+ listens on ~/.gunicorn/gunicorn.ctl by default: one path for every
            # gunicorn of the machine, which three instances (and parallel runs) would fight over.
            "--no-control-socket",
            "server.wsgi",
        ],
        workdir,
        port,
        env=instance_env(workdir, port, export_port),
    )
    site.extra["target"] = f"127.0.0.1:{export_port}"
    return site


def target(site: Server) -> str:
    """Return the address Prometheus scrapes for `site`: its export port (its `instance` label)."""
    return str(site.extra["target"])


def export_answers(site: Server) -> bool:
    """Return whether the site's export port serves /metrics/ to the token."""
    if site.process.poll() is not None:
        raise AssertionError(f"{site.name} exited with {site.process.returncode}:\n{site.log_tail()}")
    status, _ = http_get(f"http://{target(site)}/metrics/", {"Authorization": f"Bearer {TOKEN}"}, timeout=5)
    return status == 200


def prometheus_config(sites: list[Server]) -> str:
    """Return deploy/prometheus.yml reduced to its site job, aimed at `sites`, with 1 s intervals."""
    config = yaml.safe_load((ROOT / "deploy" / "prometheus.yml").read_text())
    config["global"]["scrape_interval"] = "1s"
    config["global"]["evaluation_interval"] = "1s"
    job = next(job for job in config["scrape_configs"] if job["job_name"] == JOB)
    job["static_configs"] = [{"targets": [target(site) for site in sites]}]
    job["authorization"]["credentials"] = TOKEN
    config["scrape_configs"] = [job]
    return yaml.safe_dump(config, sort_keys=False)


def send_wave(site: Server, n: int, sent: Counter[tuple[str, str]]) -> None:
    """Send the n-th instance its requests of one wave, checking each status, and count them."""
    with requests.Session() as session:
        for path, view, status, count in REQUESTS:
            for _ in range(count(n)):
                response = session.get(site.url + path, timeout=30)
                assert str(response.status_code) == status, (site.name, path, response.status_code)
                sent[view, status] += 1


def values(
    prometheus: Server, expr: str, labels: tuple[str, ...], time_: float | None = None
) -> dict[Key, float]:
    """Return the instant vector of `expr` as {label values: value}."""
    answer = prom_query(prometheus, expr, time_)
    assert answer["status"] == "success", (expr, answer)
    return {
        tuple(r["metric"].get(label, "") for label in labels): float(r["value"][1])
        for r in answer["data"]["result"]
    }


def counted_per_instance(prometheus: Server, time_: float | None = None) -> dict[Key, float]:
    """Return django_http_requests_total of the site job by instance, view and status."""
    return values(
        prometheus,
        f'sum by (instance, view, status) (django_http_requests_total{{job="{JOB}"}})',
        ("instance", "view", "status"),
        time_,
    )


def expected_per_instance(
    cluster_sites: list[Server], sent: dict[str, Counter[tuple[str, str]]]
) -> dict[Key, float]:
    """Return what was sent, keyed as `counted_per_instance` keys it."""
    return {
        (target(site), view, status): float(count)
        for site in cluster_sites
        for (view, status), count in sent[site.address].items()
    }


def wait_until_scraped(prometheus: Server, expected: dict[Key, float]) -> None:
    """Wait until Prometheus holds exactly `expected` (the counts of every instance)."""
    last: dict[Key, float] = {}

    def scraped() -> bool:
        last.clear()
        last.update(counted_per_instance(prometheus))
        return last == expected

    try:
        wait_for(scraped, 120, "Prometheus to hold the counts sent")
    except AssertionError as exc:
        raise AssertionError(f"{exc}\nsent:    {expected}\nscraped: {last}") from None


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """Start three sites and Prometheus, send two waves of requests, wait until all are scraped."""
    workdir = tmp_path_factory.mktemp("many")
    database = migrate(workdir / "template")
    started: list[Server] = []
    try:
        sites = []
        for n in range(INSTANCES):
            site = start_site(f"site{n}", workdir / f"site{n}", database)
            started.append(site)
            sites.append(site)
        for site in sites:
            site.wait_ready("/metrics/liveness/", timeout=120)
            wait_for(partial(export_answers, site), 60, f"the export port of {site.name}")
        prometheus = start_prometheus(
            prometheus_config(sites),
            workdir / "prometheus",
            rule_files={
                name: (ROOT / "deploy" / name).read_text() for name in ("alerts.yml", "recording_rules.yml")
            },
        )
        started.append(prometheus)
        sent: dict[str, Counter[tuple[str, str]]] = {site.address: Counter() for site in sites}
        # Two waves, each waited for: rate() needs a series to be scraped before it grows.
        for _ in range(2):
            for n, site in enumerate(sites):
                send_wave(site, n, sent[site.address])
            wait_until_scraped(prometheus, expected_per_instance(sites, sent))
        scraped_at = time.time()
        # A recording rule evaluated at t equals its raw query at t only if no sample stamped up to
        # t was stored after the rule ran, and scrapes are stamped when they start. Stopping the
        # sites ends that race: their next scrape fails (storing up = 0 and the staleness markers
        # of their series together), and nothing of their series is stored after that.
        for site in sites:
            site.stop()
        wait_for(
            lambda: (
                values(prometheus, f'up{{job="{JOB}"}} == 0', ("instance",)).keys()
                == {(target(site),) for site in sites}
            ),
            60,
            "Prometheus to record the stopped sites as down",
        )
        yield Cluster(
            sites=sites, prometheus=prometheus, sent=sent, scraped_at=scraped_at, quiet_since=time.time()
        )
    finally:
        for server in reversed(started):
            server.stop()


def test_every_instance_is_scraped_with_the_token(cluster: Cluster) -> None:
    """Prometheus scrapes each of the three instances, through the token, as one target each."""
    # Over a few seconds: on a loaded machine one scrape may time out without anything being wrong.
    up = values(
        cluster.prometheus, f'max_over_time(up{{job="{JOB}"}}[10s])', ("instance",), cluster.scraped_at
    )
    assert up == {(target(site),): 1.0 for site in cluster.sites}


def test_counts_per_instance_equal_what_was_sent(cluster: Cluster) -> None:
    """Per instance, view and status, requests and latency observations equal the requests sent."""
    expected = expected_per_instance(cluster.sites, cluster.sent)
    assert counted_per_instance(cluster.prometheus, cluster.scraped_at) == expected
    observed = values(
        cluster.prometheus,
        f'sum by (instance, view) (django_http_request_duration_seconds_count{{job="{JOB}"}})',
        ("instance", "view"),
        cluster.scraped_at,
    )
    by_view: Counter[Key] = Counter()
    for (instance, view, _), count in expected.items():
        by_view[instance, view] += int(count)
    assert observed == {key: float(count) for key, count in by_view.items()}


def test_summed_counts_equal_what_was_sent(cluster: Cluster) -> None:
    """Summed over the instances, by view and status and in all, the counts equal the requests sent."""
    total: Counter[tuple[str, str]] = Counter()
    for counts in cluster.sent.values():
        total.update(counts)
    summed = values(
        cluster.prometheus,
        f'sum by (view, status) (django_http_requests_total{{job="{JOB}"}})',
        ("view", "status"),
        cluster.scraped_at,
    )
    assert summed == {key: float(count) for key, count in total.items()}
    everything = values(
        cluster.prometheus, f'sum(django_http_requests_total{{job="{JOB}"}})', (), cluster.scraped_at
    )
    assert everything == {(): float(sum(total.values()))}
    # 3 instances x 2 waves of 11 to 17 requests.
    assert sum(total.values()) == 2 * sum(count(n) for n in range(INSTANCES) for *_, count in REQUESTS)


def evaluations_after(prometheus: Server, since: float) -> list[float]:
    """Return the times after `since` at which the recording rules were evaluated."""
    answer = prom_query(prometheus, "job_view:django_http_requests:rate5m[60s]")
    return sorted({float(t) for r in answer["data"]["result"] for t, _ in r["values"] if float(t) > since})


def test_recording_rules_equal_the_raw_queries(cluster: Cluster) -> None:
    """At each of several evaluation times, every recording rule equals its raw query at that time."""
    prometheus = cluster.prometheus

    def three_evaluations() -> list[float] | None:
        times = evaluations_after(prometheus, cluster.quiet_since)
        return times if len(times) >= 3 else None

    evaluated = wait_for(three_evaluations, 60, "3 rule evaluations after the last sample of the sites")
    views = {view for counts in cluster.sent.values() for view, _ in counts}
    for t in evaluated[:3]:
        for rule, raw in RAW_QUERIES.items():
            labels = ("job", "view", "le") if rule.startswith("job_view_le:") else ("job", "view")
            recorded = values(prometheus, rule, labels, t)
            computed = values(prometheus, raw, labels, t)
            assert recorded == computed, (rule, t)
            assert recorded, (rule, t)
            assert {key[1] for key in recorded} <= views, rule
        rate = values(prometheus, "job_view:django_http_requests:rate5m", ("view",), t)
        # Every view sent to has a positive rate: the window holds both waves.
        assert set(rate) == {(view,) for view in views} and all(r > 0 for r in rate.values()), rate
        ratio = values(prometheus, "job_view:django_http_requests_5xx:ratio_rate5m", ("view",), t)
        assert ratio == {(view,): 1.0 if view == "shop:boom" else 0.0 for view in views}
        quantiles = [
            values(prometheus, f"job_view:django_http_request_duration_seconds:p{p}_rate5m", ("view",), t)
            for p in (50, 95, 99)
        ]
        for view in views:
            p50, p95, p99 = (q[(view,)] for q in quantiles)
            assert 0 < p50 <= p95 <= p99, (view, p50, p95, p99)
