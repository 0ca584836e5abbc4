"""Process metrics, cross-checked with /proc."""

from __future__ import annotations

import gc
import json
import os
import subprocess
import sys
import threading
import time

from metrics.collectors import (
    process_cpu_percent,
    process_memory_bytes,
    process_open_files_total,
    process_threads_total,
    python_gc_collections_total,
)
from metrics.instrument.system import collect_process

# RSS moves between two reads a few microseconds apart only by what the interpreter allocates in
# between: 2 MiB is far above that and far below any real error (a wrong unit, another pid).
RSS_TOLERANCE = 2 * 1024 * 1024


def vm_rss() -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS in /proc/self/status")


def test_memory_matches_vmrss() -> None:
    """django_process_memory_bytes is within 2 MiB of /proc/self/status VmRSS."""
    collect_process()
    reported = process_memory_bytes._get()
    actual = vm_rss()
    assert reported > 10 * 1024 * 1024
    assert abs(reported - actual) <= RSS_TOLERANCE


def test_memory_follows_an_allocation() -> None:
    """Allocating 64 MiB raises the reported memory by about that much."""
    collect_process()
    before = process_memory_bytes._get()
    block = bytearray(64 * 1024 * 1024)  # zero-filled, so the pages are touched
    collect_process()
    after = process_memory_bytes._get()
    del block
    assert abs((after - before) - 64 * 1024 * 1024) <= 4 * RSS_TOLERANCE


def test_threads_match_proc() -> None:
    """django_process_threads_total equals the entries of /proc/self/task, and follows new threads."""
    stop = threading.Event()
    threads = [threading.Thread(target=stop.wait) for _ in range(3)]
    collect_process()
    before = process_threads_total._get()
    assert before == len(os.listdir("/proc/self/task"))
    for thread in threads:
        thread.start()
    try:
        collect_process()
        assert process_threads_total._get() == len(os.listdir("/proc/self/task")) == before + 3
    finally:
        stop.set()
        for thread in threads:
            thread.join()


def test_open_files_match_proc() -> None:
    """django_process_open_files_total equals /proc/self/fd, and follows opened files."""
    # Both sides open the directory to list it, so both see that one descriptor too.
    collect_process()
    before = process_open_files_total._get()
    assert before == len(os.listdir("/proc/self/fd"))
    files = [open(os.devnull) for _ in range(5)]
    try:
        collect_process()
        assert process_open_files_total._get() == len(os.listdir("/proc/self/fd")) == before + 5
    finally:
        for file in files:
            file.close()


def proc_cpu_seconds() -> float:
    """Return user + system CPU time of this process from /proc/self/stat."""
    with open("/proc/self/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    return (int(fields[11]) + int(fields[12])) / ticks


def burn(seconds: float) -> None:
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        pass


def test_cpu_percent_covers_the_time_since_the_previous_collection() -> None:
    """CPU percent is CPU time over wall time since the previous collection, as /proc/self/stat counts it."""
    collect_process()
    cpu_start, wall_start = proc_cpu_seconds(), time.time()
    burn(0.4)
    time.sleep(0.4)  # idle half: about 50 %
    collect_process()
    cpu_end, wall_end = proc_cpu_seconds(), time.time()
    expected = (cpu_end - cpu_start) / (wall_end - wall_start) * 100
    reported = process_cpu_percent._get()
    # /proc/self/stat counts in clock ticks (10 ms): over 0.8 s that is a few percent. The busy
    # half gets a whole core only on an idle machine, hence the loose lower bound.
    assert 5 <= reported <= 80
    assert abs(reported - expected) <= 6


def test_first_collection_measures_from_process_start() -> None:
    """A fresh process's first reading is CPU time since start over its lifetime, without sleeping."""
    code = """
import json, os, time
end = time.perf_counter() + 0.5
while time.perf_counter() < end:
    pass
time.sleep(0.5)
from metrics.instrument.system import collect_process
from metrics.collectors import process_cpu_percent
t = time.perf_counter()
collect_process()
took = time.perf_counter() - t
with open("/proc/self/stat") as f:
    fields = f.read().rsplit(")", 1)[1].split()
with open("/proc/stat") as f:
    boot = next(int(line.split()[1]) for line in f if line.startswith("btime"))
tick = os.sysconf("SC_CLK_TCK")
cpu = (int(fields[11]) + int(fields[12])) / tick
life = time.time() - (boot + int(fields[19]) / tick)
print(json.dumps([process_cpu_percent._get(), cpu / life * 100, took]))
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60)
    percent, expected, took = json.loads(out.stdout)
    # Busy for 0.5 s (plus start-up) of a life of at least 1 s.
    assert 5 <= percent <= 95
    # Start time and CPU time both come in clock ticks, and btime in whole seconds: a few percent.
    assert abs(percent - expected) <= 8
    assert took < 0.1


def test_forked_child_reports_its_own_process() -> None:
    """After fork, the child reports its own pid's threads and CPU, not its parent's."""
    collect_process()
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: report, then leave without running pytest's exit handlers
        try:
            collect_process()
            with open("/proc/self/status") as status:
                threads = next(int(line.split()[1]) for line in status if line.startswith("Threads:"))
            result = [process_threads_total._get(), threads, process_cpu_percent._get()]
            os.write(write, json.dumps(result).encode())
        finally:
            os._exit(0)
    os.close(write)
    with os.fdopen(read) as pipe:
        reported_threads, actual_threads, cpu = json.loads(pipe.read())
    os.waitpid(pid, 0)
    assert reported_threads == actual_threads == 1
    assert 0 <= cpu <= 200


def gc_counts() -> dict[str, float]:
    samples = python_gc_collections_total.collect()[0].samples
    return {
        s.labels["generation"]: s.value for s in samples if s.name == "django_python_gc_collections_total"
    }


def test_gc_collections_count_the_interpreter_runs() -> None:
    """The GC counter equals gc.get_stats() collections per generation, and grows with gc.collect()."""
    for _ in range(5):
        gc.disable()  # no automatic collection between the two reads
        try:
            collect_process()
            first = gc_counts()
            expected = {str(g): float(s["collections"]) for g, s in enumerate(gc.get_stats())}
            gc.collect(1)
            gc.collect(1)
            collect_process()
            second = gc_counts()
        finally:
            gc.enable()
        # The counter started with the first collection in this process, counting all runs so far.
        if first == expected:
            break
    assert first == expected
    assert second["1"] == first["1"] + 2
    assert second["0"] == first["0"]
    assert set(first) == {str(g) for g in range(len(gc.get_stats()))}
