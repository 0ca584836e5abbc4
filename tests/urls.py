"""URLs of the test project: the metrics endpoints and views of every kind the middleware meets."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator

from django.contrib import admin
from django.http import HttpRequest, HttpResponse, JsonResponse, StreamingHttpResponse
from django.urls import include, path

from metrics.core import REGISTRY


def ok(request: HttpRequest) -> HttpResponse:
    """Answer a fixed body of 5 bytes."""
    return HttpResponse(b"hello")


def item(request: HttpRequest, pk: int) -> JsonResponse:
    """Echo the parameter."""
    return JsonResponse({"pk": pk})


def unnamed(request: HttpRequest, slug: str) -> HttpResponse:
    """Answer from a pattern without a name."""
    return HttpResponse(b"unnamed")


def echo(request: HttpRequest) -> HttpResponse:
    """Return the request body."""
    return HttpResponse(request.body)


def boom(request: HttpRequest) -> HttpResponse:
    """Fail."""
    raise RuntimeError("boom")


def in_progress(request: HttpRequest) -> JsonResponse:
    """Report the in-progress gauge as seen while this request runs."""
    value = REGISTRY.get_sample_value("django_http_requests_in_progress", {"method": request.method})
    return JsonResponse({"value": value})


def stream(request: HttpRequest) -> StreamingHttpResponse:
    """Stream 3 chunks of 10 bytes."""

    def chunks() -> Iterator[bytes]:
        for _ in range(3):
            yield b"0123456789"

    return StreamingHttpResponse(chunks())


def async_stream(request: HttpRequest) -> StreamingHttpResponse:
    """Stream 2 chunks of 4 bytes from an async iterator."""

    async def chunks() -> AsyncIterator[bytes]:
        for _ in range(2):
            await asyncio.sleep(0)
            yield b"abcd"

    return StreamingHttpResponse(chunks())


async def async_view(request: HttpRequest) -> JsonResponse:
    """Answer from an async view."""
    await asyncio.sleep(0)
    return JsonResponse({"async": True})


shop = (
    [
        path("items/<int:pk>/", item, name="item"),
    ],
    "shop",
)

urlpatterns = [
    path("admin/", admin.site.urls),
    path("metrics/", include("metrics.urls")),
    path("ok/", ok, name="ok"),
    path("shop/", include(shop)),
    path("unnamed/<slug:slug>/", unnamed),
    path("echo/", echo, name="echo"),
    path("boom/", boom, name="boom"),
    path("in-progress/", in_progress, name="in-progress"),
    path("stream/", stream, name="stream"),
    path("async-stream/", async_stream, name="async-stream"),
    path("async/", async_view, name="async"),
]
