"""Snapshots of the exposition stored in the database (`METRICS_STORE_IN_DB`).

A snapshot is every sample of one exposition, written as one row per sample with the same
`taken_at`. It is meant for debugging and for small sites without a Prometheus server: the
admin lists the samples, and `cleanup_metrics` drops old ones. Prometheus remains the place for
dashboards and alerts.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator
from datetime import datetime

from django.db import models, transaction
from django.utils import timezone
from prometheus_client.parser import text_string_to_metric_families

# Families whose samples come with a `<name>_created` gauge in text format 0.0.4.
_CREATED_PARENTS = {"counter", "histogram", "summary", "gaugehistogram"}


def parse_exposition(text: str, prefixes: Iterable[str] = ()) -> Iterator[tuple[str, dict[str, str], float]]:
    """Yield `(sample name, labels, value)` for every sample of a Prometheus text exposition.

    `<name>_created` gauges are left out: they repeat the creation time of each counter, histogram
    and summary child, which doubles the rows and says nothing about the application. With
    `prefixes`, only samples whose name starts with one of them are kept.
    """
    wanted = tuple(prefixes)
    families = list(text_string_to_metric_families(text))
    parents = {family.name for family in families if family.type in _CREATED_PARENTS}
    for family in families:
        if family.type == "gauge" and family.name.endswith("_created") and family.name[:-8] in parents:
            continue
        for sample in family.samples:
            if wanted and not sample.name.startswith(wanted):
                continue
            yield sample.name, dict(sample.labels), float(sample.value)


class MetricSampleQuerySet(models.QuerySet["MetricSample"]):
    """Queries over stored samples."""

    def older_than(self, cutoff: datetime) -> MetricSampleQuerySet:
        """Return the samples taken strictly before `cutoff`."""
        # django-stubs' plugin types QuerySet.filter() as returning Any here (its stub says Self).
        return self.filter(taken_at__lt=cutoff)  # type: ignore[no-any-return]

    def series(self, name: str) -> MetricSampleQuerySet:
        """Return the history of one sample name, oldest first (served by the (name, taken_at) index)."""
        return self.filter(name=name).order_by("taken_at", "pk")  # type: ignore[no-any-return]  # as above

    def store_exposition(
        self,
        text: str,
        *,
        taken_at: datetime | None = None,
        prefixes: Iterable[str] = (),
        batch_size: int = 500,
    ) -> int:
        """Store every sample of `text` as one snapshot and return the number of rows written.

        NaN and infinite values are stored as NULL: MariaDB cannot store them and SQLite turns NaN
        into NULL anyway, so NULL is the one portable spelling of "not a finite number".
        """
        when = taken_at or timezone.now()
        rows = [
            MetricSample(
                taken_at=when,
                name=name,
                labels=labels,
                value=value if math.isfinite(value) else None,
            )
            for name, labels, value in parse_exposition(text, prefixes)
        ]
        with transaction.atomic(using=self.db):
            MetricSample.objects.using(self.db).bulk_create(rows, batch_size=batch_size)
        return len(rows)


class MetricSample(models.Model):
    """One sample of one snapshot: a name, its labels and its value at `taken_at`."""

    # Explicit, so the migration does not depend on the project's DEFAULT_AUTO_FIELD.
    id = models.BigAutoField(primary_key=True)
    taken_at = models.DateTimeField(db_index=True, help_text="When the snapshot was taken.")
    name = models.CharField(max_length=200, help_text="Sample name, e.g. django_http_requests_total.")
    labels = models.JSONField(default=dict, blank=True, help_text="Label names and values.")
    value = models.FloatField(null=True, help_text="The value; empty when it was NaN or infinite.")

    objects = MetricSampleQuerySet.as_manager()

    class Meta:
        verbose_name = "metric sample"
        verbose_name_plural = "metric samples"
        ordering = ["-taken_at", "name", "pk"]
        indexes = [models.Index(fields=["name", "taken_at"], name="metrics_sample_name_taken")]

    def __str__(self) -> str:
        """Return the sample as it reads in the exposition, with its time."""
        labels = ",".join(f'{key}="{value}"' for key, value in sorted(self.labels.items()))
        body = f"{self.name}{{{labels}}}" if labels else self.name
        return f"{body} {self.value} @ {self.taken_at.isoformat()}"
