"""Every setting of the app, read lazily: Django settings first, then the environment, then defaults.

`app_settings` is the one object the rest of the package reads. Each setting is declared once, as
a class attribute of `AppSettings` (a `Setting`: name, parser, default, check id, hint and its row
of the table in docs/configuration.md); `SETTINGS`, the system checks and that table derive from
the declarations. Each value is parsed when first read and kept until a setting changes (Django's
`setting_changed` signal, sent by `override_settings`) or `app_settings.clear_cache()` is called
(after changing the environment).

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
from dataclasses import KW_ONLY, dataclass
from ipaddress import IPv4Network, IPv6Network, ip_network
from typing import Any, Generic, NoReturn, TypeVar, cast, overload

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
    """One setting, declared once, as a class attribute of `AppSettings`.

    The declaration holds everything about the setting: its name (also its environment
    variable), parser, default, system check id and hint, and its row of the table in
    docs/configuration.md. Read on an instance (`app_settings.ENABLED`) it is the parsed value,
    typed by the parser; read on the class (`AppSettings.ENABLED`) it is this object.
    """

    name: str
    parse: Callable[[object], T]
    default: T
    _: KW_ONLY
    # The system check's id, stable across releases, and the hint its error gives.
    check: str
    hint: str
    # The Meaning column of docs/configuration.md (Markdown).
    doc: str
    # The Default column when `default` does not say it (None, an empty value, an octal mode).
    shown_default: str | None = None
    # How to read a bad value at run time; None: use the default.
    lenient: Callable[[object], T] | None = None

    def __post_init__(self) -> None:
        # Caught when the module is imported (so by every test run), not when the docs are built.
        self.shown()

    @overload
    def __get__(self, obj: None, owner: type[object] | None = None) -> Setting[T]: ...

    @overload
    def __get__(self, obj: AppSettings, owner: type[object] | None = None) -> T: ...

    def __get__(self, obj: AppSettings | None, owner: type[object] | None = None) -> Setting[T] | T:
        """Return the parsed value (cached) on an instance, the declaration on the class."""
        if obj is None:
            return self
        try:
            # The hit inline, without `_get`'s call: some settings are read per query or per task.
            return cast(T, obj._cache[self.name])
        except KeyError:
            return obj._get(self)

    def __set__(self, obj: AppSettings, value: NoReturn) -> NoReturn:
        """Refuse assignment, as a property would: settings change through Django or the environment."""
        raise AttributeError(f"{self.name} is read-only here; use override_settings or the environment")

    def shown(self) -> str:
        """Return the default as docs/configuration.md shows it."""
        if self.shown_default is not None:
            return self.shown_default
        default: object = self.default
        if isinstance(default, float):
            return f"`{default:g}`"
        if isinstance(default, (bool, int)) or (isinstance(default, str) and default):
            return f"`{default}`"
        raise TypeError(f"{self.name}: say how the default {default!r} reads (shown_default)")

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


@dataclass(frozen=True)
class EnvironmentVariable:
    """A variable the package reads from the environment only, never from Django settings.

    Not a `Setting`: it has no accessor and no check. Declared here so that the table in
    docs/configuration.md, generated from this module, lists it with the settings.
    """

    name: str
    shown_default: str
    doc: str


# prometheus_client's variable, read its way (`metrics.core._created_enabled`), so one variable
# governs both libraries' `_created` samples.
PROMETHEUS_DISABLE_CREATED_SERIES = EnvironmentVariable(
    "PROMETHEUS_DISABLE_CREATED_SERIES",
    "`False`",
    "`true`, `1` or `t` (any case): leave the `*_created` samples out of every exposition, ours and "
    "prometheus_client's; any other value keeps them. Environment only, read at each exposition "
    "(see [`_created` samples](#_created-samples)).",
)
ENVIRONMENT_ONLY: tuple[EnvironmentVariable, ...] = (PROMETHEUS_DISABLE_CREATED_SERIES,)


MiddlewareSettings = tuple[bool, tuple[str, ...], frozenset[str]]
MIDDLEWARE_SETTINGS_KEY = "_middleware"
# Where the middleware keeps what it derives from `middleware_settings()` (see
# `middleware_settings_slot`).
MIDDLEWARE_RULES_KEY = "_middleware_rules"

_BOOL_HINT = "Use True or False."


class AppSettings:
    """Typed, lazily parsed view of the settings (`app_settings.ENABLED`...).

    Each class attribute below is a setting's one declaration (`Setting`); `SETTINGS`, the
    system checks and the table in docs/configuration.md are derived from them. Values read
    while Django settings cannot be read yet (a script or a Celery process that configures them
    later) are not kept: the next read looks again.
    """

    ENABLED = Setting(
        "METRICS_ENABLED",
        parse_bool,
        True,
        check="metrics.E001",
        hint="Use True or False (in the environment: 1/0, true/false, yes/no, on/off).",
        doc="Collect metrics. `False`: the middleware records nothing and `/metrics/` answers 404 "
        "(the probes keep working).",
    )
    ALLOWED_IPS = Setting(
        "METRICS_ALLOWED_IPS",
        parse_networks,
        _NO_NETWORKS,
        lenient=_parse_networks_leniently,
        check="metrics.E002",
        hint="Use comma-separated IPv4/IPv6 addresses or CIDR networks, e.g. '127.0.0.1,10.0.0.0/8,::1'.",
        shown_default="none",
        doc="Client addresses allowed to read `/metrics/`: comma-separated (or a list) IPv4/IPv6 "
        "addresses and CIDR networks, e.g. `127.0.0.1,10.0.0.0/8,::1`. IPv4 clients seen as "
        "`::ffff:a.b.c.d` match IPv4 entries.",
    )
    AUTH_TOKEN = Setting(
        "METRICS_AUTH_TOKEN",
        parse_token,
        "",
        check="metrics.E003",
        hint="Use a string (an empty string disables token access).",
        shown_default="none",
        doc="Token accepted in `X-Metrics-Token: <token>` or `Authorization: Bearer <token>`. Empty "
        "disables token access. Compared in constant time.",
    )
    MULTIPROC_DIR = Setting(
        "PROMETHEUS_MULTIPROC_DIR",
        parse_optional_path,
        None,
        check="metrics.E004",
        hint="Create the directory, writable by the server's user, before start-up.",
        shown_default="unset",
        doc="Directory shared by the worker processes of one server (see "
        "[multiprocess.md](multiprocess.md)). Must exist and be writable. Read from the environment "
        "when `metrics` is imported; a value given only in Django settings applies at start-up.",
    )
    MULTIPROCESS = Setting(
        "METRICS_MULTIPROCESS",
        parse_multiprocess,
        "auto",
        check="metrics.E025",
        hint="Use 'auto' (the default), 'off', or 'on' together with PROMETHEUS_MULTIPROC_DIR.",
        doc="`auto`: without `PROMETHEUS_MULTIPROC_DIR`, the workers of a pre-forking server "
        "(gunicorn, `uvicorn --workers N`, uWSGI with a master) share a private store on their own; "
        "single-process runs stay in-process ([multiprocess.md](multiprocess.md#zero-configuration)). "
        "`on`: require `PROMETHEUS_MULTIPROC_DIR` (a check error without it). `off`: never share; a "
        "worker logs one warning at its first request. An explicit directory is used in every mode. "
        "Read when `metrics` is imported (the environment, or settings already loaded), else at "
        "start-up.",
    )
    EXEMPLARS = Setting(
        "METRICS_EXEMPLARS",
        parse_bool,
        False,
        check="metrics.E024",
        hint=_BOOL_HINT,
        doc='Attach the request\'s trace id (`{trace_id="..."}`) as an exemplar to '
        "`django_http_request_duration_seconds` and `django_http_requests_total`: from the active "
        "OpenTelemetry span when `opentelemetry-api` is installed and a span is recording, else "
        "from a valid W3C `traceparent` header; no trace, no exemplar. Shown in OpenMetrics only "
        "(Prometheus needs `--enable-feature=exemplar-storage`), in multiprocess mode too. Read "
        "when the middleware starts.",
    )
    NATIVE_HISTOGRAMS = Setting(
        "METRICS_NATIVE_HISTOGRAMS",
        parse_bool,
        False,
        check="metrics.E026",
        hint=_BOOL_HINT,
        doc="Give the latency histograms (`django_http_request_duration_seconds`, "
        "`django_db_query_duration_seconds`, `celery_task_duration_seconds`) native buckets as "
        "well, for a Prometheus that scrapes native histograms (see below). Classic buckets stay, "
        "and are all the text formats show. Read when each histogram is first used, at the latest "
        "at start-up.",
    )
    EXPORT_PORT = Setting(
        "METRICS_EXPORT_PORT",
        parse_export_address,
        None,
        check="metrics.E019",
        hint="Use a port (9100) or host:port (127.0.0.1:9100, [::1]:9100); 0 or unset: off.",
        shown_default="off",
        doc="A port (`9100`: every interface) or `host:port` where gunicorn's master serves "
        "`/metrics/` from the shared store, with the same access rules, so a scrape is answered "
        "while every worker is busy "
        "([multiprocess.md](multiprocess.md#an-export-port-in-gunicorns-master)). `0` or empty: off.",
    )
    STORE_FILE_MODE = Setting(
        "METRICS_STORE_FILE_MODE",
        parse_file_mode,
        0o600,
        check="metrics.E018",
        hint="Use '0600' (the default), or '0640'/'0660' when a second user in the directory's group "
        "must read or write the store.",
        shown_default="`0600`",
        doc="Permission bits of the files the multiprocess store creates: `0600`, or `0640`/`0660` "
        "when a second user in the directory's group must read or write the store. Other users "
        "never get access ([security.md](security.md)). Read from the environment when `metrics` "
        "is imported, and from Django settings at start-up.",
    )
    STORE_IN_DB = Setting(
        "METRICS_STORE_IN_DB",
        parse_bool,
        False,
        check="metrics.E005",
        hint=_BOOL_HINT,
        doc="Keep metric snapshots in the database.",
    )
    RETENTION_DAYS = Setting(
        "METRICS_RETENTION_DAYS",
        parse_non_negative_int,
        7,
        check="metrics.E006",
        hint="Use a whole number of days, 0 or more.",
        doc="Days of snapshots `cleanup_metrics` keeps; a whole number, 0 or more.",
    )
    TRUSTED_PROXIES = Setting(
        "METRICS_TRUSTED_PROXIES",
        parse_networks,
        _NO_NETWORKS,
        lenient=_parse_networks_leniently,
        check="metrics.E007",
        hint="Use comma-separated addresses or CIDR networks of your reverse proxies.",
        shown_default="none",
        doc="Addresses/CIDR networks of your reverse proxies. Only when the direct peer is one of "
        "them is `X-Forwarded-For` read, and then the client is the right-most address in it that "
        "is not itself a trusted proxy.",
    )
    # None: the paths of this app's own endpoints (see `excluded_paths()`).
    EXCLUDE_PATHS = Setting[tuple[str, ...] | None](
        "METRICS_EXCLUDE_PATHS",
        parse_paths,
        None,
        check="metrics.E008",
        hint="Use URL path prefixes starting with '/', e.g. '/metrics/,/static/'.",
        shown_default="where `metrics.urls` is included (`/metrics/`)",
        doc="Path prefixes (compared with `request.path_info`, each starting with `/`) the "
        "middleware does not record. The default keeps scrapes and probes out of the HTTP "
        'metrics; `""` records everything.',
    )
    HEALTH_TIMEOUT = Setting(
        "METRICS_HEALTH_TIMEOUT",
        parse_timeout,
        0.8,
        check="metrics.E009",
        hint="Use seconds, e.g. 0.8 (Kubernetes probes time out after 1 s by default).",
        doc="Seconds each health check may take before it is reported as `timeout` (checks run in "
        "parallel, so a probe answers within about this time; Kubernetes' default probe timeout is "
        "1 s). Between 0 and 60.",
    )
    HEALTH_MIN_FREE_MB = Setting(
        "METRICS_HEALTH_MIN_FREE_MB",
        parse_non_negative_number,
        32.0,
        check="metrics.E010",
        hint="Use a number of megabytes, 0 or more.",
        doc="Free space `PROMETHEUS_MULTIPROC_DIR` needs for `/metrics/health/` to pass.",
    )
    LATENCY_BUCKETS = Setting(
        "METRICS_LATENCY_BUCKETS",
        parse_buckets,
        DEFAULT_LATENCY_BUCKETS,
        check="metrics.E017",
        hint="Use increasing numbers of seconds, e.g. '0.01,0.05,0.1,0.5,1,5'.",
        shown_default="5 ms … 30 s (15 bounds)",
        doc="Upper bounds of the request-latency histogram, in seconds, increasing; read when the "
        "histogram is first used, at the latest at start-up (see [below](#histogram-buckets)).",
    )
    ACTIVE_USER_WINDOW = Setting(
        "METRICS_ACTIVE_USER_WINDOW",
        parse_non_negative_int,
        300,
        check="metrics.E011",
        hint="Use a whole number of seconds, 0 or more (0 turns the gauge off).",
        doc="Seconds a user counts as active after a login, for `django_active_users_total`; `0` "
        "turns the gauge off (see [metrics.md](metrics.md)).",
    )
    MAX_LABEL_VALUES = Setting(
        "METRICS_MAX_LABEL_VALUES",
        parse_positive_int,
        100,
        check="metrics.E012",
        hint="Use a whole number, 1 or more.",
        doc="Distinct values one user-supplied label (`track_custom_metric`, `track_user_activity`) "
        "may take before further values fold into `other`.",
    )
    # The Celery settings are read in workers without Django settings too (only the environment then).
    CELERY_ENABLED = Setting(
        "METRICS_CELERY_ENABLED",
        parse_bool,
        True,
        check="metrics.E013",
        hint=_BOOL_HINT,
        doc="Record Celery task metrics from Celery's signals ([celery.md](celery.md)).",
    )
    CELERY_WORKER_PORT = Setting(
        "METRICS_CELERY_WORKER_PORT",
        parse_port,
        0,
        check="metrics.E014",
        hint="Use a TCP port, 1 to 65535, or 0 for no worker port.",
        shown_default="`0` (off)",
        doc="A Celery worker's own metrics port, served from its main process; `--metrics-port` "
        "overrides it.",
    )
    CELERY_WORKER_ADDRESS = Setting(
        "METRICS_CELERY_WORKER_ADDRESS",
        parse_bind_address,
        "0.0.0.0",
        check="metrics.E015",
        hint="Use an address to listen on, e.g. '0.0.0.0' or '127.0.0.1'.",
        doc="Where that port listens; `--metrics-address` overrides it.",
    )
    CELERY_HEALTH_CHECK = Setting(
        "METRICS_CELERY_HEALTH_CHECK",
        parse_bool,
        True,
        check="metrics.E016",
        hint=_BOOL_HINT,
        doc="Add the `celery` check (broker reachable, a worker answering a ping) to `/metrics/health/`.",
    )
    # None: the Celery app's configured queues; an empty list: none (no broker read).
    CELERY_QUEUES = Setting[tuple[str, ...] | None](
        "METRICS_CELERY_QUEUES",
        parse_queue_names,
        None,
        check="metrics.E020",
        hint="Use queue names, comma-separated or a list, e.g. 'celery,emails'; [] for none.",
        shown_default="the Celery app's queues",
        doc="Broker queues whose length `celery_queue_length{queue}` reads at scrape time: "
        "comma-separated or a list. Unset: `task_queues`, `task_default_queue` and the queues named "
        "in dict `task_routes`. `[]`: no broker read ([celery.md](celery.md#broker-backlog)).",
    )
    CELERY_QUEUE_TIMEOUT = Setting(
        "METRICS_CELERY_QUEUE_TIMEOUT",
        parse_timeout,
        0.5,
        check="metrics.E021",
        hint="Use seconds, e.g. 0.5: a scrape waits at most this long for the broker.",
        doc="Seconds a scrape waits for that broker read; past it the queue series are left out of "
        "the scrape and `celery_queue_length_errors_total` counts it. Between 0 and 60.",
    )
    COMPAT_DJANGO_PROMETHEUS = Setting(
        "METRICS_COMPAT_DJANGO_PROMETHEUS",
        parse_bool,
        False,
        check="metrics.E022",
        hint=_BOOL_HINT,
        doc="Also expose django-prometheus 2.5's metric families (names, types, labels), fed by the "
        "same middleware, database and cache hooks, so dashboards and alerts written for it keep "
        "working ([migrating-from-django-prometheus.md](migrating-from-django-prometheus.md)). Read "
        "at start-up. Off, it costs nothing per request.",
    )
    MODELS = Setting[str | tuple[str, ...]](
        "METRICS_MODELS",
        parse_models,
        (),
        check="metrics.E023",
        hint="Use '*' for every model, or app_label.ModelName labels, e.g. 'shop.Item,auth.User'.",
        shown_default="none",
        doc='Models whose inserts, updates and deletes are counted from Django\'s signals: `"*"` for '
        "every model, or `app_label.ModelName` labels (comma-separated or a list), each of which "
        "must name an installed model. Read at start-up ([metrics.md](metrics.md#models)).",
    )

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


# Every setting by name (its environment variable), in declaration order: the system checks
# validate these, and `settings_table()` documents them.
SETTINGS: dict[str, Setting[Any]] = {
    setting.name: setting for setting in vars(AppSettings).values() if isinstance(setting, Setting)
}


def settings_table() -> str:
    """Return the Markdown table of every setting and environment variable (docs/configuration.md).

    `scripts/settings_table.py` writes it into the docs; a test checks they match.
    """
    rows = ["| Setting / variable | Default | Meaning | Check |", "|---|---|---|---|"]
    for setting in SETTINGS.values():
        rows.append(f"| `{setting.name}` | {setting.shown()} | {setting.doc} | `{setting.check}` |")
    for variable in ENVIRONMENT_ONLY:
        name = f"`{variable.name}` (environment only)"
        rows.append(f"| {name} | {variable.shown_default} | {variable.doc} | none |")
    return "\n".join(rows) + "\n"


app_settings = AppSettings()


def _on_setting_changed(*, setting: str, **kwargs: object) -> None:
    if setting in SETTINGS or setting == "ROOT_URLCONF":
        app_settings.clear_cache()


setting_changed.connect(_on_setting_changed, dispatch_uid="metrics.conf.setting_changed")
