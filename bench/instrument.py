"""Cost per database query and per cache operation: bare Django, this package, django-prometheus.

The three run side by side in one interpreter, interleaved round by round so machine noise
hits them alike:

- bare: Django's own backends, nothing wrapped;
- ours: the same backends, instrumented by `metrics.instrument.install()` (no ENGINE/BACKEND
  change);
- django-prometheus: its `django_prometheus.db.backends.sqlite3` ENGINE and its cache BACKEND
  classes (`pip install -r requirements-bench.txt`).

Prints ns/op (fastest of the interleaved rounds), the overhead over bare, the Python side of our overhead (the
same code with the core's metric calls replaced by no-ops: what remains once the core is
optimised), and django-prometheus' overhead over ours. Queries are `SELECT 1` on in-memory
SQLite through Django's cursor (the cheapest real query, so the overhead shows); cache
operations run on LocMemCache and on Redis (127.0.0.1:6379, db 15, where network time dwarfs
both overheads). Run: `.venv/bin/python bench/instrument.py`.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import django
from django.conf import settings

REDIS_URL = "redis://127.0.0.1:6379/15"
ROUNDS = 15

settings.configure(
    DEBUG=False,
    INSTALLED_APPS=["django.contrib.contenttypes", "django.contrib.auth"],
    DATABASES={
        "default": {"ENGINE": "django.db.backends.sqlite3", "NAME": ":memory:"},
        "bare": {"ENGINE": "django.db.backends.sqlite3", "NAME": ":memory:"},
        "ours": {"ENGINE": "django.db.backends.sqlite3", "NAME": ":memory:"},
        "dp": {"ENGINE": "django_prometheus.db.backends.sqlite3", "NAME": ":memory:"},
        "py": {"ENGINE": "django.db.backends.sqlite3", "NAME": ":memory:"},
    },
    CACHES={
        "default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache", "LOCATION": "bench-ours"},
        "redis": {"BACKEND": "django.core.cache.backends.redis.RedisCache", "LOCATION": REDIS_URL},
        "py": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache", "LOCATION": "bench-py"},
    },
    USE_TZ=True,
)
django.setup()

from django.core.cache import caches  # noqa: E402
from django.core.cache.backends.locmem import LocMemCache  # noqa: E402
from django.core.cache.backends.redis import RedisCache  # noqa: E402
from django.db import connections  # noqa: E402
from django_prometheus.cache.backends.locmem import LocMemCache as DPLocMemCache  # noqa: E402

from metrics.collectors import db_queries_total, db_query_duration_seconds  # noqa: E402
from metrics.instrument import db, install  # noqa: E402

Op = Callable[[int], None]


def per_op(fn: Op, n: int) -> float:
    start = time.perf_counter_ns()
    fn(n)
    return (time.perf_counter_ns() - start) / n


def compare(name: str, variants: dict[str, Op], n: int) -> dict[str, float]:
    """Return the ns/op of each variant, measured in interleaved rounds."""
    for fn in variants.values():
        fn(max(n // 10, 10))  # warm up
    rounds: dict[str, list[float]] = {key: [] for key in variants}
    for _ in range(ROUNDS):
        for key, fn in variants.items():
            rounds[key].append(per_op(fn, n))
    # The fastest round: interference from other processes only ever adds time.
    return {key: min(values) for key, values in rounds.items()}


class _Stub:
    """A metric child that does nothing: what is left of our overhead is the Python side."""

    def labels(self, *values: str) -> _Stub:
        return self

    def inc(self, amount: float = 1) -> None:
        pass

    def observe(self, amount: float) -> None:
        pass


def python_side_observer() -> Callable[..., object]:
    """Return the query observer with the core's metric calls replaced by no-ops."""
    saved = db.db_queries_total, db.db_query_duration_seconds, db.db_query_errors_total
    db.db_queries_total = db.db_query_duration_seconds = db.db_query_errors_total = _Stub()  # type: ignore[assignment]
    try:
        return db._make_observer("py")
    finally:
        db.db_queries_total, db.db_query_duration_seconds, db.db_query_errors_total = saved


def query_ops() -> dict[str, Op]:
    install()
    cursors = {}
    for alias in ("bare", "ours", "py", "dp"):
        connection = connections[alias]
        connection.ensure_connection()
        if alias != "ours":
            # `bare` and `dp` measure without this package's wrapper.
            connection.execute_wrappers.remove(db.observer_for(alias))
        if alias == "py":
            connection.execute_wrappers.insert(0, python_side_observer())
        cursors[alias] = connection.cursor()

    def run(cursor: object) -> Op:
        execute = cursor.execute  # type: ignore[attr-defined]

        def loop(n: int) -> None:
            for _ in range(n):
                execute("SELECT 1")

        return loop

    return {alias: run(cursor) for alias, cursor in cursors.items()}


def cache_ops(make: dict[str, object], op: str) -> dict[str, Op]:
    out: dict[str, Op] = {}
    for key, cache in make.items():
        cache.set("hit", 1)  # type: ignore[attr-defined]
        if op == "get hit":
            get = cache.get  # type: ignore[attr-defined]

            def loop(n: int, get: Callable[..., object] = get) -> None:
                for _ in range(n):
                    get("hit")

        elif op == "get miss":
            get = cache.get  # type: ignore[attr-defined]

            def loop(n: int, get: Callable[..., object] = get) -> None:
                for _ in range(n):
                    get("miss")

        else:
            set_ = cache.set  # type: ignore[attr-defined]

            def loop(n: int, set_: Callable[..., object] = set_) -> None:
                for _ in range(n):
                    set_("k", 1)

        out[key] = loop
    return out


def row(name: str, result: dict[str, float]) -> str:
    bare, ours = result["bare"], result["ours"]
    line = f"{name:<16} {bare:>9.0f} {ours:>9.0f} {ours - bare:>+8.0f}"
    line += f" {result['py'] - bare:>+10.0f}" if "py" in result else f" {'-':>10}"
    if "dp" not in result:
        return line + f" {'-':>9} {'-':>8}"
    dp = result["dp"]
    ratio = f"{(dp - bare) / (ours - bare):5.1f}x" if ours > bare else "  n/a"
    return line + f" {dp:>9.0f} {dp - bare:>+8.0f}   {ratio}"


def main() -> None:
    started = time.perf_counter()
    print("ns/op, fastest of", ROUNDS, "interleaved rounds")
    head = f"{'operation':<16} {'bare':>9} {'ours':>9} {'(+ours)':>8} {'(+py side)':>10}"
    print(head, f"{'dj-prom':>9} {'(+djp)':>8}   djp/ours extra")
    print(row("query SELECT 1", compare("query", query_ops(), 10_000)))
    install()
    locmem = {
        "bare": LocMemCache("bench-bare", {}),
        "ours": caches["default"],
        "py": caches["py"],
        "dp": DPLocMemCache("bench-dp", {}),
    }
    stubbed = caches["py"].__dict__["_metrics_cache"]
    stubbed.hits = stubbed.misses = stubbed.sets = stubbed.deletes = _Stub()
    for op in ("get hit", "get miss", "set"):
        print(row(f"locmem {op}", compare(op, cache_ops(locmem, op), 20_000)))
    # django-prometheus' Redis backends need django-redis (not a dependency here): bare vs ours only.
    redis = {"bare": RedisCache(REDIS_URL, {}), "ours": caches["redis"]}
    for op in ("get hit", "set"):
        print(row(f"redis {op}", compare(op, cache_ops(redis, op), 1_000)))
    redis["bare"].delete_many(["hit", "k"])  # type: ignore[attr-defined]
    # What the core itself costs per call in this build: the floor under the overheads above.
    inc = db_queries_total.labels("bench", "select").inc
    observe = db_query_duration_seconds.labels("bench", "select").observe

    def incs(n: int) -> None:
        for _ in range(n):
            inc()

    def observes(n: int) -> None:
        for _ in range(n):
            observe(0.001)

    core = compare("core", {"inc": incs, "observe": observes}, 20_000)
    print(f"core, this build: Counter.inc {core['inc']:.0f} ns, Histogram.observe {core['observe']:.0f} ns")
    took = time.perf_counter() - started
    print(f"took {took:.0f} s; the figures depend on the core's build (`make build-release`)")


if __name__ == "__main__":
    main()
