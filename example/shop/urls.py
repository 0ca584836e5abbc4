"""URLs of the shop: named (`shop:home`), with a parameter, unnamed, async, failing, streaming."""

from django.urls import path

from shop import views

app_name = "shop"

urlpatterns = [
    path("", views.home, name="home"),
    path("items/<int:pk>/", views.item_detail, name="item-detail"),
    path("api/items/", views.api_items, name="api-items"),
    path("async/", views.async_view, name="async"),
    path("boom/", views.boom, name="boom"),
    path("stream/", views.stream, name="stream"),
    # Deliberately unnamed: its `view` label is the route, "about/".
    path("about/", views.about),
]
