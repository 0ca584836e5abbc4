"""Celery broker backlog on the site's `/metrics/`, with the example site under gunicorn and a worker.

The broker reads themselves are tested in-process in tests/instrument/test_celery_queues.py.
"""

from __future__ import annotations

import socket
import time
from pathlib import Path

import pytest

from metrics.core import REGISTRY
from tests.celerystack import (
    EXAMPLE,
    REDIS,
    REDIS_RESULTS_DB,
    TOKEN,
    base_env,
    client_app,
    flush_redis,
    logs_on_failure,
    migrate,
    scrape,
    start_worker,
)
from tests.instrument.test_celery_queues import BROKERS, delete_queues, new_queue
from tests.promstack import Server, free_port, http_get, start_gunicorn, wait_for


def start_site(workdir: Path, env: dict[str, str]) -> Server:
    """Start the example site under gunicorn (2 workers) and wait until it answers."""
    site = start_gunicorn("server.wsgi:application", workdir, env, chdir=EXAMPLE, workers=2)
    with logs_on_failure(site):
        site.wait_ready("/metrics/liveness/")
    return site


@pytest.mark.slow
@pytest.mark.parametrize("broker", ["redis", "rabbitmq"])
def test_backlog_on_the_site_reads_exactly_then_drains(broker: str, tmp_path: Path) -> None:
    """N tasks in a queue no worker consumes read N on /metrics/; once a worker drained it, 0.

    On RabbitMQ the consumers go from 0 to 1 with the worker; on Redis (no consumer count) the
    worker's own `celery_worker_consuming{queue}` shows on the site through the shared store.
    """
    queue, n = new_queue(), 7
    url = BROKERS[broker]
    backend = f"{REDIS}/{REDIS_RESULTS_DB}"
    multiproc = tmp_path / "multiproc"
    multiproc.mkdir()
    env = base_env(tmp_path, url, backend, multiproc)
    env["METRICS_CELERY_QUEUES"] = queue
    migrate(env)
    app = client_app(url, backend)
    site = start_site(tmp_path / "site", env)
    metrics = site.url + "/metrics/"
    worker = None
    try:
        with logs_on_failure(site):
            s = scrape(metrics)
            assert (
                s.has("celery_queue_length", queue=queue) and s.get("celery_queue_length", queue=queue) == 0
            )
            published = REGISTRY.get_sample_value(
                "celery_tasks_published_total", {"task": "other", "queue": queue}
            )
            results = [app.send_task("shop.tasks.add", args=(i, 1), queue=queue) for i in range(n)]
            assert (
                REGISTRY.get_sample_value("celery_tasks_published_total", {"task": "other", "queue": queue})
                == (published or 0) + n
            )
            # RabbitMQ publishes without confirms: the broker may count them a moment later.
            wait_for(lambda: scrape(metrics).get("celery_queue_length", queue=queue) == n, 10, f"{n} waiting")
            # Exactly N on every scrape, whichever gunicorn worker answers.
            for _ in range(6):
                s = scrape(metrics)
                assert s.get("celery_queue_length", queue=queue) == n
                if broker == "rabbitmq":
                    assert s.samples[("celery_queue_consumers", frozenset({("queue", queue)}))] == 0
                else:
                    assert not s.has("celery_queue_consumers", queue=queue)

            worker = start_worker(tmp_path / "worker", env, queue=queue)
        with logs_on_failure(site, worker.server):
            assert [r.get(timeout=30) for r in results] == [i + 1 for i in range(n)]
            wait_for(lambda: scrape(metrics).get("celery_queue_length", queue=queue) == 0, 10, "drained")
            s = scrape(metrics)
            assert s.has("celery_queue_length", queue=queue)
            assert s.get("celery_worker_consuming", worker=worker.node, queue=queue) == 1
            if broker == "rabbitmq":
                assert s.get("celery_queue_consumers", queue=queue) == 1
            # The worker's own port reads the broker too.
            assert scrape(worker.metrics_url).get("celery_queue_length", queue=queue) == 0
            worker.server.stop()
            s = scrape(metrics)
            assert not s.has("celery_worker_consuming", worker=worker.node, queue=queue)
            if broker == "rabbitmq":
                wait_for(
                    lambda: scrape(metrics).get("celery_queue_consumers", queue=queue) == 0, 10, "no consumer"
                )
            assert s.get("celery_queue_length_errors_total") == 0
    finally:
        if worker is not None:
            worker.server.stop()
        site.stop()
        if broker == "rabbitmq":
            delete_queues(app, queue)
        flush_redis(REDIS_RESULTS_DB)


@pytest.mark.slow
@pytest.mark.parametrize("scheme", ["redis", "amqp", "silent"])
def test_site_answers_within_the_timeout_with_the_broker_unreachable(scheme: str, tmp_path: Path) -> None:
    """Broker on a closed port, or one that never answers: /metrics/ is 200 within the timeout.

    The queue series are left out and `celery_queue_length_errors_total` rises by one per scrape.
    """
    timeout = 0.3
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(16)
        if scheme == "silent":
            url = f"redis://127.0.0.1:{silent.getsockname()[1]}/0"
        else:
            url = f"{scheme}://guest:guest@127.0.0.1:{free_port()}/0"
        multiproc = tmp_path / "multiproc"
        multiproc.mkdir()
        env = base_env(tmp_path, url, "cache+memory://", multiproc)
        env.update(METRICS_CELERY_QUEUES="celery", METRICS_CELERY_QUEUE_TIMEOUT=str(timeout))
        migrate(env)
        site = start_site(tmp_path / "site", env)
        try:
            with logs_on_failure(site):
                # Warm up both gunicorn workers (Django's first request imports views).
                for _ in range(4):
                    http_get(site.url + "/metrics/liveness/")
                seen = []
                for _ in range(6):
                    started = time.monotonic()
                    status, body = http_get(site.url + "/metrics/", {"Authorization": f"Bearer {TOKEN}"})
                    elapsed = time.monotonic() - started
                    assert status == 200, body[:300]
                    assert elapsed < timeout + 0.5, elapsed
                    text = body.decode()
                    assert "celery_queue_length{" not in text
                    line = next(
                        line
                        for line in text.splitlines()
                        if line.startswith("celery_queue_length_errors_total ")
                    )
                    seen.append(float(line.split()[1]))
                # One failure per scrape, summed over both gunicorn workers by the shared store.
                assert seen == [1, 2, 3, 4, 5, 6]
        finally:
            site.stop()
