"""Celery broker backlog read at scrape time, publish counts and queue consumers, on real brokers.

In-process tests read Redis (127.0.0.1:6379, database 10) and RabbitMQ (guest/guest on 5672)
through `QueueCollector`; tests/e2e/test_celery_queues.py reads them on the example site's
`/metrics/`, with a prefork worker.
"""

from __future__ import annotations

import socket
import subprocess
import sys
import textwrap
import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from celery import Celery
from django.test import override_settings

from metrics.core import REGISTRY, CollectorRegistry
from metrics.instrument import celery as instrument
from metrics.instrument import celery_queues
from metrics.instrument.celery_queues import BrokerReader, QueueCollector, QueueReading, watched_queues
from tests.celerystack import (
    RABBITMQ,
    REDIS,
    flush_redis,
)
from tests.promstack import ROOT, free_port, wait_for

# Database of this module alone (tests/celerystack.py names the others).
REDIS_DB = 10
BROKERS = {"redis": f"{REDIS}/{REDIS_DB}", "rabbitmq": RABBITMQ}


def errors() -> float:
    """Return `celery_queue_length_errors_total` in this process."""
    return REGISTRY.get_sample_value("celery_queue_length_errors_total") or 0.0


def readings(collector: QueueCollector) -> dict[tuple[str, str], float]:
    """Return the samples one collection yields, by (name, queue)."""
    return {
        (family.name, sample.labels["queue"]): sample.value
        for family in collector.collect()
        for sample in family.samples
    }


def new_queue() -> str:
    """Return a queue name no other test uses."""
    return f"metrics-backlog-{uuid.uuid4().hex[:10]}"


_made: list[Celery | QueueCollector] = []


def broker_app(url: str, queues: list[str] | None = None) -> Celery:
    """Return an app on `url` whose default queue is the first of `queues` (closed after the test)."""
    app = Celery(f"queues-{uuid.uuid4().hex[:6]}", broker=url, set_as_current=False)
    app.conf.broker_connection_retry_on_startup = False
    if queues:
        app.conf.task_default_queue = queues[0]
    _made.append(app)
    return app


def collector_for(app: Celery) -> QueueCollector:
    """Return a collector of `app`'s queues whose connection is closed after the test."""
    collector = QueueCollector(app, instrument.active)
    _made.append(collector)
    return collector


def delete_queues(app: Celery, *queues: str) -> None:
    """Remove `queues` from the broker (Redis lists, RabbitMQ queues)."""
    with app.connection_for_write() as connection:
        channel = connection.default_channel
        for queue in queues:
            channel.queue_delete(queue)


@pytest.fixture(autouse=True)
def _without_the_installed_collector() -> Iterator[None]:
    """Take the process's own queue collector (installed by other tests' Celery app) off the
    default registry while these tests count errors and reads of collectors of their own."""
    from metrics.instrument import celery_queues

    installed = celery_queues._collector
    if installed is not None:
        REGISTRY.unregister(installed)
    yield
    if installed is not None:
        REGISTRY.register(installed)


@pytest.fixture(autouse=True)
def _clean() -> Iterator[None]:
    """Start with an empty Redis database; close every connection the test opened."""
    flush_redis(REDIS_DB)
    yield
    while _made:
        made = _made.pop()
        if isinstance(made, QueueCollector):
            if made._reader is not None:
                made._reader.close()
        else:
            made.close()
    flush_redis(REDIS_DB)


# --- which queues ---


def test_watched_queues_are_the_configured_ones() -> None:
    """Unset: task_queues, the default queue, dict task_routes' queues; the setting replaces them."""
    from kombu import Queue

    app = broker_app("memory://")
    app.conf.task_queues = [Queue("high"), Queue("low")]
    app.conf.task_default_queue = "low"
    app.conf.task_routes = {"shop.tasks.*": {"queue": "emails"}, "other.*": {"exchange": "x"}}
    assert watched_queues(app) == ("high", "low", "emails")
    with override_settings(METRICS_CELERY_QUEUES="a, b,a"):
        assert watched_queues(app) == ("a", "b")
    with override_settings(METRICS_CELERY_QUEUES=[]):
        assert watched_queues(app) == ()
        assert collector_for(app).collect() == []
    assert watched_queues(broker_app("memory://")) == ("celery",)


def test_nothing_is_read_when_celery_metrics_are_off() -> None:
    """METRICS_CELERY_ENABLED=False (or METRICS_ENABLED=False): no broker read, no series."""
    collector = collector_for(broker_app(f"redis://127.0.0.1:{free_port()}/0"))
    before = errors()
    for setting in ("METRICS_CELERY_ENABLED", "METRICS_ENABLED"):
        with override_settings(**{setting: False}):
            assert collector.collect() == []
    assert errors() == before


# --- reading real brokers ---


def test_redis_length_counts_every_priority_sub_queue() -> None:
    """Messages sent with and without a priority all count; absent lists read 0."""
    queue, empty = new_queue(), new_queue()
    app = broker_app(BROKERS["redis"], [queue])
    for i in range(4):
        app.send_task("shop.tasks.add", args=(i, 1), queue=queue)
    for priority in (1, 5, 9):
        app.send_task("shop.tasks.add", args=(0, 0), queue=queue, priority=priority)
    with override_settings(METRICS_CELERY_QUEUES=[queue, empty]):
        got = readings(collector_for(app))
    # Redis has no consumer count: the family is left empty.
    assert got == {("celery_queue_length", queue): 7.0, ("celery_queue_length", empty): 0.0}


def test_rabbitmq_length_and_consumers() -> None:
    """A passive declare gives ready messages and consumers; an unknown queue reads 0 and 0."""
    queue, missing = new_queue(), new_queue()
    app = broker_app(BROKERS["rabbitmq"], [queue])
    collector = collector_for(app)
    try:
        for i in range(5):
            app.send_task("shop.tasks.add", args=(i, 1), queue=queue)
        # The unknown queue first: AMQP closes the channel on a 404, the next queue still reads.
        with override_settings(METRICS_CELERY_QUEUES=[missing, queue]):
            wait_for(lambda: readings(collector).get(("celery_queue_length", queue)) == 5, 10, "5 ready")
            assert readings(collector) == {
                ("celery_queue_length", missing): 0.0,
                ("celery_queue_length", queue): 0.0 + 5,
                ("celery_queue_consumers", missing): 0.0,
                ("celery_queue_consumers", queue): 0.0,
            }
            with app.connection_for_read() as connection:
                from kombu import Consumer, Queue

                with Consumer(connection, [Queue(queue, no_declare=True)], prefetch_count=1):
                    wait_for(
                        lambda: readings(collector).get(("celery_queue_consumers", queue)) == 1,
                        10,
                        "one consumer",
                    )
    finally:
        delete_queues(app, queue)


@pytest.mark.parametrize("broker", ["redis", "rabbitmq"])
def test_one_connection_is_kept_across_scrapes(broker: str) -> None:
    """Successive scrapes reuse one connection; a connection the broker dropped is replaced once."""
    queue = new_queue()
    app = broker_app(BROKERS[broker], [queue])
    collector = collector_for(app)
    try:
        with override_settings(METRICS_CELERY_QUEUES=[queue]):
            assert readings(collector)[("celery_queue_length", queue)] == 0
            reader = collector._reader
            assert reader is not None
            connection = reader._connection
            assert connection is not None
            for _ in range(5):
                assert readings(collector)[("celery_queue_length", queue)] == 0
            assert reader._connection is connection
            # The broker (or a proxy) closes it while idle: the next scrape still reads, no error.
            if broker == "redis":
                import redis

                client_id = connection.default_channel.client.client_id()
                redis.Redis.from_url(BROKERS["redis"]).client_kill_filter(_id=client_id)
            else:
                connection.connection.sock.shutdown(socket.SHUT_RDWR)
            before = errors()
            assert readings(collector)[("celery_queue_length", queue)] == 0
            assert errors() == before
            if broker == "rabbitmq":
                # redis-py reconnects by itself; an AMQP connection is replaced.
                assert reader._connection is not connection
    finally:
        if collector._reader is not None:
            collector._reader.close()
        if broker == "rabbitmq":
            delete_queues(app, queue)


@pytest.mark.parametrize("scheme", ["redis", "amqp"])
def test_unreachable_broker_leaves_the_series_out_and_counts(scheme: str) -> None:
    """A closed port: every scrape returns at once without series and counts one error."""
    url = f"{scheme}://guest:guest@127.0.0.1:{free_port()}/0"
    collector = collector_for(broker_app(url, ["celery"]))
    before = errors()
    for _ in range(3):
        started = time.monotonic()
        assert collector.collect() == []
        assert time.monotonic() - started < 0.5
    assert errors() - before == 3


def test_silent_broker_is_bounded_by_the_timeout() -> None:
    """A broker that accepts the connection and never answers delays a scrape by the timeout only."""
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        url = f"redis://127.0.0.1:{silent.getsockname()[1]}/0"
        collector = collector_for(broker_app(url, ["celery"]))
        before = errors()
        with override_settings(METRICS_CELERY_QUEUE_TIMEOUT=0.3):
            for _ in range(3):
                started = time.monotonic()
                assert collector.collect() == []
                assert time.monotonic() - started < 0.3 + 0.2
    assert errors() - before == 3


def test_a_stuck_read_bounds_the_scrape_and_is_not_doubled(monkeypatch: pytest.MonkeyPatch) -> None:
    """A read that never returns (DNS, a hung socket) costs each scrape the timeout, and only one runs."""
    release = threading.Event()
    calls: list[tuple[str, ...]] = []

    def stuck(self: BrokerReader, queues: Any, timeout: float) -> dict[str, QueueReading]:
        calls.append(tuple(queues))
        release.wait(10)
        return {queue: QueueReading(3, None) for queue in queues}

    monkeypatch.setattr(BrokerReader, "read", stuck)
    collector = collector_for(broker_app("memory://", ["stuck"]))
    before = errors()
    with override_settings(METRICS_CELERY_QUEUE_TIMEOUT=0.2):
        for _ in range(3):
            started = time.monotonic()
            assert collector.collect() == []
            assert time.monotonic() - started < 0.2 + 0.15
        assert calls == [("stuck",)]
        assert errors() - before == 3
        release.set()
        pending = collector._pending
        assert pending is not None
        wait_for(pending.done, 5, "the stuck read to end")
        assert readings(collector) == {("celery_queue_length", "stuck"): 3.0}
        assert readings(collector) == {("celery_queue_length", "stuck"): 3.0}
    # A read that ended after its scrape gave up answers no later scrape: each read afresh.
    assert calls == [("stuck",), ("stuck",), ("stuck",)]


def test_families_are_encoded_with_ours() -> None:
    """Registered in a registry, the collector's families are in its exposition, typed gauges."""
    queue = new_queue()
    app = broker_app(BROKERS["redis"], [queue])
    for _ in range(2):
        app.send_task("shop.tasks.add", queue=queue)
    registry = CollectorRegistry()
    registry.register(collector_for(app))
    text = registry.encode().decode()
    assert "# TYPE celery_queue_length gauge" in text
    assert f'celery_queue_length{{queue="{queue}"}} 2.0' in text


FORK_SCRIPT = """
    import os, sys
    import django
    from django.conf import settings
    settings.configure(INSTALLED_APPS=["metrics"], METRICS_CELERY_QUEUES=[{queue!r}])
    django.setup()
    from celery import Celery
    from metrics.instrument.celery import active
    from metrics.instrument.celery_queues import QueueCollector

    app = Celery("fork", broker={url!r}, set_as_current=False)
    collector = QueueCollector(app, active)
    os.register_at_fork(after_in_child=collector.after_fork)

    def length():
        return [s.value for f in collector.collect() for s in f.samples if f.name == "celery_queue_length"]

    print("parent", length(), flush=True)
    parent_connection = collector._reader._connection
    pid = os.fork()
    if pid == 0:
        assert collector._reader._connection is None, "the child kept its parent's connection"
        print("child", length(), flush=True)
        os._exit(0)
    assert os.waitpid(pid, 0)[1] == 0
    print("parent", length(), collector._reader._connection is parent_connection, flush=True)
"""


@pytest.mark.parametrize("broker", ["redis", "rabbitmq"])
def test_a_forked_child_reads_on_a_connection_of_its_own(broker: str) -> None:
    """After fork the child opens its own connection and the parent's keeps working.

    Over AMQP a child speaking on the parent's socket (or closing it) would break the parent's
    connection: the parent's next read would fail.
    """
    queue = new_queue()
    app = broker_app(BROKERS[broker], [queue])
    for _ in range(3):
        app.send_task("shop.tasks.add", queue=queue)
    try:
        if broker == "rabbitmq":
            wait_for(lambda: celery_queues.read_queues(app, [queue])[queue].length == 3, 10, "3 messages")
        code = textwrap.dedent(FORK_SCRIPT.format(queue=queue, url=BROKERS[broker]))
        out = subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, cwd=ROOT, check=False
        )
        assert out.returncode == 0, out.stdout + out.stderr
        assert out.stdout.split("\n")[:3] == ["parent [3]", "child [3]", "parent [3] True"], out.stderr
    finally:
        if broker == "rabbitmq":
            delete_queues(app, queue)


# --- published tasks ---


def test_published_tasks_are_counted_by_task_and_queue() -> None:
    """Each task handed to the broker counts once, under its registered name and target queue."""
    app = Celery("publisher", broker="memory://", set_as_current=False)

    @app.task(name="tests.queues.job")
    def job() -> None:
        """Do nothing."""

    instrument.install(app)

    def published(task: str, queue: str) -> float:
        labels = {"task": task, "queue": queue}
        return REGISTRY.get_sample_value("celery_tasks_published_total", labels) or 0.0

    before = {
        ("tests.queues.job", "celery"): published("tests.queues.job", "celery"),
        ("tests.queues.job", "emails"): published("tests.queues.job", "emails"),
        ("other", "emails"): published("other", "emails"),
    }
    job.delay()
    job.apply_async()
    job.apply_async(queue="emails")
    app.send_task("not.registered.anywhere", queue="emails")
    job.apply()  # run here, not published
    after = {key: published(*key) for key in before}
    assert {key: after[key] - before[key] for key in before} == {
        ("tests.queues.job", "celery"): 2,
        ("tests.queues.job", "emails"): 1,
        ("other", "emails"): 1,
    }


def test_published_queue_names_the_target() -> None:
    """The declared queue, else the routing key on the default exchange, else `other`."""
    from kombu import Exchange, Queue

    assert instrument.published_queue("", "celery", [Queue("celery")]) == "celery"
    assert instrument.published_queue("tasks", "a.b", [Queue("emails", Exchange("tasks"), "a.#")]) == "emails"
    assert instrument.published_queue("", "direct-q", None) == "direct-q"
    assert instrument.published_queue("tasks", "a.b", None) == "other"
