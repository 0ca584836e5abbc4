"""The Celery side of the test stack: brokers, the example site's worker, and scrapes of it.

Shared by the in-process Celery tests (brokers, client apps) and the end-to-end ones in
`tests/e2e/` (a prefork `celery -A server worker` from `example/` and its metrics port), as
`tests/promstack.py` is for Prometheus and gunicorn.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from celery import Celery
from prometheus_client.parser import text_string_to_metric_families

from metrics.instrument import celery as instrument
from tests.promstack import EXAMPLE, Server, free_port, http_get, spawn, wait_for

TOKEN = "celery-test-token"
# Redis databases of the Celery tests alone (tests/e2e/test_prometheus.py uses 13, the cache
# tests 15, tests/instrument/test_celery_queues.py 10).
REDIS_BROKER_DB = 11
REDIS_RESULTS_DB = 12
REDIS = "redis://127.0.0.1:6379"
RABBITMQ = "amqp://guest:guest@127.0.0.1:5672//"


def parse(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """Return every sample of an exposition by (name, labels)."""
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, frozenset(s.labels.items()))] = float(s.value)
    return out


@dataclass
class Scrape:
    """Samples of one scrape."""

    samples: dict[tuple[str, frozenset[tuple[str, str]]], float]

    def get(self, name: str, **labels: str) -> float | None:
        """Return a sample's value, None when the scrape does not have it."""
        return self.samples.get((name, frozenset(labels.items())))

    def get_or_zero(self, name: str, **labels: str) -> float:
        """Return a sample's value, 0.0 when absent: for counts a run may never have made."""
        return self.samples.get((name, frozenset(labels.items())), 0.0)

    def has(self, name: str, **labels: str) -> bool:
        """Return whether the sample is present."""
        return (name, frozenset(labels.items())) in self.samples

    def label_values(self, name: str, label: str) -> set[str]:
        """Return the values `label` takes in the samples named `name`."""
        return {dict(labels)[label] for n, labels in self.samples if n == name and label in dict(labels)}


def scrape(url: str, headers: dict[str, str] | None = None) -> Scrape:
    """GET `url` with the token and parse it."""
    status, body = http_get(url, headers or {"Authorization": f"Bearer {TOKEN}"})
    assert status == 200, (status, body[:300])
    return Scrape(parse(body.decode()))


def base_env(workdir: Path, broker: str, backend: str, multiproc: Path | None) -> dict[str, str]:
    """Return the environment of the example site and worker processes."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("METRICS_", "PROMETHEUS_", "CELERY_", "DJANGO_", "REDIS_URL", "DATABASE_URL"))
    }
    env.update(
        DJANGO_SETTINGS_MODULE="server.settings",
        PYTHONPATH=str(EXAMPLE),
        DATABASE_URL=f"sqlite:///{workdir / 'db.sqlite3'}",
        METRICS_AUTH_TOKEN=TOKEN,
        METRICS_ALLOWED_IPS="",
        CELERY_BROKER_URL=broker,
        CELERY_RESULT_BACKEND=backend,
    )
    if multiproc is not None:
        env["PROMETHEUS_MULTIPROC_DIR"] = str(multiproc)
    return env


def migrate(env: dict[str, str]) -> None:
    """Create the example site's tables (the site's scrape-time user count reads one)."""
    out = subprocess.run(
        [sys.executable, str(EXAMPLE / "manage.py"), "migrate", "--noinput"],
        env=env,
        cwd=EXAMPLE,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stdout + out.stderr


@dataclass
class Worker:
    """A running `celery -A server worker` and what to reach it with."""

    server: Server
    node: str
    queue: str

    @property
    def metrics_url(self) -> str:
        """Return the URL of its metrics port."""
        return f"{self.server.url}/metrics"


def start_worker(workdir: Path, env: dict[str, str], queue: str | None = None) -> Worker:
    """Start a prefork worker (concurrency 2) with its metrics port on a free port.

    It consumes `queue`, by default a queue of its own.
    """
    port = free_port()
    tag = uuid.uuid4().hex[:8]
    node = f"metrics-test-{tag}@localhost"
    queue = queue or f"metrics-test-{tag}"
    server = spawn(
        "celery-worker",
        [
            sys.executable,
            "-m",
            "celery",
            "-A",
            "server",
            "worker",
            "--pool",
            "prefork",
            "--concurrency",
            "2",
            "--loglevel",
            "INFO",
            "--hostname",
            node,
            "--queues",
            queue,
            "--without-mingle",
            "--without-gossip",
            "--metrics-port",
            str(port),
            "--metrics-address",
            "127.0.0.1",
        ],
        workdir,
        port,
        env,
    )
    worker = Worker(server, node, queue)

    def ready() -> bool:
        if server.process.poll() is not None:
            raise AssertionError(f"worker exited with {server.process.returncode}:\n{server.log_tail(80)}")
        status, body = http_get(worker.metrics_url, {"X-Metrics-Token": TOKEN}, timeout=2)
        return status == 200 and f'celery_worker_up{{worker="{node}"}} 1.0' in body.decode()

    try:
        wait_for(ready, 60, "the Celery worker")
    except AssertionError as exc:
        server.stop()
        raise AssertionError(f"{exc}\n{server.log_tail(80)}") from None
    return worker


@contextlib.contextmanager
def logs_on_failure(*servers: Server) -> Iterator[None]:
    """Print the servers' logs when the block fails (pytest shows them with the failure)."""
    try:
        yield
    except BaseException:
        for server in servers:
            print(f"----- {server.name} log ({server.log}) -----")
            print(server.log_tail(200))
        raise


def flush_redis(*dbs: int) -> None:
    """Empty the test's Redis databases."""
    import redis

    for db in dbs:
        redis.Redis.from_url(f"{REDIS}/{db}").flushdb()


def client_app(broker: str, backend: str) -> Celery:
    """Return a Celery app publishing to `broker`, with this module installed (it stamps headers)."""
    app = Celery(f"client-{uuid.uuid4().hex[:6]}", broker=broker, backend=backend, set_as_current=False)
    app.conf.broker_connection_retry_on_startup = True
    instrument.install(app)
    return app
