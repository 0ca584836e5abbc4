"""Exemplars from traces: the trace id a request belongs to, for `METRICS_EXEMPLARS`.

The active OpenTelemetry span when `opentelemetry-api` is installed and a span is recording,
else a valid W3C `traceparent` request header; no trace, no exemplar. The trace id goes on the
request-latency histogram's bucket and the request counter as `{trace_id="..."}`, so a slow
bucket in Grafana links to the trace that landed in it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from django.http import HttpRequest

from metrics.core import trace_id_from_traceparent

try:  # Optional: only when the site traces with OpenTelemetry.
    from opentelemetry import trace as _otel_trace
except ImportError:  # pragma: no cover - depends on what the site installs
    _otel_trace = None

__all__ = ["request_exemplar", "span_source", "span_trace_id", "trace_id_from_traceparent"]


def span_trace_id() -> str | None:
    """Return the trace id of the current OpenTelemetry span if one is recording, else None."""
    if _otel_trace is None:
        return None
    span: Any = _otel_trace.get_current_span()
    if not span.is_recording():
        return None
    context = span.get_span_context()
    if not context.is_valid:
        return None
    return format(context.trace_id, "032x")


def span_source() -> Callable[[], str | None] | None:
    """Return the reader of the current span's trace id, or None when no tracing library is installed.

    The middleware asks it once per request only when it exists; otherwise the core reads the
    `traceparent` header itself, without a call into Python.
    """
    return None if _otel_trace is None else span_trace_id


def request_exemplar(request: HttpRequest) -> dict[str, str] | None:
    """Return `{"trace_id": ...}` for the trace `request` belongs to, or None.

    What the middleware records, for code that wants the same exemplar elsewhere.
    """
    trace_id = span_trace_id()
    if trace_id is None:
        header = request.META.get("HTTP_TRACEPARENT")
        if header:
            trace_id = trace_id_from_traceparent(header)
    return None if trace_id is None else {"trace_id": trace_id}
