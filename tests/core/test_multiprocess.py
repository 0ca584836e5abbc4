"""Multiprocess mode: every process's values merged exactly, dead ones folded, bad files survived.

Each scenario runs in a fresh interpreter with PROMETHEUS_MULTIPROC_DIR set, as a deployment
would, so the test process's own store is never switched.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

PRELUDE = """
import json, os, signal, sys, time
import multiprocessing as mp
import metrics
from metrics import Counter, Gauge, Histogram, REGISTRY, generate_latest
from metrics import core
def value(name, **labels):
    return REGISTRY.get_sample_value(name, labels)
def emit(obj):
    print("RESULT " + json.dumps(obj))
"""


def run(tmp_path: Path, code: str, timeout: float = 120, via_env: bool = True) -> dict:
    drop = ("PROMETHEUS_MULTIPROC_DIR", "DJANGO_SETTINGS_MODULE")
    env = {k: v for k, v in os.environ.items() if k not in drop}
    if via_env:
        env["PROMETHEUS_MULTIPROC_DIR"] = str(tmp_path)
    proc = subprocess.run(
        [sys.executable, "-c", PRELUDE + textwrap.dedent(code)],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert proc.returncode == 0, proc.stderr
    lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
    assert lines, proc.stdout + proc.stderr
    return json.loads(lines[-1][len("RESULT ") :])


def slots(path: Path) -> list[str]:
    return sorted(p.name for p in path.glob("slot-*.mrs"))


def test_env_var_switches_to_the_shared_store(tmp_path: Path) -> None:
    """PROMETHEUS_MULTIPROC_DIR set before import selects the shared store."""
    out = run(tmp_path, "emit([metrics._core.store_kind(), core.multiprocess_dir()])")
    assert out == ["shared", str(tmp_path)]


def test_directory_from_django_settings_applies_at_app_loading(tmp_path: Path) -> None:
    """A directory given only in Django settings is used from `ready()` on, values moved over."""
    out = run(
        tmp_path,
        f"""
        import django
        from django.conf import settings
        settings.configure(
            INSTALLED_APPS=["django.contrib.contenttypes", "django.contrib.auth", "metrics"],
            DATABASES={{"default": {{"ENGINE": "django.db.backends.sqlite3", "NAME": ":memory:"}}}},
            PROMETHEUS_MULTIPROC_DIR={str(tmp_path)!r},
        )
        early = Counter("counted_before_setup", "Early.")
        early.inc(2)
        before = metrics._core.store_kind()
        django.setup()
        early.inc()
        pid = os.fork()
        if pid == 0:
            early.inc(10)
            os._exit(0)
        os.waitpid(pid, 0)
        emit([before, metrics._core.store_kind(), value("counted_before_setup_total")])
        """,
        via_env=False,
    )
    assert out == ["local", "shared", 13.0]


def test_many_processes_lose_nothing(tmp_path: Path) -> None:
    """8 forked processes x 100,000 increments are all counted, and their slots are folded."""
    out = run(
        tmp_path,
        """
        c = Counter("mp_events", "Events.", ["k"])
        h = Histogram("mp_latency_seconds", "Latency.")
        def work():
            child = c.labels("a")
            for _ in range(100_000):
                child.inc()
            for _ in range(1_000):
                h.observe(0.2)
        ctx = mp.get_context("fork")
        procs = [ctx.Process(target=work) for _ in range(8)]
        for p in procs: p.start()
        for p in procs: p.join()
        first = value("mp_events_total", k="a")
        second = value("mp_events_total", k="a")
        emit([first, second, value("mp_latency_seconds_count"), value("mp_latency_seconds_bucket", le="0.25"),
              sorted(os.listdir(os.environ["PROMETHEUS_MULTIPROC_DIR"]))])
        """,
    )
    assert out[0] == 800_000.0
    assert out[1] == 800_000.0, "totals must not change once folded into the archive"
    assert out[2] == 8_000.0 and out[3] == 8_000.0
    assert [n for n in out[4] if n.startswith("slot-")] == ["slot-0000.mrs"], out[4]
    assert "archive.mrs" in out[4]


def test_forked_child_counts_only_its_own(tmp_path: Path) -> None:
    """A child after os.fork writes to its own slot: nothing the parent counted is doubled."""
    out = run(
        tmp_path,
        """
        c = Counter("forks", "F.")
        c.inc()
        r, w = os.pipe()
        pid = os.fork()
        if pid == 0:
            c.inc(3)
            os.write(w, b"x")
            os._exit(0)
        os.read(r, 1)
        os.waitpid(pid, 0)
        emit(value("forks_total"))
        """,
    )
    assert out == 4.0


def test_sigkilled_worker_keeps_its_counts(tmp_path: Path) -> None:
    """A worker killed with SIGKILL frees its slot; what it counted is folded, not lost."""
    out = run(
        tmp_path,
        """
        c = Counter("killed_work", "W.")
        r, w = os.pipe()
        pid = os.fork()
        if pid == 0:
            for _ in range(12_345):
                c.inc()
            os.write(w, b"x")
            time.sleep(60)
            os._exit(0)
        os.read(r, 1)
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        emit([value("killed_work_total"), value("killed_work_total")])
        """,
    )
    assert out == [12_345.0, 12_345.0]


def test_metric_created_only_in_another_process_appears(tmp_path: Path) -> None:
    """A family only a (live or dead) worker created is exposed with its help text and type."""
    out = run(
        tmp_path,
        """
        r, w = os.pipe()
        r2, w2 = os.pipe()
        pid = os.fork()
        if pid == 0:
            Counter("worker_only", "Only the worker knows.", ["task"]).labels("send").inc(2)
            Gauge("worker_gauge", "Live gauge.", multiprocess_mode="livesum").set(7)
            os.write(w, b"x")
            os.read(r2, 1)
            os._exit(0)
        os.read(r, 1)
        live = generate_latest().decode()
        os.write(w2, b"x")
        os.waitpid(pid, 0)
        dead = generate_latest().decode()
        emit([live, dead])
        """,
    )
    live, dead = out
    assert "# HELP worker_only_total Only the worker knows." in live
    assert "# TYPE worker_only_total counter" in live
    assert 'worker_only_total{task="send"} 2.0' in live
    assert "worker_gauge 7.0" in live
    assert 'worker_only_total{task="send"} 2.0' in dead
    assert "worker_gauge" not in dead, "live-only gauges of dead workers vanish"


@pytest.mark.parametrize(
    ("mode", "live", "dead"),
    [
        ("livesum", "5.0", None),
        ("sum", "5.0", "5.0"),
        ("max", "5.0", "5.0"),
        ("min", "0.0", "0.0"),
        ("mostrecent", "5.0", "5.0"),
        ("liveall", 'g{pid="CHILD"} 5.0', None),
        ("liveworker", 'g{slot="1"} 5.0', None),
    ],
)
def test_gauge_modes(tmp_path: Path, mode: str, live: str, dead: str | None) -> None:
    """Gauges merge by their multiprocess mode; live-only modes drop dead workers."""
    out = run(
        tmp_path,
        f"""
        g = Gauge("g", "G.", multiprocess_mode="{mode}")
        g.set(0)
        r, w = os.pipe()
        r2, w2 = os.pipe()
        pid = os.fork()
        if pid == 0:
            g.set(5)
            os.write(w, b"x")
            os.read(r2, 1)
            os._exit(0)
        os.read(r, 1)
        live = [l for l in generate_latest().decode().splitlines() if l.startswith("g")]
        os.write(w2, b"x")
        os.waitpid(pid, 0)
        dead = [l for l in generate_latest().decode().splitlines() if l.startswith("g")]
        emit([live, dead, pid])
        """,
    )
    live_lines, dead_lines, child = out
    want = live.replace("CHILD", str(child))
    assert any(line == want or line == f"g {want}" for line in live_lines), live_lines
    if dead is None:
        assert not any(str(child) in line or line.endswith(" 5.0") for line in dead_lines), dead_lines
    else:
        assert f"g {dead}" in dead_lines, dead_lines


@pytest.mark.parametrize(
    ("mode", "written", "dead"),
    [
        ("livemin", 5.0, None),
        ("min", 5.0, 5.0),
        ("max", -5.0, -5.0),
        ("livemax", -5.0, None),
        ("liveall", 5.0, None),
        ("all", 5.0, None),
        ("liveworker", 5.0, None),
        ("sum", 5.0, 5.0),
        ("mostrecent", 5.0, 5.0),
    ],
)
def test_a_gauge_a_process_never_wrote_contributes_nothing(
    tmp_path: Path, mode: str, written: float, dead: float | None
) -> None:
    """Only the process that wrote a gauge shows in the merge; one that only created it adds no 0.

    The parent plays gunicorn's master: it imports the gauge (creating its series) and never
    writes it; a forked worker sets it.
    """
    out = run(
        tmp_path,
        f"""
        g = Gauge("g", "G.", multiprocess_mode="{mode}")
        assert g._get() == 0.0, "in-process reads of a new gauge are 0"
        def samples():
            return [(s.labels, s.value) for m in REGISTRY.collect() if m.name == "g" for s in m.samples]
        alone = samples()
        r, w = os.pipe()
        r2, w2 = os.pipe()
        pid = os.fork()
        if pid == 0:
            g.set({written})
            os.write(w, b"x")
            os.read(r2, 1)
            os._exit(0)
        os.read(r, 1)
        live = samples()
        os.write(w2, b"x")
        os.waitpid(pid, 0)
        emit([alone, live, samples(), pid, g._get()])
        """,
    )
    alone, live, after, child, own = out
    assert alone == [], "a gauge no process wrote is absent"
    assert [value for _, value in live] == [written], live
    if mode in ("liveall", "all"):
        assert live[0][0] == {"pid": str(child)}, live
    assert [value for _, value in after] == ([] if dead is None else [dead]), after
    assert own == 0.0


@pytest.mark.parametrize(
    "block",
    [
        "with g.track_inprogress():\n    pass",
        "@g.track_inprogress()\ndef f():\n    pass\nf()",
        "with g.time():\n    pass",
        "g.inc(2)\ng.dec(2)",
    ],
)
def test_mostrecent_gauge_sees_writes_of_context_managers(tmp_path: Path, block: str) -> None:
    """A later process's track_inprogress()/time() write is the most recent one, like set()."""
    run(tmp_path, 'Gauge("g", "G.", multiprocess_mode="mostrecent").set(5)\nemit(1)')
    time.sleep(0.01)
    code = 'g = Gauge("g", "G.", multiprocess_mode="mostrecent")\n' + block + "\nemit(value('g'))"
    merged = run(tmp_path, code)
    if "time()" in block:
        assert merged < 1.0, merged  # the block's duration, not the 5 written earlier
    else:
        assert merged == 0.0, merged


def test_bad_files_in_the_directory_never_fail_a_scrape(tmp_path: Path) -> None:
    """Garbage, truncated and foreign-host files are skipped or recovered, logged and counted."""
    prep = run(
        tmp_path,
        """
        c = Counter("survivor", "S.")
        r, w = os.pipe()
        r2, w2 = os.pipe()
        pid = os.fork()
        if pid == 0:
            c.inc(5)
            os.write(w, b"x")
            os.read(r2, 1)
            os._exit(0)
        os.read(r, 1)
        d = os.environ["PROMETHEUS_MULTIPROC_DIR"]
        # Copy the live child's slot: one copy truncated mid-record, one claimed by another host.
        child_slot = sorted(f for f in os.listdir(d) if f.startswith("slot-"))[-1]
        data = open(os.path.join(d, child_slot), "rb").read()
        os.write(w2, b"x")
        os.waitpid(pid, 0)
        used = int.from_bytes(data[16:24], "little")
        truncated = bytearray(data[: used - 3])
        truncated[32:40] = b"\x02" * 8
        open(os.path.join(d, "slot-0100.mrs"), "wb").write(bytes(truncated))
        foreign = bytearray(data[:used])
        foreign[24:32] = b"\\x01" * 8
        foreign[64:128] = b"elsewhere".ljust(64, b"\\0")
        open(os.path.join(d, "slot-0101.mrs"), "wb").write(bytes(foreign))
        open(os.path.join(d, "slot-0102.mrs"), "wb").write(b"this is not a store file" * 20)
        open(os.path.join(d, "slot-0103.mrs"), "wb").write(b"")
        open(os.path.join(d, "counter_123.db"), "wb").write(b"\\0" * 64)
        first = value("survivor_total")
        emit([first, value("django_metrics_store_problems_total"), sorted(os.listdir(d))])
        """,
    )
    first, problems, files = prep
    # The truncated copy lost its last series (cut mid-record), the foreign one is not counted.
    assert first == 5.0
    assert problems >= 2
    assert "slot-0101.mrs" in files, "a foreign host's file is left alone"
    assert "slot-0102.mrs.bad" in files, "garbage is moved aside"


def test_unusable_directory_is_a_store_error_naming_it(tmp_path: Path) -> None:
    """A missing directory, or a file in its place, is an OSError (StoreError) naming the path."""
    from metrics import _core
    from metrics.core import StoreError

    assert issubclass(StoreError, OSError)
    assert not issubclass(StoreError, ValueError)
    missing = str(tmp_path / "missing")
    with pytest.raises(StoreError, match="missing") as info:
        _check(missing)
    assert str(info.value).startswith(missing), str(info.value)
    plain = tmp_path / "file"
    plain.write_text("x")
    with pytest.raises(OSError, match="not a directory") as info:
        _check(str(plain))
    assert isinstance(info.value, StoreError)
    assert str(plain) in str(info.value)
    # A bad argument stays a ValueError.
    with pytest.raises(ValueError, match="0o644"):
        _core.set_store_file_mode(0o644)


def test_enable_multiprocess_on_a_file_is_a_store_error(tmp_path: Path) -> None:
    """enable_multiprocess raises StoreError with the path; the env var path logs and carries on."""
    plain = tmp_path / "file"
    plain.write_text("x")
    out = run(
        tmp_path,
        f"""
        try:
            core.enable_multiprocess({str(plain)!r})
        except core.StoreError as exc:
            emit([type(exc).__name__, isinstance(exc, OSError), str(exc)])
        """,
        via_env=False,
    )
    assert out == ["StoreError", True, f"{plain}: not a directory"]


def _check(path: str) -> None:
    """Open a store directory the way enable_multiprocess does, without switching this process."""
    from metrics import _core

    _core.compact(path)


def test_mark_process_dead_folds_now(tmp_path: Path) -> None:
    """mark_process_dead (gunicorn's child_exit) folds a dead worker's slot immediately."""
    out = run(
        tmp_path,
        """
        c = Counter("folded_now", "F.")
        pid = os.fork()
        if pid == 0:
            c.inc(2)
            os._exit(0)
        os.waitpid(pid, 0)
        d = os.environ["PROMETHEUS_MULTIPROC_DIR"]
        before = sorted(f for f in os.listdir(d) if f.startswith("slot-"))
        core.mark_process_dead(pid)
        after = sorted(f for f in os.listdir(d) if f.startswith("slot-"))
        emit([before, after, value("folded_now_total")])
        """,
    )
    before, after, total = out
    assert len(before) == 2 and after == ["slot-0000.mrs"]
    assert total == 2.0


def test_children_forked_during_a_scrape_do_not_keep_its_locks(tmp_path: Path) -> None:
    """A child forked while another thread scrapes or folds inherits none of their locks.

    The store takes its locks only with the GIL held, and a fork needs the GIL. An inherited
    directory lock would stay held for the child's whole life: no process could claim a slot or
    fold dead ones (this test then counts only part of the children, after a minute of waiting).
    """
    out = run(
        tmp_path,
        """
        import threading
        c = Counter("fork_during_scrape", "F.")
        stop = threading.Event()
        def scraper():
            while not stop.is_set():
                generate_latest()
                core.mark_process_dead()
        thread = threading.Thread(target=scraper)
        thread.start()
        children = []
        for _ in range(30):
            r, w = os.pipe()
            pid = os.fork()
            if pid == 0:
                c.inc()
                os.read(r, 1)
                os._exit(0)
            children.append((pid, w))
            time.sleep(0.005)
        stop.set()
        thread.join()
        time.sleep(0.2)
        pid, w = children.pop()
        os.write(w, b"x")
        os.waitpid(pid, 0)
        start = time.monotonic()
        total = value("fork_during_scrape_total")
        took = time.monotonic() - start
        d = os.environ["PROMETHEUS_MULTIPROC_DIR"]
        slots = len([f for f in os.listdir(d) if f.startswith("slot-")])
        problems = value("django_metrics_store_problems_total")
        for pid, w in children:
            os.write(w, b"x")
            os.waitpid(pid, 0)
        emit([total, took, slots, problems])
        """,
    )
    total, took, slots, problems = out
    assert total == 30.0
    assert took < 1.5, "the directory lock was held by a child"
    assert slots == 30, "the exited child's slot was folded; the parent and 29 live children remain"
    assert problems == 0.0
