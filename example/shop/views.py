"""Views of every kind the metrics middleware meets in real sites."""

import asyncio
from collections.abc import Iterator

from django.core.cache import cache
from django.http import HttpRequest, HttpResponse, JsonResponse, StreamingHttpResponse
from django.shortcuts import get_object_or_404, render

from metrics.collectors import track_custom_metric, track_user_activity
from shop.models import Item


def home(request: HttpRequest) -> HttpResponse:
    """List the items, with links to everything the demo shows."""
    visits = cache.get_or_set("home-visits", 0)
    cache.set("home-visits", visits + 1)
    return render(request, "shop/home.html", {"items": Item.objects.all()[:20], "visits": visits + 1})


def item_detail(request: HttpRequest, pk: int) -> HttpResponse:
    """Show one item (404 when it does not exist)."""
    item = get_object_or_404(Item, pk=pk)
    # Business metrics, as the spec shows them: an event counter and a current value.
    track_custom_metric("item", "viewed", gauge_value=float(item.price))
    return render(request, "shop/item.html", {"item": item})


def api_items(request: HttpRequest) -> JsonResponse:
    """Return the items as JSON."""
    items = [{"id": i.pk, "name": i.name, "price": str(i.price)} for i in Item.objects.all()]
    track_user_activity("api_call")
    return JsonResponse({"items": items})


async def async_view(request: HttpRequest) -> JsonResponse:
    """Answer after an await, without a thread (under ASGI)."""
    await asyncio.sleep(0.001)
    count = await Item.objects.acount()
    return JsonResponse({"async": True, "items": count})


def boom(request: HttpRequest) -> HttpResponse:
    """Fail, to show 500s in the metrics."""
    raise RuntimeError("boom: this view always fails")


def stream(request: HttpRequest) -> StreamingHttpResponse:
    """Stream ten lines, counted by the middleware as they go out."""

    def lines() -> Iterator[bytes]:
        for n in range(10):
            yield f"line {n}\n".encode()

    return StreamingHttpResponse(lines(), content_type="text/plain")


def about(request: HttpRequest) -> HttpResponse:
    """Say what this site is."""
    return HttpResponse("An example site for the metrics module.\n", content_type="text/plain")
