"""Demo tasks: one succeeds, one fails, one retries, one sleeps (to revoke), one counts by hand.

Their metrics are recorded automatically (see docs/celery.md); `send_email` shows the spec's
manual recording, which keeps working and is not counted twice.
"""

import time

from celery import shared_task

from metrics.collectors import celery_task_duration_seconds, celery_tasks_total


@shared_task
def add(x: int, y: int) -> int:
    """Return x + y."""
    return x + y


class DemoError(Exception):
    """Raised on purpose by `fail`."""


@shared_task
def fail(message: str = "this task always fails") -> None:
    """Raise DemoError."""
    raise DemoError(message)


@shared_task(bind=True, max_retries=5)
def flaky(self, failures: int) -> int:  # type: ignore[no-untyped-def]
    """Retry `failures` times (at once), then succeed; return the number of attempts."""
    if self.request.retries < failures:
        raise self.retry(countdown=0)
    return self.request.retries + 1


@shared_task
def sleep(seconds: float) -> float:
    """Sleep `seconds` (a task to revoke or terminate while it waits)."""
    time.sleep(seconds)
    return seconds


@shared_task
def send_email(fail: bool = False) -> None:
    """Pretend to send an e-mail, recording its metrics by hand as the spec shows."""
    start_time = time.time()
    try:
        if fail:
            raise DemoError("SMTP server said no")
        celery_tasks_total.labels(task="send_email", status="success").inc()
    except Exception:
        celery_tasks_total.labels(task="send_email", status="failure").inc()
        raise
    finally:
        duration = time.time() - start_time
        celery_task_duration_seconds.labels(task="send_email").observe(duration)
