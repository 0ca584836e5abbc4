"""Multiprocess benchmark: scrape time against dead worker histories, and write cost.

For this package's shared store and prometheus_client's multiprocess mode, side by side: 4 live
workers with 200 series each (100 counters, 100 histograms), plus 0, 32, 256 and 1,024 dead
workers' histories with the same series. Dead histories are made by copying one real dead
worker's files (with fresh ids), as a long-running gunicorn with `max_requests` leaves them.
Writes are timed per operation in a child, with and without PROMETHEUS_MULTIPROC_DIR.

Run with `make bench`; writes bench/results/multiprocess_scrape.png.
"""

from __future__ import annotations

import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

DEAD = (0, 32, 256, 1024)
LIVE = 4
SERIES = 100
RESULTS = Path(__file__).parent / "results"


def define(lib):
    c = lib.Counter("bench_requests", "Requests.", ["route", "status"])
    h = lib.Histogram("bench_latency_seconds", "Latency.", ["route"])
    return c, h


def write_series(c, h) -> None:
    for i in range(SERIES):
        c.labels(f"/r/{i}", "200").inc()
        h.labels(f"/r/{i}").observe(0.01 * (i % 10))


def scenario(lib_name: str, dead: int) -> dict:
    """Run in a fresh interpreter with PROMETHEUS_MULTIPROC_DIR set: time scrapes."""
    directory = os.environ["PROMETHEUS_MULTIPROC_DIR"]
    if lib_name == "ours":
        import metrics as lib
        from metrics import core

        def scrape() -> bytes:
            return core.generate_latest()
    else:
        import prometheus_client as lib
        from prometheus_client import multiprocess

        def scrape() -> bytes:
            registry = lib.CollectorRegistry()
            multiprocess.MultiProcessCollector(registry, path=directory)
            return lib.generate_latest(registry)

    c, h = define(lib)
    gates = []
    for _ in range(LIVE):
        r, w = os.pipe()
        r2, w2 = os.pipe()
        if os.fork() == 0:
            write_series(c, h)
            os.write(w, b"x")
            os.read(r2, 1)
            os._exit(0)
        os.read(r, 1)
        gates.append(w2)
    if dead:
        before = set(os.listdir(directory))
        pid = os.fork()
        if pid == 0:
            write_series(c, h)
            os._exit(0)
        os.waitpid(pid, 0)
        template = sorted(set(os.listdir(directory)) - before)
        for i in range(1, dead):
            for name in template:
                src = os.path.join(directory, name)
                if lib_name == "ours":
                    data = bytearray(Path(src).read_bytes())
                    data[32:40] = (0xB000_0000 + i).to_bytes(8, "little")
                    Path(directory, f"slot-{5000 + i:04d}.mrs").write_bytes(bytes(data))
                else:
                    kind = name.rsplit("_", 1)[0]
                    shutil.copyfile(src, os.path.join(directory, f"{kind}_{900000 + i}.db"))
    start = time.perf_counter()
    scrape()
    first_s = time.perf_counter() - start
    times = []
    for _ in range(5):
        start = time.perf_counter()
        out = scrape()
        times.append(time.perf_counter() - start)
    assert b"bench_requests" in out, out[:200]
    for w in gates:
        os.write(w, b"x")
    return {"first": first_s, "steady": statistics.median(times)}


def writes(lib_name: str) -> dict:
    """Time child.inc() and observe() per operation in this process."""
    lib = __import__("metrics" if lib_name == "ours" else "prometheus_client")
    c, h = define(lib)
    child, hchild = c.labels("/w", "200"), h.labels("/w")
    n = 200_000
    out = {}
    for name, op in (("inc", lambda: child.inc()), ("observe", lambda: hchild.observe(0.03))):
        rounds = []
        for _ in range(5):
            start = time.perf_counter_ns()
            for _ in range(n):
                op()
            rounds.append((time.perf_counter_ns() - start) / n)
        out[name] = statistics.median(rounds)
    return out


def run_child(args: list[str], multiproc: bool) -> dict:
    env = dict(os.environ)
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    tmp = tempfile.mkdtemp(prefix="mpbench-")
    if multiproc:
        env["PROMETHEUS_MULTIPROC_DIR"] = tmp
    try:
        out = subprocess.run(
            [sys.executable, __file__, *args],
            env=env,
            capture_output=True,
            text=True,
            check=True,
            timeout=900,
        )
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def fmt(s: float) -> str:
    return f"{s * 1e3:.2f} ms" if s < 1 else f"{s:.2f} s"


def main() -> int:
    rows = []
    for dead in DEAD:
        ours = run_child(["scenario", "ours", str(dead)], True)
        theirs = run_child(["scenario", "prometheus_client", str(dead)], True)
        rows.append((dead, ours, theirs))
    base = rows[0][1]["steady"]
    print(f"scrape, {LIVE} live workers x {2 * SERIES} series, plus dead worker histories")
    print(
        f"{'dead':>6} {'ours steady':>13} {'ours 1st (folds)':>17} {'prometheus_client':>18} "
        f"{'ratio':>8} {'vs 0 dead':>10}"
    )
    for dead, ours, theirs in rows:
        print(
            f"{dead:>6} {fmt(ours['steady']):>13} {fmt(ours['first']):>17} {fmt(theirs['steady']):>18} "
            f"{theirs['steady'] / ours['steady']:>7.0f}x {ours['steady'] / base:>9.2f}x"
        )

    print("\nwrite cost per operation (ns), in-process vs PROMETHEUS_MULTIPROC_DIR")
    print(f"{'':>22} {'in-process':>11} {'multiprocess':>13} {'mp/in':>7}")
    for lib in ("ours", "prometheus_client"):
        local = run_child(["writes", lib], False)
        shared = run_child(["writes", lib], True)
        for op in ("inc", "observe"):
            label = f"{lib} {op}"
            print(f"{label:>22} {local[op]:>11.0f} {shared[op]:>13.0f} {shared[op] / local[op]:>6.2f}x")

    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib missing: no plot")
        return 0
    RESULTS.mkdir(exist_ok=True)
    fig, ax = plt.subplots(figsize=(7, 4.2))
    xs = [d for d, _, _ in rows]
    ax.plot(xs, [o["steady"] * 1e3 for _, o, _ in rows], "o-", label="django-metrics-rs (shared store)")
    ax.plot(xs, [o["first"] * 1e3 for _, o, _ in rows], "o:", label="django-metrics-rs, first scrape (folds)")
    ax.plot(xs, [t["steady"] * 1e3 for _, _, t in rows], "s-", label="prometheus_client multiprocess")
    ax.set_xscale("symlog", linthresh=32)
    ax.set_yscale("log")
    ax.set_xlabel("dead worker histories in the directory")
    ax.set_ylabel("scrape time (ms, log)")
    ax.set_title(f"Scrape time, {LIVE} live workers x {2 * SERIES} series")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    fig.tight_layout()
    out = RESULTS / "multiprocess_scrape.png"
    fig.savefig(out, dpi=110)
    print(f"\nplot: {out}")
    return 0


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "scenario":
        print(json.dumps(scenario(sys.argv[2], int(sys.argv[3]))))
    elif len(sys.argv) > 1 and sys.argv[1] == "writes":
        print(json.dumps(writes(sys.argv[2])))
    else:
        sys.exit(main())
