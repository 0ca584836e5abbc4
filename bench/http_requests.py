"""HTTP benchmark: what each way of recording the HTTP metrics adds to a Django request.

The stacks differ only in their metrics middleware: none (bare), a no-op Python middleware (the
floor of any middleware), django-prometheus, a minimal hand-written prometheus_client middleware
recording the spec's five metrics, and this package's `MetricsMiddleware` by default, with
`METRICS_COMPAT_DJANGO_PROMETHEUS`, with `METRICS_EXEMPLARS` (requests carry a `traceparent`),
with `METRICS_NATIVE_HISTOGRAMS` (once that setting exists) and awaited under ASGI.

The table (always): each middleware alone around a view that returns a ready response, in
interleaved rounds (shuffled order each round, so machine noise hits all stacks alike); each cell
is the median [min, max] of the per-round difference with the bare view, and its ratio to
django-prometheus's. One column measured in this process, one in a child process started with
`PROMETHEUS_MULTIPROC_DIR` on a fresh directory (multiprocess mode: every stack's values in
memory-mapped files). The async row awaits the middleware around an async view in one event loop,
against the bare async view.

`--full-stack`: every stack as a `WSGIHandler` called directly (the default `startproject`
middleware, a view answering 2 bytes). `--wrk`: every stack under gunicorn (4 sync workers), loaded
with `wrk` on loopback in interleaved rounds; on 2 cores that table cannot resolve a few µs.

Run: `.venv/bin/python bench/http_requests.py` (about 30 seconds). Figures are meaningful with
the release build of the core (`make build-release`; `make bench` builds it); a debug build
(`make build`) makes this package's middleware look several times slower than it is.
"""

# This file is named http.py: its directory must leave sys.path before anything imports the
# standard library's `http` package (Django does), or this file would shadow it.
# ruff: noqa: E402
from __future__ import annotations

import os
import sys

_HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:] = [p for p in sys.path if os.path.abspath(p or os.curdir) != _HERE]

import argparse
import io
import json
import random
import re
import shutil
import socket
import statistics
import subprocess
import tempfile
import textwrap
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

STACKS = ["bare", "metrics", "metrics-compat", "metrics-exemplars", "django-prometheus", "prometheus_client"]
TRACEPARENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
LABELS = {
    "bare": "bare Django",
    "metrics": "metrics (this package)",
    "metrics-compat": "metrics, compat on",
    "metrics-exemplars": "metrics, exemplars on",
    "django-prometheus": "django-prometheus",
    "prometheus_client": "minimal prometheus_client",
    "noop": "no-op Python middleware",
}
# The middleware-alone tables add a middleware that does nothing but call the next one: the floor
# any Python middleware pays, for scale.
ALONE_STACKS = [*STACKS, "noop"]

# The site, written to a temporary directory so gunicorn can import it (and this file, named
# like the standard library's `http`, stays off every sys.path). BENCH_STACK picks the stack.
SITE = textwrap.dedent(
    '''
    """A one-view Django site with a choice of metrics middleware (BENCH_STACK)."""

    import os
    from time import perf_counter

    import django
    from django.conf import settings
    from django.http import HttpResponse
    from django.urls import path

    BASE = [
        "django.middleware.security.SecurityMiddleware",
        "django.contrib.sessions.middleware.SessionMiddleware",
        "django.middleware.common.CommonMiddleware",
        "django.middleware.csrf.CsrfViewMiddleware",
        "django.contrib.auth.middleware.AuthenticationMiddleware",
        "django.contrib.messages.middleware.MessageMiddleware",
        "django.middleware.clickjacking.XFrameOptionsMiddleware",
    ]
    STACKS = {
        "bare": BASE,
        "metrics": ["metrics.middleware.MetricsMiddleware", *BASE],
        # The same middleware; BENCH_STACK turns METRICS_COMPAT_DJANGO_PROMETHEUS on below.
        "metrics-compat": ["metrics.middleware.MetricsMiddleware", *BASE],
        # And METRICS_EXEMPLARS on: every request carries a traceparent header (see environ()).
        "metrics-exemplars": ["metrics.middleware.MetricsMiddleware", *BASE],
        "django-prometheus": [
            "django_prometheus.middleware.PrometheusBeforeMiddleware",
            *BASE,
            "django_prometheus.middleware.PrometheusAfterMiddleware",
        ],
        "prometheus_client": ["bench_site.MinimalPrometheusMiddleware", *BASE],
    }


    def hello(request):
        return HttpResponse(b"ok")


    urlpatterns = [path("hello/", hello, name="hello")]

    if not settings.configured:
        settings.configure(
            DEBUG=False,
            SECRET_KEY="bench-only",
            ALLOWED_HOSTS=["*"],
            ROOT_URLCONF="bench_site",
            USE_TZ=True,
            INSTALLED_APPS=[
                "django.contrib.contenttypes",
                "django.contrib.auth",
                "django.contrib.sessions",
                "django.contrib.messages",
                "metrics",
                "django_prometheus",
            ],
            MIDDLEWARE=STACKS[os.environ.get("BENCH_STACK", "bare")],
            METRICS_COMPAT_DJANGO_PROMETHEUS=os.environ.get("BENCH_STACK") == "metrics-compat",
            METRICS_EXEMPLARS=os.environ.get("BENCH_STACK") == "metrics-exemplars",
            DATABASES={"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": ":memory:"}},
            LOGGING_CONFIG=None,
        )
        django.setup()

    import prometheus_client as pc

    PC_REGISTRY = pc.CollectorRegistry()
    PC_TOTAL = pc.Counter(
        "bench_http_requests_total", "R.", ["method", "view", "status"], registry=PC_REGISTRY
    )
    PC_DURATION = pc.Histogram(
        "bench_http_request_duration_seconds", "D.", ["method", "view"], registry=PC_REGISTRY
    )
    PC_IN_PROGRESS = pc.Gauge(
        "bench_http_requests_in_progress", "P.", ["method"], registry=PC_REGISTRY
    )
    PC_REQUEST_SIZE = pc.Histogram(
        "bench_http_request_size_bytes", "Q.", ["method", "view"], registry=PC_REGISTRY
    )
    PC_RESPONSE_SIZE = pc.Histogram(
        "bench_http_response_size_bytes", "S.", ["method", "view"], registry=PC_REGISTRY
    )


    class MinimalPrometheusMiddleware:
        """The five HTTP metrics the way a team writes them by hand with prometheus_client."""

        def __init__(self, get_response):
            self.get_response = get_response

        def __call__(self, request):
            method = request.method
            start = perf_counter()
            PC_IN_PROGRESS.labels(method).inc()
            try:
                response = self.get_response(request)
            finally:
                PC_IN_PROGRESS.labels(method).dec()
            match = request.resolver_match
            view = match.view_name if match else "<unresolved>"
            PC_TOTAL.labels(method, view, str(response.status_code)).inc()
            PC_DURATION.labels(method, view).observe(perf_counter() - start)
            PC_REQUEST_SIZE.labels(method, view).observe(int(request.META.get("CONTENT_LENGTH") or 0))
            PC_RESPONSE_SIZE.labels(method, view).observe(len(response.content))
            return response


    def application(environ, start_response):
        from django.core.wsgi import get_wsgi_application

        global application
        application = get_wsgi_application()
        return application(environ, start_response)
    '''
)


def write_site(directory: Path) -> None:
    """Write the benchmark site module into `directory`."""
    (directory / "bench_site.py").write_text(SITE)


# --- part 1: in-process ---


def build_handlers() -> dict[str, Callable[[dict], object]]:
    """Return one WSGIHandler per stack, all in this process."""
    import bench_site
    from django.conf import settings
    from django.core.handlers.wsgi import WSGIHandler

    from metrics.conf import app_settings

    handlers = {}
    for stack in STACKS:
        # load_middleware() reads settings.MIDDLEWARE once, in WSGIHandler's constructor; the
        # middleware reads METRICS_COMPAT_DJANGO_PROMETHEUS once, in its own.
        settings.MIDDLEWARE = bench_site.STACKS[stack]
        settings.METRICS_COMPAT_DJANGO_PROMETHEUS = stack == "metrics-compat"
        settings.METRICS_EXEMPLARS = stack == "metrics-exemplars"
        app_settings.clear_cache()
        handlers[stack] = WSGIHandler()
    settings.METRICS_COMPAT_DJANGO_PROMETHEUS = False
    settings.METRICS_EXEMPLARS = False
    app_settings.clear_cache()
    return handlers


def environ() -> dict:
    """Return a fresh WSGI environ for GET /hello/."""
    return {
        "REQUEST_METHOD": "GET",
        "PATH_INFO": "/hello/",
        "SCRIPT_NAME": "",
        "QUERY_STRING": "",
        "SERVER_NAME": "127.0.0.1",
        "SERVER_PORT": "8000",
        # A sampled trace, as a tracing proxy or client sends it (used by the exemplars stack).
        "HTTP_TRACEPARENT": TRACEPARENT,
        "SERVER_PROTOCOL": "HTTP/1.1",
        "REMOTE_ADDR": "127.0.0.1",
        "HTTP_HOST": "127.0.0.1:8000",
        "HTTP_ACCEPT": "*/*",
        "wsgi.version": (1, 0),
        "wsgi.url_scheme": "http",
        "wsgi.input": io.BytesIO(b""),
        "wsgi.errors": sys.stderr,
        "wsgi.multithread": False,
        "wsgi.multiprocess": True,
        "wsgi.run_once": False,
    }


def _start_response(status: str, headers: list, exc_info: object = None) -> None:
    if not status.startswith("200"):
        raise RuntimeError(f"unexpected status {status}")


def time_requests(handler: Callable[..., object], n: int) -> float:
    """Return µs per request over `n` requests through `handler`."""
    start = time.perf_counter_ns()
    for _ in range(n):
        response = handler(environ(), _start_response)
        b"".join(response)  # type: ignore[call-overload]
        response.close()  # type: ignore[attr-defined]
    return (time.perf_counter_ns() - start) / n / 1000


def in_process(rounds: int, requests: int) -> dict[str, list[float]]:
    """Time every stack, `rounds` times, in a shuffled order each round."""
    handlers = build_handlers()
    for handler in handlers.values():
        time_requests(handler, max(requests // 4, 100))  # warm-up: imports, caches, label children
    timings: dict[str, list[float]] = {stack: [] for stack in STACKS}
    order = list(STACKS)
    rng = random.Random(42)
    for _ in range(rounds):
        rng.shuffle(order)
        for stack in order:
            timings[stack].append(time_requests(handlers[stack], requests))
    return timings


def native_available() -> bool:
    """Return whether this version has native histograms (`METRICS_NATIVE_HISTOGRAMS`)."""
    from metrics.conf import AppSettings

    return hasattr(AppSettings, "NATIVE_HISTOGRAMS")


def _build_chain(view: Callable[[object], object], **metrics_settings: bool) -> Callable[[object], object]:
    """Return `MetricsMiddleware(view)` built with `metrics_settings` on (read once, when built)."""
    from django.conf import settings

    from metrics.conf import app_settings
    from metrics.middleware import MetricsMiddleware

    for name, value in metrics_settings.items():
        setattr(settings, name, value)
    app_settings.clear_cache()
    try:
        return MetricsMiddleware(view)
    finally:
        for name in metrics_settings:
            setattr(settings, name, False)
        app_settings.clear_cache()


def middleware_alone(rounds: int, requests: int) -> dict[str, list[float]]:
    """Time each stack's metrics middleware around a view that returns a ready response.

    Nothing else runs (no URL resolution, no other middleware), so this isolates what the
    metrics code itself adds, with less noise than the full stack. The async rows await the
    chain in one event loop, around an async view: what `ASGIHandler` awaits per request,
    without its thread hops for signals and database connections (tens of µs each, that
    would drown a 1 µs difference).
    """
    import asyncio

    from bench_site import MinimalPrometheusMiddleware
    from django.http import HttpResponse
    from django.test import RequestFactory
    from django.urls import resolve
    from django_prometheus.middleware import PrometheusAfterMiddleware, PrometheusBeforeMiddleware

    response = HttpResponse(b"ok")
    request = RequestFactory().get("/hello/", HTTP_TRACEPARENT=TRACEPARENT)
    request.resolver_match = resolve("/hello/")

    def view(request: object) -> HttpResponse:
        return response

    async def async_view(request: object) -> HttpResponse:
        return response

    class NoOpMiddleware:
        def __init__(self, get_response: Callable[[object], object]) -> None:
            self.get_response = get_response

        def __call__(self, request: object) -> object:
            return self.get_response(request)

    chains: dict[str, Callable[[object], object]] = {
        "bare": view,
        "noop": NoOpMiddleware(view),
        "django-prometheus": PrometheusBeforeMiddleware(PrometheusAfterMiddleware(view)),
        "prometheus_client": MinimalPrometheusMiddleware(view),
        "metrics": _build_chain(view),
        "metrics-compat": _build_chain(view, METRICS_COMPAT_DJANGO_PROMETHEUS=True),
        "metrics-exemplars": _build_chain(view, METRICS_EXEMPLARS=True),
        "bare-async": async_view,
        "metrics-async": _build_chain(async_view),
    }
    if native_available():
        chains["metrics-native"] = _build_chain(view, METRICS_NATIVE_HISTOGRAMS=True)
    loop = asyncio.new_event_loop()

    def run(chain: Callable[[object], object], n: int) -> float:
        start = time.perf_counter_ns()
        for _ in range(n):
            chain(request)
        return (time.perf_counter_ns() - start) / n / 1000

    async def arun(chain: Callable[[object], Any], n: int) -> float:
        start = time.perf_counter_ns()
        for _ in range(n):
            await chain(request)
        return (time.perf_counter_ns() - start) / n / 1000

    def timed(stack: str, n: int) -> float:
        if stack.endswith("-async"):
            return loop.run_until_complete(arun(chains[stack], n))
        return run(chains[stack], n)

    try:
        for stack in chains:
            timed(stack, 1000)
        timings: dict[str, list[float]] = {stack: [] for stack in chains}
        order = list(chains)
        rng = random.Random(7)
        for _ in range(rounds):
            rng.shuffle(order)
            for stack in order:
                timings[stack].append(timed(stack, requests * 5))
    finally:
        loop.close()
    return timings


def print_in_process(timings: dict[str, list[float]]) -> None:
    """Print the in-process table: medians, and minima (least disturbed by other load)."""
    bare = timings["bare"]
    bare_median, bare_min = statistics.median(bare), min(bare)
    print(f"\nIn-process, µs per request ({len(bare)} interleaved rounds)")
    header = f"{'stack':30} {'median':>8} {'min':>8} {'added (paired median)':>22} {'added (min)':>12}"
    print(f"{header} {'ratio':>6}")
    for stack in STACKS:
        median, fastest = statistics.median(timings[stack]), min(timings[stack])
        paired = statistics.median(t - b for t, b in zip(timings[stack], bare, strict=True))
        added = "-" if stack == "bare" else f"{paired:.1f}"
        added_min = "-" if stack == "bare" else f"{fastest - bare_min:.1f}"
        print(
            f"{LABELS[stack]:30} {median:8.1f} {fastest:8.1f} {added:>22} {added_min:>12}"
            f" {median / bare_median:6.2f}"
        )


# (label, stack, the stack it is paired with): the one table of what each middleware adds.
TABLE = [
    ("no-op Python middleware", "noop", "bare"),
    ("django-prometheus", "django-prometheus", "bare"),
    ("minimal prometheus_client", "prometheus_client", "bare"),
    ("**ours, default**", "metrics", "bare"),
    ("ours, compat (`METRICS_COMPAT_DJANGO_PROMETHEUS`)", "metrics-compat", "bare"),
    ("ours, exemplars (`METRICS_EXEMPLARS`, with a `traceparent`)", "metrics-exemplars", "bare"),
    ("ours, native histograms (`METRICS_NATIVE_HISTOGRAMS`)", "metrics-native", "bare"),
    ("ours, async (`await`ed, against a bare async view)", "metrics-async", "bare-async"),
]


def _paired(timings: dict[str, list[float]], stack: str, base: str) -> list[float]:
    """Return the per-round differences between `stack` and `base` (µs added per request)."""
    return [t - b for t, b in zip(timings[stack], timings[base], strict=True)]


def _cell(added: list[float]) -> str:
    return f"{statistics.median(added):.2f} [{min(added):.2f}, {max(added):.2f}]"


def print_table(modes: dict[str, dict[str, list[float]]]) -> None:
    """Print the middleware-alone table, one column pair per mode, as Markdown."""
    rounds = len(next(iter(modes.values()))["bare"])
    print(
        f"\nµs added per request by the middleware alone: median [min, max] of the per-round"
        f" difference with the bare view, {rounds} interleaved rounds; ratio: median against"
        " django-prometheus's\n"
    )
    header = "| added per request |"
    rule = "| --- |"
    for mode in modes:
        header += f" {mode} | ratio |"
        rule += " ---: | ---: |"
    print(header)
    print(rule)
    for label, stack, base in TABLE:
        row = f"| {label} |"
        for timings in modes.values():
            if stack not in timings:
                row += " skipped¹ | |"
                continue
            added = _paired(timings, stack, base)
            reference = statistics.median(_paired(timings, "django-prometheus", "bare"))
            row += f" {_cell(added)} | {100 * statistics.median(added) / reference:.1f} % |"
        print(row)
    if any("metrics-native" not in timings for timings in modes.values()):
        print("\n¹ this version has no `METRICS_NATIVE_HISTOGRAMS` setting (`metrics.conf.AppSettings`)")
    for mode, timings in modes.items():
        bare, bare_async = statistics.median(timings["bare"]), statistics.median(timings["bare-async"])
        async_over_sync = [
            a - s
            for a, s in zip(
                _paired(timings, "metrics-async", "bare-async"),
                _paired(timings, "metrics", "bare"),
                strict=True,
            )
        ]
        print(
            f"\n{mode}: bare view {bare:.2f} µs, bare async view awaited {bare_async:.2f} µs;"
            f" ours async minus ours sync: {_cell(async_over_sync)} µs"
        )


def middleware_alone_multiprocess(site_dir: Path, rounds: int, requests: int) -> dict[str, list[float]]:
    """Return the middleware-alone timings measured in multiprocess mode.

    A child process (this file with `--multiprocess-child`) starts with `PROMETHEUS_MULTIPROC_DIR`
    set to a fresh directory, so every stack in it writes to memory-mapped files: ours to its
    shared store, django-prometheus and prometheus_client to prometheus_client's per-process
    files. All stacks run interleaved in that one child, so the pairing with bare Django holds.
    """
    store = tempfile.mkdtemp(prefix="metrics-bench-multiproc-")
    try:
        out = Path(store).parent / f"{Path(store).name}.json"
        env = {k: v for k, v in os.environ.items() if not k.startswith(("METRICS_", "PROMETHEUS_"))}
        env["PROMETHEUS_MULTIPROC_DIR"] = store
        command = [sys.executable, os.path.abspath(__file__), "--multiprocess-child", str(site_dir)]
        command += ["--rounds", str(rounds), "--requests", str(requests), "--child-output", str(out)]
        subprocess.run(command, env=env, check=True)
        timings: dict[str, list[float]] = json.loads(out.read_text())
        out.unlink()
        return timings
    finally:
        shutil.rmtree(store, ignore_errors=True)


def multiprocess_child(site_dir: str, rounds: int, requests: int, output: str) -> None:
    """In the child started by `middleware_alone_multiprocess`: measure, write JSON to `output`."""
    sys.path.insert(0, site_dir)
    from metrics.core import multiprocess_dir

    if multiprocess_dir() is None:
        sys.exit("multiprocess mode is off in the child: PROMETHEUS_MULTIPROC_DIR was not usable")
    Path(output).write_text(json.dumps(middleware_alone(rounds, requests)))


# --- part 2: gunicorn + wrk ---


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _wait_ready(url: str, process: subprocess.Popen, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"gunicorn exited with {process.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(0.2)
    raise RuntimeError(f"{url} did not answer within {timeout} s")


def _wrk(url: str, seconds: int, connections: int) -> float:
    output = subprocess.run(
        ["wrk", "-t2", f"-c{connections}", f"-d{seconds}s", "-H", f"traceparent: {TRACEPARENT}", url],
        capture_output=True,
        text=True,
        check=True,
        timeout=seconds + 30,
    ).stdout
    match = re.search(r"Requests/sec:\s+([\d.]+)", output)
    if match is None:
        raise RuntimeError(f"no Requests/sec in wrk output:\n{output}")
    return float(match.group(1))


def over_http(site_dir: Path, rounds: int, seconds: int, workers: int) -> dict[str, list[float]]:
    """Start one gunicorn per stack, then load them with wrk in interleaved rounds."""
    gunicorn = Path(sys.executable).parent / "gunicorn"
    servers: dict[str, tuple[subprocess.Popen, str]] = {}
    try:
        for stack in STACKS:
            port = _free_port()
            env = {k: v for k, v in os.environ.items() if not k.startswith(("METRICS_", "PROMETHEUS_"))}
            env["BENCH_STACK"] = stack
            command = [str(gunicorn), "bench_site:application", "--bind", f"127.0.0.1:{port}"]
            command += ["--workers", str(workers), "--log-level", "warning", "--chdir", str(site_dir)]
            process = subprocess.Popen(
                command,
                env=env,
                stdout=subprocess.DEVNULL,
            )
            servers[stack] = (process, f"http://127.0.0.1:{port}/hello/")
        for process, url in servers.values():
            _wait_ready(url, process)
        for _, url in servers.values():
            _wrk(url, 1, 16)  # warm-up: every worker imports and fills its caches
        results: dict[str, list[float]] = {stack: [] for stack in STACKS}
        order = list(STACKS)
        for n in range(rounds):
            # Rotate, so no stack always runs right after the same neighbour.
            order = order[n % len(order) :] + order[: n % len(order)]
            for stack in order:
                results[stack].append(_wrk(servers[stack][1], seconds, 32))
        return results
    finally:
        for process, _ in servers.values():
            process.terminate()
        for process, _ in servers.values():
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def print_over_http(results: dict[str, list[float]], workers: int, seconds: int) -> None:
    """Print the requests/s table."""
    bare = statistics.median(results["bare"])
    rounds = len(results["bare"])
    print(f"\ngunicorn ({workers} workers) + wrk (2 threads, 32 connections, {seconds} s x {rounds} rounds)")
    print(f"{'stack':30} {'requests/s':>11} {'% of bare':>10}")
    for stack in STACKS:
        median = statistics.median(results[stack])
        print(f"{LABELS[stack]:30} {median:11.0f} {100 * median / bare:9.1f}%")


def main() -> None:
    """Print the middleware-alone table (both modes); the full stack and wrk on request."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=15, help="interleaved rounds (default 15)")
    parser.add_argument("--requests", type=int, default=2000, help="requests per stack per round (x5 alone)")
    parser.add_argument("--full-stack", action="store_true", help="also every stack through WSGIHandler")
    parser.add_argument("--wrk", action="store_true", help="also every stack under gunicorn + wrk")
    # Six short rounds: the median of two swung by several percent on a 2-core machine.
    parser.add_argument("--wrk-rounds", type=int, default=6)
    parser.add_argument("--wrk-seconds", type=int, default=4)
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--multiprocess-child", metavar="SITE_DIR", help=argparse.SUPPRESS)
    parser.add_argument("--child-output", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.multiprocess_child:
        multiprocess_child(args.multiprocess_child, args.rounds, args.requests, args.child_output)
        return

    site_dir = Path(tempfile.mkdtemp(prefix="metrics-bench-"))
    try:
        write_site(site_dir)
        sys.path.insert(0, str(site_dir))
        for name in ("METRICS_ENABLED", "PROMETHEUS_MULTIPROC_DIR"):
            os.environ.pop(name, None)
        import metrics._core

        print(f"metrics._core: {metrics._core.__file__}")
        if args.full_stack:
            print_in_process(in_process(args.rounds, args.requests))
        single = middleware_alone(args.rounds, args.requests)
        multi = middleware_alone_multiprocess(site_dir, args.rounds, args.requests)
        print_table({"in-process": single, "multiprocess": multi})
        if args.wrk:
            if shutil.which("wrk") is None:
                sys.exit("wrk is missing: install the Debian package 'wrk' (make system-deps)")
            results = over_http(site_dir, args.wrk_rounds, args.wrk_seconds, args.workers)
            print_over_http(results, args.workers, args.wrk_seconds)
    finally:
        shutil.rmtree(site_dir, ignore_errors=True)


if __name__ == "__main__":
    main()
