"""URLs of the example site."""

from django.contrib import admin
from django.contrib.staticfiles.urls import staticfiles_urlpatterns
from django.urls import include, path

urlpatterns = [
    path("admin/", admin.site.urls),
    path("accounts/", include("accounts.urls")),
    path("metrics/", include("metrics.urls")),
    path("", include("shop.urls")),
    # Admin styles without a web server in front (only when DEBUG is on).
    *staticfiles_urlpatterns(),
]
