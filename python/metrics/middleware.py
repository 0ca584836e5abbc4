"""One middleware, sync and async, recording the spec's five HTTP metrics.

A sync request costs one call into the Rust core: `MetricsMiddleware` is a subclass of
`RecordingMiddleware`, whose `__call__` reads the request and response attributes it needs, takes
the clock, calls the rest of the stack and records, on label children looked up once and kept.
An async request too: the call returns an awaitable that drives the coroutine of the stack below
and records when it ends. Label values are bounded: `view` is the URL pattern's `namespace:name`,
else its route, else `<unresolved>`; methods outside the standard set are folded into `other`.
An exception that escapes the stack below counts as status 500 and is re-raised; under ASGI, a
request cancelled because the client disconnected counts as 499.

Exceptions raised by views are counted in `django_http_exceptions_total{view,type}` from
`process_exception` (Django calls it only when a view raises, so other requests pay nothing),
and from the except path for one that escapes the stack.

With `METRICS_COMPAT_DJANGO_PROMETHEUS` on, the same requests also feed django-prometheus's
families (`metrics.compat`); whether to is decided once, when Django builds the middleware.

Any failure in metrics code is logged and swallowed: the request always gets its response.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

from asgiref.sync import iscoroutinefunction, markcoroutinefunction, sync_to_async
from django.core.exceptions import DisallowedHost
from django.http import HttpRequest, HttpResponse, HttpResponseBase

from metrics import compat, tracing
from metrics.collectors import (
    bounded_label,
    http_exceptions_total,
    http_request_size_bytes,
    http_requests_in_progress,
    http_requests_total,
    http_response_size_bytes,
    request_duration_histogram,
)
from metrics.conf import app_settings
from metrics.core import (
    PROCESS_REFRESH_SECONDS,
    RecordingMiddleware,
    RequestFields,
    RequestMetrics,
    RequestRules,
    tick,
)

logger = logging.getLogger("metrics")

UNRESOLVED = RecordingMiddleware.UNRESOLVED
OTHER_METHOD = RecordingMiddleware.OTHER_METHOD


def field_names() -> dict[str, Any]:
    """Return where Django's requests and responses keep what the core reads: Django's names.

    The core names no Django attribute; they are declared here, once, so a Django release that
    renames one fails here, in Python, with an AttributeError the log shows, not a silent count.
    The two private fast paths are named only when a real response has them.
    """
    return {
        "method": "method",
        "path": "path_info",
        "url_match": "resolver_match",
        "pattern_name": "url_name",
        "qualified_name": "view_name",
        "route": "route",
        "environ": "META",
        "content_length": "CONTENT_LENGTH",
        "status": "status_code",
        "streaming": "streaming",
        "content": "content",
        "body_chunks": "_container" if _keeps_body_chunks() else None,
        "plain_content": HttpResponse.content,
        "traceparent": "HTTP_TRACEPARENT",
        # What django-prometheus's families read besides (METRICS_COMPAT_DJANGO_PROMETHEUS).
        "scheme": "scheme",
        "scheme_key": "wsgi.url_scheme",
        "requested_with": "HTTP_X_REQUESTED_WITH",
        "charset_override": "_charset",
        "charset": "charset",
        "headers": "headers",
        "content_type": "Content-Type",
        "header_store": "_store" if _keeps_header_store() else None,
        "template_name": "template_name",
    }


def _fields() -> RequestFields:
    """Return the `RequestFields` of `field_names()`, made once."""
    global _FIELDS
    if _FIELDS is None:
        _FIELDS = RequestFields(**field_names())
    return _FIELDS


_FIELDS: RequestFields | None = None


def _keeps_body_chunks() -> bool:
    """Return whether HttpResponse keeps its body as the list of byte strings `content` joins.

    Then the core sums their lengths instead of building the joined copy; checked on a real
    response, so a Django that keeps its body differently only costs the join.
    """
    response = HttpResponse(b"ab")
    response.write(b"c")
    chunks = getattr(response, "_container", None)
    return isinstance(chunks, list) and b"".join(chunks) == response.content == b"abc"


def _keeps_header_store() -> bool:
    """Return whether HttpResponse's headers keep `lower-case name -> (name, value)` in `_store`.

    Then the core reads Content-Type from it without a call (compatibility mode's charset); a
    Django that keeps its headers differently costs the call to `headers.get`.
    """
    response = HttpResponse(b"", content_type="text/plain; charset=ascii")
    store = getattr(response.headers, "_store", None)
    return isinstance(store, dict) and store.get("content-type") == (
        "Content-Type",
        response.headers.get("Content-Type"),
    )


def _rules() -> RequestRules:
    """Return the routing rules of the current settings, kept where the core reads them per request."""
    slot, key = app_settings.middleware_settings_slot()
    rules = slot.get(key)
    if not isinstance(rules, RequestRules):
        enabled, excluded, probes = app_settings.middleware_settings()
        rules = slot[key] = RequestRules(enabled, list(excluded), sorted(probes))
    return rules


def view_label(request: HttpRequest) -> str:
    """Return the bounded `view` label: `namespace:name`, else the route, else `<unresolved>`.

    The one definition, in the core, that the request path uses too.
    """
    return str(_fields().view_label(request))


class MetricsMiddleware(RecordingMiddleware):
    """Record request count, latency, sizes and in-progress gauge, under WSGI and ASGI.

    `__call__` is the core's (`RecordingMiddleware`); under ASGI it returns the core's awaitable,
    and hands only a probe's request (whose host it checks) to `__acall__`.
    """

    sync_capable = True
    async_capable = True

    def __init__(self, get_response: Callable[[HttpRequest], Any]) -> None:
        self.get_response = get_response
        self.async_mode = iscoroutinefunction(get_response)
        if self.async_mode:
            # Lets Django call this instance without wrapping it in a thread.
            markcoroutinefunction(self)
        # The five HTTP metrics and their series, which the core records each request on.
        recorder: RequestMetrics | None
        try:
            recorder = RequestMetrics(
                http_requests_total,
                # Its buckets are the setting's when this middleware is built.
                request_duration_histogram(),
                http_requests_in_progress,
                http_request_size_bytes,
                http_response_size_bytes,
            )
        except Exception:
            # Never a failing site because of its metrics: requests are served, not recorded.
            logger.exception("metrics: the HTTP metrics cannot be recorded")
            recorder = None
        self._compat: compat.RequestRecorder | None = None
        if app_settings.ENABLED and compat.enabled():
            # Chosen here, so that with compatibility off a request runs exactly the code it ran
            # before compatibility existed.
            self._compat = compat.RequestRecorder()
        self._bind(
            get_response,
            async_mode=self.async_mode,
            recorder=recorder,
            fields=_fields(),
            rules=_rules,
            # Read per request without a call: the rules _rules() keeps there.
            rules_slot=app_settings.middleware_settings_slot(),
            acall=type(self).__acall__ if self.async_mode else None,
            count_escaped=type(self)._count_escaped,
            tick=tick,
            tick_every=PROCESS_REFRESH_SECONDS,
            # Read once: trace ids as exemplars cost a header read per request in the core, plus
            # a span read where a tracing library is installed (metrics.tracing).
            exemplars=app_settings.EXEMPLARS,
            span_trace_id=tracing.span_source() if app_settings.EXEMPLARS else None,
            compat=None if self._compat is None else self._compat.core,
            streamed=_count_streamed,
            probe=_answer_probe,
            logger=logger,
        )

    async def __acall__(self, request: HttpRequest) -> HttpResponseBase:
        """Serve the request to a probe's path in async mode (the core sends only those here).

        Its host is checked here, where the probe views are; any other request is served and
        recorded by the core in one call (`RecordingMiddleware.__call__`).
        """
        if not _host_allowed(request):
            return await sync_to_async(_probe_view(request))(request)
        response: HttpResponseBase = await self._serve_async(request)
        return response

    def process_exception(self, request: HttpRequest, exception: Exception) -> None:
        """Count an exception raised by the view; return None so Django handles it as usual."""
        try:
            recorded = self._route(request.path_info)[1]
        except Exception:
            logger.exception("metrics: could not route the request; exception not counted")
            return
        if recorded:
            self._count_exception(request, exception)

    def _count_escaped(self, request: HttpRequest, exc: BaseException) -> None:
        # Reached only with DEBUG_PROPAGATE_EXCEPTIONS or a handler that lets an exception through.
        if isinstance(exc, Exception) and getattr(request, "_metrics_exception", None) is not exc:
            self._count_exception(request, exc)

    def _count_exception(self, request: HttpRequest, exception: Exception) -> None:
        try:
            request._metrics_exception = exception  # type: ignore[attr-defined]
            # The class name is bounded like any user-controlled label (METRICS_MAX_LABEL_VALUES).
            type_name = bounded_label("django_http_exceptions_total", "type", type(exception).__name__)
            http_exceptions_total.labels(view_label(request), type_name).inc()
            if self._compat is not None:
                self._compat.record_exception(request, type_name)
        except Exception:
            logger.exception("metrics: could not count an exception")


def _host_allowed(request: HttpRequest) -> bool:
    """Return whether the request's Host is in ALLOWED_HOSTS (what the rest of the stack checks)."""
    try:
        request.get_host()
    except DisallowedHost:
        return False
    return True


def _probe_view(request: HttpRequest) -> Callable[[HttpRequest], HttpResponseBase]:
    """Return the view of the liveness or readiness probe at `request.path_info`.

    Kubernetes probes send `Host: <pod IP>:<port>`, which ALLOWED_HOSTS rejects with 400 further
    down the stack. Their answers hold no host-dependent content (no URL, no redirect, nothing
    cached by host) and, for such a request, no details (see `views._report_response`), so
    they are answered here, before any middleware that validates the host; every other path
    keeps ALLOWED_HOSTS as configured.
    """
    from django.urls import resolve

    from metrics import views

    request.metrics_untrusted_host = True  # type: ignore[attr-defined]
    match = resolve(request.path_info)
    request.resolver_match = match
    return views.readiness if match.func is views.readiness else views.liveness


def _answer_probe(request: HttpRequest) -> HttpResponseBase | None:
    """Answer a probe whose Host is not in ALLOWED_HOSTS; None: the stack below answers it."""
    if _host_allowed(request):
        return None
    return _probe_view(request)(request)


def _count_streamed(response: Any, method: str, view: str) -> None:
    """Observe a streaming response's size without reading it ahead of the client."""
    size = http_response_size_bytes.labels(method, view)
    length = response.get("Content-Length")
    if length is not None and length.isdigit():
        # FileResponse knows its size; leaving its file alone keeps the server's sendfile path.
        size.observe(int(length))
        return
    content = response.streaming_content
    if response.is_async:
        response.streaming_content = _count_async(content, size)
    else:
        response.streaming_content = _count_sync(content, size)


def _count_sync(content: Iterator[bytes], size: Any) -> Iterator[bytes]:
    sent = 0
    try:
        for chunk in content:
            sent += len(chunk)
            yield chunk
    finally:
        # Also when the client goes away mid-stream: what was sent is what is counted.
        _observe_quietly(size, sent)


async def _count_async(content: AsyncIterator[bytes], size: Any) -> AsyncIterator[bytes]:
    sent = 0
    try:
        async for chunk in content:
            sent += len(chunk)
            yield chunk
    finally:
        _observe_quietly(size, sent)


def _observe_quietly(size: Any, value: int) -> None:
    try:
        size.observe(value)
    except Exception:
        logger.exception("metrics: could not record the response size")
