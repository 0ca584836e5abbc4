"""Celery workers for real: a prefork worker of the example site and the site under gunicorn.

`celery -A server worker --pool prefork --concurrency 2` from `example/` and the example site
under gunicorn share one PROMETHEUS_MULTIPROC_DIR; the tests compare exact counts on the worker's
own port and on the site's `/metrics/`, on Redis and RabbitMQ.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from celery import Celery

from metrics import health
from metrics.instrument import celery as instrument
from tests.celerystack import (
    EXAMPLE,
    RABBITMQ,
    REDIS,
    REDIS_BROKER_DB,
    REDIS_RESULTS_DB,
    TOKEN,
    Scrape,
    Worker,
    base_env,
    client_app,
    flush_redis,
    logs_on_failure,
    migrate,
    scrape,
    start_worker,
)
from tests.promstack import Server, http_get, start_gunicorn, wait_for


@dataclass
class Expected:
    """How many tasks of each kind a test sends."""

    succeed: int
    fail: int
    retried: int
    retries_each: int
    revoke: int
    unknown: int
    manual: int
    sleep: int = 0
    killed: int = 0


def send_all(app: Celery, worker: Worker, n: Expected) -> None:
    """Send the tasks of `n` to `worker`, wait for their results, revoke the revoked ones first."""
    send = app.send_task
    q = worker.queue
    # Revoke before execution: the worker learns the ids (reply=True waits for it), then
    # discards each message when it arrives.
    ids = [str(uuid.uuid4()) for _ in range(n.revoke)]
    if ids:
        replies = app.control.revoke(ids, reply=True, timeout=10, destination=[worker.node])
        assert len(replies) == 1, replies
        for task_id in ids:
            send("shop.tasks.sleep", args=(5,), queue=q, task_id=task_id, countdown=1)
    results = [send("shop.tasks.add", args=(i, 1), queue=q) for i in range(n.succeed)]
    results += [send("shop.tasks.fail", queue=q) for _ in range(n.fail)]
    results += [send("shop.tasks.flaky", args=(n.retries_each,), queue=q) for _ in range(n.retried)]
    results += [send("shop.tasks.send_email", args=(i % 2 == 1,), queue=q) for i in range(n.manual)]
    for _ in range(n.unknown):
        send("shop.tasks.no_such_task", queue=q)
    # Past their hard time limit the main process kills the pool process running them.
    results += [send("shop.tasks.sleep", args=(30,), queue=q, time_limit=1) for _ in range(n.killed)]
    for result in results:
        result.get(timeout=60, propagate=False)
        assert result.state in ("SUCCESS", "FAILURE"), result.state


def count_table(s: Scrape, n: Expected) -> tuple[dict[str, float], dict[str, float]]:
    """Return the counts found in one scrape and the exact counts `n` implies."""
    got = {
        "add success": s.get_or_zero("celery_tasks_total", task="shop.tasks.add", status="success"),
        "fail failure": s.get_or_zero("celery_tasks_total", task="shop.tasks.fail", status="failure"),
        "flaky retry": s.get_or_zero("celery_tasks_total", task="shop.tasks.flaky", status="retry"),
        "flaky success": s.get_or_zero("celery_tasks_total", task="shop.tasks.flaky", status="success"),
        "sleep revoked": s.get_or_zero("celery_tasks_total", task="shop.tasks.sleep", status="revoked"),
        "sleep success": s.get_or_zero("celery_tasks_total", task="shop.tasks.sleep", status="success"),
        "sleep failure": s.get_or_zero("celery_tasks_total", task="shop.tasks.sleep", status="failure"),
        "other rejected": s.get_or_zero("celery_tasks_total", task="other", status="rejected"),
        "manual success": s.get_or_zero("celery_tasks_total", task="send_email", status="success"),
        "manual failure": s.get_or_zero("celery_tasks_total", task="send_email", status="failure"),
        "add runs": s.get_or_zero("celery_task_duration_seconds_count", task="shop.tasks.add"),
        "fail runs": s.get_or_zero("celery_task_duration_seconds_count", task="shop.tasks.fail"),
        "flaky runs": s.get_or_zero("celery_task_duration_seconds_count", task="shop.tasks.flaky"),
        "sleep runs": s.get_or_zero("celery_task_duration_seconds_count", task="shop.tasks.sleep"),
        "manual runs": s.get_or_zero("celery_task_duration_seconds_count", task="send_email"),
        "add waits": s.get_or_zero("celery_task_queue_wait_seconds_count", task="shop.tasks.add"),
        "flaky waits": s.get_or_zero("celery_task_queue_wait_seconds_count", task="shop.tasks.flaky"),
        "manual waits": s.get_or_zero("celery_task_queue_wait_seconds_count", task="shop.tasks.send_email"),
    }
    want = {
        "add success": n.succeed,
        "fail failure": n.fail,
        "flaky retry": n.retried * n.retries_each,
        "flaky success": n.retried,
        "sleep revoked": n.revoke,
        "sleep success": n.sleep,
        # Killed runs fail without a duration: their body never finished.
        "sleep failure": n.killed,
        "other rejected": n.unknown,
        "manual success": n.manual // 2,
        "manual failure": n.manual - n.manual // 2,
        "add runs": n.succeed,
        "fail runs": n.fail,
        # One run per attempt: the retried ones and the final one.
        "flaky runs": n.retried * (n.retries_each + 1),
        "sleep runs": n.sleep,
        "manual runs": n.manual,
        "add waits": n.succeed,
        "flaky waits": n.retried * (n.retries_each + 1),
        "manual waits": n.manual,
    }
    return got, {k: float(v) for k, v in want.items()}


def expect_counts(s: Scrape, n: Expected, *, where: str) -> None:
    """Assert the exact counts `n` implies in one scrape."""
    got, want = count_table(s, n)
    assert got == want, where
    # The manual task's own series only: nothing automatic under its registered name.
    assert s.label_values("celery_tasks_total", "task") <= {
        "shop.tasks.add",
        "shop.tasks.fail",
        "shop.tasks.flaky",
        "shop.tasks.sleep",
        "send_email",
        "other",
    }, where
    for task in s.label_values("celery_tasks_in_progress", "task"):
        assert s.get("celery_tasks_in_progress", task=task) == 0, (where, task)


def settled_scrape(url: str, n: Expected, *, where: str, timeout: float = 20.0) -> Scrape:
    """Poll `url` until the counts `n` implies are reached, then check they stay exact.

    A task's result is stored before its pool process runs `task_postrun`, so results in hand do
    not mean the metrics are written yet: the counters themselves are polled.
    """
    last: list[Scrape] = []

    def reached() -> Scrape | None:
        s = scrape(url)
        last[:] = [s]
        got, want = count_table(s, n)
        return s if got == want else None

    try:
        wait_for(reached, timeout, f"the expected counts on {where}")
    except AssertionError:
        if last:
            expect_counts(last[0], n, where=where)  # shows the difference
        raise
    # Nothing more may arrive: a late extra count would be a double count.
    time.sleep(0.5)
    s = scrape(url)
    expect_counts(s, n, where=where)
    return s


def pool_pids(pid: int) -> set[int]:
    """Return the child processes of `pid`."""
    return {int(child) for child in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()}


def listening_pids(port: int) -> set[int]:
    """Return the processes holding a listening TCP socket on `port` (from /proc)."""
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with open(table) as lines:
            for line in list(lines)[1:]:
                fields = line.split()
                if fields[3] == "0A" and int(fields[1].rsplit(":", 1)[1], 16) == port:
                    inodes.add(f"socket:[{fields[9]}]")
    pids = set()
    for pid in filter(str.isdigit, os.listdir("/proc")):
        with contextlib.suppress(OSError):
            for fd in os.listdir(f"/proc/{pid}/fd"):
                with contextlib.suppress(OSError):
                    if os.readlink(f"/proc/{pid}/fd/{fd}") in inodes:
                        pids.add(int(pid))
    return pids


@dataclass
class Stack:
    """The Redis-broker worker and the example site, sharing one multiprocess directory."""

    worker: Worker
    site: Server
    app: Celery
    multiproc: Path


@pytest.fixture(scope="module")
def redis_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """Start a prefork worker on Redis and the example site under gunicorn (2 workers)."""
    workdir = tmp_path_factory.mktemp("celery-redis")
    multiproc = workdir / "multiproc"
    multiproc.mkdir()
    flush_redis(REDIS_BROKER_DB, REDIS_RESULTS_DB)
    broker, backend = f"{REDIS}/{REDIS_BROKER_DB}", f"{REDIS}/{REDIS_RESULTS_DB}"
    env = base_env(workdir, broker, backend, multiproc)
    migrate(env)
    started: list[Server] = []
    try:
        worker = start_worker(workdir / "worker", env)
        started.append(worker.server)
        site = start_gunicorn("server.wsgi:application", workdir / "site", env, chdir=EXAMPLE, workers=2)
        started.append(site)
        with logs_on_failure(site):
            site.wait_ready("/metrics/liveness/")
        yield Stack(worker, site, client_app(broker, backend), multiproc)
    finally:
        for server in reversed(started):
            server.stop()
        health.unregister_check(instrument.HEALTH_CHECK_NAME)
        flush_redis(REDIS_BROKER_DB, REDIS_RESULTS_DB)


@pytest.mark.slow
def test_site_health_reports_the_worker(redis_stack: Stack) -> None:
    """The site's /metrics/health/ has a `celery` check: broker reachable, the worker answers."""
    with logs_on_failure(redis_stack.site, redis_stack.worker.server):
        status, body = http_get(
            redis_stack.site.url + "/metrics/health/", {"Authorization": f"Bearer {TOKEN}"}, timeout=10
        )
        report = json.loads(body)
        assert report["checks"]["celery"]["status"] == "ok", report
        assert status == 200
        # The same check in this process, against the same worker.
        health.check_celery(redis_stack.app, 2.0)


@pytest.mark.slow
def test_counts_are_exact_on_the_worker_port_and_the_site(redis_stack: Stack) -> None:
    """After K successes, F failures, R retried, V revoked tasks, both endpoints show exactly those.

    Two sleeping tasks run at once first: the in-progress gauge reads 2 on both endpoints, the
    sum of the two prefork children.
    """
    stack = redis_stack
    n = Expected(
        succeed=6, fail=3, retried=2, retries_each=2, revoke=3, unknown=2, manual=2, sleep=2, killed=1
    )
    with logs_on_failure(stack.worker.server, stack.site):
        sleeping = [
            stack.app.send_task("shop.tasks.sleep", args=(2.5,), queue=stack.worker.queue) for _ in range(2)
        ]
        for url in (stack.worker.metrics_url, stack.site.url + "/metrics/"):
            wait_for(
                lambda url=url: scrape(url).get("celery_tasks_in_progress", task="shop.tasks.sleep") == 2,
                10,
                f"two sleeping tasks in progress on {url}",
            )
        for result in sleeping:
            assert result.get(timeout=30) == 2.5
        pool_before = pool_pids(stack.worker.server.process.pid)
        send_all(stack.app, stack.worker, n)

        worker_scrape = settled_scrape(stack.worker.metrics_url, n, where="worker port")
        status, _ = http_get(stack.site.url + "/")
        assert status == 200
        site_scrape = settled_scrape(stack.site.url + "/metrics/", n, where="site /metrics/")
        for s in (worker_scrape, site_scrape):
            assert s.get("celery_worker_up", worker=stack.worker.node) == 1
            heartbeat = s.get("celery_worker_last_heartbeat_timestamp_seconds", worker=stack.worker.node)
            assert heartbeat is not None and time.time() - 30 < heartbeat <= time.time() + 1

        def replaced() -> bool:
            now = pool_pids(stack.worker.server.process.pid)
            return len(now) == 2 and now != pool_before

        wait_for(replaced, 15, "the pool process killed at its time limit to be replaced")
        # Only the main process holds the metrics port, also after a pool process was replaced.
        assert listening_pids(stack.worker.server.port) == {stack.worker.server.process.pid}
        # The killed process's `1` is gone, its replacement's is there.
        node = stack.worker.node
        for url in (stack.worker.metrics_url, stack.site.url + "/metrics/"):
            wait_for(
                lambda url=url: scrape(url).get("celery_worker_pool_processes", worker=node) == 2,
                10,
                f"two pool processes on {url}",
            )
        # The site's own metrics are there too: one exposition for the whole host.
        assert site_scrape.label_values("django_http_requests_total", "method")


@pytest.mark.slow
def test_counts_survive_the_worker_and_liveness_drops(redis_stack: Stack) -> None:
    """Once the worker is stopped, the site still shows its counts; `celery_worker_up` is gone."""
    stack = redis_stack
    before = scrape(stack.site.url + "/metrics/")
    assert before.get("celery_worker_up", worker=stack.worker.node) == 1
    stack.worker.server.stop()
    with logs_on_failure(stack.worker.server, stack.site):
        after = scrape(stack.site.url + "/metrics/")
        for key, value in before.samples.items():
            if key[0].startswith(("celery_tasks_total", "celery_task_duration_seconds_count")):
                assert after.samples.get(key) == value, key
        assert after.get("celery_worker_up", worker=stack.worker.node) is None
        assert after.get("celery_worker_pool_processes", worker=stack.worker.node) is None
        # The last heartbeat stays, so `time() - celery_worker_last_heartbeat_timestamp_seconds` grows.
        assert after.has("celery_worker_last_heartbeat_timestamp_seconds", worker=stack.worker.node)


@pytest.mark.slow
def test_rabbitmq_broker_and_private_store(tmp_path: Path) -> None:
    """On RabbitMQ, without PROMETHEUS_MULTIPROC_DIR, the worker port still counts every child.

    The worker gives itself a private store before forking its pool, and removes it at exit.
    """
    flush_redis(REDIS_RESULTS_DB)
    backend = f"{REDIS}/{REDIS_RESULTS_DB}"
    env = base_env(tmp_path, RABBITMQ, backend, multiproc=None)
    # The private store is created under TMPDIR: here, where the test can see it.
    temp = tmp_path / "tmp"
    temp.mkdir()
    env["TMPDIR"] = str(temp)
    migrate(env)
    worker = start_worker(tmp_path / "worker", env)
    store: Path | None = None
    try:
        with logs_on_failure(worker.server):
            n = Expected(succeed=5, fail=2, retried=2, retries_each=1, revoke=2, unknown=1, manual=2)
            send_all(client_app(RABBITMQ, backend), worker, n)

            s = settled_scrape(worker.metrics_url, n, where="worker port (RabbitMQ)")
            assert s.get("celery_worker_pool_processes", worker=worker.node) == 2
            stores = list(temp.glob("metrics-celery-*"))
            assert len(stores) == 1 and any(stores[0].iterdir()), stores
            store = stores[0]
    finally:
        worker.server.stop()
        health.unregister_check(instrument.HEALTH_CHECK_NAME)
        flush_redis(REDIS_RESULTS_DB)
    assert store is not None and not store.exists(), "the private store outlived the worker"
