"""Store one snapshot of the exposition in the database (`METRICS_STORE_IN_DB`).

Meant for cron or Celery beat, e.g. every 5 minutes, with `cleanup_metrics` once a day. The
snapshot holds what `export_metrics --print` prints: this process's values, or the merged
multiprocess directory when `PROMETHEUS_MULTIPROC_DIR` is set (point cron at the site's
directory, or a fresh process stores only its own, mostly empty, values).
"""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from metrics.conf import app_settings
from metrics.core import exposition
from metrics.models import MetricSample


class Command(BaseCommand):
    """Parse the exposition and bulk-insert its samples as one snapshot."""

    help = "Store every sample of the current exposition in the database (needs METRICS_STORE_IN_DB=True)."

    def add_arguments(self, parser: CommandParser) -> None:
        """Declare --prefix and --batch-size."""
        parser.add_argument(
            "--prefix",
            action="append",
            default=[],
            metavar="NAME_PREFIX",
            help="Store only samples whose name starts with this prefix, e.g. django_http_ (repeatable).",
        )
        parser.add_argument(
            "--batch-size", type=int, default=500, help="Rows per INSERT statement (default 500)."
        )

    def handle(self, *args: Any, **options: Any) -> None:
        """Take the snapshot, or refuse when storage is off."""
        # Refusing (non-zero exit) rather than doing nothing: a cron job that silently stores
        # nothing is found out only when the history is needed.
        if not app_settings.STORE_IN_DB:
            raise CommandError("METRICS_STORE_IN_DB is off: set it to True to store snapshots.")
        if options["batch_size"] < 1:
            raise CommandError(f"--batch-size must be at least 1, not {options['batch_size']}")
        stored = MetricSample.objects.store_exposition(
            exposition().decode(), prefixes=options["prefix"], batch_size=options["batch_size"]
        )
        if options["verbosity"] >= 1:
            self.stdout.write(f"Stored {stored} samples.")
