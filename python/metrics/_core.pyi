"""Type stubs for the Rust core `metrics._core`: this file is its API documentation."""

import os
from collections.abc import Callable, Coroutine, Generator, Iterable, Sequence
from types import TracebackType
from typing import Any, Literal, TypeVar, final

from typing_extensions import Self, disjoint_base

# An exemplar's labels, value and timestamp (None: none given).
_ExemplarTuple = tuple[dict[str, str], float, float | None]
# A foreign sample: name, labels, value, timestamp, exemplar.
_ForeignSample = tuple[str, dict[str, str], float, float | None, _ExemplarTuple | None]
_F = TypeVar("_F", bound=Callable[..., Any])
_M = TypeVar("_M")

__all__ = [
    "OPENMETRICS_CONTENT_TYPE",
    "PROTOBUF_CONTENT_TYPE",
    "TEXT_CONTENT_TYPE",
    "CollectorRegistry",
    "CompatRecorder",
    "Counter",
    "Enum",
    "ExceptionCounter",
    "Gauge",
    "Histogram",
    "InProgressTracker",
    "Info",
    "RecordedRequest",
    "RecordingMiddleware",
    "RequestFields",
    "RequestMetrics",
    "RequestRules",
    "StoreError",
    "Summary",
    "Timer",
    "after_fork",
    "compact",
    "enable_multiprocess",
    "float_to_go_string",
    "gauge_functions",
    "set_default_registry",
    "set_store_file_mode",
    "store_kind",
    "take_store_warnings",
    "trace_id_from_traceparent",
]

TEXT_CONTENT_TYPE: str
OPENMETRICS_CONTENT_TYPE: str
PROTOBUF_CONTENT_TYPE: str

_GaugeMode = Literal[
    "all",
    "liveall",
    "liveworker",
    "livesum",
    "sum",
    "max",
    "min",
    "mostrecent",
    "livemax",
    "livemin",
    "livemostrecent",
]

@final
class Timer:
    """Times a block (context manager) or every call of a function (decorator)."""

    def __enter__(self) -> Timer: ...
    def __exit__(self, *args: object) -> bool: ...
    def __call__(self, func: _F) -> _F: ...
    def labels(self, *args: object, **kwargs: object) -> None:
        """Record on this child of a labelled metric when the block ends."""
    @property
    def duration(self) -> float | None:
        """Seconds the last timed block took (None before it ends)."""
    def _fresh(self) -> Timer: ...

@final
class InProgressTracker:
    """Counts a block or function as in progress on a gauge."""

    def __enter__(self) -> InProgressTracker: ...
    def __exit__(self, *args: object) -> bool: ...
    def __call__(self, func: _F) -> _F: ...
    def _fresh(self) -> InProgressTracker: ...

@final
class ExceptionCounter:
    """Counts exceptions of a given type raised in a block or function."""

    def __enter__(self) -> ExceptionCounter: ...
    def __exit__(
        self,
        exc_type: type[BaseException] | None = None,
        exc: BaseException | None = None,
        tb: TracebackType | None = None,
    ) -> bool: ...
    def __call__(self, func: _F) -> _F: ...
    def _fresh(self) -> ExceptionCounter: ...

class _Metric:
    """Methods every metric class has (prometheus_client's API)."""

    def labels(self: _M, *labelvalues: object, **labelkwargs: object) -> _M:
        """Return the child for these label values; raise ValueError on a wrong count or names."""
    def remove(self, *labelvalues: object) -> None:
        """Forget the child with these label values."""
    def remove_by_labels(self, labels: dict[str, str]) -> None:
        """Forget every child whose labels include all of `labels`; ValueError for an unknown name."""
    def clear(self) -> None:
        """Forget every child."""
    def _reattach_after_removal(self) -> None:
        """Let children already handed out follow `remove()`/`clear()` to the new series."""
    def collect(self) -> list[Any]:
        """Return this metric as prometheus_client `Metric` objects."""
    @property
    def _name(self) -> str: ...
    @property
    def _documentation(self) -> str: ...
    @property
    def _labelnames(self) -> tuple[str, ...]: ...
    @property
    def _labelvalues(self) -> tuple[str, ...]: ...
    @property
    def _type(self) -> str: ...

@final
class Counter(_Metric):
    """A monotonic counter, exposed as `<name>_total`."""

    def __new__(
        cls,
        name: str,
        documentation: str,
        labelnames: Iterable[str] | None = None,
        namespace: str = "",
        subsystem: str = "",
        unit: str = "",
        registry: CollectorRegistry | None = ...,
    ) -> Self: ...
    def inc(self, amount: float = 1.0, exemplar: dict[str, str] | None = None) -> None:
        """Increment by a non-negative amount, keeping `exemplar` (shown in OpenMetrics)."""
    def reset(self) -> None:
        """Reset to zero and restart the creation time."""
    def count_exceptions(
        self, exception: type[BaseException] | tuple[type[BaseException], ...] | None = None
    ) -> ExceptionCounter: ...
    def _get(self) -> float: ...

@final
class Gauge(_Metric):
    """A value that goes up and down."""

    def __new__(
        cls,
        name: str,
        documentation: str,
        labelnames: Iterable[str] | None = None,
        namespace: str = "",
        subsystem: str = "",
        unit: str = "",
        registry: CollectorRegistry | None = ...,
        multiprocess_mode: _GaugeMode = "all",
    ) -> Self: ...
    def inc(self, amount: float = 1.0) -> None: ...
    def dec(self, amount: float = 1.0) -> None: ...
    def set(self, value: float) -> None: ...
    def set_to_current_time(self) -> None: ...
    def track_inprogress(self) -> InProgressTracker: ...
    def time(self) -> Timer: ...
    def set_function(self, f: Callable[[], float]) -> None:
        """Take the value from `f()` at every collection."""
    def _get(self) -> float: ...

@final
class Histogram(_Metric):
    """Observations counted in cumulative buckets, with their sum."""

    def __new__(
        cls,
        name: str,
        documentation: str,
        labelnames: Iterable[str] | None = None,
        namespace: str = "",
        subsystem: str = "",
        unit: str = "",
        registry: CollectorRegistry | None = ...,
        buckets: Sequence[float | str] | None = None,
        native_histogram_bucket_factor: float | None = None,
        native_histogram_max_bucket_number: int = 160,
        native_histogram_zero_threshold: float = ...,
    ) -> Self: ...
    def observe(self, amount: float, exemplar: dict[str, str] | None = None) -> None: ...
    def time(self) -> Timer: ...
    @property
    def _upper_bounds(self) -> list[float]: ...

@final
class Summary(_Metric):
    """Count and sum of observations."""

    def __new__(
        cls,
        name: str,
        documentation: str,
        labelnames: Iterable[str] | None = None,
        namespace: str = "",
        subsystem: str = "",
        unit: str = "",
        registry: CollectorRegistry | None = ...,
    ) -> Self: ...
    def observe(self, amount: float) -> None: ...
    def time(self) -> Timer: ...

@final
class Info(_Metric):
    """Constant key-value pairs, exposed as `<name>_info`."""

    def __new__(
        cls,
        name: str,
        documentation: str,
        labelnames: Iterable[str] | None = None,
        namespace: str = "",
        subsystem: str = "",
        unit: str = "",
        registry: CollectorRegistry | None = ...,
    ) -> Self: ...
    def info(self, val: dict[str, str]) -> None: ...

@final
class Enum(_Metric):
    """One active state out of a fixed set."""

    def __new__(
        cls,
        name: str,
        documentation: str,
        labelnames: Iterable[str] | None = None,
        namespace: str = "",
        subsystem: str = "",
        unit: str = "",
        registry: CollectorRegistry | None = ...,
        states: Sequence[str] | None = None,
    ) -> Self: ...
    def state(self, state: str) -> None: ...

@final
class CompatRecorder:
    """django-prometheus's request families, recorded by the middleware in its own call."""

    def __new__(
        cls,
        *,
        requests_before: Counter,
        responses_before: Counter,
        latency_including: Histogram,
        request_body: Histogram,
        response_body: Histogram,
        streaming: Counter,
        ajax: Counter,
        by_method: Counter,
        by_transport: Counter,
        by_status: Counter,
        by_status_view_method: Counter,
        by_view_transport_method: Counter,
        latency_by_view_method: Histogram,
        by_charset: Counter,
        by_templatename: Counter,
        scheme_from_environ: bool,
    ) -> Self: ...

@final
class RequestMetrics:
    """The five HTTP metrics, handed to `RecordingMiddleware._bind`, which records on them."""

    def __new__(
        cls,
        total: Counter,
        duration: Histogram,
        in_progress: Gauge,
        request_size: Histogram,
        response_size: Histogram,
    ) -> Self: ...

@final
class RecordedRequest(Coroutine[Any, Any, Any]):
    """The awaitable of one recorded async request: drives the stack below's coroutine, records its end."""

    def __await__(self) -> Generator[Any, None, Any]: ...
    def __iter__(self) -> Self: ...
    def __next__(self) -> Any: ...
    def send(self, value: Any) -> Any:
        """Send `value` into the coroutine below (what an event loop does to run it)."""
    def throw(self, *exc: Any) -> Any:
        """Throw an exception into the coroutine below (a cancellation, for one)."""
    def close(self) -> None:
        """Close the coroutine below."""

@final
class RequestFields:
    """Where requests and responses keep what the HTTP metrics read, by attribute name."""

    def __new__(
        cls,
        *,
        method: str,
        path: str,
        url_match: str,
        pattern_name: str,
        qualified_name: str,
        route: str,
        environ: str,
        content_length: str,
        status: str,
        streaming: str,
        content: str,
        body_chunks: str | None,
        plain_content: object,
        traceparent: str,
        scheme: str,
        scheme_key: str,
        requested_with: str,
        charset_override: str,
        charset: str,
        headers: str,
        content_type: str,
        header_store: str | None,
        template_name: str,
    ) -> Self: ...
    def view_label(self, request: Any) -> str:
        """Return `namespace:name` of the request's URL pattern, else its route, else `<unresolved>`."""

@final
class RequestRules:
    """The middleware's routing rules: recording on or off, excluded path prefixes, probe paths."""

    def __new__(cls, enabled: bool, excluded: list[str], probes: list[str]) -> Self: ...
    @property
    def enabled(self) -> bool: ...
    @property
    def excluded(self) -> list[str]: ...
    @property
    def probes(self) -> list[str]: ...
    def route(self, path: str) -> tuple[bool, bool]:
        """Return (whether `path` is a probe's, whether a request to it is recorded)."""

@disjoint_base
class RecordingMiddleware:
    """The base of `metrics.middleware.MetricsMiddleware`: one call into the core per sync request.

    Built unbound; the subclass's `__init__` hands over the stack below and its hooks with `_bind`.
    """

    UNRESOLVED: str
    """The `view` label of a request no URL pattern matched (`<unresolved>`)."""
    OTHER_METHOD: str
    """The `method` label of every method outside the standard ones (`other`)."""

    def __new__(cls, *_args: Any, **_kwargs: Any) -> Self: ...
    def _bind(
        self,
        get_response: Callable[[Any], Any],
        *,
        async_mode: bool,
        recorder: RequestMetrics | None,
        fields: RequestFields,
        rules: Callable[[], RequestRules],
        rules_slot: tuple[dict[str, Any], str] | None,
        acall: Callable[[Any, Any], Any] | None,
        count_escaped: Callable[[Any, Any, BaseException], None],
        tick: Callable[[], None],
        tick_every: float,
        exemplars: bool,
        span_trace_id: Callable[[], str | None] | None,
        compat: CompatRecorder | None,
        streamed: Callable[[Any, str, str], None],
        probe: Callable[[Any], Any],
        logger: Any,
    ) -> None:
        """Hand over `get_response` and the hooks; once per middleware.

        `fields` names what is read of requests and responses; `rules()` returns the current
        routing rules and keeps them in `rules_slot` (dict, key), read first; `acall(self,
        request)` serves a probe's request in async mode; `count_escaped(self, request, exc)`
        counts an exception that escaped the stack below; `tick()` runs at most every `tick_every` s; with
        `exemplars`, the trace id of `span_trace_id()` (when given) or of the request's
        `traceparent` header goes on the counter and the latency bucket; `compat` records
        django-prometheus's families in the same call (None: off); `streamed(response, method,
        view)` counts a streamed body; `probe(request)` answers a probe (None: the stack below
        does); failures are logged with `logger.error(..., exc_info=...)`.
        """
    def __call__(self, request: Any) -> Any:
        """Serve `request` through `get_response` and record it (async mode: a `RecordedRequest`)."""
    def _route(self, path: str) -> tuple[bool, bool]:
        """Return (whether `path` is a probe's, whether a request to it is recorded), by the settings."""
    def _serve_async(self, request: Any) -> Any:
        """Serve `request` in async mode as `__call__` does, but a probe's path goes on too."""

@disjoint_base
class CollectorRegistry:
    """Families plus foreign collectors; `metrics.core.CollectorRegistry` adds the Python API."""

    def __new__(cls, *args: object, **kwargs: object) -> Self: ...
    def register(self, collector: object) -> None:
        """Add a metric of ours or any object with `collect()`; ValueError on a name clash."""
    def unregister(self, collector: object) -> None: ...
    def _register_foreign(self, collector: object, names: list[str]) -> None: ...
    def _foreign_names(self, collector: object, auto_describe: bool = False) -> list[str]: ...
    def _reserve(self, owner: str, names: list[str]) -> None: ...
    def _release(self, owner: str) -> None: ...
    def _family_sample_names(self) -> list[tuple[str, list[str]]]: ...
    def _foreign_collectors(self) -> list[Any]: ...
    def _snapshot(
        self, created: bool = True
    ) -> list[tuple[str, str, str, str, list[tuple[str, dict[str, str], float, _ExemplarTuple | None]]]]: ...
    def _encode(
        self,
        openmetrics: bool = False,
        created: bool = True,
        foreign: list[tuple[str, str, str, str, list[_ForeignSample]]] = ...,
        gzip: bool = False,
        escaping: str = "underscores",
        protobuf: bool = False,
    ) -> bytes: ...

def set_default_registry(registry: CollectorRegistry) -> None:
    """Make `registry` the one new metrics register in by default (once)."""

def gauge_functions() -> list[tuple[Gauge, Callable[[], float]]]: ...
def float_to_go_string(value: float) -> str: ...
def trace_id_from_traceparent(header: str) -> str | None:
    """Return the trace id of a valid W3C `traceparent` header value, else None."""

class StoreError(OSError):
    """The multiprocess store cannot be used or read: an I/O fault, never a bad argument.

    The message starts with the file or directory concerned.
    """

def enable_multiprocess(path: str | os.PathLike[str]) -> None:
    """Keep every value in the shared store under `path`; StoreError if unusable."""

def set_store_file_mode(mode: int) -> None:
    """Set the permission bits of files the shared store creates; ValueError unless 0600/0640/0660."""

def after_fork() -> None:
    """In a forked child: claim a slot of its own before anything is written."""

def compact(path: str | os.PathLike[str]) -> list[str]:
    """Fold dead processes' slots under `path` into the archive; return the warnings met.

    Raise StoreError if `path` is unusable or its lock stays held.
    """

def store_kind() -> Literal["local", "shared"]: ...
def take_store_warnings() -> list[str]:
    """Problems the store met since the last call (corrupt files, failed allocations)."""
