"""The Celery broker's backlog, read at scrape time: what waits, not what workers do.

- `celery_queue_length{queue}`: messages ready in each watched queue. Redis: the lengths of the
  queue's list and of its priority sub-queues (kombu keeps one list per priority step; all are
  read, an absent list is 0). RabbitMQ and other transports: a passive declare's message count.
  Messages a worker has already taken (prefetched, running, unacknowledged) are not waiting and
  are not counted. A queue the broker does not know has 0.
- `celery_queue_consumers{queue}`: consumers RabbitMQ reports for the queue (the same passive
  declare). Redis has no notion of a consumer, so there it is left out; workers report the queues
  they consume themselves (`celery_worker_consuming`, recorded by `metrics.instrument.celery`).

The read runs in a thread of its own and the scrape waits for it at most
`METRICS_CELERY_QUEUE_TIMEOUT`: a broker that is down, slow or unresolvable (DNS has no timeout
of its own) never delays a scrape past that, and never fails it. Without an answer in time the
series are left out of the scrape (not a stale value: a backlog must not look frozen) and
`celery_queue_length_errors_total` counts it. One read at a time per process: scrapes arriving
while a read is under way wait for that read and share its answer, and a read still stuck in
the broker is not doubled by the next scrape.

The values are not written to the metric store: they belong to the scrape that read them (in
multiprocess mode a gauge in the store would keep showing a value another worker read minutes
ago, and could not be taken out when the broker stops answering). So the collector is
registered in the default registry like any other collector and its families are encoded with
ours.

One connection per process, kept between scrapes, without AMQP heartbeats (nothing would send
them between scrapes, and RabbitMQ would close the connection). A forked child (gunicorn
workers, Celery's prefork pool) never uses its parent's connection: the socket is shared with
the parent, so the child only forgets it, without a word on the wire.

The backlog is read only while task metrics are on: the installer (`metrics.instrument.celery`)
hands over its `active` predicate, so this module never imports that one.
"""

from __future__ import annotations

import logging
import os
import threading
import time
import weakref
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass
from typing import Any

from metrics import core
from metrics.collectors import celery_queue_length_errors_total
from metrics.conf import app_settings

__all__ = ["QueueCollector", "QueueReading", "install", "read_queues", "watched_queues"]

logger = logging.getLogger("metrics")

LENGTH = "celery_queue_length"
CONSUMERS = "celery_queue_consumers"
LENGTH_HELP = "Messages waiting in the Celery broker queue, read at scrape time, by queue."
CONSUMERS_HELP = "Consumers RabbitMQ reports for the Celery queue, read at scrape time, by queue."


@dataclass(frozen=True, slots=True)
class QueueReading:
    """What the broker says of one queue: ready messages, and consumers when the broker knows."""

    length: int
    consumers: int | None


def watched_queues(app: Any) -> tuple[str, ...]:
    """Return the queues to read: `METRICS_CELERY_QUEUES`, else the queues `app` is configured with.

    Configured: `task_queues`, `task_default_queue`, and the `queue` of each dict entry of
    `task_routes`. Not `app.amqp.queues`: Celery adds to it every queue a process publishes to,
    so what is watched would depend on what this process happened to send.
    """
    configured = app_settings.CELERY_QUEUES
    if configured is not None:
        return configured
    conf = app.conf
    names: dict[str, None] = {}
    queues = conf.task_queues or ()
    for queue in queues.values() if isinstance(queues, dict) else queues:
        name = getattr(queue, "name", queue)
        if isinstance(name, str) and name:
            names[name] = None
    default = conf.task_default_queue
    if isinstance(default, str) and default:
        names[default] = None
    routes = conf.task_routes
    for route in routes.values() if isinstance(routes, dict) else ():
        queue = route.get("queue") if isinstance(route, dict) else None
        name = getattr(queue, "name", queue)
        if isinstance(name, str) and name:
            names[name] = None
    return tuple(names)


def _is_not_found(exc: BaseException) -> bool:
    """Tell whether a passive declare failed because the queue does not exist."""
    # py-amqp raises NotFound (reply code 404); kombu's virtual transports a ChannelError.
    return getattr(exc, "code", None) == 404 or str(exc).startswith("NOT_FOUND")


class BrokerReader:
    """One Celery app's broker, on one connection kept for the next read.

    Not thread-safe: `QueueCollector` lets one thread at a time in.
    """

    def __init__(self, app: Any) -> None:
        self._app = weakref.ref(app)
        self._connection: Any = None
        self._channel: Any = None

    def read(self, queues: Iterable[str], timeout: float) -> dict[str, QueueReading]:
        """Return the reading of every queue; raise whatever the broker or the network raised.

        `timeout` bounds each socket operation, so a read abandoned by its scrape ends too.
        A kept connection found dead (closed by the broker or a proxy while idle) is replaced
        once: that is a stale connection, not a broker failure.
        """
        queues = list(queues)
        reused = self._connection is not None
        try:
            return self._read(queues, timeout)
        except Exception:
            self.close()
            if not reused:
                raise
        return self._read(queues, timeout)

    def _read(self, queues: list[str], timeout: float) -> dict[str, QueueReading]:
        connection = self._connect(timeout)
        if connection.transport.driver_type == "redis":
            return self._read_redis(connection, queues)
        consumers = connection.transport.driver_type == "amqp"
        out = {}
        for queue in queues:
            if self._channel is None:
                self._channel = connection.channel()
            try:
                _, length, count = self._channel.queue_declare(queue=queue, passive=True)
            except connection.channel_errors as exc:
                if not _is_not_found(exc):
                    raise
                # AMQP closes the channel on a 404; a virtual transport's stays usable.
                if consumers:
                    self._channel = None
                length, count = 0, 0
            out[queue] = QueueReading(int(length), int(count) if consumers else None)
        return out

    def _read_redis(self, connection: Any, queues: list[str]) -> dict[str, QueueReading]:
        channel = connection.default_channel
        # kombu's own key names: `queue` for priority 0, `queue<sep><step>` for the others, with
        # the transport's `priority_steps` and `sep`; its client adds `global_keyprefix` itself.
        # Every step is read whether or not priorities are used: an absent list costs nothing
        # more in the same round trip, and messages sent with a priority are never missed.
        keys = {
            queue: list(dict.fromkeys(channel._q_for_pri(queue, step) for step in channel.priority_steps))
            for queue in queues
        }
        with channel.client.pipeline(transaction=False) as pipe:
            for queue_keys in keys.values():
                for key in queue_keys:
                    pipe.llen(key)
            lengths: Iterator[Any] = iter(pipe.execute())
        return {
            queue: QueueReading(sum(int(next(lengths)) for _ in queue_keys), None)
            for queue, queue_keys in keys.items()
        }

    def _connect(self, timeout: float) -> Any:
        if self._connection is not None:
            return self._connection
        app = self._app()
        if app is None:
            raise RuntimeError("the Celery app is gone")
        connection = app.connection_for_read(heartbeat=0, connect_timeout=timeout)
        driver = connection.transport.driver_type
        if driver == "redis":
            options = {"socket_timeout": timeout, "socket_connect_timeout": timeout}
        elif driver == "amqp":
            options = {"read_timeout": timeout, "write_timeout": timeout}
        else:
            options = {}
        connection.transport_options = {**connection.transport_options, **options}
        try:
            # No retry loop: the next scrape is the retry.
            connection.ensure_connection(max_retries=0, timeout=timeout)
        except Exception:
            self._release(connection)
            raise
        self._connection = connection
        return connection

    @staticmethod
    def _release(connection: Any) -> None:
        try:
            connection.release()
        except Exception:
            logger.debug("metrics: closing the broker connection failed", exc_info=True)

    def close(self) -> None:
        """Close the connection (the next read opens a new one)."""
        connection, self._connection, self._channel = self._connection, None, None
        if connection is not None:
            self._release(connection)


# Readers inherited across a fork: kept referenced so that no destructor ever closes (and so
# shuts down, for the parent too) a socket the parent still uses.
_inherited: list[BrokerReader] = []


class QueueCollector:
    """The scrape-time collector of `celery_queue_length` and `celery_queue_consumers`."""

    def __init__(self, app: Any, active: Callable[[], bool]) -> None:
        """Read `app`'s queues at each collection for which `active()` is true."""
        self._app = weakref.ref(app)
        self._active = active
        self._reset()

    def _reset(self) -> None:
        app = self._app()
        self._reader = BrokerReader(app) if app is not None else None
        self._lock = threading.Lock()
        self._pending: Future[dict[str, QueueReading]] | None = None
        self._failing = False

    def after_fork(self) -> None:
        """In a forked child: forget the parent's connection and any read its threads had started."""
        if self._reader is not None:
            _inherited.append(self._reader)
        self._reset()

    def describe(self) -> list[Any]:
        """Return the families this collector yields, without reading the broker (names only)."""
        return self._families({})

    def collect(self) -> list[Any]:
        """Return the families read from the broker now; none when it did not answer in time."""
        app = self._app()
        if app is None or self._reader is None or not self._active():
            return []
        queues = watched_queues(app)
        if not queues:
            return []
        timeout = app_settings.CELERY_QUEUE_TIMEOUT
        started = time.monotonic()
        try:
            readings = self._read(queues, timeout)
        except FutureTimeout:
            self._failed(f"no answer within {timeout:g} s (METRICS_CELERY_QUEUE_TIMEOUT)")
            return []
        except Exception as exc:
            self._failed(f"{type(exc).__name__}: {exc}")
            return []
        if self._failing:
            self._failing = False
            logger.info("metrics: the broker answers again (%.3f s)", time.monotonic() - started)
        return self._families({queue: readings[queue] for queue in queues if queue in readings})

    def _read(self, queues: tuple[str, ...], timeout: float) -> dict[str, QueueReading]:
        with self._lock:
            pending = self._pending
            if pending is None or pending.done():
                pending = self._pending = Future()
                thread = threading.Thread(
                    target=self._run,
                    args=(pending, self._reader, queues, timeout),
                    name="metrics-celery-queues",
                    daemon=True,
                )
                thread.start()
        readings = pending.result(timeout)
        missing = set(queues) - set(readings)
        if missing:
            # A read started by an earlier scrape, for other settings: not this scrape's answer.
            raise LookupError(f"queues not read: {', '.join(sorted(missing))}")
        return readings

    @staticmethod
    def _run(
        future: Future[dict[str, QueueReading]], reader: BrokerReader, queues: tuple[str, ...], timeout: float
    ) -> None:
        try:
            future.set_result(reader.read(queues, timeout))
        except BaseException as exc:
            future.set_exception(exc)

    def _failed(self, why: str) -> None:
        celery_queue_length_errors_total.inc()
        if not self._failing:
            # Once per outage: a scrape every 15 s must not write a warning every 15 s.
            self._failing = True
            logger.warning(
                "metrics: cannot read Celery queue lengths from the broker (%s); the queue series "
                "are left out until it answers, failures are counted in celery_queue_length_errors_total",
                why,
            )

    @staticmethod
    def _families(readings: dict[str, QueueReading]) -> list[Any]:
        from prometheus_client.core import GaugeMetricFamily

        length = GaugeMetricFamily(LENGTH, LENGTH_HELP, labels=["queue"])
        consumers = GaugeMetricFamily(CONSUMERS, CONSUMERS_HELP, labels=["queue"])
        for queue, reading in readings.items():
            length.add_metric([queue], reading.length)
            if reading.consumers is not None:
                consumers.add_metric([queue], reading.consumers)
        return [length, consumers]


def read_queues(app: Any, queues: Iterable[str], timeout: float = 2.0) -> dict[str, QueueReading]:
    """Return the reading of each queue of `app`'s broker, on a connection of its own (closed after)."""
    reader = BrokerReader(app)
    try:
        return reader.read(queues, timeout)
    finally:
        reader.close()


_collector: QueueCollector | None = None
_install_lock = threading.Lock()


def _after_fork() -> None:
    if _collector is not None:
        _collector.after_fork()


os.register_at_fork(after_in_child=_after_fork)


def install(app: Any, active: Callable[[], bool]) -> QueueCollector:
    """Show `app`'s queues on every exposition of this process while `active()` is true.

    The first app installed wins.
    """
    global _collector
    with _install_lock:
        if _collector is None:
            _collector = QueueCollector(app, active)
            core.REGISTRY.register(_collector)
        return _collector
