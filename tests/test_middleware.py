"""The middleware records the five HTTP metrics with bounded labels, sync and async."""

from __future__ import annotations

import asyncio
import io
import logging
import re

import pytest
from asgiref.sync import iscoroutinefunction
from django.http import FileResponse, HttpRequest, HttpResponse
from django.test import AsyncClient, Client, RequestFactory, override_settings

from metrics import middleware
from metrics.core import REGISTRY
from metrics.middleware import OTHER_METHOD, UNRESOLVED, MetricsMiddleware, view_label

TOTAL = "django_http_requests_total"
DURATION = "django_http_request_duration_seconds_count"
REQUEST_SIZE_SUM = "django_http_request_size_bytes_sum"
RESPONSE_SIZE_SUM = "django_http_response_size_bytes_sum"
RESPONSE_SIZE_COUNT = "django_http_response_size_bytes_count"


def test_records_all_five_metrics(sample, sample_or_zero) -> None:
    """A request adds to the counter, the three histograms, and leaves in-progress at rest."""
    labels = {"method": "GET", "view": "ok"}
    before = {
        "total": sample_or_zero(TOTAL, status="200", **labels),
        "duration": sample_or_zero(DURATION, **labels),
        "req": sample_or_zero("django_http_request_size_bytes_count", **labels),
        "resp": sample_or_zero(RESPONSE_SIZE_SUM, **labels),
    }
    assert Client().get("/ok/").status_code == 200
    assert sample(TOTAL, status="200", **labels) == before["total"] + 1
    assert sample(DURATION, **labels) == before["duration"] + 1
    assert sample("django_http_request_size_bytes_count", **labels) == before["req"] + 1
    assert sample(RESPONSE_SIZE_SUM, **labels) == before["resp"] + 5
    assert sample("django_http_requests_in_progress", method="GET") == 0


def test_in_progress_counts_the_running_request(sample) -> None:
    """While the view runs, the gauge includes it."""
    response = Client().get("/in-progress/")
    assert response.json()["value"] == 1
    assert sample("django_http_requests_in_progress", method="GET") == 0


def test_view_label_is_the_pattern_name_with_namespace(sample, sample_or_zero) -> None:
    """`shop:item`, never the concrete path: /shop/items/1/ and /shop/items/2/ share a series."""
    before = sample_or_zero(TOTAL, method="GET", view="shop:item", status="200")
    client = Client()
    client.get("/shop/items/1/")
    client.get("/shop/items/2/")
    assert sample(TOTAL, method="GET", view="shop:item", status="200") == before + 2


def test_unnamed_pattern_is_labelled_by_its_route(sample, sample_or_zero) -> None:
    """A pattern without a name is labelled with its route, parameters left as placeholders."""
    labels = {"method": "GET", "view": "unnamed/<slug:slug>/", "status": "200"}
    before = sample_or_zero(TOTAL, **labels)
    Client().get("/unnamed/a/")
    Client().get("/unnamed/b/")
    assert sample(TOTAL, **labels) == before + 2


def test_unresolved_paths_share_one_series(sample, sample_or_zero) -> None:
    """A 404 scan adds to one fixed series, creating none per path."""
    labels = {"method": "GET", "view": UNRESOLVED, "status": "404"}
    before = sample_or_zero(TOTAL, **labels)
    client = Client()
    for n in range(20):
        assert client.get(f"/wp-admin/{n}.php").status_code == 404
    assert sample(TOTAL, **labels) == before + 20
    text = Client(REMOTE_ADDR="8.8.8.8").get("/metrics/", HTTP_X_METRICS_TOKEN="test-token").content
    assert b"wp-admin" not in text


def test_unknown_methods_fold_into_other(sample, sample_or_zero) -> None:
    """Standard methods keep their name; anything else becomes `other`."""
    before = sample_or_zero(TOTAL, method=OTHER_METHOD, view="ok", status="200")
    before_delete = sample_or_zero(TOTAL, method="DELETE", view="ok", status="200")
    client = Client()
    client.generic("PROPFIND", "/ok/")
    client.generic("FOO", "/ok/")
    client.delete("/ok/")
    assert sample(TOTAL, method=OTHER_METHOD, view="ok", status="200") == before + 2
    assert sample(TOTAL, method="DELETE", view="ok", status="200") == before_delete + 1
    assert sample(TOTAL, method="PROPFIND", view="ok", status="200") is None


def test_request_size_comes_from_content_length(sample, sample_or_zero) -> None:
    """The body size is read from CONTENT_LENGTH."""
    labels = {"method": "POST", "view": "echo"}
    before = sample_or_zero(REQUEST_SIZE_SUM, **labels)
    response = Client().post("/echo/", data=b"x" * 1234, content_type="application/octet-stream")
    assert len(response.content) == 1234
    assert sample(REQUEST_SIZE_SUM, **labels) == before + 1234


def test_response_size_counts_every_written_chunk(sample, sample_or_zero) -> None:
    """A body built with `write()` is measured whole, as `len(response.content)`."""

    def view(request: HttpRequest) -> HttpResponse:
        response = HttpResponse(b"abc")
        response.write(b"de")
        response.write("fgh")
        return response

    labels = {"method": "GET", "view": UNRESOLVED}
    before = sample_or_zero(RESPONSE_SIZE_SUM, **labels)
    response = MetricsMiddleware(view)(RequestFactory().get("/chunks/"))
    assert response.content == b"abcdefgh"
    assert sample(RESPONSE_SIZE_SUM, **labels) == before + 8


def test_view_exception_is_counted_as_500(sample, sample_or_zero) -> None:
    """A view that raises is a 500 in the counter, and the exception still reaches the caller."""
    labels = {"method": "GET", "view": "boom", "status": "500"}
    before = sample_or_zero(TOTAL, **labels)
    with pytest.raises(RuntimeError, match="boom"):
        Client().get("/boom/")
    assert sample(TOTAL, **labels) == before + 1
    assert Client(raise_request_exception=False).get("/boom/").status_code == 500
    assert sample(TOTAL, **labels) == before + 2


def test_exception_escaping_the_stack_is_counted_and_reraised(sample, sample_or_zero) -> None:
    """When get_response itself raises, the middleware counts a 500 and re-raises."""

    def explode(request: HttpRequest) -> HttpResponse:
        raise ValueError("below the middleware")

    labels = {"method": "GET", "view": UNRESOLVED, "status": "500"}
    before = sample_or_zero(TOTAL, **labels)
    with pytest.raises(ValueError, match="below the middleware"):
        MetricsMiddleware(explode)(RequestFactory().get("/anything/"))
    assert sample(TOTAL, **labels) == before + 1
    assert sample("django_http_requests_in_progress", method="GET") == 0


def test_streaming_response_is_counted_as_it_goes_out(sample, sample_or_zero) -> None:
    """The size is observed once the client has read the stream, and the body is unchanged."""
    labels = {"method": "GET", "view": "stream"}
    before_sum = sample_or_zero(RESPONSE_SIZE_SUM, **labels)
    before_count = sample_or_zero(RESPONSE_SIZE_COUNT, **labels)
    response = Client().get("/stream/")
    assert sample_or_zero(RESPONSE_SIZE_COUNT, **labels) == before_count  # nothing read yet
    assert b"".join(response.streaming_content) == b"0123456789" * 3
    assert sample(RESPONSE_SIZE_COUNT, **labels) == before_count + 1
    assert sample(RESPONSE_SIZE_SUM, **labels) == before_sum + 30


def test_file_response_keeps_its_file_and_uses_content_length(sample, sample_or_zero) -> None:
    """FileResponse is not wrapped (sendfile stays possible); its Content-Length is the size."""
    # Called directly: the test client wraps streaming content itself, hiding file_to_stream.
    content = io.BytesIO(b"x" * 1000)

    def serve_file(request: HttpRequest) -> FileResponse:
        return FileResponse(content, filename="x.bin")

    labels = {"method": "GET", "view": UNRESOLVED}
    before = sample_or_zero(RESPONSE_SIZE_SUM, **labels)
    response = MetricsMiddleware(serve_file)(RequestFactory().get("/file/"))
    assert response.file_to_stream is content
    assert sample(RESPONSE_SIZE_SUM, **labels) == before + 1000
    assert len(b"".join(response.streaming_content)) == 1000


def test_metrics_paths_are_excluded(sample) -> None:
    """Scrapes and probes of /metrics/ do not show up in the HTTP metrics."""
    before = sample(TOTAL, method="GET", view="metrics:metrics", status="200")
    before_live = sample(TOTAL, method="GET", view="metrics:liveness", status="200")
    client = Client(REMOTE_ADDR="8.8.8.8", HTTP_X_METRICS_TOKEN="test-token")
    assert client.get("/metrics/").status_code == 200
    assert client.get("/metrics/liveness/").status_code == 200
    assert sample(TOTAL, method="GET", view="metrics:metrics", status="200") == before
    assert sample(TOTAL, method="GET", view="metrics:liveness", status="200") == before_live


def test_excluded_paths_are_configurable(sample, sample_or_zero) -> None:
    """METRICS_EXCLUDE_PATHS replaces the default list."""
    before_ok = sample(TOTAL, method="GET", view="ok", status="200")
    before_live = sample_or_zero(TOTAL, method="GET", view="metrics:liveness", status="200")
    with override_settings(METRICS_EXCLUDE_PATHS=["/ok/"]):
        client = Client()
        client.get("/ok/")
        client.get("/metrics/liveness/")
    assert sample(TOTAL, method="GET", view="ok", status="200") == before_ok
    assert sample(TOTAL, method="GET", view="metrics:liveness", status="200") == before_live + 1


def test_disabled_collects_nothing(sample) -> None:
    """METRICS_ENABLED=False: requests are served and not counted."""
    before = sample(TOTAL, method="GET", view="ok", status="200")
    with override_settings(METRICS_ENABLED=False):
        assert Client().get("/ok/").status_code == 200
    assert sample(TOTAL, method="GET", view="ok", status="200") == before


def test_metrics_failure_never_breaks_the_request(monkeypatch, caplog, sample, sample_or_zero) -> None:
    """A failing hook on entry and on exit is logged; the response goes out and the request counts."""

    def broken_tick() -> None:
        raise RuntimeError("metric store on fire")

    def broken_span() -> str | None:
        raise RuntimeError("metric store on fire, again")

    # Captured when the middleware is built, at the client's first request.
    monkeypatch.setattr(middleware, "tick", broken_tick)
    monkeypatch.setattr(middleware.tracing, "span_source", lambda: broken_span)
    labels = {"method": "GET", "view": "ok", "status": "200"}
    before = sample_or_zero(TOTAL, **labels)
    with override_settings(METRICS_EXEMPLARS=True), caplog.at_level(logging.ERROR, logger="metrics"):
        response = Client().get("/ok/")
    assert response.status_code == 200
    assert response.content == b"hello"
    assert "could not refresh this process's metrics" in caplog.text
    assert "metric store on fire" in caplog.text
    assert "the exemplar source failed; the request is counted without one" in caplog.text
    assert "metric store on fire, again" in caplog.text
    assert sample(TOTAL, **labels) == before + 1
    assert sample("django_http_requests_in_progress", method="GET") == 0


class _UnreadableResponse(HttpResponse):
    """A response whose body cannot be read by the metrics code."""

    @property
    def content(self) -> bytes:
        raise OSError("body gone")

    @content.setter
    def content(self, value: object) -> None:
        pass


def test_failure_while_recording_leaves_nothing_in_progress(sample, caplog) -> None:
    """A request whose recording fails half-way is still taken out of the in-progress gauge."""

    def view(request: HttpRequest) -> HttpResponse:
        return _UnreadableResponse()

    labels = {"method": "PATCH", "view": UNRESOLVED, "status": "200"}
    before = sample(TOTAL, **labels)
    with caplog.at_level(logging.ERROR, logger="metrics"):
        response = MetricsMiddleware(view)(RequestFactory().patch("/unreadable/"))
    assert isinstance(response, _UnreadableResponse)
    assert "body gone" in caplog.text
    assert sample(TOTAL, **labels) == before
    assert sample("django_http_requests_in_progress", method="PATCH") == 0


@pytest.mark.parametrize(
    ("header", "size"),
    [("1234", 1234), (" 12 ", 12), ("1_000", 1000), ("", 0), ("twelve", 0), ("-3", -3)],
)
def test_content_length_is_read_as_int_reads_it(sample, sample_or_zero, header: str, size: int) -> None:
    """Plain digits are read directly; anything else means what `int()` makes of it (not a number: 0)."""

    def view(request: HttpRequest) -> HttpResponse:
        return HttpResponse(b"")

    labels = {"method": "PUT", "view": UNRESOLVED}
    before = sample_or_zero(REQUEST_SIZE_SUM, **labels)
    request = RequestFactory().put("/size/")
    request.META["CONTENT_LENGTH"] = header
    MetricsMiddleware(view)(request)
    assert sample(REQUEST_SIZE_SUM, **labels) == before + size


def test_tick_runs_from_the_request_path_at_most_once_per_refresh_period(monkeypatch) -> None:
    """Process metrics are refreshed from requests (multiprocess mode), without a call per request."""
    ticks: list[None] = []
    monkeypatch.setattr(middleware, "tick", lambda: ticks.append(None))

    def view(request: HttpRequest) -> HttpResponse:
        return HttpResponse(b"")

    handler = MetricsMiddleware(view)
    for _ in range(3):
        handler(RequestFactory().get("/tick/"))
    assert len(ticks) == 1


def test_view_label_is_the_one_the_request_path_records(sample, sample_or_zero) -> None:
    """`view_label()` (used for exceptions) and the recorded `view` label are one definition."""
    before = sample_or_zero(TOTAL, method="GET", view="shop:item", status="200")
    response = Client().get("/shop/items/3/")
    assert view_label(response.wsgi_request) == "shop:item"
    assert sample(TOTAL, method="GET", view="shop:item", status="200") == before + 1
    assert view_label(RequestFactory().get("/nowhere/")) == UNRESOLVED


def test_middleware_must_be_set_up_once() -> None:
    """A subclass that skips `__init__` gets a clear error; binding twice is refused."""

    class NotSetUp(MetricsMiddleware):
        def __init__(self, get_response: object) -> None:
            pass

    with pytest.raises(TypeError, match="not set up"):
        NotSetUp(None)(RequestFactory().get("/"))
    handler = MetricsMiddleware(lambda request: HttpResponse(b""))
    with pytest.raises(RuntimeError, match="already set up"):
        MetricsMiddleware.__init__(handler, lambda request: HttpResponse(b""))


def test_metrics_that_cannot_be_set_up_never_break_the_site(monkeypatch, caplog) -> None:
    """A recorder that cannot be built is logged once; requests are served, unrecorded."""

    def broken(*args: object) -> None:
        raise RuntimeError("no metrics today")

    monkeypatch.setattr(middleware, "RequestMetrics", broken)
    with caplog.at_level(logging.ERROR, logger="metrics"):
        client = Client()
        assert client.get("/ok/").status_code == 200
        assert client.get("/ok/").status_code == 200
    assert caplog.text.count("the HTTP metrics cannot be recorded") == 1


# --- async ---


def test_middleware_is_a_coroutine_function_under_asgi() -> None:
    """With an async get_response, Django sees a coroutine function and adds no thread hop."""

    async def get_response(request: HttpRequest) -> HttpResponse:
        return HttpResponse(b"ok")

    def sync_get_response(request: HttpRequest) -> HttpResponse:
        return HttpResponse(b"ok")

    assert iscoroutinefunction(MetricsMiddleware(get_response))
    assert not iscoroutinefunction(MetricsMiddleware(sync_get_response))
    assert MetricsMiddleware.sync_capable and MetricsMiddleware.async_capable


def test_async_view_is_recorded(sample, sample_or_zero) -> None:
    """Under the async handler, async views are counted like sync ones."""
    labels = {"method": "GET", "view": "async", "status": "200"}
    before = sample_or_zero(TOTAL, **labels)
    response = asyncio.run(AsyncClient().get("/async/"))
    assert response.json() == {"async": True}
    assert sample(TOTAL, **labels) == before + 1


def test_async_path_follows_the_same_exclusions(sample, sample_or_zero) -> None:
    """Under ASGI the excluded paths and METRICS_ENABLED apply as under WSGI (one rule, in the core)."""
    labels = {"method": "GET", "view": "async", "status": "200"}
    before = sample_or_zero(TOTAL, **labels)
    with override_settings(METRICS_EXCLUDE_PATHS=["/async/"]):
        assert asyncio.run(AsyncClient().get("/async/")).status_code == 200
    with override_settings(METRICS_ENABLED=False):
        assert asyncio.run(AsyncClient().get("/async/")).status_code == 200
    assert sample_or_zero(TOTAL, **labels) == before
    asyncio.run(AsyncClient().get("/async/"))
    assert sample(TOTAL, **labels) == before + 1


def test_async_middleware_counts_exceptions_and_reraises(sample, sample_or_zero) -> None:
    """The async path counts a 500 and re-raises, like the sync one."""

    async def explode(request: HttpRequest) -> HttpResponse:
        await asyncio.sleep(0)
        raise KeyError("async failure")

    labels = {"method": "POST", "view": UNRESOLVED, "status": "500"}
    before = sample_or_zero(TOTAL, **labels)
    with pytest.raises(KeyError):
        asyncio.run(MetricsMiddleware(explode)(RequestFactory().post("/x/")))
    assert sample(TOTAL, **labels) == before + 1


def test_async_streaming_response_is_counted(sample, sample_or_zero) -> None:
    """An async iterator is wrapped by an async iterator and counted as it is consumed."""
    labels = {"method": "GET", "view": "async-stream"}
    before = sample_or_zero(RESPONSE_SIZE_SUM, **labels)

    async def fetch() -> bytes:
        response = await AsyncClient().get("/async-stream/")
        return b"".join([chunk async for chunk in response.streaming_content])

    body = asyncio.run(fetch())
    assert body == b"abcdabcd"
    assert sample(RESPONSE_SIZE_SUM, **labels) == before + 8


def test_cancelled_async_request_is_499_not_500(sample, sample_or_zero) -> None:
    """A request cancelled by a client disconnect is counted as 499 and the cancellation propagates."""

    async def hang(request: HttpRequest) -> HttpResponse:
        await asyncio.sleep(10)
        return HttpResponse(b"never")

    async def disconnect() -> None:
        task = asyncio.ensure_future(MetricsMiddleware(hang)(RequestFactory().get("/slow/")))
        await asyncio.sleep(0.01)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    before_499 = sample_or_zero(TOTAL, method="GET", view=UNRESOLVED, status="499")
    before_500 = sample(TOTAL, method="GET", view=UNRESOLVED, status="500")
    asyncio.run(disconnect())
    assert sample(TOTAL, method="GET", view=UNRESOLVED, status="499") == before_499 + 1
    assert sample(TOTAL, method="GET", view=UNRESOLVED, status="500") == before_500
    assert sample("django_http_requests_in_progress", method="GET") == 0


class _Suspend:
    """An awaitable that suspends its coroutine once, yielding a marker (no event loop needed)."""

    def __await__(self):  # type: ignore[no-untyped-def]
        yield "suspended"


async def _suspended_view(request: HttpRequest) -> HttpResponse:
    await _Suspend()
    return HttpResponse(b"resumed")


def test_async_request_recorded_when_its_coroutine_returns(sample, sample_or_zero) -> None:
    """The request is in progress while the view is suspended, and counted once it returns."""
    labels = {"method": "GET", "view": UNRESOLVED, "status": "200"}
    before = sample_or_zero(TOTAL, **labels)
    awaitable = MetricsMiddleware(_suspended_view)(RequestFactory().get("/suspended/"))
    assert sample_or_zero("django_http_requests_in_progress", method="GET") == 0
    assert awaitable.send(None) == "suspended"
    assert sample("django_http_requests_in_progress", method="GET") == 1
    assert sample_or_zero(TOTAL, **labels) == before
    with pytest.raises(StopIteration) as returned:
        awaitable.send(None)
    assert returned.value.value.content == b"resumed"
    assert sample(TOTAL, **labels) == before + 1
    assert sample("django_http_requests_in_progress", method="GET") == 0


@pytest.mark.parametrize("end", ["close", "drop"])
def test_async_request_closed_unfinished_is_500_and_leaves_in_progress(sample, sample_or_zero, end) -> None:
    """A suspended request whose coroutine is closed (or collected) is a 500, as a GeneratorExit makes it."""
    import gc

    labels = {"method": "GET", "view": UNRESOLVED, "status": "500"}
    before = sample_or_zero(TOTAL, **labels)
    awaitable = MetricsMiddleware(_suspended_view)(RequestFactory().get("/suspended/"))
    assert awaitable.send(None) == "suspended"
    assert sample("django_http_requests_in_progress", method="GET") == 1
    if end == "close":
        awaitable.close()
    else:
        del awaitable
        gc.collect()
    assert sample(TOTAL, **labels) == before + 1
    assert sample("django_http_requests_in_progress", method="GET") == 0


def test_async_request_runs_in_a_task_and_under_asyncio_run() -> None:
    """What the middleware returns is a coroutine to asyncio: a task runs it, asyncio.run too."""

    async def view(request: HttpRequest) -> HttpResponse:
        await asyncio.sleep(0)
        return HttpResponse(b"ok")

    chain = MetricsMiddleware(view)

    async def in_a_task() -> HttpResponse:
        return await asyncio.get_running_loop().create_task(chain(RequestFactory().get("/t/")))

    assert asyncio.run(in_a_task()).content == b"ok"
    assert asyncio.run(chain(RequestFactory().get("/t/"))).content == b"ok"


@override_settings(METRICS_EXEMPLARS=True, METRICS_COMPAT_DJANGO_PROMETHEUS=True)
def test_async_request_is_one_crossing_with_compat_and_exemplars(sample, sample_or_zero) -> None:
    """An async request runs none of the package's Python either: the core drives the view's coroutine."""
    import sys
    from pathlib import Path

    async def view(request: HttpRequest) -> HttpResponse:
        return HttpResponse(b"ok")

    header = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
    request = RequestFactory().get("/one/", HTTP_TRACEPARENT=header)
    chain = MetricsMiddleware(view)
    package = str(Path(middleware.__file__).parent)
    calls: list[str] = []

    def profile(frame, event, arg):  # type: ignore[no-untyped-def]
        if event == "call" and frame.f_code.co_filename.startswith(package):
            calls.append(f"{Path(frame.f_code.co_filename).name}:{frame.f_code.co_name}")

    async def serve(count: int) -> None:
        for _ in range(count):
            await chain(request)

    asyncio.run(serve(1))  # runs the tick that is due
    before = sample_or_zero("django_http_requests_total_by_method_total", method="GET")
    sys.setprofile(profile)
    try:
        asyncio.run(serve(3))
    finally:
        sys.setprofile(None)
    assert calls == []
    assert sample("django_http_requests_total_by_method_total", method="GET") == before + 3


@pytest.mark.parametrize("removal", ["clear", "remove"])
def test_removing_a_series_never_switches_the_request_metrics_off(sample, removal: str) -> None:
    """After `clear()` or `remove()` on a built-in family, the next requests count from zero again."""
    from metrics import collectors

    labels = {"method": "GET", "view": "ok"}
    client = Client()
    for _ in range(3):
        client.get("/ok/")
    assert sample(TOTAL, status="200", **labels) >= 3
    if removal == "clear":
        collectors.http_requests_total.clear()
        collectors.http_request_duration_seconds.clear()
    else:
        collectors.http_requests_total.remove("GET", "ok", "200")
        collectors.http_request_duration_seconds.remove("GET", "ok")
    assert REGISTRY.get_sample_value(TOTAL, {"status": "200", **labels}) is None
    for _ in range(5):
        client.get("/ok/")
    assert REGISTRY.get_sample_value(TOTAL, {"status": "200", **labels}) == 5
    assert REGISTRY.get_sample_value(DURATION, labels) == 5


def test_clearing_the_in_progress_gauge_mid_request_leaves_no_request_counted(sample) -> None:
    """A `clear()` while a request runs: the new series neither goes negative nor keeps it."""
    from metrics import collectors

    def view(request: HttpRequest) -> HttpResponse:
        collectors.http_requests_in_progress.clear()
        return HttpResponse(b"ok")

    clearing = MetricsMiddleware(view)
    request = RequestFactory().get("/ok/")
    assert clearing(request).status_code == 200
    assert clearing(request).status_code == 200
    assert MetricsMiddleware(lambda request: HttpResponse(b"ok"))(request).status_code == 200
    assert REGISTRY.get_sample_value("django_http_requests_in_progress", {"method": "GET"}) == 0


def test_unreadable_settings_serve_the_request_unrecorded(monkeypatch, caplog, sample) -> None:
    """Settings the middleware cannot read (an attribute gone) cost the record, never the response."""
    from metrics.conf import app_settings

    def missing() -> object:
        raise AttributeError("'Settings' object has no attribute 'METRICS_EXCLUDED_PATHS'")

    labels = {"method": "GET", "view": "ok", "status": "200"}
    before = sample(TOTAL, **labels)
    monkeypatch.setattr(app_settings, "middleware_settings", missing)
    app_settings.clear_cache()
    with caplog.at_level(logging.ERROR, logger="metrics"):
        sync_response = Client().get("/ok/")
        async_response = asyncio.run(AsyncClient().get("/ok/"))
    assert (sync_response.status_code, sync_response.content) == (200, b"hello")
    assert (async_response.status_code, async_response.content) == (200, b"hello")
    assert "could not route the request; served unrecorded" in caplog.text
    assert sample(TOTAL, **labels) == before


def test_a_renamed_framework_attribute_fails_loudly_and_the_request_is_served(monkeypatch, caplog) -> None:
    """Fields the glue names wrongly (a Django rename): the response goes out, the log names the attribute."""
    from metrics.core import RequestFields

    renamed = RequestFields(**{**middleware.field_names(), "status": "status_kode"})
    monkeypatch.setattr(middleware, "_FIELDS", renamed)
    with caplog.at_level(logging.ERROR, logger="metrics"):
        response = Client().get("/ok/")
    assert (response.status_code, response.content) == (200, b"hello")
    assert "could not record the request" in caplog.text
    assert "status_kode" in caplog.text


def test_the_core_names_no_django_attribute() -> None:
    """`src/` holds no Django attribute name: the glue declares them (`metrics.middleware._fields`)."""
    from pathlib import Path

    names = (
        "path_info",
        "status_code",
        "_container",
        "resolver_match",
        "url_name",
        "view_name",
        "META",
        "CONTENT_LENGTH",
        "__acall__",
        "_count_escaped",
        "HttpResponse",
        "HttpRequest",
    )
    src = Path(__file__).resolve().parents[1] / "src"
    found = [
        f"{path.relative_to(src)}: {name}"
        for path in sorted(src.rglob("*.rs"))
        for name in names
        if re.search(rf"(?<![A-Za-z_]){re.escape(name)}(?![A-Za-z_])", path.read_text())
    ]
    assert found == []


def _python_calls_in_the_package(request_count: int, **extra: str) -> list[str]:
    """Return the package's Python functions run while serving `request_count` requests to /ok/."""
    import sys
    from pathlib import Path

    package = str(Path(middleware.__file__).parent)
    calls: list[str] = []

    def profile(frame, event, arg):  # type: ignore[no-untyped-def]
        if event == "call" and frame.f_code.co_filename.startswith(package):
            calls.append(f"{Path(frame.f_code.co_filename).name}:{frame.f_code.co_name}")

    client = Client()
    client.get("/ok/", **extra)  # builds the middleware, runs the tick that is due
    sys.setprofile(profile)
    try:
        for _ in range(request_count):
            client.get("/ok/", **extra)
    finally:
        sys.setprofile(None)
    return calls


@override_settings(METRICS_EXEMPLARS=True)
def test_exemplars_cost_no_python_call_per_request(sample) -> None:
    """With exemplars on and no tracing library, the core reads the traceparent itself: one crossing."""
    from metrics import tracing

    assert tracing.span_source() is None, "opentelemetry is installed: this test needs it absent"
    header = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
    assert _python_calls_in_the_package(3, HTTP_TRACEPARENT=header) == []


@override_settings(METRICS_EXEMPLARS=True, METRICS_COMPAT_DJANGO_PROMETHEUS=True)
def test_compat_and_exemplars_on_a_request_is_still_one_crossing(sample, sample_or_zero) -> None:
    """With compatibility and exemplars on, a sync request runs none of the package's Python.

    The core's `__call__` is the one crossing; django-prometheus's families and the exemplar
    are recorded inside it.
    """
    header = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
    before = sample_or_zero("django_http_requests_total_by_method_total", method="GET")
    assert _python_calls_in_the_package(3, HTTP_TRACEPARENT=header) == []
    assert sample("django_http_requests_total_by_method_total", method="GET") == before + 4


def test_unregistering_and_registering_a_built_in_family_again_keeps_counting(sample, sample_or_zero) -> None:
    """A built-in family taken out of the registry and put back counts on, and every scrape sees it."""
    from metrics import collectors

    labels = {"method": "GET", "view": "ok", "status": "200"}
    client = Client()
    client.get("/ok/")
    before = sample_or_zero(TOTAL, **labels)
    REGISTRY.unregister(collectors.http_requests_total)
    try:
        client.get("/ok/")
        assert sample(TOTAL, **labels) is None
    finally:
        REGISTRY.register(collectors.http_requests_total)
    client.get("/ok/")
    assert sample(TOTAL, **labels) == before + 2
