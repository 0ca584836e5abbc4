"""Read-only admin for stored metric snapshots."""

from __future__ import annotations

import json

from django.contrib import admin
from django.http import HttpRequest

from metrics.models import MetricSample


@admin.register(MetricSample)
# ModelAdmin is generic in django-stubs only: Django's class cannot be subscripted at run time.
class MetricSampleAdmin(admin.ModelAdmin):  # type: ignore[type-arg]
    """List snapshots by time and name; samples are written by `snapshot_metrics`, never by hand."""

    list_display = ["taken_at", "name", "labels_text", "value"]
    list_filter = ["taken_at", "name"]
    search_fields = ["name"]
    # No date_hierarchy: on MySQL/MariaDB with USE_TZ it needs the server's time zone tables
    # (CONVERT_TZ), which are often not loaded. The taken_at filter uses plain ranges instead.
    ordering = ["-taken_at", "name"]
    # A full snapshot of a busy site has thousands of rows: skip the exact count on every page.
    show_full_result_count = False
    list_per_page = 200

    @admin.display(description="labels")
    def labels_text(self, obj: MetricSample) -> str:
        """Return the labels as compact JSON with sorted keys."""
        return json.dumps(obj.labels, sort_keys=True, separators=(",", ":"))

    def has_add_permission(self, request: HttpRequest) -> bool:
        """Refuse: samples come from the exposition only."""
        return False

    def has_change_permission(self, request: HttpRequest, obj: MetricSample | None = None) -> bool:
        """Refuse: a stored sample is a record of the past."""
        return False

    def has_delete_permission(self, request: HttpRequest, obj: MetricSample | None = None) -> bool:
        """Refuse: `cleanup_metrics` deletes old samples in batches; the admin's bulk delete does not."""
        return False
