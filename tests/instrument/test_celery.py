"""Celery task metrics from Celery's signals, in this process: `Task.apply()` runs Celery's own tracer.

The same signals a worker sends; real workers are started by tests/e2e/test_celery.py.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time
import uuid
from collections.abc import Iterator
from datetime import datetime, timezone
from typing import Any

import pytest
from celery import Celery
from celery.app.task import Context
from celery.exceptions import Ignore, Reject
from django.test import override_settings

from metrics import health
from metrics.collectors import celery_task_duration_seconds, celery_tasks_total
from metrics.core import REGISTRY
from metrics.instrument import celery as instrument

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


def test_outcomes_are_counted_once_with_run_time(sample, sample_or_zero) -> None:
    """Success, failure, retry, ignored and rejected runs each count once; every run is timed."""
    increments = {
        (ok, "success"): 2,
        (broken, "failure"): 1,
        (retried, "retry"): 2,
        (retried, "success"): 1,
        (ignored, "ignored"): 1,
        (rejected, "rejected"): 1,
        (rejected, "failure"): 0,
    }
    before = {(t, s): sample("celery_tasks_total", task=name(t), status=s) for t, s in increments}
    runs = {
        t: sample_or_zero("celery_task_duration_seconds_count", task=name(t)) for t in (ok, broken, retried)
    }
    ok.apply()
    ok.apply()
    broken.apply()
    retried.apply(args=(2,))
    ignored.apply()
    rejected.apply()
    after = {key: sample("celery_tasks_total", task=name(key[0]), status=key[1]) for key in before}
    # A series that does not move stays as it was: one never counted stays absent.
    assert after == {
        key: before[key] if n == 0 else (before[key] or 0.0) + n for key, n in increments.items()
    }
    assert sample("celery_task_duration_seconds_count", task=name(ok)) == runs[ok] + 2
    assert sample("celery_task_duration_seconds_count", task=name(broken)) == runs[broken] + 1
    # One observation per attempt: the two retried runs and the final one.
    assert sample("celery_task_duration_seconds_count", task=name(retried)) == runs[retried] + 3
    for task in (ok, broken, retried, ignored, rejected):
        assert sample("celery_tasks_in_progress", task=name(task)) == 0


def test_in_progress_while_the_body_runs(sample) -> None:
    """The in-progress gauge is 1 for the task while its body runs, 0 after."""
    seen: list[float | None] = []

    @APP.task(name="tests.instrument.test_celery.observe_in_progress")
    def observe() -> None:
        seen.append(
            sample("celery_tasks_in_progress", task="tests.instrument.test_celery.observe_in_progress")
        )

    observe.apply()
    assert seen == [1.0]
    assert sample("celery_tasks_in_progress", task="tests.instrument.test_celery.observe_in_progress") == 0


def test_manual_recording_is_not_doubled(sample, sample_or_zero) -> None:
    """A task recording by hand as the spec shows is counted once, under its own labels."""
    auto = name(manual)
    before = {
        "manual_success": sample_or_zero("celery_tasks_total", task="send_email", status="success"),
        "manual_failure": sample_or_zero("celery_tasks_total", task="send_email", status="failure"),
        "manual_runs": sample_or_zero("celery_task_duration_seconds_count", task="send_email"),
        "wait": sample_or_zero("celery_task_queue_wait_seconds_count", task=auto),
    }
    manual.apply()
    manual.apply(args=(True,))
    assert sample("celery_tasks_total", task="send_email", status="success") == before["manual_success"] + 1
    assert sample("celery_tasks_total", task="send_email", status="failure") == before["manual_failure"] + 1
    assert sample("celery_task_duration_seconds_count", task="send_email") == before["manual_runs"] + 2
    # Nothing automatic under the registered name for the two metrics the task records itself.
    assert sample("celery_tasks_total", task=auto, status="success") is None
    assert sample("celery_tasks_total", task=auto, status="failure") is None
    assert sample("celery_task_duration_seconds_count", task=auto) is None
    assert instrument.manual_recording(manual) == instrument.Manual(count=True, duration=True)
    assert instrument.manual_recording(ok) == instrument.Manual(count=False, duration=False)


def test_switched_off_records_nothing(sample_or_zero) -> None:
    """METRICS_CELERY_ENABLED=False (or METRICS_ENABLED=False) records no task metric."""
    for setting in ("METRICS_CELERY_ENABLED", "METRICS_ENABLED"):
        before = sample_or_zero("celery_tasks_total", task=name(ok), status="success")
        with override_settings(**{setting: False}):
            ok.apply()
            assert sample_or_zero("celery_tasks_total", task=name(ok), status="success") == before
        ok.apply()
        assert sample_or_zero("celery_tasks_total", task=name(ok), status="success") == before + 1


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


def test_tasks_count_again_after_clear() -> None:
    """After `clear()` on the task families, the next runs are counted and timed in fresh series."""
    ok.apply()
    celery_tasks_total.clear()
    celery_task_duration_seconds.clear()
    assert REGISTRY.get_sample_value("celery_tasks_total", {"task": name(ok), "status": "success"}) is None
    ok.apply()
    ok.apply()
    assert REGISTRY.get_sample_value("celery_tasks_total", {"task": name(ok), "status": "success"}) == 2
    assert REGISTRY.get_sample_value("celery_task_duration_seconds_count", {"task": name(ok)}) == 2
