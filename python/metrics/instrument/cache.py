"""Cache metrics, with no change to the site's `CACHES` BACKEND.

Every cache instance Django's `caches` creates (one per alias and thread) is switched to a
subclass of its own backend class that counts, per alias:

- `django_cache_hits_total` / `django_cache_misses_total`, per key, as Redis counts them: `get`,
  `has_key` (and `in`), each distinct key of `get_many`, the lookup of `get_or_set`, the key
  of `incr`/`decr` (a missing key raises `ValueError`: a miss). A cached `None`, `0`, `""` or
  `False` is a hit: the lookup uses a private sentinel as the default, never the caller's.
- `django_cache_sets_total`: `set`, each stored key of `set_many`, `add` and the `add` of a
  `get_or_set` miss when they store, `incr`/`decr`.
- `django_cache_deletes_total`: `delete`, each key of `delete_many`.
- `django_cache_errors_total{cache,operation}`: any call that raised (other than the `ValueError`
  of `incr` on a missing key); the exception reaches the caller unchanged.

The async variants (`aget`, `aget_many`, `aset`, ...) count the same way. Backends implement some
operations with others (Django's `get_many` loops over `get`, `DatabaseCache.get` calls
`get_many`, the default async methods run the sync ones in a thread): only the outermost call of
an operation on a cache instance counts, which a context variable tracks across those threads
(Django's own `get`/`set` that call nothing else skip setting it: they only check it).
`touch`, `clear` and `close` count nothing but errors; `incr_version` counts the get, set and
delete it is made of.

With `METRICS_COMPAT_DJANGO_PROMETHEUS` on, the lookups of `get`, `aget` and `get_or_set` also
count in django-prometheus's `django_cache_get_total`, `django_cache_get_hits_total`,
`django_cache_get_misses_total` and `django_cache_get_fail_total` (`backend`: `locmem`,
`filebased`, `memcached`, `native_redis`, `redis` for django-redis, else the class name), through
the same calls: the counters those lookups increment are chosen when a cache instance is
instrumented, so with it off they are the plain hit and miss counters.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from contextvars import ContextVar
from typing import Any, cast

from django.core.cache import CacheHandler, caches
from django.core.cache.backends.base import DEFAULT_TIMEOUT, BaseCache

from metrics import compat
from metrics.collectors import (
    cache_deletes_total,
    cache_errors_total,
    cache_hits_total,
    cache_misses_total,
    cache_sets_total,
)

logger = logging.getLogger("metrics")

# The cache instance whose operation is running in this context: inner calls on it are parts of
# that operation, not operations of their own. Calls on another cache instance still count.
_inside: ContextVar[object] = ContextVar("metrics_cache_inside", default=None)
# Default passed to the backend, so a cached falsy value is told apart from a miss.
_MISSING: Any = object()
_ATTR = "_metrics_cache"


class _Children:
    """The counters of one cache alias, resolved once.

    `get_hits`/`get_misses` are what `get`-style lookups increment: the plain counters, or with
    compatibility on, fan-outs that also count django-prometheus's families.
    """

    __slots__ = ("alias", "deletes", "get_fail", "get_hits", "get_misses", "hits", "misses", "sets")

    def __init__(self, alias: str, backend: type | None = None) -> None:
        self.alias = alias
        self.hits = cache_hits_total.labels(alias)
        self.misses = cache_misses_total.labels(alias)
        self.sets = cache_sets_total.labels(alias)
        self.deletes = cache_deletes_total.labels(alias)
        self.get_hits: Any = self.hits
        self.get_misses: Any = self.misses
        self.get_fail: Any = None
        if backend is not None and compat.created() is not None:
            self.get_hits, self.get_misses, self.get_fail = compat.cache_get_children(
                backend, self.hits, self.misses
            )

    def error(self, operation: str) -> None:
        cache_errors_total.labels(self.alias, operation).inc()
        if operation == "get" and self.get_fail is not None:
            self.get_fail.inc()


def _keys(keys: Iterable[Any]) -> list[Any] | tuple[Any, ...]:
    # A generator can be read once only: the backend and the count both need the keys.
    return keys if isinstance(keys, (list, tuple)) else list(keys)


# --- sync methods ---


def _wrap_get(orig: Callable[..., Any], name: str) -> Callable[..., Any]:
    def get(self: Any, key: Any, default: Any = None, *args: Any, **kwargs: Any) -> Any:
        if _inside.get() is self:
            return orig(self, key, default, *args, **kwargs)
        token = _inside.set(self)
        try:
            value = orig(self, key, _MISSING, *args, **kwargs)
        except Exception:
            self._metrics_cache.error(name)
            raise
        finally:
            _inside.reset(token)
        if value is _MISSING:
            self._metrics_cache.get_misses.inc()
            return default
        self._metrics_cache.get_hits.inc()
        return value

    return get


def _wrap_get_leaf(orig: Callable[..., Any], name: str) -> Callable[..., Any]:
    """Wrap one of Django's own `get`s that call no other operation.

    No need to mark it as running, and Django's exact signature: forwarding `*args, **kwargs`
    would cost more than the rest of the wrapper.
    """

    def get(self: Any, key: Any, default: Any = None, version: Any = None) -> Any:
        if _inside.get() is self:
            return orig(self, key, default, version)
        try:
            value = orig(self, key, _MISSING, version)
        except Exception:
            self._metrics_cache.error(name)
            raise
        if value is _MISSING:
            self._metrics_cache.get_misses.inc()
            return default
        self._metrics_cache.get_hits.inc()
        return value

    return get


def _wrap_set_leaf(orig: Callable[..., Any], name: str) -> Callable[..., Any]:
    """Wrap one of Django's own `set`s that call no other operation (see `_wrap_get_leaf`)."""

    def set(self: Any, key: Any, value: Any, timeout: Any = DEFAULT_TIMEOUT, version: Any = None) -> Any:
        if _inside.get() is self:
            return orig(self, key, value, timeout, version)
        try:
            result = orig(self, key, value, timeout, version)
        except Exception:
            self._metrics_cache.error(name)
            raise
        self._metrics_cache.sets.inc()
        return result

    return set


def _wrap_set(orig: Callable[..., Any], name: str) -> Callable[..., Any]:
    def set(self: Any, *args: Any, **kwargs: Any) -> Any:
        if _inside.get() is self:
            return orig(self, *args, **kwargs)
        token = _inside.set(self)
        try:
            result = orig(self, *args, **kwargs)
        except Exception:
            self._metrics_cache.error(name)
            raise
        finally:
            _inside.reset(token)
        self._metrics_cache.sets.inc()
        return result

    return set


def _wrap(
    orig: Callable[..., Any], name: str, count: Callable[[_Children, tuple[Any, ...], Any], None]
) -> Any:
    """Wrap a less frequent operation: run it, then `count(children, args, result)`."""

    def method(self: Any, *args: Any, **kwargs: Any) -> Any:
        if _inside.get() is self:
            return orig(self, *args, **kwargs)
        token = _inside.set(self)
        try:
            result = orig(self, *args, **kwargs)
        except Exception:
            self._metrics_cache.error(name)
            raise
        finally:
            _inside.reset(token)
        count(self._metrics_cache, args, result)
        return result

    method.__name__ = name
    return method


def _wrap_many(orig: Callable[..., Any], name: str, count: Callable[[_Children, Any, Any], None]) -> Any:
    """Wrap `get_many`/`delete_many`: read the keys once, then `count(children, keys, result)`."""

    def method(self: Any, keys: Iterable[Any], *args: Any, **kwargs: Any) -> Any:
        if _inside.get() is self:
            return orig(self, keys, *args, **kwargs)
        keys = _keys(keys)
        token = _inside.set(self)
        try:
            result = orig(self, keys, *args, **kwargs)
        except Exception:
            self._metrics_cache.error(name)
            raise
        finally:
            _inside.reset(token)
        count(self._metrics_cache, keys, result)
        return result

    method.__name__ = name
    return method


def _wrap_incr(orig: Callable[..., Any], name: str) -> Callable[..., Any]:
    def incr(self: Any, *args: Any, **kwargs: Any) -> Any:
        if _inside.get() is self:
            return orig(self, *args, **kwargs)
        token = _inside.set(self)
        try:
            result = orig(self, *args, **kwargs)
        except ValueError:
            # Django's contract for a missing key.
            self._metrics_cache.misses.inc()
            raise
        except Exception:
            self._metrics_cache.error(name)
            raise
        finally:
            _inside.reset(token)
        self._metrics_cache.hits.inc()
        self._metrics_cache.sets.inc()
        return result

    incr.__name__ = name
    return incr


def _wrap_get_or_set(get: Callable[..., Any], add: Callable[..., Any]) -> Callable[..., Any]:
    """Return `get_or_set` as `BaseCache` implements it, counting one lookup and the add."""

    def get_or_set(
        self: Any, key: Any, default: Any, timeout: Any = DEFAULT_TIMEOUT, version: Any = None
    ) -> Any:
        if _inside.get() is self:
            # Part of another operation on this cache: Django's own implementation, uncounted.
            return BaseCache.get_or_set(cast(BaseCache, self), key, default, timeout, version)
        token = _inside.set(self)
        try:
            value = get(self, key, _MISSING, version=version)
        except Exception:
            self._metrics_cache.error("get_or_set")
            raise
        finally:
            _inside.reset(token)
        if value is not _MISSING:
            self._metrics_cache.get_hits.inc()
            return value
        self._metrics_cache.get_misses.inc()
        # Outside the guard: a default that uses this cache counts its own operations.
        if callable(default):
            default = default()
        token = _inside.set(self)
        try:
            added = add(self, key, default, timeout=timeout, version=version)
            # Read again, as Django does, in case another caller added a value in between.
            value = get(self, key, default, version=version)
        except Exception:
            self._metrics_cache.error("get_or_set")
            raise
        finally:
            _inside.reset(token)
        if added:
            self._metrics_cache.sets.inc()
        return value

    return get_or_set


def _count_has_key(c: _Children, args: tuple[Any, ...], found: Any) -> None:
    (c.hits if found else c.misses).inc()


def _count_add(c: _Children, args: tuple[Any, ...], stored: Any) -> None:
    if stored:
        c.sets.inc()


def _count_set_many(c: _Children, args: tuple[Any, ...], failed: Any) -> None:
    stored = len(args[0]) - len(failed or ())
    if stored > 0:
        c.sets.inc(stored)


def _count_delete(c: _Children, args: tuple[Any, ...], result: Any) -> None:
    c.deletes.inc()


def _count_nothing(c: _Children, args: tuple[Any, ...], result: Any) -> None:
    pass


def _count_get_many(c: _Children, keys: Any, found: Any) -> None:
    requested = len(keys) if len(keys) < 2 else len(set(keys))
    hits = len(found)
    if hits:
        c.hits.inc(hits)
    if requested > hits:
        c.misses.inc(requested - hits)


def _count_delete_many(c: _Children, keys: Any, result: Any) -> None:
    if keys:
        c.deletes.inc(len(keys))


# --- async methods: the same, awaited ---


def _wrap_aget(orig: Callable[..., Any], name: str) -> Callable[..., Any]:
    async def aget(self: Any, key: Any, default: Any = None, *args: Any, **kwargs: Any) -> Any:
        if _inside.get() is self:
            return await orig(self, key, default, *args, **kwargs)
        token = _inside.set(self)
        try:
            value = await orig(self, key, _MISSING, *args, **kwargs)
        except Exception:
            self._metrics_cache.error(name)
            raise
        finally:
            _inside.reset(token)
        if value is _MISSING:
            self._metrics_cache.get_misses.inc()
            return default
        self._metrics_cache.get_hits.inc()
        return value

    return aget


def _awrap(
    orig: Callable[..., Any], name: str, count: Callable[[_Children, tuple[Any, ...], Any], None]
) -> Any:
    async def method(self: Any, *args: Any, **kwargs: Any) -> Any:
        if _inside.get() is self:
            return await orig(self, *args, **kwargs)
        token = _inside.set(self)
        try:
            result = await orig(self, *args, **kwargs)
        except Exception:
            self._metrics_cache.error(name)
            raise
        finally:
            _inside.reset(token)
        count(self._metrics_cache, args, result)
        return result

    method.__name__ = name
    return method


def _awrap_many(orig: Callable[..., Any], name: str, count: Callable[[_Children, Any, Any], None]) -> Any:
    async def method(self: Any, keys: Iterable[Any], *args: Any, **kwargs: Any) -> Any:
        if _inside.get() is self:
            return await orig(self, keys, *args, **kwargs)
        keys = _keys(keys)
        token = _inside.set(self)
        try:
            result = await orig(self, keys, *args, **kwargs)
        except Exception:
            self._metrics_cache.error(name)
            raise
        finally:
            _inside.reset(token)
        count(self._metrics_cache, keys, result)
        return result

    method.__name__ = name
    return method


def _awrap_incr(orig: Callable[..., Any], name: str) -> Callable[..., Any]:
    async def aincr(self: Any, *args: Any, **kwargs: Any) -> Any:
        if _inside.get() is self:
            return await orig(self, *args, **kwargs)
        token = _inside.set(self)
        try:
            result = await orig(self, *args, **kwargs)
        except ValueError:
            self._metrics_cache.misses.inc()
            raise
        except Exception:
            self._metrics_cache.error(name)
            raise
        finally:
            _inside.reset(token)
        self._metrics_cache.hits.inc()
        self._metrics_cache.sets.inc()
        return result

    aincr.__name__ = name
    return aincr


def _awrap_get_or_set(aget: Callable[..., Any], aadd: Callable[..., Any]) -> Callable[..., Any]:
    async def aget_or_set(
        self: Any, key: Any, default: Any, timeout: Any = DEFAULT_TIMEOUT, version: Any = None
    ) -> Any:
        if _inside.get() is self:
            return await BaseCache.aget_or_set(cast(BaseCache, self), key, default, timeout, version)
        token = _inside.set(self)
        try:
            value = await aget(self, key, _MISSING, version=version)
        except Exception:
            self._metrics_cache.error("get_or_set")
            raise
        finally:
            _inside.reset(token)
        if value is not _MISSING:
            self._metrics_cache.get_hits.inc()
            return value
        self._metrics_cache.get_misses.inc()
        if callable(default):
            default = default()
        token = _inside.set(self)
        try:
            added = await aadd(self, key, default, timeout=timeout, version=version)
            value = await aget(self, key, default, version=version)
        except Exception:
            self._metrics_cache.error("get_or_set")
            raise
        finally:
            _inside.reset(token)
        if added:
            self._metrics_cache.sets.inc()
        return value

    return aget_or_set


# name -> how to wrap it; the error label is the name without the async `a` prefix.
_SYNC: dict[str, Callable[[Callable[..., Any], str], Any]] = {
    "get": _wrap_get,
    "set": _wrap_set,
    "add": lambda orig, name: _wrap(orig, name, _count_add),
    "has_key": lambda orig, name: _wrap(orig, name, _count_has_key),
    "delete": lambda orig, name: _wrap(orig, name, _count_delete),
    "set_many": lambda orig, name: _wrap(orig, name, _count_set_many),
    "get_many": lambda orig, name: _wrap_many(orig, name, _count_get_many),
    "delete_many": lambda orig, name: _wrap_many(orig, name, _count_delete_many),
    "incr": _wrap_incr,
    "decr": _wrap_incr,
    "touch": lambda orig, name: _wrap(orig, name, _count_nothing),
    "clear": lambda orig, name: _wrap(orig, name, _count_nothing),
}
_ASYNC: dict[str, Callable[[Callable[..., Any], str], Any]] = {
    "aget": _wrap_aget,
    "aset": lambda orig, name: _awrap(orig, name, lambda c, a, r: c.sets.inc()),
    "aadd": lambda orig, name: _awrap(orig, name, _count_add),
    "ahas_key": lambda orig, name: _awrap(orig, name, _count_has_key),
    "adelete": lambda orig, name: _awrap(orig, name, _count_delete),
    "aset_many": lambda orig, name: _awrap(orig, name, _count_set_many),
    "aget_many": lambda orig, name: _awrap_many(orig, name, _count_get_many),
    "adelete_many": lambda orig, name: _awrap_many(orig, name, _count_delete_many),
    "aincr": _awrap_incr,
    "adecr": _awrap_incr,
    "atouch": lambda orig, name: _awrap(orig, name, _count_nothing),
    "aclear": lambda orig, name: _awrap(orig, name, _count_nothing),
}

_classes: dict[type[BaseCache], type[BaseCache]] = {}


def _leaves() -> dict[Callable[..., Any], Callable[[Callable[..., Any], str], Any]]:
    """Return Django's `get`/`set` implementations that call no other cache operation.

    Marking an operation as running costs a context variable set and reset (the largest part of
    the per-call overhead); these need only the check that they are not part of another one.
    Keyed by function, so a subclass that overrides them gets the general wrapper.
    """
    from django.core.cache.backends.db import DatabaseCache
    from django.core.cache.backends.filebased import FileBasedCache
    from django.core.cache.backends.locmem import LocMemCache
    from django.core.cache.backends.redis import RedisCache

    return {
        LocMemCache.get: _wrap_get_leaf,
        LocMemCache.set: _wrap_set_leaf,
        RedisCache.get: _wrap_get_leaf,
        RedisCache.set: _wrap_set_leaf,
        FileBasedCache.get: _wrap_get_leaf,
        FileBasedCache.set: _wrap_set_leaf,
        # DatabaseCache.get calls get_many: not a leaf.
        DatabaseCache.set: _wrap_set_leaf,
    }


def instrumented_class(cls: type[BaseCache]) -> type[BaseCache]:
    """Return the counting subclass of the cache backend class `cls` (made once per class)."""
    if cls.__dict__.get("_metrics_instrumented"):
        return cls
    sub = _classes.get(cls)
    if sub is not None:
        return sub
    namespace: dict[str, Any] = {
        "__module__": cls.__module__,
        "__qualname__": cls.__qualname__,
        "__doc__": cls.__doc__,
        "_metrics_instrumented": True,
    }
    leaves = _leaves()
    for name, factory in _SYNC.items():
        orig = getattr(cls, name)
        namespace[name] = leaves.get(orig, factory)(orig, name)
    for name, factory in _ASYNC.items():
        namespace[name] = factory(getattr(cls, name), name[1:])
    # get_or_set as BaseCache writes it can be counted exactly; a backend's own version is
    # counted as what it calls would be: nothing but errors, to stay exact rather than guess.
    if getattr(cls, "get_or_set", None) is BaseCache.get_or_set:
        namespace["get_or_set"] = _wrap_get_or_set(cls.get, cls.add)
    else:
        namespace["get_or_set"] = _wrap(cls.get_or_set, "get_or_set", _count_nothing)
    if getattr(cls, "aget_or_set", None) is BaseCache.aget_or_set:
        namespace["aget_or_set"] = _awrap_get_or_set(cls.aget, cls.aadd)
    else:
        namespace["aget_or_set"] = _awrap(cls.aget_or_set, "get_or_set", _count_nothing)
    sub = type(cls.__name__, (cls,), namespace)
    _classes[cls] = sub
    return sub


def instrument_cache(cache: BaseCache, alias: str) -> BaseCache:
    """Make `cache` count its operations under the label `alias`; return it."""
    if _ATTR in cache.__dict__:
        return cache
    try:
        cls = instrumented_class(type(cache))
        cache.__dict__[_ATTR] = _Children(alias, type(cache))
        cache.__class__ = cls
    except Exception:
        cache.__dict__.pop(_ATTR, None)
        logger.exception("metrics: could not instrument cache %r (%s)", alias, type(cache).__qualname__)
    return cache


def _create_connection(alias: str) -> BaseCache:
    """Create the cache of `alias` as Django does, instrumented."""
    return instrument_cache(CacheHandler.create_connection(caches, alias), alias)


def install() -> None:
    """Instrument every cache `caches` creates from now on, and those it already made."""
    if caches.__dict__.get("create_connection") is not _create_connection:
        caches.create_connection = _create_connection  # type: ignore[method-assign]  # a deliberate patch
    for alias in caches:
        # `_connections` holds this thread's instances; reading it creates none.
        # django-stubs leaves out BaseConnectionHandler._connections (a Local).
        cache = getattr(caches._connections, alias, None)  # type: ignore[attr-defined]
        if cache is not None:
            instrument_cache(cache, alias)
