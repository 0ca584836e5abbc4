"""Celery task metrics from Celery's signals, recorded in the process that runs the task.

What is recorded (label `task` is the registered task name; any name the app does not
register, such as an unknown task sent with `send_task()`, becomes `other`):

- `celery_tasks_total{task,status}`: one per outcome. `success`, `failure`, `retry` (each
  retry requested, so a task retried twice then successful counts 2 `retry` and 1 `success`),
  `rejected` (the task raised `Reject`, or the worker refused an unknown or invalid message),
  `ignored` (the task raised `Ignore`, e.g. `Task.replace()`), `revoked` (discarded before it
  ran, expired, or terminated while running).
- `celery_task_duration_seconds{task}`: the run time of every run of a task body (a retried
  task has one observation per attempt), success or not.
- `celery_tasks_in_progress{task}`: task bodies running now (gauge, `livesum`: a pool process
  killed mid-task takes its runs with it).
- `celery_task_queue_wait_seconds{task}`: from publish (stamped in the message headers by
  `before_task_publish`) or from the ETA/countdown when later, to the start of the run.
  Publisher and worker clocks are compared: negative waits (clock skew) count as 0. Messages
  published without the stamp (by a process without this module) are not observed.
- `celery_tasks_published_total{task,queue}`: messages this process handed to the broker
  (counted at `after_task_publish`, so a publish that raised is not counted); `queue` is the
  target queue (`other` when only an exchange and routing key were given).
- `celery_worker_consuming{worker,queue}`: 1 for each queue a worker's main process consumes
  (`livesum`), so a queue without a live worker shows on any broker, Redis included.
- `celery_worker_up{worker}`: 1 while a worker's main process is consuming (`livesum`: gone
  when the process is), `celery_worker_last_heartbeat_timestamp_seconds{worker}` (`max`, kept
  after the worker died, so `time() - ...` grows), `celery_worker_pool_processes{worker}`
  (prefork children alive, `livesum`).

The body's own outcome is recorded once, at `task_postrun`, from the state it reports.
`task_failure` and `task_retry` count only when sent outside a run of this process: by the
worker's main process for hard time limits, lost pool processes, cancelled runs (a failure is
counted once per task id even when Celery reports it twice). A run interrupted inside its body
(the pool's SIGTERM) has no state at `task_postrun`: it is neither timed nor counted there.
Counts written by prefork children land in the multiprocess store, so every child is counted
exactly once.

Manual recording (the spec's example) keeps working and is never doubled: a task whose code
names `celery_tasks_total` (or `celery_task_duration_seconds`) records that metric itself, so
the automatic record of that metric is skipped for it. The check reads the task function's code
once per task; a task that records through a helper function it calls is not detected (set
`METRICS_CELERY_ENABLED = False` and record by hand, or remove the manual code).
"""

from __future__ import annotations

import inspect
import logging
import threading
import time
import weakref
from dataclasses import dataclass
from datetime import datetime
from types import CodeType
from typing import Any

from metrics import celery_worker
from metrics.collectors import (
    OTHER,
    bounded_label,
    celery_task_duration_seconds,
    celery_task_queue_wait_seconds,
    celery_tasks_in_progress,
    celery_tasks_published_total,
    celery_tasks_total,
    celery_worker_consuming,
    celery_worker_last_heartbeat_timestamp_seconds,
    celery_worker_pool_processes,
    celery_worker_up,
)
from metrics.conf import app_settings

__all__ = ["install"]

logger = logging.getLogger("metrics")

SUCCESS = "success"
FAILURE = "failure"
RETRY = "retry"
REJECTED = "rejected"
IGNORED = "ignored"
REVOKED = "revoked"

# Message header carrying the publish time (seconds since the epoch, float).
PUBLISHED_HEADER = "metrics_published_at"
HEALTH_CHECK_NAME = "celery"


def active() -> bool:
    """Return True when task metrics are recorded (`METRICS_ENABLED` and `METRICS_CELERY_ENABLED`)."""
    return app_settings.ENABLED and app_settings.CELERY_ENABLED


# --- task labels and manual recording ---

_labels: dict[str, str] = {}


def task_label(app: Any, name: object) -> str:
    """Return `name` when `app` registers a task by that name, else `other`."""
    if not isinstance(name, str):
        return OTHER
    label = _labels.get(name)
    if label is not None:
        return label
    try:
        registered = name in app.tasks
    except Exception:
        registered = False
    if not registered:
        # Not cached: unknown names are unbounded, the cache must not be.
        return OTHER
    _labels[name] = name
    return name


def _code_names(code: CodeType) -> set[str]:
    names = set(code.co_names)
    for const in code.co_consts:
        if isinstance(const, CodeType):
            names |= _code_names(const)
    return names


@dataclass(frozen=True, slots=True)
class Manual:
    """Which metrics a task's own code records."""

    count: bool
    duration: bool


_manual: dict[str, Manual] = {}


def manual_recording(task: Any) -> Manual:
    """Return which of `celery_tasks_total` / `celery_task_duration_seconds` the task's code names."""
    name = getattr(task, "name", None)
    known = _manual.get(name) if isinstance(name, str) else None
    if known is not None:
        return known
    run = getattr(task, "run", None)
    function = inspect.unwrap(getattr(run, "__func__", run)) if run is not None else None
    code = getattr(function, "__code__", None)
    names = _code_names(code) if isinstance(code, CodeType) else set()
    manual = Manual("celery_tasks_total" in names, "celery_task_duration_seconds" in names)
    if isinstance(name, str):
        _manual[name] = manual
    if manual.count or manual.duration:
        logger.info(
            "metrics: task %s records %s itself; the automatic record is skipped for it",
            name,
            " and ".join(
                n
                for n, on in (
                    ("celery_tasks_total", manual.count),
                    ("celery_task_duration_seconds", manual.duration),
                )
                if on
            ),
        )
    return manual


# --- task signals ---


@dataclass(slots=True)
class _Run:
    label: str
    started: float
    count: bool
    time: bool


# Runs of task bodies in this process, by task id (the prefork child, or the solo/threads worker).
# A list: an eager retry (`task.apply()`) runs again, with the same id, inside the first run.
_runs: dict[str, list[_Run]] = {}

_STATUS_BY_STATE = {
    "SUCCESS": SUCCESS,
    "FAILURE": FAILURE,
    "RETRY": RETRY,
    "REJECTED": REJECTED,
    "IGNORED": IGNORED,
}


def _timestamp(value: object) -> float | None:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if isinstance(value, datetime):
        return value.timestamp()
    if isinstance(value, str):
        try:
            return datetime.fromisoformat(value).timestamp()
        except ValueError:
            return None
    return None


def queue_wait(request: Any, now: float | None = None) -> float | None:
    """Return the seconds a run waited: from publish, or the ETA when later, to `now`."""
    published = _timestamp(getattr(request, PUBLISHED_HEADER, None))
    if published is None:
        return None
    eta = _timestamp(getattr(request, "eta", None))
    since = published if eta is None else max(published, eta)
    return max(0.0, (time.time() if now is None else now) - since)


def published_queue(exchange: object, routing_key: object, declare: object) -> str:
    """Return the queue a task message goes to, as `before_task_publish` describes it, else `other`.

    Celery puts the target queue in `declare`; without it (a message sent to an exchange and a
    routing key only), the default exchange (`""`) still routes by queue name.
    """
    from kombu.entity import Queue

    for entity in declare if isinstance(declare, (list, tuple)) else ():
        if isinstance(entity, Queue) and entity.name:
            return str(entity.name)
    if not exchange and isinstance(routing_key, str) and routing_key:
        return routing_key
    return OTHER


def published_task_label(name: object) -> str:
    """Return `name` when an app of this process registers that task, else `other`."""
    for app in [*_apps, site_app()]:
        if app is not None and task_label(app, name) != OTHER:
            return str(name)
    return OTHER


# The message being published in this thread, between `before_task_publish` and
# `after_task_publish` (sent in the same call, only when the broker took the message).
_publishing = threading.local()


def _on_before_publish(
    sender: Any = None,
    headers: dict[str, Any] | None = None,
    exchange: object = None,
    routing_key: object = None,
    declare: object = None,
    **kwargs: Any,
) -> None:
    if headers is None or not active():
        _publishing.message = None
        return
    headers[PUBLISHED_HEADER] = time.time()
    _publishing.message = (headers, published_queue(exchange, routing_key, declare))


def _on_after_publish(sender: Any = None, headers: dict[str, Any] | None = None, **kwargs: Any) -> None:
    message = getattr(_publishing, "message", None)
    # The same headers object: the message announced before, now in the broker's hands.
    if message is None or message[0] is not headers:
        return
    _publishing.message = None
    queue = bounded_label("celery_tasks_published_total", "queue", message[1])
    celery_tasks_published_total.labels(published_task_label(sender), queue).inc()


def _on_prerun(sender: Any = None, task_id: str | None = None, task: Any = None, **kwargs: Any) -> None:
    if task_id is None or not active():
        return
    task = task if task is not None else sender
    label = task_label(task.app, task.name)
    manual = manual_recording(task)
    celery_tasks_in_progress.labels(label).inc()
    wait = queue_wait(task.request)
    if wait is not None:
        celery_task_queue_wait_seconds.labels(label).observe(wait)
    _runs.setdefault(task_id, []).append(
        _Run(label, time.perf_counter(), not manual.count, not manual.duration)
    )


def _on_postrun(
    sender: Any = None, task_id: str | None = None, state: str | None = None, **kwargs: Any
) -> None:
    if task_id is None:
        return
    stack = _runs.get(task_id)
    if not stack:
        return
    run = stack.pop()
    if not stack:
        del _runs[task_id]
    elapsed = time.perf_counter() - run.started
    celery_tasks_in_progress.labels(run.label).dec()
    status = _STATUS_BY_STATE.get(state or "")
    if status is None:
        # No state: the body was interrupted (SystemExit from the pool's SIGTERM at a hard time
        # limit or `terminate=True`). The main process counts that outcome; the run has no
        # meaningful duration.
        return
    if run.time:
        celery_task_duration_seconds.labels(run.label).observe(elapsed)
    if run.count:
        celery_tasks_total.labels(run.label, status).inc()


def _count(task: Any, status: str) -> None:
    app = getattr(task, "app", None)
    celery_tasks_total.labels(task_label(app, getattr(task, "name", None)), status).inc()


# Failures the main process reported lately, by task id: Celery 5.7 sends `task_failure` twice
# for one hard time limit (from the timeout handler and from the failure handler).
_main_failures: dict[str, float] = {}
MAIN_FAILURE_WINDOW = 10.0


def _first_main_failure(task_id: str | None, now: float) -> bool:
    if task_id is None:
        return True
    if len(_main_failures) > 256:
        for known, at in list(_main_failures.items()):
            if now - at > MAIN_FAILURE_WINDOW:
                del _main_failures[known]
    last = _main_failures.get(task_id)
    _main_failures[task_id] = now
    return last is None or now - last > MAIN_FAILURE_WINDOW


def _on_failure(sender: Any = None, task_id: str | None = None, exception: Any = None, **kwargs: Any) -> None:
    if not active() or task_id in _runs:
        # A run of this process: task_postrun records it, once.
        return
    from celery.exceptions import Reject

    if isinstance(exception, Reject):
        # Counted as `rejected` where the body ran (Celery 5.5+ also reports it as a failure).
        return
    if _first_main_failure(task_id, time.monotonic()):
        _count(sender, FAILURE)


def _on_retry(sender: Any = None, request: Any = None, **kwargs: Any) -> None:
    if not active() or getattr(request, "id", None) in _runs:
        return
    _count(sender, RETRY)


def _on_revoked(sender: Any = None, **kwargs: Any) -> None:
    if active():
        _count(sender, REVOKED)


def _on_rejected(sender: Any = None, message: Any = None, **kwargs: Any) -> None:
    """Count a message the worker refused (unknown format, invalid task)."""
    if not active():
        return
    headers = getattr(message, "headers", None) or {}
    name = headers.get("task") if isinstance(headers, dict) else None
    celery_tasks_total.labels(task_label(getattr(sender, "app", None), name), REJECTED).inc()


def _on_unknown(sender: Any = None, **kwargs: Any) -> None:
    """Count a message naming a task the worker does not know (always `other`)."""
    if active():
        celery_tasks_total.labels(OTHER, REJECTED).inc()


# --- worker liveness ---

_worker_name: str | None = None
# The worker's consumer (the main process), whose task consumer says which queues it reads.
_consumer: Any = None
_consuming: set[str] = set()


def _refresh_consuming(stopping: bool = False) -> None:
    """Set `celery_worker_consuming` to 1 for the queues consumed now, 0 for those left since.

    Called at start, at every heartbeat (queues added or cancelled by `celery control
    add_consumer`/`cancel_consumer` show within one) and at shutdown.
    """
    global _consuming
    task_consumer = getattr(_consumer, "task_consumer", None)
    if _worker_name is None or (task_consumer is None and not stopping):
        # Between a broker connection lost and the next one there is no task consumer: keep
        # the last known queues rather than report none.
        return
    names: set[str] = set()
    if not stopping:
        names = {q.name for q in getattr(task_consumer, "queues", None) or () if getattr(q, "name", None)}
    for queue in _consuming - names:
        celery_worker_consuming.labels(_worker_name, queue).set(0)
    for queue in names - _consuming:
        celery_worker_consuming.labels(_worker_name, queue).set(1)
    _consuming = names


def _on_worker_init(sender: Any = None, **kwargs: Any) -> None:
    global _worker_name
    _worker_name = getattr(sender, "hostname", None) or _worker_name


def _on_worker_ready(sender: Any = None, **kwargs: Any) -> None:
    global _worker_name, _consumer
    _worker_name = getattr(sender, "hostname", None) or _worker_name or "unknown"
    _consumer = sender
    if active():
        celery_worker_up.labels(_worker_name).set(1)
        celery_worker_last_heartbeat_timestamp_seconds.labels(_worker_name).set(time.time())
        _refresh_consuming()


def _on_heartbeat(sender: Any = None, **kwargs: Any) -> None:
    name = _worker_name or getattr(getattr(sender, "eventer", None), "hostname", None)
    if name and active():
        celery_worker_last_heartbeat_timestamp_seconds.labels(name).set(time.time())
        _refresh_consuming()


def _on_worker_shutdown(sender: Any = None, **kwargs: Any) -> None:
    if _worker_name and active():
        celery_worker_up.labels(_worker_name).set(0)
        _refresh_consuming(stopping=True)


def _on_process_init(sender: Any = None, **kwargs: Any) -> None:
    # A pool process forked after the metrics server started inherited its socket.
    celery_worker.close_inherited_server()
    if active():
        celery_worker_pool_processes.labels(str(sender or _worker_name or "unknown")).set(1)


# --- health ---


def _register_health_check(app: Any) -> None:
    from metrics import health

    if app_settings.CELERY_HEALTH_CHECK and app_settings.ENABLED:
        # Not critical: workers or broker down make the site degraded, not unready for web traffic.
        health.register_check(HEALTH_CHECK_NAME, lambda: health.check_celery(app), critical=False)
    else:
        health.unregister_check(HEALTH_CHECK_NAME)


# --- wiring ---


def site_app() -> Any:
    """Return the site's Celery app: the current one if set, else the last one created, or None."""
    from celery import _state

    # Celery creates a fallback app named `default` when code asks for one before any exists.
    candidates = [_state._tls.current_app, _state.default_app, *reversed(list(_state._get_active_apps()))]
    for app in candidates:
        if app is not None and app.main != "default":
            return app
    return None


_lock = threading.Lock()
_connected = False
_apps: weakref.WeakSet[Any] = weakref.WeakSet()


def _connect_signals() -> None:
    from celery import signals

    receivers = [
        (signals.before_task_publish, _on_before_publish),
        (signals.after_task_publish, _on_after_publish),
        (signals.task_prerun, _on_prerun),
        (signals.task_postrun, _on_postrun),
        (signals.task_failure, _on_failure),
        (signals.task_retry, _on_retry),
        (signals.task_revoked, _on_revoked),
        (signals.task_rejected, _on_rejected),
        (signals.task_unknown, _on_unknown),
        (signals.worker_init, _on_worker_init),
        (signals.worker_ready, _on_worker_ready),
        (signals.heartbeat_sent, _on_heartbeat),
        (signals.worker_shutdown, _on_worker_shutdown),
        (signals.worker_process_init, _on_process_init),
    ]
    for signal, receiver in receivers:
        signal.connect(receiver, weak=False, dispatch_uid=f"metrics.celery.{receiver.__name__}")


def install(app: Any = None) -> bool:
    """Record Celery task metrics automatically; return False when Celery is not installed.

    Connect the signal receivers (once per process), and for `app` (default: the site's
    current Celery app) add the worker options `--metrics-port`/`--metrics-address` and the
    bootstep serving the metrics port (`metrics.celery_worker`), and the `celery` health check
    (`metrics.health.check_celery`); the first app installed also gets its broker backlog read
    at every scrape (`metrics.instrument.celery_queues`). Call it from the module that creates
    the Celery app (`server/celery.py`) so the options exist when Celery parses the worker's
    command line; calling it again does nothing. Nothing slow: no connection, no thread, no
    server here.
    """
    global _connected
    try:
        import celery  # noqa: F401
    except ImportError:
        return False
    with _lock:
        if not _connected:
            _connect_signals()
            _connected = True
        if app is None:
            app = site_app()
        if app is None or app in _apps:
            return True
        _apps.add(app)
        celery_worker.add_worker_options(app)
    from metrics.instrument import celery_queues

    celery_queues.install(app, active)
    _register_health_check(app)
    return True
