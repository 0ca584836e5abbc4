"""Celery task metrics: real tasks, real workers (prefork), real brokers (Redis, RabbitMQ).

In-process tests run tasks with `Task.apply()` (Celery's own tracer, the same signals a worker
sends). The worker tests start `celery -A server worker --pool prefork --concurrency 2` from
`example/` and the example site under gunicorn, sharing one PROMETHEUS_MULTIPROC_DIR, and compare
exact counts on the worker's own port and on the site's `/metrics/`.
"""

from __future__ import annotations

import contextlib
import gzip
import json
import os
import subprocess
import sys
import textwrap
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest
from celery import Celery
from celery.app.task import Context
from celery.exceptions import Ignore, Reject
from django.test import override_settings
from prometheus_client.parser import text_string_to_metric_families

from metrics import health
from metrics.collectors import celery_task_duration_seconds, celery_tasks_total
from metrics.instrument import celery as instrument
from metrics.worker_http import serve
from tests.promstack import ROOT, Server, free_port, http_get, spawn, start_gunicorn, wait_for

EXAMPLE = ROOT / "example"
TOKEN = "celery-test-token"
# Databases of this module alone (tests/test_prometheus.py uses 13, the cache tests 15).
REDIS_BROKER_DB = 11
REDIS_RESULTS_DB = 12
REDIS = "redis://127.0.0.1:6379"
RABBITMQ = "amqp://guest:guest@127.0.0.1:5672//"

# --- in-process: Celery's tracer in this process ---

APP = Celery("metrics-tests", broker="memory://", backend="cache+memory://", set_as_current=False)
APP.conf.task_always_eager = False


@APP.task
def ok() -> int:
    """Succeed."""
    return 1


@APP.task
def broken() -> None:
    """Fail."""
    raise ValueError("broken")


@APP.task(bind=True, max_retries=3)
def retried(self: Any, failures: int) -> int:
    """Retry `failures` times, then succeed."""
    if self.request.retries < failures:
        raise self.retry(countdown=0)
    return self.request.retries


@APP.task
def ignored() -> None:
    """Ask Celery to forget this run."""
    raise Ignore()


@APP.task
def rejected() -> None:
    """Reject the message."""
    raise Reject("no", requeue=False)


@APP.task
def manual(fail: bool = False) -> None:
    """Record by hand, exactly as the spec's example does."""
    start_time = time.time()
    try:
        if fail:
            raise ValueError("manual failure")
        celery_tasks_total.labels(task="send_email", status="success").inc()
    except Exception:
        celery_tasks_total.labels(task="send_email", status="failure").inc()
        raise
    finally:
        duration = time.time() - start_time
        celery_task_duration_seconds.labels(task="send_email").observe(duration)


@pytest.fixture(scope="module", autouse=True)
def _installed() -> Iterator[None]:
    """Connect the receivers in this process, as a site's `install()` would."""
    assert instrument.install(APP) is True
    yield
    health.unregister_check(instrument.HEALTH_CHECK_NAME)


def name(task: Any) -> str:
    return str(task.name)


def test_outcomes_are_counted_once_with_run_time(sample: Callable[..., float]) -> None:
    """Success, failure, retry, ignored and rejected runs each count once; every run is timed."""
    before = {
        (t, s): sample("celery_tasks_total", task=name(t), status=s)
        for t, s in [
            (ok, "success"),
            (broken, "failure"),
            (retried, "retry"),
            (retried, "success"),
            (ignored, "ignored"),
            (rejected, "rejected"),
            (rejected, "failure"),
        ]
    }
    runs = {t: sample("celery_task_duration_seconds_count", task=name(t)) for t in (ok, broken, retried)}
    ok.apply()
    ok.apply()
    broken.apply()
    retried.apply(args=(2,))
    ignored.apply()
    rejected.apply()
    after = {key: sample("celery_tasks_total", task=name(key[0]), status=key[1]) for key in before}
    assert {key: after[key] - before[key] for key in before} == {
        (ok, "success"): 2,
        (broken, "failure"): 1,
        (retried, "retry"): 2,
        (retried, "success"): 1,
        (ignored, "ignored"): 1,
        (rejected, "rejected"): 1,
        (rejected, "failure"): 0,
    }
    assert sample("celery_task_duration_seconds_count", task=name(ok)) - runs[ok] == 2
    assert sample("celery_task_duration_seconds_count", task=name(broken)) - runs[broken] == 1
    # One observation per attempt: the two retried runs and the final one.
    assert sample("celery_task_duration_seconds_count", task=name(retried)) - runs[retried] == 3
    for task in (ok, broken, retried, ignored, rejected):
        assert sample("celery_tasks_in_progress", task=name(task)) == 0


def test_in_progress_while_the_body_runs(sample: Callable[..., float]) -> None:
    """The in-progress gauge is 1 for the task while its body runs, 0 after."""
    seen: list[float] = []

    @APP.task(name="tests.test_celery.observe_in_progress")
    def observe() -> None:
        seen.append(sample("celery_tasks_in_progress", task="tests.test_celery.observe_in_progress"))

    observe.apply()
    assert seen == [1.0]
    assert sample("celery_tasks_in_progress", task="tests.test_celery.observe_in_progress") == 0


def test_manual_recording_is_not_doubled(sample: Callable[..., float]) -> None:
    """A task recording by hand as the spec shows is counted once, under its own labels."""
    auto = name(manual)
    before = {
        "manual_success": sample("celery_tasks_total", task="send_email", status="success"),
        "manual_failure": sample("celery_tasks_total", task="send_email", status="failure"),
        "manual_runs": sample("celery_task_duration_seconds_count", task="send_email"),
        "wait": sample("celery_task_queue_wait_seconds_count", task=auto),
    }
    manual.apply()
    manual.apply(args=(True,))
    assert sample("celery_tasks_total", task="send_email", status="success") - before["manual_success"] == 1
    assert sample("celery_tasks_total", task="send_email", status="failure") - before["manual_failure"] == 1
    assert sample("celery_task_duration_seconds_count", task="send_email") - before["manual_runs"] == 2
    # Nothing automatic under the registered name for the two metrics the task records itself.
    assert sample("celery_tasks_total", task=auto, status="success") == 0
    assert sample("celery_tasks_total", task=auto, status="failure") == 0
    assert sample("celery_task_duration_seconds_count", task=auto) == 0
    assert instrument.manual_recording(manual) == instrument.Manual(count=True, duration=True)
    assert instrument.manual_recording(ok) == instrument.Manual(count=False, duration=False)


def test_switched_off_records_nothing(sample: Callable[..., float]) -> None:
    """METRICS_CELERY_ENABLED=False (or METRICS_ENABLED=False) records no task metric."""
    for setting in ("METRICS_CELERY_ENABLED", "METRICS_ENABLED"):
        before = sample("celery_tasks_total", task=name(ok), status="success")
        with override_settings(**{setting: False}):
            ok.apply()
            assert sample("celery_tasks_total", task=name(ok), status="success") == before
        ok.apply()
        assert sample("celery_tasks_total", task=name(ok), status="success") == before + 1


def test_task_label_is_a_registered_name_or_other() -> None:
    """Only names the app registers become label values; anything else is `other`."""
    assert instrument.task_label(APP, name(ok)) == name(ok)
    assert instrument.task_label(APP, "celery.backend_cleanup") == "celery.backend_cleanup"
    assert instrument.task_label(APP, "not.registered") == "other"
    assert instrument.task_label(APP, f"random.{uuid.uuid4().hex}") == "other"
    assert instrument.task_label(APP, None) == "other"


def test_queue_wait_counts_from_publish_or_eta() -> None:
    """Wait starts at publish, or at the ETA when later; clock skew never makes it negative."""
    now = 1_000_000.0
    assert instrument.queue_wait(Context({instrument.PUBLISHED_HEADER: now - 2.5}), now) == 2.5
    eta = datetime.fromtimestamp(now - 1.0, tz=timezone.utc).isoformat()
    request = Context({instrument.PUBLISHED_HEADER: now - 30.0, "eta": eta})
    assert instrument.queue_wait(request, now) == pytest.approx(1.0)
    assert instrument.queue_wait(Context({instrument.PUBLISHED_HEADER: now + 3}), now) == 0.0
    assert instrument.queue_wait(Context({}), now) is None


def test_publish_stamps_the_header() -> None:
    """A published task carries its publish time in a message header."""
    seen: dict[str, Any] = {}

    def spy(headers: dict[str, Any] | None = None, **kwargs: Any) -> None:
        seen.update(headers or {})

    from celery.signals import before_task_publish

    before_task_publish.connect(spy, weak=False)
    try:
        started = time.time()
        ok.apply_async()
    finally:
        before_task_publish.disconnect(spy)
    assert started <= seen[instrument.PUBLISHED_HEADER] <= time.time()


def test_celery_absent_installs_nothing() -> None:
    """Without Celery, install() returns False and the app still imports and works."""
    code = """
        import sys
        sys.modules["celery"] = None  # `import celery` now raises ImportError
        import django
        from django.conf import settings
        settings.configure(INSTALLED_APPS=["metrics"])
        django.setup()
        from metrics.instrument import celery as instrument
        from metrics import health
        print(instrument.install(), [c.name for c in health.registered_checks()])
    """
    out = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        timeout=60,
        env={k: v for k, v in os.environ.items() if k != "DJANGO_SETTINGS_MODULE"},
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["False", "[]"]


# --- the metrics server (same access rules as /metrics/) ---


def test_worker_server_applies_the_access_rules() -> None:
    """No credentials: 401; a wrong token: 403; the token or an allowed IP: the exposition."""
    server = serve("127.0.0.1", 0)
    try:
        url = f"http://127.0.0.1:{server.port}/metrics"
        status, body = http_get(url)
        assert status == 401, body
        status, _ = http_get(url, {"X-Metrics-Token": "wrong"})
        assert status == 403
        status, body = http_get(url, {"X-Metrics-Token": "test-token"})
        assert status == 200 and b"# TYPE celery_tasks_total counter" in body
        status, body = http_get(url + "/", {"Authorization": "Bearer test-token"})
        assert status == 200 and b"celery_tasks_in_progress" in body
        status, _ = http_get(f"http://127.0.0.1:{server.port}/other", {"X-Metrics-Token": "test-token"})
        assert status == 404
        with override_settings(METRICS_ALLOWED_IPS="127.0.0.0/8"):
            status, _ = http_get(url)
            assert status == 200
        with override_settings(METRICS_ENABLED=False):
            status, _ = http_get(url, {"X-Metrics-Token": "test-token"})
            assert status == 404
        import urllib.request

        request = urllib.request.Request(
            url,
            headers={
                "X-Metrics-Token": "test-token",
                "Accept": "application/openmetrics-text; version=1.0.0",
                "Accept-Encoding": "gzip",
            },
        )
        with urllib.request.urlopen(request, timeout=5) as response:
            assert response.headers["Content-Type"].startswith("application/openmetrics-text")
            assert response.headers["Content-Encoding"] == "gzip"
            assert gzip.decompress(response.read()).endswith(b"# EOF\n")
    finally:
        server.stop()


# --- health check ---


def test_health_check_fails_fast_on_an_unreachable_broker() -> None:
    """An unreachable broker fails the check within its timeout."""
    port = free_port()
    app = Celery("unreachable", broker=f"redis://127.0.0.1:{port}/0", set_as_current=False)
    started = time.monotonic()
    report = health.run_checks(
        [health.Check("celery", lambda: instrument.check_celery(app, 0.8), critical=False)],
        default_timeout=0.8,
    )
    assert time.monotonic() - started < 1.5
    assert report.results[0].status in (health.ERROR, health.TIMEOUT)
    assert report.status == health.DEGRADED and report.http_status == 200


def test_health_check_fails_when_no_worker_answers() -> None:
    """A reachable broker with no worker listening fails with a message saying so."""
    app = Celery("lonely", broker=f"{REDIS}/{REDIS_BROKER_DB}", set_as_current=False)
    # A broadcast channel of its own: no worker of any test listens there.
    app.conf.broker_transport_options = {"fanout_prefix": f"/lonely-{uuid.uuid4().hex}."}
    with pytest.raises(health.HealthCheckError, match="no worker answered"):
        instrument.check_celery(app, 0.5)


def test_health_check_follows_its_setting() -> None:
    """METRICS_CELERY_HEALTH_CHECK=False leaves the `celery` check out of /metrics/health/."""

    def names() -> set[str]:
        return {check.name for check in health.checks_for(readiness=False)}

    try:
        with override_settings(METRICS_CELERY_HEALTH_CHECK=False):
            instrument._register_health_check(APP)
            assert "celery" not in names()
        instrument._register_health_check(APP)
        assert "celery" in names()
        # Readiness never waits on workers.
        assert "celery" not in {check.name for check in health.checks_for(readiness=True)}
    finally:
        health.unregister_check(instrument.HEALTH_CHECK_NAME)


# --- real workers ---


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

    def get(self, name: str, **labels: str) -> float:
        """Return a sample's value, 0.0 when absent."""
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
        "add success": s.get("celery_tasks_total", task="shop.tasks.add", status="success"),
        "fail failure": s.get("celery_tasks_total", task="shop.tasks.fail", status="failure"),
        "flaky retry": s.get("celery_tasks_total", task="shop.tasks.flaky", status="retry"),
        "flaky success": s.get("celery_tasks_total", task="shop.tasks.flaky", status="success"),
        "sleep revoked": s.get("celery_tasks_total", task="shop.tasks.sleep", status="revoked"),
        "sleep success": s.get("celery_tasks_total", task="shop.tasks.sleep", status="success"),
        "sleep failure": s.get("celery_tasks_total", task="shop.tasks.sleep", status="failure"),
        "other rejected": s.get("celery_tasks_total", task="other", status="rejected"),
        "manual success": s.get("celery_tasks_total", task="send_email", status="success"),
        "manual failure": s.get("celery_tasks_total", task="send_email", status="failure"),
        "add runs": s.get("celery_task_duration_seconds_count", task="shop.tasks.add"),
        "fail runs": s.get("celery_task_duration_seconds_count", task="shop.tasks.fail"),
        "flaky runs": s.get("celery_task_duration_seconds_count", task="shop.tasks.flaky"),
        "sleep runs": s.get("celery_task_duration_seconds_count", task="shop.tasks.sleep"),
        "manual runs": s.get("celery_task_duration_seconds_count", task="send_email"),
        "add waits": s.get("celery_task_queue_wait_seconds_count", task="shop.tasks.add"),
        "flaky waits": s.get("celery_task_queue_wait_seconds_count", task="shop.tasks.flaky"),
        "manual waits": s.get("celery_task_queue_wait_seconds_count", task="shop.tasks.send_email"),
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
        instrument.check_celery(redis_stack.app, 2.0)


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
            assert time.time() - 30 < heartbeat <= time.time() + 1

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
        assert after.get("celery_worker_up", worker=stack.worker.node) == 0
        assert after.get("celery_worker_pool_processes", worker=stack.worker.node) == 0
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


def test_no_private_store_needed_when_the_port_is_off() -> None:
    """Without a metrics port the bootstep is left out: no server, no private store."""
    from celery import bootsteps

    step_class = instrument._metrics_step()
    assert issubclass(step_class, bootsteps.StartStopStep)
    with override_settings(METRICS_CELERY_WORKER_PORT=0):
        step = step_class(parent=object())
        assert step.include_if(object()) is False
