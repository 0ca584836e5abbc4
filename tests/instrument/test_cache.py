"""Cache instrumentation on Django's LocMem, Redis (127.0.0.1:6379, db 15), database and file caches."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from asgiref.sync import async_to_sync
from django.core.cache import caches
from django.core.cache.backends.base import BaseCache
from django.core.cache.backends.redis import RedisCache
from django.core.management import call_command
from django.test import Client, override_settings

from metrics import generate_latest
from metrics.collectors import (
    cache_deletes_total,
    cache_errors_total,
    cache_hits_total,
    cache_misses_total,
    cache_sets_total,
)
from metrics.core import REGISTRY
from metrics.instrument import cache as cache_instrument
from tests.instrument.conftest import read_samples

REDIS_URL = "redis://127.0.0.1:6379/15"
BACKENDS = ("locmem", "redis", "db", "file")


def closed_port() -> int:
    """Return a loopback port nothing listens on."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def cache_settings(tmp_path: Path) -> Iterator[dict[str, Any]]:
    """Configure one cache alias per backend, plus `down`: Redis on a closed port."""
    config = {
        "default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache", "LOCATION": "tests-default"},
        "locmem": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache", "LOCATION": "metrics-tests"},
        "redis": {"BACKEND": "django.core.cache.backends.redis.RedisCache", "LOCATION": REDIS_URL},
        "db": {"BACKEND": "django.core.cache.backends.db.DatabaseCache", "LOCATION": "metrics_test_cache"},
        "file": {"BACKEND": "django.core.cache.backends.filebased.FileBasedCache", "LOCATION": str(tmp_path)},
        "down": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": f"redis://127.0.0.1:{closed_port()}/0",
        },
    }
    with override_settings(CACHES=config):
        yield config


@pytest.fixture
def redis_client() -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(REDIS_URL)
    client.ping()  # fails loudly when Redis is not running
    client.flushdb()
    try:
        yield client
    finally:
        client.flushdb()
        client.close()


@pytest.fixture(params=BACKENDS)
def alias(request: pytest.FixtureRequest, cache_settings: dict[str, Any], redis_client: redis.Redis) -> str:
    """Yield each cache alias in turn, empty; the database cache gets its table."""
    name: str = request.param
    if name == "db":
        request.getfixturevalue("db")
        call_command("createcachetable", "metrics_test_cache", verbosity=0)
    caches[name].clear()
    return name


def counts(alias: str) -> dict[str, float]:
    out = {}
    for kind, metric in (
        ("hits", cache_hits_total),
        ("misses", cache_misses_total),
        ("sets", cache_sets_total),
        ("deletes", cache_deletes_total),
    ):
        out[kind] = read_samples(metric).get((f"django_cache_{kind}_total", (("cache", alias),)), 0.0)
    return out


def change(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
    return {kind: after[kind] - before[kind] for kind in before}


FALSY = {"zero": 0, "empty": "", "false": False, "none": None}
EXPECTED = {"hits": 13.0, "misses": 9.0, "sets": 11.0, "deletes": 3.0}


def sync_operations(cache: BaseCache) -> None:
    """Run every counted operation once or more, checking each result (totals in EXPECTED)."""
    cache.set("a", 1)
    for key, value in FALSY.items():
        cache.set(key, value)  # 5 sets with the one above
    assert cache.get("a") == 1
    for key, value in FALSY.items():
        assert cache.get(key, "default") == value  # cached falsy values are hits: 5 with the one above
    assert cache.get("missing", "default") == "default"  # 1 miss
    assert cache.get_many(["a", "zero", "missing1", "missing2"]) == {"a": 1, "zero": 0}  # 2 hits, 2 misses
    assert cache.get_many(key for key in ("zero", "nope")) == {"zero": 0}  # a generator: 1 hit, 1 miss
    assert cache.has_key("a")  # hit
    assert "a" in cache  # hit
    assert not cache.has_key("missing")  # miss
    assert cache.get_or_set("g", 5) == 5  # miss, set
    assert cache.get_or_set("g", 6) == 5  # hit
    assert cache.add("a", 9) is False  # nothing stored
    assert cache.add("h", 1) is True  # set
    assert cache.incr("h") == 2  # hit, set
    assert cache.decr("h", 2) == 0  # hit, set
    with pytest.raises(ValueError):
        cache.incr("missing")  # miss
    assert not cache.set_many({"x": 1, "y": 2})  # 2 sets
    cache.delete("x")  # delete
    cache.delete_many(["y", "a"])  # 2 deletes
    assert cache.touch("zero") is True  # not counted
    assert cache.get("a") is None and cache.get("y") is None  # 2 misses


async def async_operations(cache: BaseCache) -> None:
    """The same as sync_operations, through the async API."""
    await cache.aset("a", 1)
    for key, value in FALSY.items():
        await cache.aset(key, value)
    assert await cache.aget("a") == 1
    for key, value in FALSY.items():
        assert await cache.aget(key, "default") == value
    assert await cache.aget("missing", "default") == "default"
    assert await cache.aget_many(["a", "zero", "missing1", "missing2"]) == {"a": 1, "zero": 0}
    assert await cache.aget_many(key for key in ("zero", "nope")) == {"zero": 0}
    assert await cache.ahas_key("a")
    assert await cache.ahas_key("a")
    assert not await cache.ahas_key("missing")
    assert await cache.aget_or_set("g", 5) == 5
    assert await cache.aget_or_set("g", 6) == 5
    assert await cache.aadd("a", 9) is False
    assert await cache.aadd("h", 1) is True
    assert await cache.aincr("h") == 2
    assert await cache.adecr("h", 2) == 0
    with pytest.raises(ValueError):
        await cache.aincr("missing")
    assert not await cache.aset_many({"x": 1, "y": 2})
    await cache.adelete("x")
    await cache.adelete_many(["y", "a"])
    assert await cache.atouch("zero") is True
    assert await cache.aget("a") is None and await cache.aget("y") is None


def test_sync_operations_count_per_key(alias: str) -> None:
    """Hits, misses, sets and deletes are counted per key; cached falsy values are hits."""
    cache = caches[alias]
    before = counts(alias)
    sync_operations(cache)
    assert change(before, counts(alias)) == EXPECTED


def test_async_operations_count_like_sync_ones(alias: str) -> None:
    """The async API counts exactly as the sync one, though Django runs it through the sync methods."""
    cache = caches[alias]
    before = counts(alias)
    async_to_sync(async_operations)(cache)
    assert change(before, counts(alias)) == EXPECTED


def test_get_or_set_default_using_the_cache_counts_its_own_operations(alias: str) -> None:
    """A callable default that reads the cache is counted; the get_or_set itself is one miss, one set."""
    cache = caches[alias]
    cache.set("inner", 41)
    before = counts(alias)
    assert cache.get_or_set("outer", lambda: cache.get("inner") + 1) == 42
    assert change(before, counts(alias)) == {"hits": 1.0, "misses": 1.0, "sets": 1.0, "deletes": 0.0}


def test_instrumented_class_keeps_the_backend_identity(alias: str) -> None:
    """The instrumented cache is still an instance of its backend class, with its name."""
    cache = caches[alias]
    base = type(cache).__mro__[1]
    assert isinstance(cache, base)
    assert type(cache).__name__ == base.__name__
    assert type(cache).__module__ == base.__module__
    assert cache_instrument.instrumented_class(base) is type(cache)


def redis_stats(client: redis.Redis) -> tuple[int, int]:
    info = client.info("stats")
    return int(info["keyspace_hits"]), int(info["keyspace_misses"])


def test_redis_hits_and_misses_equal_redis_own_counters(
    cache_settings: dict[str, Any], redis_client: redis.Redis
) -> None:
    """Hits and misses on RedisCache equal the change of Redis' INFO keyspace_hits/keyspace_misses.

    Redis counts for the whole server: another client's reads in between spoil an attempt, so
    the comparison gets a few attempts and must match exactly in one.
    """
    cache = caches["redis"]
    cache.set_many({"a": 1, "b": 0, "c": ""})
    observed = []
    for _ in range(5):
        ours = counts("redis")
        server = redis_stats(redis_client)
        assert cache.get("a") == 1
        assert cache.get("b") == 0
        assert cache.get("nope") is None
        assert cache.get_many(["a", "c", "nope"]) == {"a": 1, "c": ""}
        assert cache.has_key("c")
        assert not cache.has_key("nope")
        assert cache.incr("a") == 2  # EXISTS (a hit for Redis) then INCRBY
        assert cache.get_or_set("b", 7) == 0
        assert cache.decr("a") == 1
        after = counts("redis")
        hits, misses = redis_stats(redis_client)
        mine = (after["hits"] - ours["hits"], after["misses"] - ours["misses"])
        theirs = (hits - server[0], misses - server[1])
        observed.append((mine, theirs))
        if mine == theirs:
            break
    assert observed[-1][0] == (8.0, 3.0)
    assert observed[-1][0] == observed[-1][1], observed


def test_unreachable_cache_fails_as_without_instrumentation(cache_settings: dict[str, Any]) -> None:
    """A Redis cache on a closed port raises as uninstrumented, counts an error; /metrics/ answers."""
    location = cache_settings["down"]["LOCATION"]
    bare = RedisCache(location, {})
    with pytest.raises(redis.exceptions.ConnectionError) as expected:
        bare.get("k")
    key = ("django_cache_errors_total", (("cache", "down"), ("operation", "get")))
    before = read_samples(cache_errors_total).get(key, 0.0)
    with pytest.raises(redis.exceptions.ConnectionError) as raised:
        caches["down"].get("k")
    assert type(raised.value) is type(expected.value)
    assert str(raised.value) == str(expected.value)
    assert read_samples(cache_errors_total)[key] == before + 1
    set_key = ("django_cache_errors_total", (("cache", "down"), ("operation", "set")))
    set_before = read_samples(cache_errors_total).get(set_key, 0.0)
    with pytest.raises(redis.exceptions.ConnectionError):
        async_to_sync(caches["down"].aset)("k", 1)
    assert read_samples(cache_errors_total)[set_key] == set_before + 1
    assert b'django_cache_errors_total{cache="down",operation="get"}' in generate_latest()
    response = Client().get("/metrics/", headers={"X-Metrics-Token": "test-token"})
    assert response.status_code == 200
    assert b'django_cache_errors_total{cache="down",operation="get"}' in response.content


def test_caches_created_in_other_threads_are_instrumented(cache_settings: dict[str, Any]) -> None:
    """Each thread's cache instance counts, under the same alias."""
    import threading

    before = counts("locmem")
    results: list[Any] = []

    def worker() -> None:
        cache = caches["locmem"]
        cache.set("t", 1)
        results.append((cache.get("t"), type(cache).__dict__.get("_metrics_instrumented")))

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert results == [(1, True)] * 4
    assert change(before, counts("locmem")) == {"hits": 4.0, "misses": 0.0, "sets": 4.0, "deletes": 0.0}


def test_install_is_idempotent(cache_settings: dict[str, Any]) -> None:
    """Installing twice neither wraps twice nor counts twice."""
    cache_instrument.install()
    cache_instrument.install()
    cache = caches["locmem"]
    assert sum(1 for cls in type(cache).__mro__ if cls.__dict__.get("_metrics_instrumented")) == 1
    before = counts("locmem")
    cache.get("nothing")
    assert change(before, counts("locmem"))["misses"] == 1.0


def test_cache_operations_count_again_after_clear(alias: str) -> None:
    """After `clear()` on the cache families, the counters a cache instance keeps count again."""
    cache = caches[alias]
    cache.get("metrics-removal-absent")
    cache_misses_total.clear()
    cache_sets_total.remove(alias)
    assert REGISTRY.get_sample_value("django_cache_misses_total", {"cache": alias}) is None
    cache.get("metrics-removal-absent")
    cache.get("metrics-removal-absent-too")
    cache.set("metrics-removal-present", 1)
    assert REGISTRY.get_sample_value("django_cache_misses_total", {"cache": alias}) == 2
    assert REGISTRY.get_sample_value("django_cache_sets_total", {"cache": alias}) == 1
