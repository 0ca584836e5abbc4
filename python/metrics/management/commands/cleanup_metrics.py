"""Delete stored metric snapshots older than the retention period, in batches."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import transaction
from django.db.models import Max, Min
from django.utils import timezone

from metrics.conf import app_settings
from metrics.models import MetricSample


class Command(BaseCommand):
    """Delete `MetricSample` rows taken more than `--days` days ago."""

    help = "Delete stored metric samples older than --days (default METRICS_RETENTION_DAYS)."

    def add_arguments(self, parser: CommandParser) -> None:
        """Declare --days, --dry-run and --batch-size."""
        parser.add_argument(
            "--days", type=int, default=None, help="Keep this many days (default METRICS_RETENTION_DAYS)."
        )
        parser.add_argument(
            "--dry-run", action="store_true", help="Print what would be deleted; delete nothing."
        )
        parser.add_argument(
            "--batch-size", type=int, default=1000, help="Rows deleted per statement (default 1000)."
        )

    def handle(self, *args: Any, **options: Any) -> None:
        """Count, then delete (or only report) the old samples."""
        days = options["days"]
        if days is None:
            days = app_settings.RETENTION_DAYS
        if days < 0:
            raise CommandError(f"--days must be 0 or more, not {days}")
        batch_size = options["batch_size"]
        if batch_size < 1:
            raise CommandError(f"--batch-size must be at least 1, not {batch_size}")
        try:
            cutoff = timezone.now() - timedelta(days=days)
        except OverflowError:
            raise CommandError(f"--days {days} reaches before year 1") from None
        old = MetricSample.objects.older_than(cutoff)
        summary = old.aggregate(oldest=Min("taken_at"), newest=Max("taken_at"))
        total = old.count()
        if total == 0:
            self.stdout.write(f"No metric samples older than {days} days ({cutoff.isoformat()}).")
            return
        span = f"taken from {summary['oldest'].isoformat()} to {summary['newest'].isoformat()}"
        if options["dry_run"]:
            self.stdout.write(f"Would delete {total} metric samples older than {days} days, {span}.")
            return
        deleted = self.delete_in_batches(cutoff, batch_size, total)
        self.stdout.write(
            self.style.SUCCESS(f"Deleted {deleted} metric samples older than {days} days, {span}.")
        )

    def delete_in_batches(self, cutoff: datetime, batch_size: int, total: int) -> int:
        """Delete old rows `batch_size` at a time and return how many went.

        Short transactions keep locks brief on a live table. Primary keys are fetched first
        because MariaDB refuses `LIMIT` inside an `IN (subquery)` of a DELETE.
        """
        show_progress = self.stdout.isatty()
        deleted = 0
        while True:
            with transaction.atomic():
                pks = list(
                    MetricSample.objects.older_than(cutoff)
                    .order_by("pk")
                    .values_list("pk", flat=True)[:batch_size]
                )
                if not pks:
                    break
                count, _ = MetricSample.objects.filter(pk__in=pks).delete()
            deleted += count
            if show_progress:
                self.stdout.write(f"\rDeleted {deleted}/{total} samples", ending="")
                self.stdout.flush()
        if show_progress:
            self.stdout.write("")
        return deleted
