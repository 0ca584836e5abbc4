"""The metric classes behave like prometheus_client's, backed by the Rust core."""

from __future__ import annotations

import asyncio
import logging
import os
import threading

import pytest

from metrics import CollectorRegistry, Counter, Enum, Gauge, Histogram, Info, Summary, generate_latest


@pytest.fixture
def reg() -> CollectorRegistry:
    return CollectorRegistry()


def value(reg: CollectorRegistry, name: str, **labels: str) -> float | None:
    return reg.get_sample_value(name, labels)


def test_counter_total_suffix_is_normalised(reg: CollectorRegistry) -> None:
    """A counter named `x` or `x_total` is exposed as `x_total`."""
    a = Counter("jobs", "Jobs.", registry=reg)
    b = Counter("tasks_total", "Tasks.", registry=reg)
    a.inc()
    b.inc(2.5)
    assert value(reg, "jobs_total") == 1.0
    assert value(reg, "tasks_total") == 2.5
    assert a._name == "jobs" and b._name == "tasks"


def test_namespace_subsystem_and_unit_build_the_name(reg: CollectorRegistry) -> None:
    """Name parts are joined with underscores and the unit appended once."""
    g = Gauge("size", "Size.", namespace="app", subsystem="disk", unit="bytes", registry=reg)
    g.set(3)
    assert value(reg, "app_disk_size_bytes") == 3.0


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"name": ""}, "should not be empty"),
        ({"labelnames": ["__x"]}, "Reserved label"),
        ({"labelnames": [""]}, "Invalid label"),
    ],
)
def test_bad_names_are_value_errors(reg: CollectorRegistry, kwargs: dict, message: str) -> None:
    """Bad metric and label names raise a clear ValueError (UTF-8 names: see test_utf8.py)."""
    args = {"name": "ok", "documentation": "d", "registry": reg, **kwargs}
    with pytest.raises(ValueError, match=message):
        Counter(**args)


def test_reserved_labels_per_type(reg: CollectorRegistry) -> None:
    """`le` is reserved on histograms, `quantile` on summaries."""
    with pytest.raises(ValueError, match="Reserved"):
        Histogram("h", "h", ["le"], registry=reg)
    with pytest.raises(ValueError, match="Reserved"):
        Summary("s", "s", ["quantile"], registry=reg)
    Gauge("g", "g", ["le", "quantile"], registry=reg)


def test_labels_by_position_and_keyword_share_a_child(reg: CollectorRegistry) -> None:
    """`labels(*values)` and `labels(**kw)` address the same series, values stringified."""
    c = Counter("req", "Requests.", ["method", "status"], registry=reg)
    c.labels("GET", 200).inc()
    c.labels(method="GET", status="200").inc()
    c.labels(status=200, method="GET").inc()
    assert value(reg, "req_total", method="GET", status="200") == 3.0


def test_labels_keep_distinct_string_forms_apart(reg: CollectorRegistry) -> None:
    """`labels(1)` and `labels(True)` are different series, as their str() differ."""
    c = Counter("flags", "Flags.", ["v"], registry=reg)
    c.labels(1).inc()
    c.labels(True).inc(5)
    assert value(reg, "flags_total", v="1") == 1.0
    assert value(reg, "flags_total", v="True") == 5.0


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda c: c.labels("a"), "Incorrect label count"),
        (lambda c: c.labels("a", "b", "c"), "Incorrect label count"),
        (lambda c: c.labels(x="a", y="b"), "Incorrect label names"),
        (lambda c: c.labels("a", method="b"), "both"),
        (lambda c: c.inc(), "missing label values"),
        (lambda c: c.labels("a", "b").labels("c", "d"), "already has labels"),
    ],
)
def test_label_misuse_is_a_value_error(reg: CollectorRegistry, call, message: str) -> None:
    """Wrong label counts, names or chaining raise ValueError."""
    c = Counter("misuse", "M.", ["method", "status"], registry=reg)
    with pytest.raises(ValueError, match=message):
        call(c)


def test_labels_on_unlabelled_metric_is_an_error(reg: CollectorRegistry) -> None:
    """A metric without label names has no children."""
    with pytest.raises(ValueError, match="No label names"):
        Counter("plain", "P.", registry=reg).labels("x")


def test_negative_counter_increment_is_refused(reg: CollectorRegistry) -> None:
    """Counters only go up."""
    c = Counter("up", "Up.", registry=reg)
    with pytest.raises(ValueError, match="non-negative"):
        c.inc(-1)
    assert value(reg, "up_total") == 0.0


def test_duplicate_registration_is_refused(reg: CollectorRegistry) -> None:
    """Two families whose sample names clash cannot share a registry."""
    Counter("dup", "D.", registry=reg)
    with pytest.raises(ValueError, match="Duplicated timeseries"):
        Gauge("dup_total", "D.", registry=reg)
    with pytest.raises(ValueError, match="Duplicated timeseries"):
        Counter("dup", "D.", registry=reg)


def test_unregistered_metric_can_be_registered_again(reg: CollectorRegistry) -> None:
    """unregister frees the names."""
    c = Counter("again", "A.", registry=reg)
    reg.unregister(c)
    assert value(reg, "again_total") is None
    reg.register(c)
    c.inc()
    assert value(reg, "again_total") == 1.0


def test_registry_none_registers_nowhere() -> None:
    """`registry=None` creates a free-standing metric, as in prometheus_client."""
    from metrics.core import REGISTRY

    first = Counter("free_standing", "F.", registry=None)
    second = Counter("free_standing", "F.", registry=None)  # no clash: registered nowhere
    first.inc(2)
    second.inc(3)
    assert (first._get(), second._get()) == (2.0, 3.0)
    assert REGISTRY.get_sample_value("free_standing_total") is None


def test_gauge_operations(reg: CollectorRegistry) -> None:
    """inc, dec, set and set_to_current_time."""
    g = Gauge("temp", "T.", registry=reg)
    g.inc(5)
    g.dec(2)
    assert value(reg, "temp") == 3.0
    g.set(-7.25)
    assert value(reg, "temp") == -7.25
    g.set_to_current_time()
    assert abs(value(reg, "temp") - __import__("time").time()) < 5


def test_gauge_multiprocess_mode_is_validated(reg: CollectorRegistry) -> None:
    """An unknown multiprocess mode is a ValueError."""
    with pytest.raises(ValueError, match="multiprocess mode"):
        Gauge("mode", "M.", registry=reg, multiprocess_mode="average")


def test_gauge_track_inprogress_as_context_and_decorator(reg: CollectorRegistry) -> None:
    """track_inprogress counts up on entry and down on exit, also around exceptions."""
    g = Gauge("busy", "B.", registry=reg)
    with g.track_inprogress():
        assert value(reg, "busy") == 1.0

    @g.track_inprogress()
    def work() -> float | None:
        return value(reg, "busy")

    assert work() == 1.0
    with pytest.raises(RuntimeError), g.track_inprogress():
        raise RuntimeError
    assert value(reg, "busy") == 0.0


def test_gauge_set_function_is_read_at_collection(reg: CollectorRegistry) -> None:
    """set_function supplies the value at every collection."""
    g = Gauge("answer", "A.", registry=reg)
    box = [1.0]
    g.set_function(lambda: box[0])
    assert value(reg, "answer") == 1.0
    box[0] = 42.0
    assert value(reg, "answer") == 42.0


def test_histogram_buckets_and_time(reg: CollectorRegistry) -> None:
    """Observations land in cumulative buckets; time() observes durations."""
    h = Histogram("lat", "L.", buckets=[0.1, 1, "5"], registry=reg)
    assert h._upper_bounds == [0.1, 1.0, 5.0, float("inf")]
    for v in (0.05, 0.5, 0.5, 10):
        h.observe(v)
    assert value(reg, "lat_bucket", le="0.1") == 1.0
    assert value(reg, "lat_bucket", le="1.0") == 3.0
    assert value(reg, "lat_bucket", le="+Inf") == 4.0
    assert value(reg, "lat_count") == 4.0
    assert value(reg, "lat_sum") == 11.05
    with h.time():
        pass

    @h.time()
    def f() -> int:
        return 7

    assert f() == 7
    assert f.__name__ == "f"
    assert value(reg, "lat_count") == 6.0


def test_histogram_bucket_validation(reg: CollectorRegistry) -> None:
    """Unsorted or too few buckets are refused."""
    with pytest.raises(ValueError, match="sorted"):
        Histogram("h1", "H.", buckets=[2, 1], registry=reg)
    with pytest.raises(ValueError, match="at least two"):
        Histogram("h2", "H.", buckets=[float("inf")], registry=reg)


def test_async_functions_are_timed(reg: CollectorRegistry) -> None:
    """Decorators keep async functions async and time their awaited body."""
    h = Histogram("async_lat", "L.", registry=reg)

    @h.time()
    async def f() -> str:
        await asyncio.sleep(0.01)
        return "done"

    assert asyncio.run(f()) == "done"
    assert value(reg, "async_lat_count") == 1.0
    assert value(reg, "async_lat_sum") >= 0.01


def test_summary_counts_and_sums(reg: CollectorRegistry) -> None:
    """A summary exposes count and sum."""
    s = Summary("sizes", "S.", registry=reg)
    s.observe(2)
    s.observe(3)
    assert value(reg, "sizes_count") == 2.0
    assert value(reg, "sizes_sum") == 5.0


def test_count_exceptions(reg: CollectorRegistry) -> None:
    """count_exceptions counts only matching exception types and re-raises."""
    c = Counter("errors", "E.", registry=reg)
    with pytest.raises(KeyError), c.count_exceptions(KeyError):
        raise KeyError("x")
    with pytest.raises(ValueError), c.count_exceptions(KeyError):
        raise ValueError("y")

    @c.count_exceptions()
    def boom() -> None:
        raise RuntimeError

    with pytest.raises(RuntimeError):
        boom()
    assert value(reg, "errors_total") == 2.0


def test_remove_and_clear(reg: CollectorRegistry) -> None:
    """remove drops one child, clear drops all."""
    c = Counter("rc", "R.", ["a"], registry=reg)
    c.labels("x").inc()
    c.labels("y").inc()
    c.remove("x")
    assert value(reg, "rc_total", a="x") is None
    assert value(reg, "rc_total", a="y") == 1.0
    c.clear()
    assert value(reg, "rc_total", a="y") is None
    c.labels("x").inc()
    assert value(reg, "rc_total", a="x") == 1.0


def test_info_and_enum(reg: CollectorRegistry) -> None:
    """Info exposes its pairs; Enum exposes one active state."""
    i = Info("build", "B.", registry=reg)
    i.info({"version": "1.2", "commit": "abc"})
    assert value(reg, "build_info", version="1.2", commit="abc") == 1.0
    e = Enum("phase", "P.", states=["starting", "running"], registry=reg)
    assert value(reg, "phase", phase="starting") == 1.0
    e.state("running")
    assert value(reg, "phase", phase="running") == 1.0
    assert value(reg, "phase", phase="starting") == 0.0
    with pytest.raises(ValueError):
        e.state("stopped")
    with pytest.raises(ValueError, match="No states"):
        Enum("noenum", "N.", registry=reg)
    with pytest.raises(ValueError, match="cannot have a unit"):
        Info("i2", "I.", unit="bytes", registry=reg)


def test_threads_lose_no_increments(reg: CollectorRegistry) -> None:
    """8 threads x 100,000 increments on shared children lose nothing."""
    c = Counter("threads", "T.", ["k"], registry=reg)
    h = Histogram("threads_h", "T.", registry=reg)

    def work() -> None:
        child = c.labels("a")
        for _ in range(100_000):
            child.inc()
            c.labels("b").inc(2)
        for _ in range(10_000):
            h.observe(0.3)

    threads = [threading.Thread(target=work) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert value(reg, "threads_total", k="a") == 800_000.0
    assert value(reg, "threads_total", k="b") == 1_600_000.0
    assert value(reg, "threads_h_count") == 80_000.0


def test_child_after_fork_keeps_working(reg: CollectorRegistry) -> None:
    """A forked child can write and expose metrics; the parent is unaffected."""
    c = Counter("forked", "F.", ["who"], registry=reg)
    c.labels("parent").inc()
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - runs in the child
        try:
            c.labels("child").inc(3)
            c.labels("parent").inc()
            os.write(w, generate_latest(reg))
        finally:
            os._exit(0)
    os.close(w)
    out = b""
    while chunk := os.read(r, 65536):
        out += chunk
    os.waitpid(pid, 0)
    assert b'forked_total{who="child"} 3.0' in out
    assert b'forked_total{who="parent"} 2.0' in out
    assert value(reg, "forked_total", who="parent") == 1.0


def test_import_starts_no_threads() -> None:
    """Importing the package starts no thread."""
    import subprocess
    import sys

    code = "import threading, metrics, metrics.collectors; print(threading.active_count())"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "1"


def test_a_python_clock_never_runs_under_a_family_lock() -> None:
    """A new series reads Python's `time.time`; a Python replacement that lets another thread in
    (freezegun does) must not find the family locked, or both threads hang (the other one waits
    for the lock holding the GIL). Run in a child process so a regression fails instead of hanging."""
    import subprocess
    import sys
    import textwrap

    script = textwrap.dedent(
        """
        import threading, time
        from metrics import CollectorRegistry, Counter

        c = Counter("c", "C.", ["k"], registry=CollectorRegistry())
        real, calls, other = time.time, [], []

        def patched():
            calls.append(1)
            if len(calls) == 1:
                t = threading.Thread(target=lambda: other.append(c.labels("b")))
                t.start()
                t.join(5)  # releases the GIL: the other thread runs labels() now
            return real()

        time.time = patched
        c.labels("a").inc()
        assert other, "the other thread's labels() did not finish"
        print("ok")
        """
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=30)
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr


def test_a_failing_collector_logs_one_line_a_minute_and_the_rest_is_served(caplog) -> None:
    """A collector that raises at every scrape: one warning line naming it, no traceback, others served."""
    from metrics import core

    class BrokenBeforeMigrate:
        def describe(self) -> list[object]:
            return []

        def collect(self) -> list[object]:
            raise RuntimeError('relation "auth_user" does not exist')

    registry = core.CollectorRegistry(auto_describe=True)
    working = core.Counter("served_anyway", "Still served.", registry=registry)
    working.inc()
    broken = BrokenBeforeMigrate()
    registry.register(broken)
    try:
        with caplog.at_level(logging.WARNING, logger="metrics"):
            first = registry.encode().decode()
            second = registry.encode().decode()
    finally:
        registry.unregister(broken)
    assert "served_anyway_total 1.0" in first and "served_anyway_total 1.0" in second
    lines = [r for r in caplog.records if "BrokenBeforeMigrate" in r.getMessage()]
    assert len(lines) == 1, [r.getMessage() for r in caplog.records]
    assert lines[0].exc_info is None
    assert 'RuntimeError: relation "auth_user" does not exist' in lines[0].getMessage()
