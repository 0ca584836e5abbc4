"""Database metrics, with no change to the site's `DATABASES` ENGINE.

Every connection Django opens gets one execute wrapper (Django's public `execute_wrappers` hook,
installed from the `connection_created` signal), which counts and times each `execute()` and
`executemany()` call: `django_db_queries_total{database,operation}`,
`django_db_query_duration_seconds{database,operation}` and, when the call raises,
`django_db_query_errors_total{database,operation}`. Transaction control that Django sends without
a cursor (`BEGIN` when leaving autocommit, `COMMIT`, `ROLLBACK`, which go through Django's
`debug_transaction`) counts too, under `operation="transaction"`, as do the savepoint statements
and SQLite's `BEGIN` that do go through a cursor. Together these are exactly what Django's own
`CaptureQueriesContext` records (failed ones included); `callproc()` and queries run on the raw
DB-API connection are seen by neither.

A connection that cannot be opened (database down, bad credentials) raises as usual and counts in
`django_db_connection_errors_total{database}`.

`django_db_connections_total{database}` counts open connections, kept up to date as they open and
close in any thread (so it stays right in every worker of a multiprocess deployment without a
scrape there): +1 on `connection_created`, -1 when `close()` leaves the connection closed, or when
its connection handler is garbage-collected while still open (a finished thread).

With `METRICS_COMPAT_DJANGO_PROMETHEUS` on, the same wrapper and connect hook also feed
django-prometheus's `django_db_execute_total`, `django_db_execute_many_total`,
`django_db_errors_total`, `django_db_new_connections_total` and
`django_db_new_connection_errors_total` (`alias`, `vendor`); whether to is decided when a
database alias's wrapper is made. Transaction control sent without a cursor is not in those, as
django-prometheus's cursor wrapper never saw it either.

Pools of Django's PostgreSQL backend (`OPTIONS: {"pool": ...}`, psycopg_pool) are read at scrape
time: `django_db_pool_size`, `_max`, `_idle`, `_waiting`.
"""

from __future__ import annotations

import contextlib
import logging
import re
import sys
import threading
import weakref
from collections.abc import Callable, Iterator
from time import perf_counter
from typing import Any

from django.db import connections
from django.db.backends.base import base as backends_base
from django.db.backends.base.base import BaseDatabaseWrapper
from django.db.backends.signals import connection_created

from metrics import compat, core
from metrics.collectors import (
    bounded_label,
    db_connection_errors_total,
    db_connections_total,
    db_pool_idle,
    db_pool_max,
    db_pool_size,
    db_pool_waiting,
    db_queries_total,
    db_query_duration_seconds,
    db_query_errors_total,
)

logger = logging.getLogger("metrics")

OPERATIONS = ("select", "insert", "update", "delete", "transaction", "other")

# The fast path: Django writes its SQL upper-case with the verb first, so six characters and one
# dict lookup classify almost every query.
_PREFIX: dict[str, str] = {}
for _op in OPERATIONS[:4]:
    _PREFIX[_op.upper()] = _op
    _PREFIX[_op] = _op
_KEYWORDS = {op: op for op in OPERATIONS[:4]}
# Transaction control: each a round trip to the server, logged by Django like a query.
_KEYWORDS.update(
    dict.fromkeys(("begin", "start", "commit", "end", "rollback", "savepoint", "release"), "transaction")
)

# Anchored at the start, so it reads only the leading blanks, comments and parentheses and the
# first word, never the whole statement.
_FIRST_WORD = re.compile(r"(?:\s+|\(|;|--[^\n]*(?:\n|\Z)|/\*.*?\*/)*([A-Za-z_]+)", re.S)
# Inside a WITH: the characters that change nesting or quoting.
_WITH_TOKENS = re.compile(r"[()'\"]")
_AFTER_CTE = re.compile(r"\s*(,|[A-Za-z_]+)")
# Past this many characters of CTEs, give up looking for the main statement.
_WITH_SCAN_LIMIT = 20_000


def operation_of(sql: object) -> str:
    """Return `select`, `insert`, `update`, `delete` or `other` for a statement.

    The operation is the statement's first word, after blanks, `--` and `/* */` comments,
    opening parentheses and `;`, compared case-insensitively. For `WITH ...` it is the first word
    after the common table expressions (PostgreSQL's `WITH ... UPDATE` counts as `update`).
    `BEGIN`, `START TRANSACTION`, `COMMIT`, `END`, `ROLLBACK`, `SAVEPOINT` and `RELEASE` are
    `transaction`. Everything else (`SET`, `EXPLAIN`, `REPLACE`, DDL) is `other`, as is anything
    that is not a string.
    """
    try:
        # `sql` is a str but for rare drivers: slicing anything else raises TypeError, handled here
        # rather than an isinstance() on every query.
        op = _PREFIX.get(sql[:6])  # type: ignore[index]
    except TypeError:
        op = None
    if op is not None:
        return op
    if isinstance(sql, bytes):
        sql = sql[:4096].decode("latin-1")
    if not isinstance(sql, str):
        return "other"
    match = _FIRST_WORD.match(sql)
    if match is None:
        return "other"
    word = match.group(1).lower()
    if word == "with":
        return _operation_after_with(sql, match.end())
    return _KEYWORDS.get(word, "other")


def _operation_after_with(sql: str, pos: int) -> str:
    """Return the operation of the statement that follows the CTEs of a `WITH` clause."""
    depth = 0
    limit = min(len(sql), pos + _WITH_SCAN_LIMIT)
    while pos < limit:
        token = _WITH_TOKENS.search(sql, pos, limit)
        if token is None:
            return "other"
        char = token.group()
        pos = token.end()
        if char == "(":
            depth += 1
        elif char == ")":
            depth -= 1
            if depth == 0:
                after = _AFTER_CTE.match(sql, pos)
                if after is not None and after.group(1) != ",":
                    word = after.group(1).lower()
                    if word != "as":  # `WITH x (a, b) AS (...)`: column list, keep going.
                        return _KEYWORDS.get(word, "other")
        else:
            # A quoted string or identifier: jump over it (a doubled quote reads as two strings).
            end = sql.find(char, pos, limit)
            if end < 0:
                return "other"
            pos = end + 1
    return "other"


Executor = Callable[[Any, Any, bool, dict[str, Any]], Any]
_observers: dict[str, Callable[..., Any]] = {}
_observers_lock = threading.Lock()


def _make_observer(
    alias: str, vendor: str = "", compat_families: compat.Families | None = None
) -> Callable[..., Any]:
    """Return the execute wrapper of one database alias, with its label children resolved once.

    With `compat_families`, the wrapper also counts in django-prometheus's families.
    """
    children = {
        op: (db_queries_total.labels(alias, op), db_query_duration_seconds.labels(alias, op))
        for op in OPERATIONS
    }
    errors = {op: db_query_errors_total.labels(alias, op) for op in OPERATIONS}

    prefix = _PREFIX

    def observe_query(execute: Executor, sql: Any, params: Any, many: bool, context: dict[str, Any]) -> Any:
        # operation_of()'s fast path, inlined: this runs for every query.
        op = prefix.get(sql[:6]) if type(sql) is str else None
        if op is None:
            op = operation_of(sql)
        start = perf_counter()
        try:
            return execute(sql, params, many, context)
        except Exception:
            errors[op].inc()
            raise
        finally:
            elapsed = perf_counter() - start
            count, duration = children[op]
            try:
                count.inc()
                duration.observe(elapsed)
            except Exception:
                # Never let the metrics turn a query's result into an error.
                logger.exception("metrics: could not record a query on %r", alias)

    if compat_families is None:
        return observe_query
    return _with_compat(observe_query, alias, vendor, compat_families)


def _with_compat(
    observe_query: Callable[..., Any], alias: str, vendor: str, families: compat.Families
) -> Callable[..., Any]:
    """Wrap `observe_query` so that it also counts in django-prometheus's database families."""
    executed = families.db_execute.labels(alias, vendor)
    executed_many = families.db_execute_many.labels(alias, vendor)
    errors = families.db_errors

    def observe_query_compat(
        execute: Executor, sql: Any, params: Any, many: bool, context: dict[str, Any]
    ) -> Any:
        # executemany() counts one statement per parameter set (read before the driver consumes
        # an iterator; an unsized one counts as one).
        count = 1
        if many:
            try:
                count = len(params)
            except TypeError:
                pass
        try:
            return observe_query(execute, sql, params, many, context)
        except Exception as exc:
            try:
                errors.labels(
                    alias, vendor, bounded_label("django_db_errors_total", "type", type(exc).__name__)
                ).inc()
            except Exception:
                logger.exception("metrics: could not record a query error on %r", alias)
            raise
        finally:
            try:
                executed.inc(count)
                if many:
                    executed_many.inc(count)
            except Exception:
                logger.exception("metrics: could not record a query on %r", alias)

    return observe_query_compat


def observer_for(alias: str, vendor: str = "") -> Callable[..., Any]:
    """Return the execute wrapper of `alias`, creating it on first use."""
    observer = _observers.get(alias)
    if observer is None:
        with _observers_lock:
            observer = _observers.get(alias)
            if observer is None:
                families = compat.families() if compat.enabled() else None
                observer = _observers[alias] = _make_observer(alias, vendor, families)
    return observer


class _ConnectionState:
    """Whether one connection handler currently holds an open connection that was counted."""

    __slots__ = ("__weakref__", "gauge", "open")

    def __init__(self, gauge: Any) -> None:
        self.gauge = gauge
        self.open = False


_STATE_ATTR = "_metrics_connection_state"


def _handler_gone(state: _ConnectionState) -> None:
    # The handler (and with it its DB-API connection) is being freed while counted as open.
    if state.open:
        state.open = False
        state.gauge.dec()


def instrument_connection(connection: BaseDatabaseWrapper) -> None:
    """Install the execute wrapper on `connection` and count it as open.

    Called from `connection_created`, so once per physical (or pooled) connection; safe to call
    again. The wrapper goes first in `execute_wrappers`: `connection.execute_wrapper()` removes the
    *last* entry when its block ends, so a wrapper appended while a user's block is active (the
    first query of a block can open the connection) would be removed in place of the user's.
    """
    observer = observer_for(connection.alias, connection.vendor)
    wrappers = connection.execute_wrappers
    if observer not in wrappers:
        wrappers.insert(0, observer)
    state = connection.__dict__.get(_STATE_ATTR)
    if state is None:
        state = _ConnectionState(db_connections_total.labels(connection.alias))
        connection.__dict__[_STATE_ATTR] = state
        finalizer = weakref.finalize(connection, _handler_gone, state)
        finalizer.atexit = False
    if not state.open:
        state.open = True
        state.gauge.inc()


def _on_connection_created(sender: Any, connection: BaseDatabaseWrapper, **kwargs: Any) -> None:
    try:
        instrument_connection(connection)
    except Exception:
        logger.exception("metrics: could not instrument database connection %r", connection.alias)


_original_close: Callable[[BaseDatabaseWrapper], None] | None = None


def _tracked_close(self: BaseDatabaseWrapper) -> None:
    """Close the connection (Django's `close()`), then stop counting it if it is closed now."""
    assert _original_close is not None
    try:
        _original_close(self)
    finally:
        state = self.__dict__.get(_STATE_ATTR)
        # An in-memory SQLite database ignores close(); inside an atomic block the connection is
        # closed but kept until the block exits (`closed_in_transaction`).
        if state is not None and state.open and (self.connection is None or self.closed_in_transaction):
            state.open = False
            state.gauge.dec()


_original_connect: Callable[[BaseDatabaseWrapper], None] | None = None
_original_debug_transaction: Callable[[BaseDatabaseWrapper, str], Any] | None = None


@contextlib.contextmanager
def _counted_transaction(connection: BaseDatabaseWrapper, sql: str) -> Iterator[None]:
    """Django's `debug_transaction` (BEGIN, COMMIT, ROLLBACK without a cursor), counted and timed."""
    assert _original_debug_transaction is not None
    start = perf_counter()
    failed = True
    try:
        with _original_debug_transaction(connection, sql):
            yield
        failed = False
    finally:
        try:
            alias = connection.alias
            db_queries_total.labels(alias, "transaction").inc()
            db_query_duration_seconds.labels(alias, "transaction").observe(perf_counter() - start)
            if failed:
                db_query_errors_total.labels(alias, "transaction").inc()
        except Exception:
            logger.exception("metrics: could not record a transaction statement")


def _counted_connect(self: BaseDatabaseWrapper) -> None:
    """Connect (Django's `connect()`), counting a failure before it propagates unchanged."""
    assert _original_connect is not None
    families = compat.created()
    if families is not None:
        # django-prometheus counts every attempt, and failed ones again as errors.
        _count_quietly(families.db_new_connections, self.alias, self.vendor)
    try:
        _original_connect(self)
    except Exception:
        db_connection_errors_total.labels(self.alias).inc()
        if families is not None:
            _count_quietly(families.db_new_connection_errors, self.alias, self.vendor)
        raise


def _count_quietly(counter: Any, *labels: str) -> None:
    try:
        counter.labels(*labels).inc()
    except Exception:
        logger.exception("metrics: could not count a connection")


def _pools() -> dict[str, Any]:
    """Return the psycopg pools Django's PostgreSQL backend has made, by alias, creating none."""
    # Not imported when no database uses PostgreSQL: nothing to read then, and psycopg stays unloaded.
    module = sys.modules.get("django.db.backends.postgresql.base")
    pools = getattr(getattr(module, "DatabaseWrapper", None), "_connection_pools", None)
    if not isinstance(pools, dict):
        return {}
    return {alias: pool for alias, pool in list(pools.items()) if hasattr(pool, "get_stats")}


def _pool_of(alias: str) -> Any:
    return _pools().get(alias)


def pool_stats(alias: str) -> dict[str, int] | None:
    """Return the pool state of `alias` (`size`, `max`, `idle`, `waiting`), or None without a pool.

    For the health page: reading it takes the pool's lock for a moment, never a connection.
    """
    pool = _pool_of(alias)
    if pool is None:
        return None
    stats = pool.get_stats()
    return {
        "size": int(stats.get("pool_size", 0)),
        "max": int(stats.get("pool_max", getattr(pool, "max_size", 0))),
        "idle": int(stats.get("pool_available", 0)),
        "waiting": int(stats.get("requests_waiting", 0)),
    }


def collect_pools() -> None:
    """Set the pool gauges of every pool Django has created (a collect hook)."""
    for alias in _pools():
        stats = pool_stats(alias)
        if stats is None:
            continue
        db_pool_size.labels(alias).set(stats["size"])
        db_pool_max.labels(alias).set(stats["max"])
        db_pool_idle.labels(alias).set(stats["idle"])
        db_pool_waiting.labels(alias).set(stats["waiting"])


def install() -> None:
    """Hook every database connection, present and future; calling it again does nothing."""
    global _original_close, _original_connect
    connection_created.connect(_on_connection_created, dispatch_uid="metrics.instrument.db")
    if _original_close is None:
        _original_close = BaseDatabaseWrapper.close
        # Subclasses that override close() (SQLite) call BaseDatabaseWrapper.close explicitly.
        BaseDatabaseWrapper.close = _tracked_close  # type: ignore[method-assign]  # a deliberate patch
    if _original_connect is None:
        # No Django backend overrides connect(); it runs once per new connection, off the hot path.
        _original_connect = BaseDatabaseWrapper.connect
        BaseDatabaseWrapper.connect = _counted_connect  # type: ignore[method-assign]  # a deliberate patch
    global _original_debug_transaction
    if _original_debug_transaction is None:
        # BaseDatabaseWrapper's _commit, _rollback and set_autocommit look the name up in their
        # module at each call: every backend of Django's but Oracle goes through this one.
        # (django-stubs do not declare the name base.py imports, hence getattr/setattr.)
        _original_debug_transaction = getattr(backends_base, "debug_transaction")  # noqa: B009
        setattr(backends_base, "debug_transaction", _counted_transaction)  # noqa: B010
    # Connections opened before install() (this thread's only; others are per thread and open
    # later, through the signal).
    for connection in connections.all(initialized_only=True):
        if connection.connection is not None:
            instrument_connection(connection)
    core.add_process_hook(collect_pools)
