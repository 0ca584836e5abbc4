"""Database instrumentation, on the database `METRICS_TEST_DB` picks (sqlite, postgres, mysql).

Run it three times: `METRICS_TEST_DB=sqlite|postgres|mysql .venv/bin/pytest tests/instrument/test_db.py`.
The pool test always uses PostgreSQL on 127.0.0.1:5432.
"""

from __future__ import annotations

import gc
import re
import socket
import threading
import time
import warnings
from collections import Counter as Tally
from collections.abc import Callable, Iterator
from typing import Any

import psycopg
import pytest
from asgiref.sync import async_to_sync
from django.contrib.auth.models import Group
from django.db import DatabaseError, connection, connections, transaction
from django.db.backends.base.base import BaseDatabaseWrapper
from django.test import Client, override_settings
from django.test.utils import CaptureQueriesContext

from metrics import generate_latest
from metrics.collectors import (
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
from metrics.core import REGISTRY
from metrics.instrument import db
from metrics.instrument.db import OPERATIONS, observer_for, operation_of
from tests.instrument.conftest import read_samples

pytestmark = pytest.mark.django_db


def query_counts(alias: str) -> dict[str, float]:
    samples = read_samples(db_queries_total)
    return {
        op: samples.get(("django_db_queries_total", (("database", alias), ("operation", op))), 0.0)
        for op in OPERATIONS
    }


def duration_totals(alias: str) -> tuple[float, float]:
    """Return (count, sum) of the duration histogram of `alias`, over every operation."""
    samples = read_samples(db_query_duration_seconds)
    count = total = 0.0
    for op in OPERATIONS:
        labels = (("database", alias), ("operation", op))
        count += samples.get(("django_db_query_duration_seconds_count", labels), 0.0)
        total += samples.get(("django_db_query_duration_seconds_sum", labels), 0.0)
    return count, total


def delta(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
    return {op: after[op] - before[op] for op in OPERATIONS if after[op] != before[op]}


def workload() -> None:
    """Run inserts, selects, updates, deletes, a bulk insert, raw SQL and savepoints."""
    table = connection.ops.quote_name(Group._meta.db_table)
    with transaction.atomic():
        Group.objects.create(name="a")
        Group.objects.bulk_create([Group(name="b"), Group(name="c")])
    assert list(Group.objects.order_by("name").values_list("name", flat=True)) == ["a", "b", "c"]
    Group.objects.filter(name="a").update(name="aa")
    assert Group.objects.filter(name__startswith="a").count() == 1
    Group.objects.filter(name="b").delete()
    with connection.cursor() as cursor:
        cursor.execute(f"  /* a comment */ -- another\n  select count(*) from {table}")
        assert cursor.fetchone()[0] == 2
        cursor.execute(f"SELECT name FROM (SELECT name FROM {table}) AS sub")
        cursor.fetchall()
        cursor.execute(f"WITH x AS (SELECT name FROM {table}) SELECT count(*) FROM x")
        assert cursor.fetchone()[0] == 2
        cursor.executemany(f"INSERT INTO {table} (name) VALUES (%s)", [("d",), ("e",), ("f",)])
        cursor.execute(f"UPDATE {table} SET name = %s WHERE name = %s", ["ff", "f"])
        cursor.execute(f"DELETE FROM {table} WHERE name IN (%s, %s)", ["d", "e"])
    assert Group.objects.count() == 3


def classify_independently(sql: str) -> str:
    """Classify a captured query the slow, obvious way (a second implementation, not operation_of)."""
    # CaptureQueriesContext writes an executemany() as "3 times: INSERT ...".
    sql = re.sub(r"^\d+ times: ", "", sql)
    text = re.sub(r"/\*.*?\*/|--[^\n]*", " ", sql, flags=re.S).replace("(", " ")
    words = text.split()
    first = words[0].lower() if words else ""
    if first == "with":
        # This workload's only CTE is followed by SELECT.
        return "select"
    if first in ("begin", "start", "commit", "end", "rollback", "savepoint", "release"):
        return "transaction"
    return first if first in ("select", "insert", "update", "delete") else "other"


def test_query_counts_equal_django_capture() -> None:
    """Queries counted per operation equal Django's own CaptureQueriesContext, on this database."""
    Group.objects.exists()  # open the connection first, so both sides see the same statements
    before = query_counts("default")
    with CaptureQueriesContext(connection) as captured:
        workload()
    counted = delta(before, query_counts("default"))
    assert sum(counted.values()) == len(captured.captured_queries)
    expected = Tally(classify_independently(q["sql"]) for q in captured.captured_queries)
    assert counted == {op: float(n) for op, n in expected.items()}
    # The statements this workload issues on every backend, at least.
    assert counted["insert"] >= 3  # create, bulk_create, one executemany call
    assert counted["update"] == 2
    assert counted["delete"] >= 2
    assert counted["select"] >= 5


@pytest.mark.django_db(transaction=True)
def test_transaction_statements_count_like_djangos_log() -> None:
    """Creating, changing, reading, counting and deleting a user: the total equals Django's log.

    Outside a test transaction, so `atomic()` sends BEGIN and COMMIT (PostgreSQL, MariaDB:
    without a cursor; SQLite: through one), which Django logs and which now count too.
    """
    from django.contrib.auth import get_user_model

    User = get_user_model()
    User.objects.exists()  # open the connection first
    before = query_counts("default")
    with CaptureQueriesContext(connection) as captured:
        user = User.objects.create_user("tx-user", password=None)
        user.first_name = "T"
        user.save()
        assert User.objects.get(pk=user.pk).first_name == "T"
        assert User.objects.filter(username="tx-user").count() == 1
        user.delete()
    counted = delta(before, query_counts("default"))
    assert sum(counted.values()) == len(captured.captured_queries), (counted, captured.captured_queries)
    expected = Tally(classify_independently(q["sql"]) for q in captured.captured_queries)
    assert counted == {op: float(n) for op, n in expected.items()}
    assert counted.get("transaction", 0) >= 2  # at least the delete's atomic block: BEGIN, COMMIT


def test_executemany_counts_once() -> None:
    """One executemany() call is one query, whatever the number of parameter sets."""
    table = connection.ops.quote_name(Group._meta.db_table)
    with connection.cursor() as cursor:
        before = query_counts("default")
        cursor.executemany(f"INSERT INTO {table} (name) VALUES (%s)", [(f"g{i}",) for i in range(50)])
    assert delta(before, query_counts("default")) == {"insert": 1.0}
    assert Group.objects.count() == 50


def test_durations_lie_within_the_wall_clock() -> None:
    """Each query's duration is observed once, and their sum fits inside the block's wall-clock time."""
    Group.objects.exists()
    count_before, sum_before = duration_totals("default")
    with CaptureQueriesContext(connection) as captured:
        start = time.perf_counter()
        workload()
        wall = time.perf_counter() - start
    count_after, sum_after = duration_totals("default")
    assert count_after - count_before == len(captured.captured_queries)
    assert 0 < sum_after - sum_before <= wall


def test_failed_query_raises_as_without_instrumentation_and_is_counted() -> None:
    """A failing query raises the same exception as without the wrapper, and counts as an error."""
    observer = observer_for("default")
    bad = "SELECT no_such_column FROM no_such_table"

    def run() -> BaseException:
        with pytest.raises(DatabaseError) as info, transaction.atomic(), connection.cursor() as cursor:
            cursor.execute(bad)
        return info.value

    Group.objects.exists()
    errors_before = read_samples(db_query_errors_total)
    key = ("django_db_query_errors_total", (("database", "default"), ("operation", "select")))
    before = query_counts("default")
    instrumented = run()
    assert read_samples(db_query_errors_total).get(key, 0.0) == errors_before.get(key, 0.0) + 1
    # The failed query is still a query, as CaptureQueriesContext records it.
    assert delta(before, query_counts("default"))["select"] == 1.0

    connection.execute_wrappers.remove(observer)
    try:
        bare = run()
    finally:
        connection.execute_wrappers.insert(0, observer)
    assert type(instrumented) is type(bare)
    assert str(instrumented) == str(bare)


@pytest.mark.parametrize(
    ("sql", "operation"),
    [
        ("SELECT 1", "select"),
        ("select 1", "select"),
        ("  \n\tSelect 1", "select"),
        ("(SELECT 1) UNION (SELECT 2)", "select"),
        ("/* x */ INSERT INTO t VALUES (1)", "insert"),
        ("-- note\nUPDATE t SET a = 1", "update"),
        ("-- only a comment", "other"),
        ("DELETE FROM t", "delete"),
        ("WITH a AS (SELECT '(' AS p), b (x) AS (SELECT 1) SELECT * FROM a, b", "select"),
        ('WITH "q)" AS (SELECT 1) UPDATE t SET a = 2', "update"),
        ("WITH RECURSIVE r(n) AS (SELECT 1 UNION SELECT n + 1 FROM r) DELETE FROM t", "delete"),
        ("WITH broken AS (SELECT 1", "other"),
        ("SAVEPOINT s1", "transaction"),
        ("RELEASE SAVEPOINT s1", "transaction"),
        ("ROLLBACK TO SAVEPOINT s1", "transaction"),
        ("BEGIN", "transaction"),
        ("START TRANSACTION", "transaction"),
        ("COMMIT", "transaction"),
        ("ROLLBACK", "transaction"),
        ("EXPLAIN SELECT 1", "other"),
        ("REPLACE INTO t VALUES (1)", "other"),
        ("CREATE TABLE t (a int)", "other"),
        ("", "other"),
        (b"SELECT 1", "select"),
        (b"  delete from t", "delete"),
        (None, "other"),
    ],
)
def test_operation_of(sql: Any, operation: str) -> None:
    """The operation is the first keyword after blanks, comments and parentheses, or after a WITH's CTEs."""
    assert operation_of(sql) == operation


def test_operation_of_reads_only_the_head_of_long_statements() -> None:
    """Classifying a 10 MB statement costs about as much as classifying a short one."""
    long_sql = "  select " + "x, " * 3_000_000 + "1"
    start = time.perf_counter()
    for _ in range(100):
        assert operation_of(long_sql) == "select"
    assert time.perf_counter() - start < 0.05


def gauge(alias: str) -> float:
    return read_samples(db_connections_total).get(
        ("django_db_connections_total", (("database", alias),)), 0.0
    )


@pytest.fixture
def extra_wrapper(tmp_path: Any) -> Iterator[BaseDatabaseWrapper]:
    """Yield a second handler on this test's database under the alias `metrics_extra`.

    SQLite gets a file database: an in-memory one ignores close(), by design.
    """
    settings_dict = dict(connections.settings["default"])
    settings_dict["NAME"] = connection.settings_dict["NAME"]
    if connection.vendor == "sqlite":
        settings_dict["NAME"] = str(tmp_path / "extra.sqlite3")
    wrapper = type(connections["default"])(settings_dict, alias="metrics_extra")
    # Known to this thread's `connections`, as a configured alias would be (atomic(using=...)).
    connections._connections.metrics_extra = wrapper
    try:
        yield wrapper
    finally:
        wrapper.close()
        delattr(connections._connections, "metrics_extra")


def test_connection_gauge_follows_open_and_close(extra_wrapper: BaseDatabaseWrapper) -> None:
    """Opening a connection adds one to django_db_connections_total, closing it takes one away."""
    before = gauge("metrics_extra")
    with extra_wrapper.cursor() as cursor:
        cursor.execute("SELECT 1")
    assert gauge("metrics_extra") == before + 1
    extra_wrapper.ensure_connection()  # already open: not counted twice
    assert gauge("metrics_extra") == before + 1
    extra_wrapper.close()
    assert gauge("metrics_extra") == before
    extra_wrapper.close()  # closing a closed connection changes nothing
    assert gauge("metrics_extra") == before
    with extra_wrapper.cursor() as cursor:
        cursor.execute("SELECT 1")
    assert gauge("metrics_extra") == before + 1
    extra_wrapper.close()
    assert gauge("metrics_extra") == before


def test_user_execute_wrapper_block_keeps_ours(extra_wrapper: BaseDatabaseWrapper) -> None:
    """A user's `execute_wrapper()` block that opens the connection removes its own wrapper, not ours."""
    seen: list[str] = []

    def user_wrapper(execute: Callable[..., Any], sql: str, params: Any, many: bool, context: Any) -> Any:
        seen.append(sql)
        return execute(sql, params, many, context)

    with extra_wrapper.execute_wrapper(user_wrapper), extra_wrapper.cursor() as cursor:
        cursor.execute("SELECT 1")
    assert seen[-1] == "SELECT 1"  # after any queries the backend runs on connecting
    assert extra_wrapper.execute_wrappers == [observer_for("metrics_extra")]


def test_connection_closed_inside_atomic_block(extra_wrapper: BaseDatabaseWrapper) -> None:
    """A connection closed inside an atomic block stops counting, and counts again when reopened."""
    before = gauge("metrics_extra")
    with transaction.atomic(using="metrics_extra"):
        extra_wrapper.ensure_connection()
        assert gauge("metrics_extra") == before + 1
        extra_wrapper.close()
        assert gauge("metrics_extra") == before
    with extra_wrapper.cursor() as cursor:
        cursor.execute("SELECT 1")
    assert gauge("metrics_extra") == before + 1


def test_connection_gauge_counts_other_threads_and_forgets_dead_ones() -> None:
    """Connections opened by other threads count; a thread ending without close() is uncounted once freed."""
    Group.objects.exists()
    before = gauge("default")
    opened = threading.Event()
    release = threading.Event()
    errors: list[BaseException] = []

    def worker() -> None:
        try:
            with connections["default"].cursor() as cursor:
                cursor.execute("SELECT 1")
            opened.set()
            release.wait(10)
        except BaseException as exc:  # reported in the main thread
            errors.append(exc)
            opened.set()

    threads = [threading.Thread(target=worker) for _ in range(3)]
    for thread in threads:
        thread.start()
    deadline = time.monotonic() + 10
    while gauge("default") < before + 3 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert not errors
    assert gauge("default") == before + 3
    release.set()
    for thread in threads:
        thread.join()
    # The threads' handlers hold reference cycles: they (and their DB-API connections) go with gc.
    # psycopg warns when it frees an open connection; as an error (pytest's setting) the warning
    # would keep the connection alive in the saved traceback.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ResourceWarning)
        gc.collect()
    assert gauge("default") == before
    if connection.vendor == "postgresql":
        # Freed connections end asynchronously on the server; the test database is dropped
        # after this test and must have no other session by then.
        deadline = time.monotonic() + 10
        with connection.cursor() as cursor:
            while time.monotonic() < deadline:
                cursor.execute(
                    "SELECT count(*) FROM pg_stat_activity"
                    " WHERE datname = current_database() AND pid <> pg_backend_pid()"
                )
                if cursor.fetchone()[0] == 0:
                    break
                time.sleep(0.05)


def test_install_is_idempotent() -> None:
    """Calling install() again adds no second wrapper and no second signal receiver."""
    Group.objects.exists()
    db.install()
    db.install()
    assert connection.execute_wrappers.count(observer_for("default")) == 1
    before = query_counts("default")
    Group.objects.exists()
    assert sum(delta(before, query_counts("default")).values()) == 1


@pytest.fixture
def pooled(django_db_blocker: Any) -> Iterator[BaseDatabaseWrapper]:
    """Yield a handler with Django's PostgreSQL pool (min 2, max 4) on 127.0.0.1:5432, database `test`."""
    from django.db.backends.postgresql.base import DatabaseWrapper

    settings_dict = dict(connections.settings["default"])
    settings_dict.update(
        ENGINE="django.db.backends.postgresql",
        NAME="test",
        USER="postgres",
        PASSWORD="",
        HOST="127.0.0.1",
        PORT="5432",
        CONN_MAX_AGE=0,
        OPTIONS={
            "pool": {"min_size": 2, "max_size": 4, "timeout": 5},
            "application_name": "metrics-pool-test",
        },
    )
    wrapper = DatabaseWrapper(settings_dict, alias="metrics_pool")
    with django_db_blocker.unblock():
        try:
            yield wrapper
        finally:
            wrapper.close()
            wrapper.close_pool()


def pool_gauges() -> dict[str, float]:
    out = {}
    for name, metric in (
        ("size", db_pool_size),
        ("max", db_pool_max),
        ("idle", db_pool_idle),
        ("waiting", db_pool_waiting),
    ):
        out[name] = read_samples(metric).get((metric._name, (("database", "metrics_pool"),)), -1.0)
    return out


def server_connections() -> int:
    with psycopg.connect("host=127.0.0.1 port=5432 user=postgres dbname=test", autocommit=True) as conn:
        row = conn.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'metrics-pool-test'"
        ).fetchone()
        assert row is not None
        return int(row[0])


def test_pool_gauges_match_the_server(pooled: BaseDatabaseWrapper) -> None:
    """Pool size, max, idle and waiting are read at scrape and match PostgreSQL's pg_stat_activity."""
    with pooled.cursor() as cursor:
        cursor.execute("SELECT 1")
    pool = pooled.pool
    pool.wait(timeout=5)  # min_size connections opened
    generate_latest()  # runs the collect hooks, as a scrape does
    gauges = pool_gauges()
    assert gauges["max"] == 4
    assert gauges["size"] == server_connections() >= 2
    assert gauges["waiting"] == 0
    # One connection is checked out by `pooled`.
    assert gauges["idle"] == gauges["size"] - 1
    assert db.pool_stats("metrics_pool") == {k: int(v) for k, v in gauges.items()}
    pooled.close()
    generate_latest()
    assert pool_gauges()["idle"] == gauges["size"]


def test_pool_is_not_created_by_a_scrape() -> None:
    """A scrape reads pools Django already made, and never creates one."""
    from django.db.backends.postgresql.base import DatabaseWrapper

    generate_latest()
    assert "default" not in DatabaseWrapper._connection_pools
    assert db.pool_stats("default") is None


class UsersOnDownDatabase:
    """Route reads of the user model to `metrics_down`, a database nobody can reach."""

    def db_for_read(self, model: type, **hints: Any) -> str | None:
        return "metrics_down" if model._meta.label == "auth.User" else None


@pytest.fixture
def down_wrapper(tmp_path: Any) -> Iterator[BaseDatabaseWrapper]:
    """Yield a handler, known to this thread as `metrics_down`, whose database cannot be reached."""
    settings_dict = dict(connections.settings["default"])
    if connection.vendor == "sqlite":
        settings_dict["NAME"] = str(tmp_path / "no-such-dir" / "db.sqlite3")
    else:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            settings_dict["PORT"] = str(sock.getsockname()[1])
    wrapper = type(connections["default"])(settings_dict, alias="metrics_down")
    connections._connections.metrics_down = wrapper
    try:
        yield wrapper
    finally:
        delattr(connections._connections, "metrics_down")


def test_unreachable_database_fails_as_without_instrumentation(down_wrapper: BaseDatabaseWrapper) -> None:
    """Connecting to a stopped database raises what it raises uninstrumented and counts an error."""
    key = ("django_db_connection_errors_total", (("database", "metrics_down"),))
    before = read_samples(db_connection_errors_total).get(key, 0.0)
    with pytest.raises(DatabaseError) as instrumented:
        down_wrapper.ensure_connection()
    assert read_samples(db_connection_errors_total)[key] == before + 1
    assert db._original_connect is not None
    BaseDatabaseWrapper.connect = db._original_connect  # type: ignore[method-assign]
    try:
        with pytest.raises(DatabaseError) as bare:
            down_wrapper.ensure_connection()
    finally:
        BaseDatabaseWrapper.connect = db._counted_connect  # type: ignore[method-assign]
    assert type(instrumented.value) is type(bare.value)
    assert str(instrumented.value) == str(bare.value)


@override_settings(DATABASE_ROUTERS=[f"{__name__}.UsersOnDownDatabase"])
def test_metrics_answer_while_the_user_database_is_down(
    down_wrapper: BaseDatabaseWrapper, caplog: pytest.LogCaptureFixture
) -> None:
    """/metrics/ answers 200 when the active-user query cannot reach its database; the failure is logged."""
    from metrics.instrument import users

    users._next_query_at = 0.0  # due now
    response = Client().get("/metrics/", headers={"X-Metrics-Token": "test-token"})
    assert response.status_code == 200
    assert b'django_db_connection_errors_total{database="metrics_down"}' in response.content
    assert any("collect_active_users" in record.getMessage() for record in caplog.records)


def test_async_orm_queries_are_counted() -> None:
    """Queries of the async ORM (run by Django in a worker thread) are counted like sync ones."""
    Group.objects.exists()
    before = query_counts("default")

    async def count() -> int:
        return await Group.objects.acount()

    assert async_to_sync(count)() == 0
    assert delta(before, query_counts("default")) == {"select": 1.0}


@pytest.mark.parametrize("removal", ["clear", "remove"])
def test_queries_count_again_after_a_removal(removal: str) -> None:
    """After `clear()` or `remove()` on the query families, the kept children count the next queries."""
    alias = connection.alias
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")
    if removal == "clear":
        db_queries_total.clear()
        db_query_duration_seconds.clear()
    else:
        db_queries_total.remove(alias, "select")
        db_query_duration_seconds.remove(alias, "select")
    labels = {"database": alias, "operation": "select"}
    assert REGISTRY.get_sample_value("django_db_queries_total", labels) is None
    with connection.cursor() as cursor:
        for _ in range(4):
            cursor.execute("SELECT 1")
    assert REGISTRY.get_sample_value("django_db_queries_total", labels) == 4
    assert REGISTRY.get_sample_value("django_db_query_duration_seconds_count", labels) == 4
