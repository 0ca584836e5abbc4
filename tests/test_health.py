"""Probes: liveness without dependencies, readiness and health with timeouts and hidden details."""

from __future__ import annotations

import os
import threading
import time
import uuid

import pytest
from celery import Celery
from django.db import connection
from django.db.migrations.recorder import MigrationRecorder
from django.test import Client, override_settings

from metrics import health
from metrics.health import HealthCheckError, register_check, unregister_check
from tests.celerystack import REDIS, REDIS_BROKER_DB
from tests.promstack import free_port

TOKEN = {"HTTP_X_METRICS_TOKEN": "test-token"}


@pytest.fixture
def anonymous() -> Client:
    """A caller who does not pass the /metrics/ rules."""
    return Client(REMOTE_ADDR="8.8.8.8")


@pytest.fixture
def registered():
    """Register checks for one test, removing them afterwards."""
    names: list[str] = []

    def add(name: str, function, **options) -> None:
        names.append(name)
        register_check(name, function, **options)

    yield add
    for name in names:
        unregister_check(name)


def test_liveness_needs_nothing(anonymous, registered) -> None:
    """Liveness is 200 even when every other check fails, and runs none of them."""

    def fail() -> None:
        raise AssertionError("liveness ran a check")

    registered("broken", fail, readiness=True)
    response = anonymous.get("/metrics/liveness/")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


@pytest.mark.django_db
def test_readiness_checks_default_database_cache_and_migrations(anonymous) -> None:
    """Readiness looks at the default database, the default cache and migrations only."""
    response = anonymous.get("/metrics/readiness/")
    assert response.status_code == 200, response.content
    body = response.json()
    assert body["status"] == "ok"
    assert set(body["checks"]) == {"database:default", "cache:default", "migrations"}
    assert all(c["status"] == "ok" and c["latency_ms"] >= 0 for c in body["checks"].values())


@pytest.mark.django_db
def test_health_checks_every_alias(anonymous) -> None:
    """Health covers each database and cache alias (Redis included) and migrations."""
    response = anonymous.get("/metrics/health/")
    assert response.status_code == 200, response.content
    checks = response.json()["checks"]
    assert {"database:default", "cache:default", "cache:redis", "migrations"} <= set(checks)
    assert checks["cache:redis"]["status"] == "ok"


@pytest.mark.django_db
def test_failing_check_gives_503_and_details_only_to_allowed_callers(anonymous, registered) -> None:
    """Anonymous callers see statuses; token holders also see the error message."""

    def broker_down() -> None:
        raise ConnectionError("broker at amqp://guest:hunter22@rabbit:5672 refused the connection")

    registered("broker", broker_down, readiness=True)
    response = anonymous.get("/metrics/readiness/")
    assert response.status_code == 503
    body = response.json()
    assert body["status"] == "error"
    assert body["checks"]["broker"] == {
        "status": "error",
        "latency_ms": body["checks"]["broker"]["latency_ms"],
    }
    assert b"refused" not in response.content

    detailed = Client(REMOTE_ADDR="8.8.8.8").get("/metrics/readiness/", **TOKEN).json()
    error = detailed["checks"]["broker"]["error"]
    assert error.startswith("ConnectionError: broker at amqp://***@rabbit:5672 refused")
    assert "hunter22" not in error
    assert "Traceback" not in error


@pytest.mark.django_db
def test_checks_run_in_parallel_with_timeouts(anonymous, registered) -> None:
    """A hung check is reported as timeout after its own timeout; the others still answer."""
    registered("slow", lambda: time.sleep(2), timeout=0.2)
    registered("slow-too", lambda: time.sleep(2), timeout=0.3)
    started = time.monotonic()
    response = anonymous.get("/metrics/health/")
    elapsed = time.monotonic() - started
    assert elapsed < 0.9, elapsed  # in parallel: not 0.2 + 0.3 + the rest in sequence
    body = response.json()
    assert response.status_code == 503
    assert body["checks"]["slow"]["status"] == "timeout"
    assert body["checks"]["slow-too"]["status"] == "timeout"
    assert body["checks"]["database:default"]["status"] == "ok"


@pytest.mark.django_db
def test_non_critical_failure_is_degraded_not_down(anonymous, registered) -> None:
    """A failing non-critical check makes the status `degraded` with HTTP 200."""

    def fail() -> None:
        raise HealthCheckError("queue backlog")

    registered("backlog", fail, critical=False)
    response = anonymous.get("/metrics/health/")
    assert response.status_code == 200
    assert response.json()["status"] == "degraded"
    assert response.json()["checks"]["backlog"]["critical"] is False


@pytest.mark.django_db
def test_html_for_browsers(registered) -> None:
    """Accept: text/html gets a page; details shown to allowed callers, escaped."""

    def fail() -> None:
        raise HealthCheckError("<b>bad</b> thing")

    registered("shown", fail)
    response = Client(REMOTE_ADDR="8.8.8.8").get("/metrics/health/", HTTP_ACCEPT="text/html", **TOKEN)
    assert response.status_code == 503
    assert response["Content-Type"].startswith("text/html")
    html = response.content.decode()
    assert "<h1>Health:" in html
    assert "&lt;b&gt;bad&lt;/b&gt; thing" in html
    anonymous_html = Client(REMOTE_ADDR="8.8.8.8").get("/metrics/health/", HTTP_ACCEPT="text/html")
    assert "bad" not in anonymous_html.content.decode()


def test_cache_check_fails_on_unreachable_redis() -> None:
    """A cache that refuses connections is an error naming the refusal, reported within the timeout."""
    caches = {
        "default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"},
        "gone": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": "redis://127.0.0.1:1/0",
        },
    }
    with override_settings(CACHES=caches):
        checks = [c for c in health.builtin_checks(readiness=False) if c.name == "cache:gone"]
        report = health.run_checks(checks, default_timeout=0.8)
    # Port 1 refuses at once: the check reports the refusal itself, well before its timeout.
    (result,) = report.results
    assert (result.status, result.critical) == ("error", True)
    assert result.error is not None and result.error.startswith("ConnectionError: ")
    assert "Connection refused" in result.error
    assert result.latency < 0.8
    assert report.http_status == 503


def test_disk_check_of_the_multiproc_dir(tmp_path) -> None:
    """With PROMETHEUS_MULTIPROC_DIR set, its free space is checked against the minimum."""
    with override_settings(PROMETHEUS_MULTIPROC_DIR=str(tmp_path)):
        checks = {c.name: c for c in health.builtin_checks(readiness=False)}
        assert health.run_checks([checks["disk:multiproc"]]).status == "ok"
        assert "disk:multiproc" not in {c.name for c in health.builtin_checks(readiness=True)}
    with override_settings(PROMETHEUS_MULTIPROC_DIR=str(tmp_path), METRICS_HEALTH_MIN_FREE_MB=1e12):
        checks = {c.name: c for c in health.builtin_checks(readiness=False)}
        result = health.run_checks([checks["disk:multiproc"]]).results[0]
    assert result.status == "error"
    assert "MB free" in (result.error or "")
    with override_settings(PROMETHEUS_MULTIPROC_DIR=str(tmp_path / "missing")):
        checks = {c.name: c for c in health.builtin_checks(readiness=False)}
        assert health.run_checks([checks["disk:multiproc"]]).status == "error"


@pytest.mark.django_db(transaction=True)
def test_unapplied_migrations_fail_readiness() -> None:
    """A migration missing from the database makes readiness 503, naming it for allowed callers."""
    recorder = MigrationRecorder(connection)
    health.forget_migrations()
    recorder.record_unapplied("sessions", "0001_initial")
    try:
        response = Client(REMOTE_ADDR="8.8.8.8").get("/metrics/readiness/", **TOKEN)
        assert response.status_code == 503
        migrations = response.json()["checks"]["migrations"]
        assert migrations["status"] == "error"
        assert "sessions.0001_initial" in migrations["error"]
    finally:
        recorder.record_applied("sessions", "0001_initial")
        health.forget_migrations()
    assert Client().get("/metrics/readiness/").status_code == 200


def test_register_check_replaces_by_name(registered) -> None:
    """Registering a name again replaces the check; unregistering removes it."""
    registered("dup", lambda: None)
    registered("dup", lambda: None, timeout=0.1)
    assert [c.timeout for c in health.registered_checks() if c.name == "dup"] == [0.1]
    unregister_check("dup")
    assert "dup" not in {c.name for c in health.registered_checks()}


def test_dummy_cache_is_not_a_failure() -> None:
    """A site configured with DummyCache (no caching on purpose) is healthy."""
    caches = {"default": {"BACKEND": "django.core.cache.backends.dummy.DummyCache"}}
    with override_settings(CACHES=caches):
        checks = [c for c in health.builtin_checks(readiness=True) if c.name == "cache:default"]
        assert health.run_checks(checks).status == "ok"


@pytest.mark.django_db
def test_html_without_site_templates() -> None:
    """A site without template engines still gets the HTML page (the packaged template)."""
    with override_settings(TEMPLATES=[]):
        response = Client().get("/metrics/liveness/", HTTP_ACCEPT="text/html")
        assert response.status_code == 200
        page = Client().get("/metrics/readiness/", HTTP_ACCEPT="text/html")
    assert page.status_code == 200
    assert "<h1>Readiness: <span" in page.content.decode()


def test_a_check_returning_a_dict_shows_it_to_authorised_callers_only() -> None:
    """What a check returns as a dict (a database's pool state) is shown only with details."""
    from metrics.health import Check, run_checks

    pool = {"size": 2, "idle": 1}
    report = run_checks([Check("database:pooled", lambda: {"pool": pool})])
    assert report.as_dict(details=True)["checks"]["database:pooled"]["info"] == {"pool": pool}
    assert "info" not in report.as_dict(details=False)["checks"]["database:pooled"]


@pytest.mark.django_db
def test_database_check_reports_no_pool_without_one() -> None:
    """An unpooled database's check returns nothing extra."""
    from metrics.health import check_database

    assert check_database("default") is None


def test_check_results_are_exported_as_gauges() -> None:
    """Each check's last result is django_health_check_status{check}: 1 passing, 0 failing."""
    from metrics import REGISTRY
    from metrics.health import Check, run_checks

    def broken() -> None:
        raise RuntimeError("down")

    run_checks([Check("gauge-ok", lambda: None), Check("gauge-broken", broken)])
    assert REGISTRY.get_sample_value("django_health_check_status", {"check": "gauge-ok"}) == 1.0
    assert REGISTRY.get_sample_value("django_health_check_status", {"check": "gauge-broken"}) == 0.0


@pytest.mark.django_db
def test_unapplied_migrations_are_counted_in_a_gauge() -> None:
    """django_migrations_unapplied{database} follows the migrations check, also at scrape."""
    from django.db.migrations.recorder import MigrationRecorder

    from metrics import REGISTRY
    from metrics.health import HealthCheckError, check_migrations, forget_migrations

    def unapplied() -> float | None:
        return REGISTRY.get_sample_value("django_migrations_unapplied", {"database": "default"})

    forget_migrations()
    MigrationRecorder.Migration.objects.filter(app="metrics").delete()  # rolled back after the test
    with pytest.raises(HealthCheckError, match="unapplied"):
        check_migrations("default")
    assert unapplied() == 1.0
    MigrationRecorder(connection_for_default()).record_applied("metrics", "0001_initial")
    forget_migrations()
    assert unapplied() == 0.0  # a scrape (get_sample_value collects) ran the check again


def connection_for_default():
    from django.db import connections

    return connections["default"]


# --- the check pool ---


def _thread_names() -> set[str]:
    return {t.name for t in threading.enumerate() if t.name.startswith("metrics-health-")}


def test_checks_reuse_a_bounded_set_of_threads(registered) -> None:
    """Many runs start no thread per run: the pool's threads are made once and reused."""
    registered("quick", lambda: None)
    registered("quick-too", lambda: None)
    checks = [c for c in health.registered_checks() if c.name.startswith("quick")]
    health.run_checks(checks)
    before = threading.active_count()
    seen: set[str] = set()
    for _ in range(200):
        report = health.run_checks(checks)
        assert report.status == "ok"
        seen |= _thread_names()
    assert threading.active_count() <= before + health.POOL_SIZE
    assert len(seen) <= health.POOL_SIZE


def test_a_hung_check_holds_one_thread_not_one_per_probe(registered) -> None:
    """A check that never returns is reported as timeout on every probe and runs only once."""
    release = threading.Event()
    calls: list[int] = []

    def hang() -> None:
        calls.append(1)
        release.wait(10)

    registered("hangs", hang, timeout=0.05)
    registered("fine", lambda: None, timeout=0.5)
    checks = [c for c in health.registered_checks() if c.name in {"hangs", "fine"}]
    try:
        for _ in range(3 * health.POOL_SIZE):
            results = {r.name: r for r in health.run_checks(checks).results}
            assert results["hangs"].status == "timeout"
            assert results["hangs"].error == "no answer within 0.05 s"
            assert results["fine"].status == "ok"
        assert len(calls) == 1
    finally:
        release.set()


def test_a_check_that_cannot_start_in_time_is_a_timeout() -> None:
    """With every thread busy, a check that does not start within its timeout is a timeout."""
    pool = health.CheckPool(size=1)
    release = threading.Event()
    busy = health.Check("busy", lambda: release.wait(10), timeout=5)
    queued = health.Check("queued", lambda: None, timeout=0.1)
    original = health._pool
    health._pool = pool
    try:
        pool.submit(busy, time.monotonic() + 5)
        started = time.monotonic()
        (result,) = health.run_checks([queued]).results
        assert time.monotonic() - started < 0.5
        assert result.status == "timeout"
        assert result.error == "not started within 0.1 s: every health check thread was busy"
        release.set()
        # Dropped when its turn came, nobody waiting for it any more: the pool is free again.
        time.sleep(0.2)
        assert health.run_checks([queued]).status == "ok"
        assert pool.thread_count == 1
    finally:
        release.set()
        health._pool = original


def test_the_queue_is_bounded() -> None:
    """Beyond `max_pending` waiting runs, a check is refused at once and reported as timeout."""
    pool = health.CheckPool(size=1, max_pending=2)
    release = threading.Event()
    deadline = time.monotonic() + 5
    try:
        pool.submit(health.Check("running", lambda: release.wait(10)), deadline)
        time.sleep(0.1)
        waiting = [pool.submit(health.Check(f"waiting-{i}", lambda: None), deadline) for i in range(2)]
        refused = pool.submit(health.Check("refused", lambda: None), deadline)
        assert refused.done.is_set() and refused.result is None and not refused.started
        assert not any(run.done.is_set() for run in waiting)
    finally:
        release.set()


def test_a_forked_child_gets_a_pool_of_its_own(registered) -> None:
    """After fork, checks run in the child (the parent's threads do not exist there)."""
    registered("forked", lambda: None)
    checks = [c for c in health.registered_checks() if c.name == "forked"]
    assert health.run_checks(checks).status == "ok"  # the parent's pool has threads now
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child reports through its exit status
        ok = False
        try:
            ok = (
                health.run_checks(checks, default_timeout=2).status == "ok" and health._pool.thread_count == 1
            )
        finally:
            os._exit(0 if ok else 1)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0


# --- the Celery check (registered by metrics.instrument.celery.install) ---


def test_health_check_fails_fast_on_an_unreachable_broker() -> None:
    """An unreachable broker fails the check within its timeout."""
    port = free_port()
    app = Celery("unreachable", broker=f"redis://127.0.0.1:{port}/0", set_as_current=False)
    started = time.monotonic()
    report = health.run_checks(
        [health.Check("celery", lambda: health.check_celery(app, 0.8), critical=False)],
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
        health.check_celery(app, 0.5)
