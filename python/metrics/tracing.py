"""Exemplars from traces: the trace id a request belongs to, for `METRICS_EXEMPLARS`.

The active OpenTelemetry span when `opentelemetry-api` is installed and a span is recording,
else a valid W3C `traceparent` request header; no trace, no exemplar. The trace id goes on the
request-latency histogram's bucket and the request counter as `{trace_id="..."}`, so a slow
bucket in Grafana links to the trace that landed in it.
"""

from __future__ import annotations

import re
from typing import Any

from django.http import HttpRequest

try:  # Optional: only when the site traces with OpenTelemetry.
    from opentelemetry import trace as _otel_trace
except ImportError:  # pragma: no cover - depends on what the site installs
    _otel_trace = None

# version-traceid-parentid-flags, lower-case hex (https://www.w3.org/TR/trace-context/).
_TRACEPARENT = re.compile(r"([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})")
_ZERO_TRACE = "0" * 32
_ZERO_PARENT = "0" * 16


def trace_id_from_traceparent(header: str) -> str | None:
    """Return the trace id of a valid `traceparent` header value, else None."""
    match = _TRACEPARENT.fullmatch(header.strip())
    if match is None:
        return None
    version, trace_id, parent_id, _flags = match.groups()
    # Version ff is forbidden; all-zero ids are invalid.
    if version == "ff" or trace_id == _ZERO_TRACE or parent_id == _ZERO_PARENT:
        return None
    return trace_id


def _otel_trace_id() -> str | None:
    if _otel_trace is None:
        return None
    span: Any = _otel_trace.get_current_span()
    if not span.is_recording():
        return None
    context = span.get_span_context()
    if not context.is_valid:
        return None
    return format(context.trace_id, "032x")


def request_exemplar(request: HttpRequest) -> dict[str, str] | None:
    """Return `{"trace_id": ...}` for the trace `request` belongs to, or None."""
    trace_id = _otel_trace_id()
    if trace_id is None:
        header = request.META.get("HTTP_TRACEPARENT")
        if header:
            trace_id = trace_id_from_traceparent(header)
    return None if trace_id is None else {"trace_id": trace_id}
