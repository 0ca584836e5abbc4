"""The one module that imports `metrics._core`: metric classes, registries and exposition.

Everything else in the package imports from here. Nothing here needs Django settings.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any

from metrics import _core
from metrics._core import (
    CompatRecorder,
    Counter,
    Enum,
    Gauge,
    Histogram,
    Info,
    RecordingMiddleware,
    RequestFields,
    RequestMetrics,
    RequestRules,
    StoreError,
    Summary,
    trace_id_from_traceparent,
)
from metrics.negotiation import UNDERSCORES

__all__ = [
    "CONTENT_TYPE_LATEST",
    "OPENMETRICS_CONTENT_TYPE",
    "REGISTRY",
    "CollectorRegistry",
    "CompatRecorder",
    "Counter",
    "Enum",
    "Gauge",
    "Histogram",
    "Info",
    "PrometheusCollector",
    "RecordingMiddleware",
    "RequestFields",
    "RequestMetrics",
    "RequestRules",
    "StoreError",
    "Summary",
    "add_collect_hook",
    "add_process_hook",
    "disable_created_metrics",
    "enable_created_metrics",
    "enable_multiprocess",
    "exposition",
    "generate_latest",
    "generate_latest_openmetrics",
    "generate_latest_protobuf",
    "mark_process_dead",
    "multiprocess_dir",
    "set_store_file_mode",
    "tick",
    "trace_id_from_traceparent",
]

logger = logging.getLogger("metrics")

CONTENT_TYPE_LATEST: str = _core.TEXT_CONTENT_TYPE
OPENMETRICS_CONTENT_TYPE: str = _core.OPENMETRICS_CONTENT_TYPE

_collect_hooks: list[Callable[[], None]] = []
_multiprocess_dir: str | None = None


def enable_multiprocess(path: str | os.PathLike[str]) -> None:
    """Keep every metric value in the shared store under `path` (multiprocess mode).

    Values written so far move into the store. Raise `StoreError` (an `OSError` naming the path)
    if `path` is not a writable directory, ValueError if another directory is already in use.
    Calling it again with the same path does nothing.
    """
    global _multiprocess_dir
    path = os.fspath(path)
    if _multiprocess_dir == path:
        return
    if _multiprocess_dir is not None:
        raise ValueError(f"multiprocess mode already uses {_multiprocess_dir!r}, not {path!r}")
    _core.enable_multiprocess(path)
    _multiprocess_dir = path


def multiprocess_dir() -> str | None:
    """Return the shared store's directory, or None in single-process mode."""
    return _multiprocess_dir


def mark_process_dead(pid: int | None = None, path: str | None = None) -> None:
    """Fold the values of exited processes into the store's archive now.

    Call it from gunicorn's `child_exit` hook (see deploy/gunicorn.conf.py) so a scrape never
    has to. `pid` is accepted for prometheus_client compatibility: its live gauges of that
    process are removed too. Never raises: it runs in gunicorn's master, which an exception
    from a hook would stop. A failure (the directory gone, its lock held too long) is logged
    and counted in `django_metrics_store_problems_total`; the next scrape or worker exit folds
    what is left.
    """
    try:
        path = path or _multiprocess_dir or os.environ.get("PROMETHEUS_MULTIPROC_DIR")
        if not path:
            return
        try:
            warnings = _core.compact(path)
        except OSError as exc:
            warnings = [f"{exc}; dead workers are folded at the next scrape or worker exit"]
        for warning in warnings:
            logger.warning("metrics store: %s", warning)
        if warnings:
            _store_problems.inc(len(warnings))
        if pid is not None:
            from prometheus_client import multiprocess

            multiprocess.mark_process_dead(pid, path)
    except Exception:
        logger.exception("metrics store: folding the values of exited process %s failed", pid)
        _count_store_problem()


def _count_store_problem() -> None:
    try:
        _store_problems.inc()
    except Exception:  # pragma: no cover - the counter itself is failing: nothing left to tell.
        pass


# Set by disable_created_metrics() / enable_created_metrics(); None: the environment decides.
_use_created: bool | None = None


def _created_enabled() -> bool:
    if _use_created is not None:
        return _use_created
    # Same switch, same spelling as prometheus_client, so one setting governs both.
    value = os.environ.get("PROMETHEUS_DISABLE_CREATED_SERIES", "False")
    return value.lower() not in ("true", "1", "t")


def disable_created_metrics() -> None:
    """Leave the `_created` samples out of every exposition (prometheus_client's function)."""
    global _use_created
    _use_created = False


def enable_created_metrics() -> None:
    """Show the `_created` samples again."""
    global _use_created
    _use_created = True


def add_collect_hook(hook: Callable[[], None]) -> None:
    """Call `hook()` before every collection, to refresh values read at scrape time.

    A hook that raises is logged and skipped; it never fails a scrape.
    """
    if hook not in _collect_hooks:
        _collect_hooks.append(hook)


_process_hooks: list[Callable[[], None]] = []
# Seconds between two refreshes of per-process values in each worker (multiprocess mode).
PROCESS_REFRESH_SECONDS = 10.0


def add_process_hook(hook: Callable[[], None]) -> None:
    """Call `hook()` at every collection and, in multiprocess mode, now and then in every worker.

    For values each process must report itself (memory, CPU, threads): in multiprocess mode
    only one worker serves a scrape, so the others refresh theirs from `tick()`.
    """
    add_collect_hook(hook)
    if hook not in _process_hooks:
        _process_hooks.append(hook)
        # A worker reports its own values from the start, not from its first request: its
        # series exist (at zero) as soon as the module is imported, and a live worker must not
        # show zero bytes of memory meanwhile.
        if _multiprocess_dir is not None:
            _run_process_hook(hook)


def tick() -> None:
    """Refresh this process's own values (multiprocess mode).

    The middleware's core calls it from requests at most every `PROCESS_REFRESH_SECONDS`: the
    one schedule, kept there so that a request between two refreshes costs a clock read.
    """
    if _multiprocess_dir is None:
        return
    for hook in list(_process_hooks):
        _run_process_hook(hook)


def _run_process_hook(hook: Callable[[], None]) -> None:
    try:
        hook()
    except Exception as exc:
        _collector_failed("process hook", hook, exc)


def _refresh_after_fork() -> None:
    """In a forked child: report this process's own values now (its series start from zero)."""
    tick()


# Seconds between two log lines about the same failing collector or hook.
COLLECTOR_FAILURE_LOG_SECONDS = 60.0
# Collector (or hook) name -> when its failure was last logged.
_failure_logged: dict[str, float] = {}


def _collector_failed(kind: str, what: object, exc: Exception) -> None:
    """Log one line naming the failed collector and its error, at most once a minute for each.

    A collector that cannot work yet (a table before `migrate`, a database that is down) fails
    at every scrape; a traceback each time would bury everything else in the log.
    """
    name = getattr(what, "__qualname__", None) or type(what).__qualname__
    module = getattr(what, "__module__", None) or type(what).__module__
    key = f"{kind} {module}.{name}"
    now = time.monotonic()
    last = _failure_logged.get(key)
    if last is not None and now - last < COLLECTOR_FAILURE_LOG_SECONDS:
        return
    _failure_logged[key] = now
    logger.warning("metrics: %s failed, left out of this scrape: %s: %s", key, type(exc).__name__, exc)


def _run_collect_hooks() -> None:
    for hook in list(_collect_hooks):
        try:
            hook()
        except Exception as exc:
            _collector_failed("collect hook", hook, exc)
    for gauge, func in list(_core.gauge_functions()):
        try:
            gauge.set(func())
        except Exception as exc:
            _collector_failed("Gauge.set_function callback", func, exc)


def _foreign_families(collectors: Iterable[Any]) -> list[tuple[Any, ...]]:
    """Collect foreign collectors into the plain tuples the core encodes."""
    out: list[tuple[Any, ...]] = []
    for collector in collectors:
        try:
            families = list(collector.collect())
        except Exception as exc:
            _collector_failed("collector", collector, exc)
            continue
        for fam in families:
            samples = [
                (
                    s.name,
                    {str(k): str(v) for k, v in s.labels.items()},
                    float(s.value),
                    None if s.timestamp is None else float(s.timestamp),
                    _exemplar_tuple(getattr(s, "exemplar", None)),
                )
                for s in fam.samples
            ]
            out.append((fam.name, fam.type, fam.documentation, getattr(fam, "unit", "") or "", samples))
    return out


def _exemplar_tuple(exemplar: Any) -> tuple[dict[str, str], float, float | None] | None:
    if exemplar is None:
        return None
    timestamp = exemplar.timestamp
    return (
        {str(k): str(v) for k, v in exemplar.labels.items()},
        float(exemplar.value),
        None if timestamp is None else float(timestamp),
    )


def _to_prometheus(tuples: Iterable[tuple[Any, ...]]) -> list[Any]:
    """Turn the core's snapshot tuples into prometheus_client `Metric` objects."""
    from prometheus_client.metrics_core import Metric
    from prometheus_client.samples import Exemplar

    out = []
    for name, typ, help_text, unit, samples in tuples:
        metric = Metric(name, help_text, typ, unit)
        for sample_name, labels, value, exemplar in samples:
            if exemplar is None:
                metric.add_sample(sample_name, labels, value)
            else:
                metric.add_sample(sample_name, labels, value, exemplar=Exemplar(*exemplar))
        out.append(metric)
    return out


def _report_store_problems() -> None:
    problems = _core.take_store_warnings()
    for problem in problems:
        logger.warning("metrics store: %s", problem)
    if problems:
        _store_problems.inc(len(problems))


_METRIC_CLASSES = (Counter, Gauge, Histogram, Summary, Info, Enum)
# The owner key of the names `target_info` reserves (no family name can contain a NUL).
_TARGET_INFO_OWNER = "\0target_info"


class CollectorRegistry(_core.CollectorRegistry):
    """A set of metrics to expose, with prometheus_client's registry API.

    Our own metrics are collected and encoded in Rust; objects with a `collect()` method
    (prometheus_client custom collectors) can be registered too and appear in the same output.
    As in prometheus_client: `auto_describe` takes a collector's names from `collect()` when it
    has no `describe()`, `target_info` adds a `target_info` series, and with
    `support_collectors_without_names` a restricted registry also asks collectors that declare no
    names.
    """

    def __init__(
        self,
        auto_describe: bool = False,
        target_info: dict[str, str] | None = None,
        support_collectors_without_names: bool = False,
    ) -> None:
        self._auto_describe = auto_describe
        self._support_collectors_without_names = support_collectors_without_names
        self._lock = threading.Lock()
        # id(collector) -> (collector, the sample names it holds), for restricted registries.
        self._collector_names: dict[int, tuple[Any, list[str]]] = {}
        self._collectors_without_names: list[Any] = []
        self._target_info: dict[str, str] | None = {}
        self.set_target_info(target_info)

    def register(self, collector: Any) -> None:
        """Add a metric of ours or a collector; raise DuplicateTimeseries on a name clash."""
        if isinstance(collector, _METRIC_CLASSES):
            super().register(collector)
            return
        names = self._foreign_names(collector, self._auto_describe)
        with self._lock:
            self._register_foreign(collector, names)
            self._collector_names[id(collector)] = (collector, names)
            if self._support_collectors_without_names and not names:
                self._collectors_without_names.append(collector)

    def unregister(self, collector: Any) -> None:
        """Remove a metric or collector; its names can be registered again."""
        with self._lock:
            super().unregister(collector)
            self._collector_names.pop(id(collector), None)
            if collector in self._collectors_without_names:
                self._collectors_without_names.remove(collector)

    def set_target_info(self, labels: dict[str, str] | None) -> None:
        """Expose `target_info` with these labels (None or empty: not at all)."""
        with self._lock:
            if labels and not self._target_info:
                try:
                    self._reserve(_TARGET_INFO_OWNER, ["target_info"])
                except ValueError:
                    raise ValueError("CollectorRegistry already contains a target_info metric") from None
            elif not labels and self._target_info:
                self._release(_TARGET_INFO_OWNER)
            self._target_info = labels

    def get_target_info(self) -> dict[str, str] | None:
        """Return the labels of `target_info`, if set."""
        with self._lock:
            return self._target_info

    def _target_info_metric(self) -> Any:
        from prometheus_client.metrics_core import Metric

        metric = Metric("target", "Target metadata", "info")
        metric.add_sample("target_info", self._target_info or {}, 1)
        return metric

    def collect(self) -> list[Any]:
        """Return every metric as prometheus_client `Metric` objects (for prometheus_client tools)."""
        _run_collect_hooks()
        with self._lock:
            metrics = [self._target_info_metric()] if self._target_info else []
        metrics.extend(_to_prometheus(self._snapshot(_created_enabled())))
        _report_store_problems()
        for collector in self._foreign_collectors():
            metrics.extend(collector.collect())
        return metrics

    def restricted_registry(self, names: Iterable[str]) -> RestrictedRegistry:
        """Return a view whose `collect()` yields only the samples named in `names`."""
        return RestrictedRegistry(self, names)

    def get_sample_value(self, name: str, labels: dict[str, str] | None = None) -> float | None:
        """Return the value of the sample `name` with exactly `labels`, or None."""
        labels = labels or {}
        for metric in self.collect():
            for sample in metric.samples:
                if sample.name == name and sample.labels == labels:
                    return float(sample.value)
        return None

    def encode(
        self,
        *,
        openmetrics: bool = False,
        gzip: bool = False,
        extra: Iterable[Any] = (),
        protobuf: bool = False,
        escaping: str = "underscores",
    ) -> bytes:
        """Return the exposition of this registry plus the collectors in `extra`.

        Text 0.0.4 by default, OpenMetrics with `openmetrics`, Prometheus's protobuf with
        `protobuf`; names escaped by `escaping` (see `metrics.negotiation`).
        """
        _run_collect_hooks()
        foreign = [*self._foreign_collectors(), *extra]
        with self._lock:
            if self._target_info:
                foreign.insert(0, _Fixed([self._target_info_metric()]))
        payload = self._encode(
            openmetrics,
            _created_enabled(),
            _foreign_families(foreign),
            gzip,
            escaping=escaping,
            protobuf=protobuf,
        )
        _report_store_problems()
        return payload


class _Fixed:
    """A collector of metrics already built."""

    def __init__(self, metrics: list[Any]) -> None:
        self.metrics = metrics

    def collect(self) -> list[Any]:
        return self.metrics


def _restricted(metric: Any, names: set[str]) -> Any:
    """Return `metric` with only the samples named in `names`, or None if none is left."""
    samples = [s for s in metric.samples if s.name in names]
    if not samples:
        return None
    from prometheus_client.metrics_core import Metric

    out = Metric(metric.name, metric.documentation, metric.type, getattr(metric, "unit", ""))
    out.samples = samples
    return out


class RestrictedRegistry:
    """The samples of a registry named in a set (prometheus_client's `restricted_registry()`).

    Only the collectors that hold one of the names are asked (and, with
    `support_collectors_without_names`, those that declare none); metrics registered after
    the view was made are seen too.
    """

    def __init__(self, registry: CollectorRegistry, names: Iterable[str]) -> None:
        self._registry = registry
        self._names = set(names)

    def collect(self, *, run_hooks: bool = True) -> list[Any]:
        """Return the matching metrics, each with only its matching samples."""
        registry, names = self._registry, self._names
        out: list[Any] = []
        with registry._lock:
            if "target_info" in names and registry._target_info:
                out.append(registry._target_info_metric())
            collectors = list(registry._collectors_without_names)
            for collector, held in registry._collector_names.values():
                if collector not in collectors and names.intersection(held):
                    collectors.append(collector)
        ours = {name for name, held in registry._family_sample_names() if names.intersection(held)}
        if ours:
            if run_hooks:
                _run_collect_hooks()
            for metric in _to_prometheus(registry._snapshot(_created_enabled())):
                if metric.name in ours and (kept := _restricted(metric, names)) is not None:
                    out.append(kept)
        for collector in collectors:
            for metric in collector.collect():
                if (kept := _restricted(metric, names)) is not None:
                    out.append(kept)
        return out


# prometheus_client's default registry takes names from collect() too (auto_describe).
REGISTRY = CollectorRegistry(auto_describe=True)
# Encodes restricted views (`exposition(names=...)`) through the foreign path.
_EMPTY = CollectorRegistry()
_core.set_default_registry(REGISTRY)

# A forked child (gunicorn --preload, Celery prefork, multiprocessing) must not write into its
# parent's slot of the shared store: it claims its own before running any code.
os.register_at_fork(after_in_child=_core.after_fork)
os.register_at_fork(after_in_child=_refresh_after_fork)


def set_store_file_mode(mode: int) -> None:
    """Give the store's files created from now on the permission bits `mode` (0600, 0640, 0660)."""
    _core.set_store_file_mode(mode)


def _choose_store() -> None:
    """Pick the store before any metric is written, as prometheus_client does.

    The file mode first: the store creates its first file as soon as it opens. A bad mode keeps
    0600 (system check E018), an unusable directory keeps metrics per-process (E004). Only the
    environment is read for these two; values given in Django settings apply in
    `AppConfig.ready()`. Without a directory, a worker of a pre-forking server gets a private
    shared store (`metrics.prefork`).
    """
    from metrics import conf, prefork

    mode = os.environ.get(conf.AppSettings.STORE_FILE_MODE.name, "").strip()
    if mode:
        try:
            set_store_file_mode(conf.AppSettings.STORE_FILE_MODE.parse(mode))
        except conf.SettingError:
            logger.error("METRICS_STORE_FILE_MODE unusable, the store's files stay 0600")
    directory = conf.parse_optional_path(os.environ.get(conf.AppSettings.MULTIPROC_DIR.name))
    if directory:
        try:
            enable_multiprocess(directory)
        except OSError as exc:
            logger.error("PROMETHEUS_MULTIPROC_DIR unusable, metrics stay per-process: %s", exc)
        return
    prefork.choose_store(sys.modules[__name__])


_choose_store()

_store_problems = Counter(
    "django_metrics_store_problems_total",
    "Problems met by the multiprocess store: corrupt, foreign or unreadable files, failed writes.",
)


def generate_latest(registry: CollectorRegistry = REGISTRY, escaping: str = UNDERSCORES) -> bytes:
    """Return `registry` in the Prometheus text format, names escaped by `escaping`.

    With `allow-utf-8`, names outside the classic character set are quoted (text format 1.0.0);
    with any other scheme the output is text 0.0.4.
    """
    return registry.encode(escaping=escaping)


def generate_latest_openmetrics(registry: CollectorRegistry = REGISTRY, escaping: str = UNDERSCORES) -> bytes:
    """Return `registry` in the OpenMetrics 1.0 text format, names escaped by `escaping`."""
    return registry.encode(openmetrics=True, escaping=escaping)


def generate_latest_protobuf(registry: CollectorRegistry = REGISTRY, escaping: str = UNDERSCORES) -> bytes:
    """Return `registry` as length-delimited `io.prometheus.client.MetricFamily` messages."""
    return registry.encode(protobuf=True, escaping=escaping)


def exposition(
    *,
    openmetrics: bool = False,
    gzip: bool = False,
    include_foreign: bool = True,
    names: Iterable[str] | None = None,
    protobuf: bool = False,
    escaping: str = UNDERSCORES,
) -> bytes:
    """Return what `/metrics/` serves: the default registry plus prometheus_client's.

    Text 0.0.4 by default, OpenMetrics with `openmetrics`, Prometheus's protobuf with
    `protobuf`; names escaped by `escaping` (`metrics.negotiation` picks both from the request).
    With `names` (prometheus_client's `name[]` query parameter), only the samples of those names.
    prometheus_client's part is left out, logged and counted when it cannot be read (its
    multiprocess files gone with the directory): our own metrics are still served.
    """
    fmt: dict[str, Any] = {"openmetrics": openmetrics, "protobuf": protobuf, "escaping": escaping}
    extra: list[Any] = []
    if include_foreign:
        try:
            extra.append(_foreign_registry())
        except Exception:
            logger.exception("prometheus_client's metrics are left out of this scrape")
            _count_store_problem()
    if names is None:
        return REGISTRY.encode(gzip=gzip, extra=extra, **fmt)
    wanted = set(names)
    restricted: list[Any] = [REGISTRY.restricted_registry(wanted)]
    for registry in extra:
        restrict = getattr(registry, "restricted_registry", None)
        if restrict is not None:
            restricted.append(restrict(wanted))
    return _EMPTY.encode(gzip=gzip, extra=restricted, **fmt)


def _foreign_registry() -> Any:
    """Return prometheus_client's metrics: its registry, or in multiprocess mode its files."""
    import prometheus_client
    from prometheus_client import values

    # Its files hold its values only if it chose its multiprocess value class at import, which
    # it does when the variable was set before prometheus_client was first imported.
    shared = getattr(values.ValueClass, "_multiprocess", False)
    if shared and _multiprocess_dir and os.environ.get("PROMETHEUS_MULTIPROC_DIR") == _multiprocess_dir:
        from prometheus_client import multiprocess

        registry = prometheus_client.CollectorRegistry()
        # Raises ValueError when the directory has gone (deleted under a running site).
        multiprocess.MultiProcessCollector(registry, path=_multiprocess_dir)
        return registry
    return prometheus_client.REGISTRY


class PrometheusCollector:
    """Adapter handing one of our registries to prometheus_client tools.

    `prometheus_client.REGISTRY.register(PrometheusCollector())` exposes our metrics through
    prometheus_client's own endpoints, `push_to_gateway` and friends.
    """

    def __init__(self, registry: CollectorRegistry = REGISTRY) -> None:
        self.registry = registry

    def collect(self) -> list[Any]:
        """Return the registry's metrics as prometheus_client `Metric` objects."""
        _run_collect_hooks()
        return _to_prometheus(self.registry._snapshot(_created_enabled()))
