"""Every setting of the app, read lazily: Django settings first, then the environment, then defaults.

`app_settings` is the one object the rest of the package reads. Each value is parsed once and kept
until a setting changes (Django's `setting_changed` signal, sent by `override_settings`) or
`app_settings.clear_cache()` is called (after changing the environment).

Bad values never raise here: the system checks in `metrics.checks` report them (with the same
parsers, in strict mode) and at run time the safe reading applies: a bad address is skipped (so
access stays closed), a bad boolean or number falls back to the default. A scrape must never turn
into a 500 because of a typo in a setting.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from ipaddress import IPv4Network, IPv6Network, ip_network
from typing import Any, Generic, TypeVar, cast

from django.conf import settings
from django.core.signals import setting_changed

logger = logging.getLogger("metrics")

T = TypeVar("T")
Network = IPv4Network | IPv6Network

_MISSING: Any = object()
_NO_NETWORKS: tuple[Network, ...] = ()
_TRUE = frozenset({"1", "true", "yes", "on", "y", "t"})
_FALSE = frozenset({"0", "false", "no", "off", "n", "f"})


def _settings_available() -> bool:
    """Return whether Django settings can be read (configured, or configurable from the environment)."""
    return settings.configured or bool(os.environ.get("DJANGO_SETTINGS_MODULE"))


def django_setting(name: str) -> object:
    """Return Django's own setting `name` (`DATABASES`, `MIDDLEWARE`...), None when unset.

    The one place the package reads a setting that is not its own; callers check the type.
    """
    return getattr(settings, name, None) if _settings_available() else None


class SettingError(ValueError):
    """A setting holds a value that cannot be used."""


def parse_bool(value: object) -> bool:
    """Return the boolean meant by `value` (a bool, 0/1, or a string such as `True`, `off`, `1`)."""
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    if isinstance(value, str):
        word = value.strip().lower()
        if word in _TRUE:
            return True
        if word in _FALSE:
            return False
    raise SettingError(f"{value!r} is not a boolean (use True/False, 1/0, yes/no, on/off)")


def _items(value: object) -> list[str]:
    """Split a comma-separated string, or take a list/tuple of strings, dropping empty entries."""
    if value is None:
        return []
    if isinstance(value, str):
        raw: Iterable[object] = value.split(",")
    elif isinstance(value, (list, tuple, set, frozenset)):
        raw = value
    else:
        raise SettingError(f"{value!r} is neither a comma-separated string nor a list of strings")
    items = []
    for item in raw:
        if not isinstance(item, str):
            raise SettingError(f"{item!r} is not a string")
        item = item.strip()
        if item:
            items.append(item)
    return items


def parse_network(item: str) -> Network:
    """Return the network for an IPv4/IPv6 address or CIDR network (`10.0.0.0/8`, `::1`)."""
    try:
        # strict=False: `10.1.2.3/8` means the /8 around it, as every firewall reads it.
        return ip_network(item, strict=False)
    except ValueError:
        raise SettingError(f"{item!r} is not an IP address or CIDR network") from None


def parse_networks(value: object) -> tuple[Network, ...]:
    """Return the networks of a comma-separated string or list of addresses and CIDR networks."""
    return tuple(parse_network(item) for item in _items(value))


def _parse_networks_leniently(value: object) -> tuple[Network, ...]:
    """Return the valid networks of `value`, skipping bad entries (the checks report them)."""
    try:
        entries = _items(value)
    except SettingError:
        return ()
    networks = []
    for item in entries:
        try:
            networks.append(parse_network(item))
        except SettingError:
            continue
    return tuple(networks)


def parse_token(value: object) -> str:
    """Return the token, stripped: header values arrive stripped, so edge spaces could never match."""
    if value is None:
        return ""
    if not isinstance(value, str):
        raise SettingError(f"{value!r} is not a string")
    return value.strip()


def parse_optional_path(value: object) -> str | None:
    """Return a directory path, or None when unset or empty."""
    if value is None:
        return None
    if isinstance(value, os.PathLike):
        value = os.fspath(value)
    if not isinstance(value, str):
        raise SettingError(f"{value!r} is not a path")
    return value.strip() or None


def parse_non_negative_int(value: object) -> int:
    """Return a whole number >= 0 (an int or a string of digits)."""
    if isinstance(value, bool):
        raise SettingError(f"{value!r} is not a whole number")
    if isinstance(value, str):
        try:
            value = int(value.strip())
        except ValueError:
            raise SettingError(f"{value!r} is not a whole number") from None
    if not isinstance(value, int):
        raise SettingError(f"{value!r} is not a whole number")
    if value < 0:
        raise SettingError(f"{value!r} is negative")
    return value


def _parse_number(value: object) -> float:
    if isinstance(value, bool):
        raise SettingError(f"{value!r} is not a number")
    if isinstance(value, str):
        try:
            value = float(value.strip())
        except ValueError:
            raise SettingError(f"{value!r} is not a number") from None
    if not isinstance(value, (int, float)) or not math.isfinite(value):
        raise SettingError(f"{value!r} is not a finite number")
    return float(value)


def parse_timeout(value: object) -> float:
    """Return a timeout in seconds, greater than 0 and at most 60."""
    seconds = _parse_number(value)
    if not 0 < seconds <= 60:
        raise SettingError(f"{value!r} is not between 0 (excluded) and 60 seconds")
    return seconds


def parse_non_negative_number(value: object) -> float:
    """Return a number >= 0."""
    number = _parse_number(value)
    if number < 0:
        raise SettingError(f"{value!r} is negative")
    return number


def parse_positive_int(value: object) -> int:
    """Return a whole number >= 1."""
    number = parse_non_negative_int(value)
    if number < 1:
        raise SettingError(f"{value!r} is not 1 or more")
    return number


def parse_port(value: object) -> int:
    """Return a TCP port number, 0 to 65535 (0: off)."""
    port = parse_non_negative_int(value)
    if port > 65535:
        raise SettingError(f"{value!r} is not a port number (0 to 65535)")
    return port


def parse_bind_address(value: object) -> str:
    """Return an address to listen on (an IPv4/IPv6 address or a host name)."""
    if not isinstance(value, str) or not value.strip():
        raise SettingError(f"{value!r} is not an address to listen on")
    return value.strip().strip("[]")


def parse_export_address(value: object) -> tuple[str, int] | None:
    """Return (address, port) from a port (`9100`: every interface) or `host:port`; None when off.

    `0`, an empty string or None turn the export port off. IPv6 addresses take brackets
    (`[::1]:9100`).
    """
    if value is None or value == "" or value == 0:
        return None
    if isinstance(value, bool):
        raise SettingError(f"{value!r} is not a port or host:port")
    if isinstance(value, int):
        host, port_text = "0.0.0.0", str(value)
    elif isinstance(value, str):
        text = value.strip()
        if not text or text == "0":
            return None
        if text.isdigit():
            host, port_text = "0.0.0.0", text
        else:
            host, sep, port_text = text.rpartition(":")
            if not sep or not host:
                raise SettingError(f"{value!r} is not a port or host:port")
            host = host.strip("[]")
    else:
        raise SettingError(f"{value!r} is not a port or host:port")
    if not port_text.isdigit() or not 1 <= int(port_text) <= 65535:
        raise SettingError(f"{value!r} does not name a port from 1 to 65535")
    return parse_bind_address(host), int(port_text)


# Permission bits the multiprocess store may give its files: never any access for other users.
STORE_FILE_MODES = (0o600, 0o640, 0o660)


def parse_file_mode(value: object) -> int:
    """Return the store's file mode from an octal string (`"0640"`) or a number (`0o640`)."""
    if isinstance(value, bool):
        raise SettingError(f"{value!r} is not a file mode")
    if isinstance(value, str):
        try:
            mode = int(value.strip().removeprefix("0o") or "x", 8)
        except ValueError:
            raise SettingError(f"{value!r} is not an octal file mode") from None
    elif isinstance(value, int):
        mode = value
    else:
        raise SettingError(f"{value!r} is not a file mode")
    if mode not in STORE_FILE_MODES:
        allowed = ", ".join(f"{m:04o}" for m in STORE_FILE_MODES)
        raise SettingError(f"{value!r} is not one of {allowed} (other users never get access)")
    return mode


MULTIPROCESS_MODES = ("auto", "on", "off")


def parse_multiprocess(value: object) -> str:
    """Return `auto`, `on` or `off` (any case; True/False mean on/off)."""
    if isinstance(value, bool):
        return "on" if value else "off"
    word = value.strip().lower() if isinstance(value, str) else None
    if word not in MULTIPROCESS_MODES:
        raise SettingError(f"{value!r} is not one of auto, on, off")
    return word


# Latency buckets in seconds: fine below 100 ms where most Django views live, coarse above.
DEFAULT_LATENCY_BUCKETS: tuple[float, ...] = (
    0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0, 30.0,
)  # fmt: skip


def parse_buckets(value: object) -> tuple[float, ...]:
    """Return histogram upper bounds: numbers >= 0, strictly increasing, at least one.

    A comma-separated string (`"0.05,0.1,0.5"`) or a list of numbers or strings.
    """
    if isinstance(value, (list, tuple)) and all(isinstance(v, (int, float, str)) for v in value):
        items: list[object] = list(value)
    else:
        items = list(_items(value))
    if not items:
        raise SettingError(f"{value!r} has no bucket")
    bounds: list[float] = []
    for item in items:
        bound = _parse_number(item)
        if bound < 0:
            raise SettingError(f"{item!r} is negative")
        if bounds and bound <= bounds[-1]:
            raise SettingError(f"{item!r} does not come after {bounds[-1]!r}: buckets must increase")
        bounds.append(bound)
    return tuple(bounds)


def parse_queue_names(value: object) -> tuple[str, ...]:
    """Return broker queue names: a comma-separated string or a list, each 1 to 255 characters.

    255: the longest queue name AMQP allows. An empty list is valid (it means: watch no queue).
    """
    names = tuple(dict.fromkeys(_items(value)))
    for name in names:
        if len(name) > 255:
            raise SettingError(f"{name[:40]!r}... is longer than 255 characters")
    return names


ALL_MODELS = "*"


def parse_models(value: object) -> str | tuple[str, ...]:
    """Return `"*"` (every model) or the `app_label.ModelName` labels listed; `()` counts none.

    A comma-separated string or a list. Whether each model exists is checked once the app
    registry is ready (`metrics.checks`), not here.
    """
    if isinstance(value, str) and value.strip() == ALL_MODELS:
        return ALL_MODELS
    labels = tuple(dict.fromkeys(_items(value)))
    for label in labels:
        app_label, dot, model = label.partition(".")
        if not dot or not app_label or not model or "." in model:
            raise SettingError(f"{label!r} is not an app_label.ModelName label (or '*' for every model)")
    return labels


def parse_paths(value: object) -> tuple[str, ...]:
    """Return URL path prefixes, each starting with `/`."""
    paths = _items(value)
    for path in paths:
        if not path.startswith("/"):
            raise SettingError(f"{path!r} does not start with '/'")
    return tuple(paths)


@dataclass(frozen=True)
class Setting(Generic[T]):
    """One setting: its name (also its environment variable), its parser and its default."""

    name: str
    parse: Callable[[object], T]
    default: T
    # How to read a bad value at run time; None: use the default.
    lenient: Callable[[object], T] | None = None

    def raw(self) -> tuple[object, str]:
        """Return the raw value and where it came from: `settings`, `environment` or `default`.

        Without Django settings (a script or a Celery process importing the catalogue, with no
        DJANGO_SETTINGS_MODULE), only the environment and the default count.
        """
        value = getattr(settings, self.name, _MISSING) if _settings_available() else _MISSING
        # None in settings.py means "not set here": the environment and the default still apply.
        if value is not _MISSING and value is not None:
            return value, "settings"
        env = os.environ.get(self.name)
        # An empty variable (`METRICS_ENABLED=` in an env file) means "not set".
        if env is not None and env.strip():
            return env, "environment"
        return _MISSING, "default"

    def validate(self) -> tuple[object, str, SettingError | None]:
        """Return the raw value, its source, and the error parsing it, if any."""
        value, source = self.raw()
        if value is _MISSING:
            return None, source, None
        try:
            self.parse(value)
        except SettingError as exc:
            return value, source, exc
        return value, source, None

    def read(self) -> T:
        """Return the parsed value, falling back safely when it is bad."""
        value, source = self.raw()
        if value is _MISSING:
            return self.default
        try:
            return self.parse(value)
        except SettingError as exc:
            logger.warning("Ignoring bad %s from %s: %s (run `manage.py check`)", self.name, source, exc)
            if self.lenient is not None:
                return self.lenient(value)
            return self.default


# One constant per setting, typed by its parser: `AppSettings` reads these, `metrics.checks`
# validates them (through `SETTINGS`), and nothing else in the package reads a setting.
METRICS_ENABLED = Setting("METRICS_ENABLED", parse_bool, True)
METRICS_ALLOWED_IPS = Setting(
    "METRICS_ALLOWED_IPS", parse_networks, _NO_NETWORKS, lenient=_parse_networks_leniently
)
METRICS_AUTH_TOKEN = Setting("METRICS_AUTH_TOKEN", parse_token, "")
PROMETHEUS_MULTIPROC_DIR = Setting("PROMETHEUS_MULTIPROC_DIR", parse_optional_path, None)
# auto: a worker of a pre-forking server shares a private store (metrics.prefork); on: require
# PROMETHEUS_MULTIPROC_DIR; off: never. Read when `metrics` is imported or, at the latest, at start-up.
METRICS_MULTIPROCESS = Setting("METRICS_MULTIPROCESS", parse_multiprocess, "auto")
# Trace ids as exemplars on the request counter and latency histogram (metrics.tracing); read when
# the middleware starts.
METRICS_EXEMPLARS = Setting("METRICS_EXEMPLARS", parse_bool, False)
# gunicorn's master serves /metrics/ there (deploy/gunicorn.conf.py); off by default.
METRICS_EXPORT_PORT = Setting("METRICS_EXPORT_PORT", parse_export_address, None)
# Read at import from the environment (core.py) and at start-up (apps.py).
METRICS_STORE_FILE_MODE = Setting("METRICS_STORE_FILE_MODE", parse_file_mode, 0o600)
METRICS_STORE_IN_DB = Setting("METRICS_STORE_IN_DB", parse_bool, False)
METRICS_RETENTION_DAYS = Setting("METRICS_RETENTION_DAYS", parse_non_negative_int, 7)
METRICS_TRUSTED_PROXIES = Setting(
    "METRICS_TRUSTED_PROXIES", parse_networks, _NO_NETWORKS, lenient=_parse_networks_leniently
)
# None: the paths of this app's own endpoints (see `AppSettings.excluded_paths()`).
METRICS_EXCLUDE_PATHS = Setting[tuple[str, ...] | None]("METRICS_EXCLUDE_PATHS", parse_paths, None)
METRICS_HEALTH_TIMEOUT = Setting("METRICS_HEALTH_TIMEOUT", parse_timeout, 0.8)
METRICS_HEALTH_MIN_FREE_MB = Setting("METRICS_HEALTH_MIN_FREE_MB", parse_non_negative_number, 32.0)
# Read once, when metrics.collectors creates the latency histogram (at import).
METRICS_LATENCY_BUCKETS = Setting("METRICS_LATENCY_BUCKETS", parse_buckets, DEFAULT_LATENCY_BUCKETS)
# Native (exponential) buckets on the built-in latency histograms, beside the classic ones; read once,
# when metrics.collectors creates them (at import).
METRICS_NATIVE_HISTOGRAMS = Setting("METRICS_NATIVE_HISTOGRAMS", parse_bool, False)
METRICS_ACTIVE_USER_WINDOW = Setting("METRICS_ACTIVE_USER_WINDOW", parse_non_negative_int, 300)
METRICS_MAX_LABEL_VALUES = Setting("METRICS_MAX_LABEL_VALUES", parse_positive_int, 100)
# The Celery settings are read in workers without Django settings too (only the environment then).
METRICS_CELERY_ENABLED = Setting("METRICS_CELERY_ENABLED", parse_bool, True)
# The worker's own metrics port; 0: off. `--metrics-port` overrides it.
METRICS_CELERY_WORKER_PORT = Setting("METRICS_CELERY_WORKER_PORT", parse_port, 0)
# Where that port listens. `--metrics-address` overrides it.
METRICS_CELERY_WORKER_ADDRESS = Setting("METRICS_CELERY_WORKER_ADDRESS", parse_bind_address, "0.0.0.0")
# A `celery` check on /metrics/health/: broker reachable and a worker answering a ping.
METRICS_CELERY_HEALTH_CHECK = Setting("METRICS_CELERY_HEALTH_CHECK", parse_bool, True)
# Queues whose length is read from the broker at scrape time. None: the Celery app's configured
# queues; an empty list: none (no broker read).
METRICS_CELERY_QUEUES = Setting[tuple[str, ...] | None]("METRICS_CELERY_QUEUES", parse_queue_names, None)
# Longest a scrape waits for that read before leaving the queue series out.
METRICS_CELERY_QUEUE_TIMEOUT = Setting("METRICS_CELERY_QUEUE_TIMEOUT", parse_timeout, 0.5)
# Also expose django-prometheus 2.5's families (metrics.compat); read at start-up.
METRICS_COMPAT_DJANGO_PROMETHEUS = Setting("METRICS_COMPAT_DJANGO_PROMETHEUS", parse_bool, False)
# Models whose saves and deletes are counted (metrics.instrument.models); read at start-up.
METRICS_MODELS = Setting[str | tuple[str, ...]]("METRICS_MODELS", parse_models, ())

SETTINGS: dict[str, Setting[Any]] = {
    s.name: s
    for s in (
        METRICS_ENABLED,
        METRICS_ALLOWED_IPS,
        METRICS_AUTH_TOKEN,
        PROMETHEUS_MULTIPROC_DIR,
        METRICS_MULTIPROCESS,
        METRICS_EXEMPLARS,
        METRICS_EXPORT_PORT,
        METRICS_STORE_FILE_MODE,
        METRICS_STORE_IN_DB,
        METRICS_RETENTION_DAYS,
        METRICS_TRUSTED_PROXIES,
        METRICS_EXCLUDE_PATHS,
        METRICS_HEALTH_TIMEOUT,
        METRICS_HEALTH_MIN_FREE_MB,
        METRICS_LATENCY_BUCKETS,
        METRICS_NATIVE_HISTOGRAMS,
        METRICS_ACTIVE_USER_WINDOW,
        METRICS_MAX_LABEL_VALUES,
        METRICS_CELERY_ENABLED,
        METRICS_CELERY_WORKER_PORT,
        METRICS_CELERY_WORKER_ADDRESS,
        METRICS_CELERY_HEALTH_CHECK,
        METRICS_CELERY_QUEUES,
        METRICS_CELERY_QUEUE_TIMEOUT,
        METRICS_COMPAT_DJANGO_PROMETHEUS,
        METRICS_MODELS,
    )
}


MiddlewareSettings = tuple[bool, tuple[str, ...], frozenset[str]]
MIDDLEWARE_SETTINGS_KEY = "_middleware"
# Where the middleware keeps what it derives from `middleware_settings()` (see
# `middleware_settings_slot`).
MIDDLEWARE_RULES_KEY = "_middleware_rules"


class AppSettings:
    """Typed, lazily parsed view of the settings (`app_settings.ENABLED`...).

    Values read while Django settings cannot be read yet (a script or a Celery process that
    configures them later) are not kept: the next read looks again.
    """

    def __init__(self) -> None:
        self._cache: dict[str, object] = {}
        self._excluded: tuple[str, ...] | None = None

    def _get(self, setting: Setting[T]) -> T:
        try:
            # The cache holds, under a setting's name, what that setting's parser returned.
            return cast(T, self._cache[setting.name])
        except KeyError:
            value = setting.read()
            if _settings_available():
                self._cache[setting.name] = value
            return value

    def clear_cache(self) -> None:
        """Forget parsed values, so the next read sees current settings and environment."""
        self._cache.clear()
        self._excluded = None

    @property
    def ENABLED(self) -> bool:
        """Collect metrics and serve `/metrics/` (`METRICS_ENABLED`, default True)."""
        return self._get(METRICS_ENABLED)

    @property
    def ALLOWED_IPS(self) -> tuple[Network, ...]:
        """Client networks allowed to read `/metrics/` (`METRICS_ALLOWED_IPS`, default none)."""
        return self._get(METRICS_ALLOWED_IPS)

    @property
    def AUTH_TOKEN(self) -> str:
        """Token accepted in `X-Metrics-Token` or `Authorization: Bearer` (default: none)."""
        return self._get(METRICS_AUTH_TOKEN)

    @property
    def MULTIPROC_DIR(self) -> str | None:
        """Directory shared by worker processes (`PROMETHEUS_MULTIPROC_DIR`, default unset)."""
        return self._get(PROMETHEUS_MULTIPROC_DIR)

    @property
    def MULTIPROCESS(self) -> str:
        """Share a store among a pre-forking server's workers (`METRICS_MULTIPROCESS`, default auto)."""
        return self._get(METRICS_MULTIPROCESS)

    @property
    def EXEMPLARS(self) -> bool:
        """Attach trace ids to the request metrics as exemplars (`METRICS_EXEMPLARS`, default False)."""
        return self._get(METRICS_EXEMPLARS)

    @property
    def EXPORT_PORT(self) -> tuple[str, int] | None:
        """Where gunicorn's master serves `/metrics/` (`METRICS_EXPORT_PORT`, default off)."""
        return self._get(METRICS_EXPORT_PORT)

    @property
    def STORE_FILE_MODE(self) -> int:
        """Permission bits of the store's files (`METRICS_STORE_FILE_MODE`, default 0600)."""
        return self._get(METRICS_STORE_FILE_MODE)

    @property
    def STORE_IN_DB(self) -> bool:
        """Keep metric snapshots in the database (`METRICS_STORE_IN_DB`, default False)."""
        return self._get(METRICS_STORE_IN_DB)

    @property
    def RETENTION_DAYS(self) -> int:
        """Days of snapshots `cleanup_metrics` keeps (`METRICS_RETENTION_DAYS`, default 7)."""
        return self._get(METRICS_RETENTION_DAYS)

    @property
    def TRUSTED_PROXIES(self) -> tuple[Network, ...]:
        """Peers whose `X-Forwarded-For` is believed (`METRICS_TRUSTED_PROXIES`, default none)."""
        return self._get(METRICS_TRUSTED_PROXIES)

    @property
    def EXCLUDE_PATHS(self) -> tuple[str, ...] | None:
        """Path prefixes the middleware ignores; None means this app's endpoints."""
        return self._get(METRICS_EXCLUDE_PATHS)

    @property
    def HEALTH_TIMEOUT(self) -> float:
        """Seconds each health check may take (`METRICS_HEALTH_TIMEOUT`, default 0.8)."""
        return self._get(METRICS_HEALTH_TIMEOUT)

    @property
    def HEALTH_MIN_FREE_MB(self) -> float:
        """Free space the multiprocess directory needs to pass `/metrics/health/` (default 32 MB)."""
        return self._get(METRICS_HEALTH_MIN_FREE_MB)

    @property
    def LATENCY_BUCKETS(self) -> tuple[float, ...]:
        """Upper bounds of the request latency histogram (`METRICS_LATENCY_BUCKETS`)."""
        return self._get(METRICS_LATENCY_BUCKETS)

    @property
    def NATIVE_HISTOGRAMS(self) -> bool:
        """Whether the built-in latency histograms have native buckets (`METRICS_NATIVE_HISTOGRAMS`)."""
        return self._get(METRICS_NATIVE_HISTOGRAMS)

    @property
    def ACTIVE_USER_WINDOW(self) -> int:
        """Seconds since login that make a user active (`METRICS_ACTIVE_USER_WINDOW`, default 300)."""
        return self._get(METRICS_ACTIVE_USER_WINDOW)

    @property
    def MAX_LABEL_VALUES(self) -> int:
        """Distinct values one user-fed label may take (`METRICS_MAX_LABEL_VALUES`, default 100)."""
        return self._get(METRICS_MAX_LABEL_VALUES)

    @property
    def CELERY_ENABLED(self) -> bool:
        """Record Celery task metrics (`METRICS_CELERY_ENABLED`, default True)."""
        return self._get(METRICS_CELERY_ENABLED)

    @property
    def CELERY_WORKER_PORT(self) -> int:
        """The Celery worker's metrics port, 0 for none (`METRICS_CELERY_WORKER_PORT`, default 0)."""
        return self._get(METRICS_CELERY_WORKER_PORT)

    @property
    def CELERY_WORKER_ADDRESS(self) -> str:
        """Where the worker's metrics port listens (`METRICS_CELERY_WORKER_ADDRESS`, default 0.0.0.0)."""
        return self._get(METRICS_CELERY_WORKER_ADDRESS)

    @property
    def CELERY_HEALTH_CHECK(self) -> bool:
        """Add the `celery` check to `/metrics/health/` (`METRICS_CELERY_HEALTH_CHECK`, default True)."""
        return self._get(METRICS_CELERY_HEALTH_CHECK)

    @property
    def CELERY_QUEUES(self) -> tuple[str, ...] | None:
        """Broker queues read at scrape time; None: the app's configured queues (`METRICS_CELERY_QUEUES`)."""
        return self._get(METRICS_CELERY_QUEUES)

    @property
    def CELERY_QUEUE_TIMEOUT(self) -> float:
        """Longest a scrape waits for the broker (`METRICS_CELERY_QUEUE_TIMEOUT`, default 0.5)."""
        return self._get(METRICS_CELERY_QUEUE_TIMEOUT)

    @property
    def COMPAT_DJANGO_PROMETHEUS(self) -> bool:
        """Also expose django-prometheus's metric families (`METRICS_COMPAT_DJANGO_PROMETHEUS`)."""
        return self._get(METRICS_COMPAT_DJANGO_PROMETHEUS)

    @property
    def MODELS(self) -> str | tuple[str, ...]:
        """`"*"` or the `app_label.ModelName` labels whose saves and deletes count (`METRICS_MODELS`)."""
        return self._get(METRICS_MODELS)

    def middleware_settings(self) -> MiddlewareSettings:
        """Return (ENABLED, excluded_paths(), probe_paths()) in one cached lookup."""
        try:
            return cast(MiddlewareSettings, self._cache[MIDDLEWARE_SETTINGS_KEY])
        except KeyError:
            found = (self.ENABLED, self.excluded_paths(), self.probe_paths())
            self._cache[MIDDLEWARE_SETTINGS_KEY] = found
            return found

    def middleware_settings_slot(self) -> tuple[dict[str, object], str]:
        """Return a dict and key where the middleware keeps what it makes of `middleware_settings()`.

        The middleware's core reads it there on every request without a Python call; the dict
        is this object's cache, cleared (never replaced) when a setting changes, so the pair
        stays valid for the process's life and the next request makes it afresh.
        """
        return self._cache, MIDDLEWARE_RULES_KEY

    def probe_paths(self) -> frozenset[str]:
        """Return the paths (as `request.path_info`) of `/metrics/liveness/` and `/metrics/readiness/`.

        Empty when `metrics.urls` is not included.
        """
        from django.urls import NoReverseMatch, get_script_prefix, reverse

        paths = set()
        prefix = get_script_prefix()
        for name in ("metrics:liveness", "metrics:readiness"):
            try:
                path = reverse(name)
            except NoReverseMatch:
                continue
            except Exception:
                logger.warning("metrics: could not reverse %s", name, exc_info=True)
                continue
            paths.add("/" + path[len(prefix) :] if path.startswith(prefix) else path)
        return frozenset(paths)

    def excluded_paths(self) -> tuple[str, ...]:
        """Return the path prefixes the middleware ignores.

        Unset `METRICS_EXCLUDE_PATHS` means the prefix where `metrics.urls` is included (where
        `/metrics/` and the probes live): scrapes and probes would otherwise drown the site's
        own traffic. Paths are compared with `request.path_info` (without the script prefix).
        """
        if self._excluded is not None:
            return self._excluded
        paths = self.EXCLUDE_PATHS
        if paths is None:
            from django.urls import NoReverseMatch, get_script_prefix, reverse

            try:
                path = reverse("metrics:metrics")
            except NoReverseMatch:
                paths = ()
            except Exception:
                # A broken URLconf fails the request on its own; metrics code must not add to it.
                logger.warning("metrics: could not reverse metrics:metrics", exc_info=True)
                return ()
            else:
                # reverse() prepends the script prefix; path_info has none.
                prefix = get_script_prefix()
                if path.startswith(prefix):
                    path = "/" + path[len(prefix) :]
                paths = (path,)
        self._excluded = paths
        return paths


app_settings = AppSettings()


def _on_setting_changed(*, setting: str, **kwargs: object) -> None:
    if setting in SETTINGS or setting == "ROOT_URLCONF":
        app_settings.clear_cache()


setting_changed.connect(_on_setting_changed, dispatch_uid="metrics.conf.setting_changed")
