"""Core benchmark: this package's metric operations and scrapes against prometheus_client's.

Both run in the same interpreter, interleaved round by round, so machine noise hits both alike.
Prints ns/op (median of rounds) and the ratio prometheus_client / ours (higher is better for us),
then our protobuf scrape against our text scrape of the same 10k histogram series (ratio text /
protobuf: at least 1.0 means protobuf is no slower), and observe with native buckets against
classic buckets only (ratio native / classic: the goal is at most 1.3). Run with `make bench`
(release build); `python bench/core.py protobuf` or `python bench/core.py native` runs that row alone.
"""

from __future__ import annotations

import statistics
import sys
import time
from collections.abc import Callable

import prometheus_client

import metrics
from metrics import core

ROUNDS = 7


def per_op(fn: Callable[[int], None], n: int) -> float:
    """Return nanoseconds per operation of `fn(n)`, which performs n operations."""
    start = time.perf_counter_ns()
    fn(n)
    return (time.perf_counter_ns() - start) / n


def hot_ops(lib, registry) -> dict[str, Callable[[int], None]]:
    c = lib.Counter("bench_requests", "R.", ["a", "b", "c"], registry=registry)
    child = c.labels("GET", "home", "200")
    g = lib.Gauge("bench_temp", "T.", registry=registry)
    h = lib.Histogram("bench_latency_seconds", "L.", ["view"], registry=registry)
    hchild = h.labels("home")

    def labels_inc(n: int) -> None:
        for _ in range(n):
            c.labels("GET", "home", "200").inc()

    def child_inc(n: int) -> None:
        for _ in range(n):
            child.inc()

    def observe(n: int) -> None:
        for _ in range(n):
            hchild.observe(0.042)

    def gauge_set(n: int) -> None:
        for _ in range(n):
            g.set(3.5)

    return {
        "labels(a,b,c).inc()": labels_inc,
        "child.inc()": child_inc,
        "Histogram.observe()": observe,
        "Gauge.set()": gauge_set,
    }


def scrape_setup(lib, registry, kind: str, series: int) -> None:
    if kind == "counter":
        m = lib.Counter("scrape_counter", "C.", ["route", "code"], registry=registry)
        for i in range(series):
            m.labels(f"/route/{i}", "200").inc(i)
    else:
        m = lib.Histogram("scrape_hist_seconds", "H.", ["route", "code"], registry=registry)
        for i in range(series):
            m.labels(f"/route/{i}", "200").observe(i / series)


def protobuf_row(series: int = 10_000, rounds: int = 7) -> tuple[str, float, float]:
    """Time our protobuf and text scrapes of `series` histogram series, interleaved."""
    registry = core.CollectorRegistry()
    scrape_setup(metrics, registry, "histogram", series)
    a, b = [], []
    for _ in range(rounds):
        start = time.perf_counter_ns()
        proto = core.generate_latest_protobuf(registry)
        a.append(time.perf_counter_ns() - start)
        start = time.perf_counter_ns()
        text = core.generate_latest(registry)
        b.append(time.perf_counter_ns() - start)
    assert len(proto) > series and len(text) > series
    return f"scrape {series:>6,} histogram series", statistics.median(a), statistics.median(b)


def print_protobuf_row() -> None:
    name, proto_ns, text_ns = protobuf_row()
    print(f"\n{'operation (ours)':<34} {'protobuf':>14} {'text 0.0.4':>18} {'ratio':>8}")
    print(f"{name:<34} {fmt(proto_ns):>14} {fmt(text_ns):>18} {text_ns / proto_ns:>7.2f}x")


def native_row(n: int = 210_000, rounds: int = 7) -> tuple[str, float, float]:
    """Time Histogram.observe() with native buckets on and off, interleaved, over varied latencies."""
    registry = core.CollectorRegistry()
    values = [0.001 * 1.01**i for i in range(700)]  # 1 ms to about 1 s
    children = [
        metrics.Histogram(
            name, "L.", ["view"], native_histogram_bucket_factor=factor, registry=registry
        ).labels("x")
        for name, factor in (("bench_classic", None), ("bench_native", 1.1))
    ]

    def run(child) -> Callable[[int], None]:
        def observe(n: int) -> None:
            for _ in range(n // len(values)):
                for v in values:
                    child.observe(v)

        return observe

    classic, native = (run(c) for c in children)
    a, b = [], []
    for _ in range(rounds):
        a.append(per_op(native, n))
        b.append(per_op(classic, n))
    return "Histogram.observe() native", statistics.median(a), statistics.median(b)


def print_native_row() -> None:
    name, native_ns, classic_ns = native_row()
    print(f"\n{'operation (ours)':<34} {'native':>14} {'classic only':>18} {'ratio':>8}")
    print(f"{name:<34} {fmt(native_ns):>14} {fmt(classic_ns):>18} {native_ns / classic_ns:>7.2f}x")


def main() -> int:
    if sys.argv[1:] == ["protobuf"]:
        print_protobuf_row()
        return 0
    if sys.argv[1:] == ["native"]:
        print_native_row()
        return 0
    rows: list[tuple[str, float, float]] = []
    ours_reg, theirs_reg = core.CollectorRegistry(), prometheus_client.CollectorRegistry()
    ours, theirs = hot_ops(metrics, ours_reg), hot_ops(prometheus_client, theirs_reg)
    for name in ours:
        a, b = [], []
        for _ in range(ROUNDS):
            a.append(per_op(ours[name], 200_000))
            b.append(per_op(theirs[name], 200_000))
        rows.append((name, statistics.median(a), statistics.median(b)))

    for kind in ("counter", "histogram"):
        for series in (100, 1_000, 10_000):
            r_ours, r_theirs = core.CollectorRegistry(), prometheus_client.CollectorRegistry()
            scrape_setup(metrics, r_ours, kind, series)
            scrape_setup(prometheus_client, r_theirs, kind, series)
            rounds = ROUNDS if series < 10_000 else 3
            a, b = [], []
            for _ in range(rounds):
                start = time.perf_counter_ns()
                out_ours = core.generate_latest(r_ours)
                a.append(time.perf_counter_ns() - start)
                start = time.perf_counter_ns()
                out_theirs = prometheus_client.generate_latest(r_theirs)
                b.append(time.perf_counter_ns() - start)
            assert len(out_ours) > series and len(out_theirs) > series
            rows.append((f"scrape {series:>6,} {kind} series", statistics.median(a), statistics.median(b)))

    print(f"{'operation':<34} {'ours':>14} {'prometheus_client':>18} {'ratio':>8}")
    for name, ours_ns, theirs_ns in rows:
        print(f"{name:<34} {fmt(ours_ns):>14} {fmt(theirs_ns):>18} {theirs_ns / ours_ns:>7.1f}x")
    print_protobuf_row()
    print_native_row()
    return 0


def fmt(ns: float) -> str:
    if ns < 10_000:
        return f"{ns:.0f} ns"
    if ns < 10_000_000:
        return f"{ns / 1000:.1f} µs"
    return f"{ns / 1e6:.1f} ms"


if __name__ == "__main__":
    sys.exit(main())
