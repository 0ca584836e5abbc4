"""Wiring at start-up: system checks and the instrumentation hooks. Nothing slow, no threads."""

from __future__ import annotations

import importlib

from django.apps import AppConfig


class MetricsConfig(AppConfig):
    """The `metrics` Django app."""

    name = "metrics"
    label = "metrics"
    verbose_name = "Metrics"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        """Register the system checks and install the DB, cache and user hooks."""
        from metrics import (
            checks,  # noqa: F401 (registers the checks on import)
            core,
            prefork,
        )
        from metrics.conf import app_settings

        # Only a valid mode reaches the store (a bad one is reported by the check metrics.E018).
        core.set_store_file_mode(app_settings.STORE_FILE_MODE)
        # PROMETHEUS_MULTIPROC_DIR from the environment was applied when `metrics` was imported;
        # one given only in settings applies now, moving what was counted so far into the store.
        directory = app_settings.MULTIPROC_DIR
        if directory and core.multiprocess_dir() is None:
            try:
                core.enable_multiprocess(directory)
            except (ValueError, OSError):
                pass  # Reported by the system check metrics.E004; metrics stay per-process.
        # A worker of a pre-forking server shares a private store, unless `metrics` was imported
        # before the settings were loaded (a settings file importing it): then it is decided now.
        prefork.choose_store(core)

        from metrics.collectors import latency_histogram, request_duration_histogram

        # Made now, with the settings loaded, so every process exposes them from start-up as it
        # exposes the rest of the catalogue (they are made on first use, never at import).
        request_duration_histogram()
        latency_histogram("db_query_duration_seconds")
        latency_histogram("celery_task_duration_seconds")

        from metrics.health import migrations_at_scrape

        core.add_collect_hook(migrations_at_scrape)

        try:
            instrument = importlib.import_module("metrics.instrument")
        except ImportError as exc:
            # Only the module's absence is tolerated; an import error inside it must surface.
            if exc.name != "metrics.instrument":
                raise
            return
        if getattr(instrument, "__file__", None) is None:
            # A namespace package (a directory without __init__.py yet): nothing to install.
            return
        instrument.install()
