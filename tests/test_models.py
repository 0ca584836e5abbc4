"""MetricSample storage, the exposition parser behind it, and its read-only admin."""

from __future__ import annotations

import math
from datetime import timedelta

import pytest
from django.contrib.auth import get_user_model
from django.test import Client
from django.utils import timezone

from metrics.models import MetricSample, parse_exposition

EXPOSITION = """\
# HELP jobs_total Jobs done.
# TYPE jobs_total counter
jobs_total{queue="a"} 3.0
# HELP jobs_created Jobs done.
# TYPE jobs_created gauge
jobs_created{queue="a"} 1.7e9
# HELP lag_seconds Lag.
# TYPE lag_seconds histogram
lag_seconds_bucket{le="1.0"} 1.0
lag_seconds_bucket{le="+Inf"} 2.0
lag_seconds_count 2.0
lag_seconds_sum 3.5
# HELP lag_seconds_created Lag.
# TYPE lag_seconds_created gauge
lag_seconds_created 1.7e9
# HELP door_created When the door was built (a user gauge, not a creation series).
# TYPE door_created gauge
door_created 1.6e9
# HELP odd Odd values.
# TYPE odd gauge
odd{kind="nan"} NaN
odd{kind="inf"} +Inf
odd{kind="ninf"} -Inf
"""


def test_parse_drops_created_series_of_counters_and_histograms_only() -> None:
    """`_created` gauges of counters and histograms are dropped; a user gauge named `*_created` stays."""
    names = [name for name, _, _ in parse_exposition(EXPOSITION)]
    assert names == [
        "jobs_total",
        "lag_seconds_bucket",
        "lag_seconds_bucket",
        "lag_seconds_count",
        "lag_seconds_sum",
        "door_created",
        "odd",
        "odd",
        "odd",
    ]


def test_parse_prefixes() -> None:
    """Prefixes select samples by the start of their name."""
    parsed = list(parse_exposition(EXPOSITION, ["lag_seconds_c", "jobs"]))
    assert parsed == [("jobs_total", {"queue": "a"}, 3.0), ("lag_seconds_count", {}, 2.0)]


@pytest.mark.django_db
def test_store_exposition_round_trip() -> None:
    """Stored samples read back with their labels and values; NaN and infinities become NULL."""
    taken = timezone.now().replace(microsecond=0)
    stored = MetricSample.objects.store_exposition(EXPOSITION, taken_at=taken, batch_size=2)
    assert stored == 9
    rows = [
        (row.name, row.labels, row.value)
        for row in MetricSample.objects.filter(taken_at=taken).order_by("pk")
    ]
    assert rows == [
        ("jobs_total", {"queue": "a"}, 3.0),
        ("lag_seconds_bucket", {"le": "1.0"}, 1.0),
        ("lag_seconds_bucket", {"le": "+Inf"}, 2.0),
        ("lag_seconds_count", {}, 2.0),
        ("lag_seconds_sum", {}, 3.5),
        ("door_created", {}, 1.6e9),
        ("odd", {"kind": "nan"}, None),
        ("odd", {"kind": "inf"}, None),
        ("odd", {"kind": "ninf"}, None),
    ]
    # JSON labels are queryable on every database.
    assert MetricSample.objects.get(name="lag_seconds_bucket", labels={"le": "+Inf"}).value == 2.0


@pytest.mark.django_db
def test_series_and_older_than() -> None:
    """series() returns one name's history oldest first; older_than() is strict."""
    now = timezone.now()
    for age in (3, 1, 2):
        MetricSample.objects.create(taken_at=now - timedelta(hours=age), name="x_total", labels={}, value=age)
    MetricSample.objects.create(taken_at=now, name="y", labels={}, value=math.pi)
    assert [row.value for row in MetricSample.objects.series("x_total")] == [3.0, 2.0, 1.0]
    assert MetricSample.objects.older_than(now - timedelta(hours=2)).count() == 1
    assert MetricSample.objects.older_than(now).count() == 3


def test_str_reads_like_the_exposition() -> None:
    """str() shows the sample as exposition text with its time."""
    when = timezone.now()
    sample = MetricSample(taken_at=when, name="jobs_total", labels={"queue": "a", "b": "2"}, value=3.0)
    assert str(sample) == f'jobs_total{{b="2",queue="a"}} 3.0 @ {when.isoformat()}'
    assert str(MetricSample(taken_at=when, name="up", labels={}, value=1.0)) == f"up 1.0 @ {when.isoformat()}"


@pytest.mark.django_db
def test_admin_is_read_only_and_filterable(client: Client) -> None:
    """The admin lists and filters samples, and offers no add, change or delete."""
    user = get_user_model().objects.create_superuser("admin", "admin@example.com", "pw")
    client.force_login(user)
    MetricSample.objects.store_exposition(EXPOSITION)
    listing = client.get("/admin/metrics/metricsample/")
    assert listing.status_code == 200
    body = listing.content.decode()
    assert "lag_seconds_bucket" in body
    assert "{&quot;queue&quot;:&quot;a&quot;}" in body
    assert len(listing.context["cl"].result_list) == 9
    filtered = client.get("/admin/metrics/metricsample/", {"name": "jobs_total"})
    assert filtered.status_code == 200
    assert [row.name for row in filtered.context["cl"].result_list] == ["jobs_total"]
    MetricSample.objects.create(
        taken_at=timezone.now() - timedelta(days=30), name="old", labels={}, value=1.0
    )
    since = (timezone.now() - timedelta(days=7)).isoformat()
    recent = client.get("/admin/metrics/metricsample/", {"taken_at__gte": since})
    assert recent.status_code == 200
    assert "old" not in {row.name for row in recent.context["cl"].result_list}
    assert len(recent.context["cl"].result_list) == 9
    assert client.get("/admin/metrics/metricsample/add/").status_code == 403
    pk = MetricSample.objects.get(name="jobs_total").pk
    detail = client.get(f"/admin/metrics/metricsample/{pk}/change/")
    assert detail.status_code == 200
    assert 'name="_save"' not in detail.content.decode()
    assert client.post(f"/admin/metrics/metricsample/{pk}/delete/").status_code == 403
    assert MetricSample.objects.filter(pk=pk).exists()
