"""Process metrics, read with psutil when metrics are collected (a process hook, no thread).

- `django_process_memory_bytes`: resident set size (what `/proc/<pid>/status` calls VmRSS).
- `django_process_cpu_percent`: user + system CPU time used since the previous collection,
  divided by the wall-clock time between them, in percent of one core (200 = two cores busy).
  The first collection in a process measures from the process start. Nothing sleeps.
- `django_process_threads_total`, `django_process_open_files_total` (file descriptors).
- `django_python_gc_collections_total{generation}`: a counter, increased by the collections
  `gc.get_stats()` reports since the previous read.

Values are per process and keyed by pid, so a forked child measures itself, not its parent.
"""

from __future__ import annotations

import gc
import os
import threading
import time

import psutil

from metrics import core
from metrics.collectors import (
    process_cpu_percent,
    process_memory_bytes,
    process_open_files_total,
    process_threads_total,
    python_gc_collections_total,
)

_lock = threading.Lock()
_process: psutil.Process | None = None
# (pid, cpu seconds, wall-clock seconds) at the previous collection.
_last_cpu: tuple[int, float, float] | None = None
# Collections per generation already counted. Inherited across fork on purpose: the parent's
# collections are in the parent's counter (copied into a child's process-local store, or kept in
# the parent's slot of a shared store), so the child counts only its own from there.
_gc_counted: list[int] = []


def _current_process() -> psutil.Process:
    global _process
    pid = os.getpid()
    if _process is None or _process.pid != pid:
        _process = psutil.Process(pid)
    return _process


def collect_process() -> None:
    """Refresh the process gauges and the GC counter (a collect hook; cheap, never sleeps)."""
    global _last_cpu
    with _lock:
        process = _current_process()
        with process.oneshot():
            memory = process.memory_info().rss
            cpu_times = process.cpu_times()
            threads = process.num_threads()
            fds = process.num_fds()
            now = time.time()
            cpu = cpu_times.user + cpu_times.system
            if _last_cpu is None or _last_cpu[0] != process.pid:
                since = process.create_time()
                used = cpu
            else:
                since = _last_cpu[2]
                used = cpu - _last_cpu[1]
        _last_cpu = (process.pid, cpu, now)
        elapsed = now - since
        process_memory_bytes.set(memory)
        process_cpu_percent.set(max(used, 0.0) / elapsed * 100.0 if elapsed > 0 else 0.0)
        process_threads_total.set(threads)
        process_open_files_total.set(fds)
        for generation, stats in enumerate(gc.get_stats()):
            total = stats["collections"]
            if generation == len(_gc_counted):
                _gc_counted.append(0)
                # Expose every generation from the first scrape on, at 0 if it never ran.
                python_gc_collections_total.labels(str(generation))
            delta = total - _gc_counted[generation]
            if delta > 0:
                python_gc_collections_total.labels(str(generation)).inc(delta)
                _gc_counted[generation] = total
            elif delta < 0:
                # Should not happen (the interpreter's counts only grow); resynchronise.
                _gc_counted[generation] = total


def install() -> None:
    """Read the process metrics at every collection and, in multiprocess mode, in every worker."""
    core.add_process_hook(collect_process)
