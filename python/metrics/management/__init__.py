"""Management commands of the metrics app: export_metrics, snapshot_metrics, cleanup_metrics."""

from __future__ import annotations

from typing import Any

from django.conf import settings


def app_setting(name: str, default: Any) -> Any:
    """Return the `METRICS_<name>` setting, through `metrics.conf` once that module exists."""
    try:
        from metrics.conf import app_settings
    except ImportError:
        # TODO(issue 3): metrics.conf lands with the Django app foundation; until then read
        # django.conf.settings directly.
        return getattr(settings, f"METRICS_{name}", default)
    return getattr(app_settings, name)
