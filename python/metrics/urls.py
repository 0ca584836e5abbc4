"""URLs of the app; include them at `metrics/`: `path("metrics/", include("metrics.urls"))`."""

from django.urls import path

from metrics import views

app_name = "metrics"

urlpatterns = [
    path("", views.metrics_view, name="metrics"),
    path("health/", views.health_view, name="health"),
    path("readiness/", views.readiness, name="readiness"),
    path("liveness/", views.liveness, name="liveness"),
]
