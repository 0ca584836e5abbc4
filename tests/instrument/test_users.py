"""User and business metrics: Django's auth signals, the active-user gauge, the spec's helpers."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from datetime import timedelta

import pytest
from django.contrib.auth.models import User
from django.test import Client, override_settings
from django.utils import timezone
from prometheus_client.parser import text_string_to_metric_families

from metrics import generate_latest
from metrics.collectors import (
    active_users_total,
    labels_folded_total,
    reset_label_bounds,
    user_activity_total,
    user_login_failures_total,
    user_logins_total,
    user_registrations_total,
)
from metrics.instrument.users import collect_active_users, login_method

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def _fresh_label_bounds() -> Iterator[None]:
    reset_label_bounds()
    yield
    reset_label_bounds()


def scrape() -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Return every sample `/metrics/` serves, read with prometheus_client's parser."""
    response = Client().get("/metrics/", headers={"X-Metrics-Token": "test-token"})
    assert response.status_code == 200
    out = {}
    for family in text_string_to_metric_families(response.content.decode()):
        for sample in family.samples:
            out[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return out


def test_spec_business_example_runs_verbatim_and_shows_on_metrics() -> None:
    """The spec's Custom Metrics example runs as written and its values appear on /metrics/."""
    before = scrape()

    # --- verbatim from the spec ---
    from metrics.collectors import (
        custom_metric_counter,
        custom_metric_gauge,
        track_custom_metric,
        track_user_activity,
    )

    # Track user activity
    track_user_activity("registration")
    track_user_activity("login", method="oauth")

    # Track custom business metrics
    track_custom_metric("payment", "processed", value=1, gauge_value=99.99)

    # Direct metric manipulation
    custom_metric_counter.labels(type="order", action="created").inc()
    custom_metric_gauge.labels(type="inventory").set(150)
    # --- end of the spec's example ---

    after = scrape()

    def grew(name: str, **labels: str) -> float:
        key = (name, tuple(sorted(labels.items())))
        return after[key] - before.get(key, 0.0)

    assert grew("django_user_registrations_total") == 1
    assert grew("django_user_logins_total", method="oauth") == 1
    assert grew("django_custom_metric_total", type="payment", action="processed") == 1
    assert grew("django_custom_metric_total", type="order", action="created") == 1
    assert after[("django_custom_metric_current", (("type", "payment"),))] == 99.99
    assert after[("django_custom_metric_current", (("type", "inventory"),))] == 150


def test_registration_counted_once_per_new_user() -> None:
    """Saving a new user counts one registration; saving it again counts none."""
    before = user_registrations_total._get()
    user = User.objects.create_user("reg", password="pw")
    assert user_registrations_total._get() == before + 1
    user.first_name = "R"
    user.save()
    assert user_registrations_total._get() == before + 1


def test_login_and_failed_login_from_django_auth() -> None:
    """Client.login() counts a login with method `model`; a wrong password counts a failure."""
    User.objects.create_user("alice", password="right")
    logins = user_logins_total.labels("model")._get()
    failures = user_login_failures_total._get()
    client = Client()
    assert client.login(username="alice", password="right")
    assert not client.login(username="alice", password="wrong")
    assert user_logins_total.labels("model")._get() == logins + 1
    assert user_login_failures_total._get() == failures + 1


@override_settings(AUTHENTICATION_BACKENDS=["django.contrib.auth.backends.AllowAllUsersModelBackend"])
def test_login_method_comes_from_the_backend_used() -> None:
    """The method label is the backend class name without `Backend`, lower-cased."""
    User.objects.create_user("bob", password="pw")
    before = user_logins_total.labels("allowallusersmodel")._get()
    assert Client().login(username="bob", password="pw")
    assert user_logins_total.labels("allowallusersmodel")._get() == before + 1


@pytest.mark.parametrize(
    ("path", "method"),
    [
        ("django.contrib.auth.backends.ModelBackend", "model"),
        ("django.contrib.auth.backends.RemoteUserBackend", "remoteuser"),
        ("social_core.backends.google.GoogleOAuth2", "googleoauth2"),
        ("myapp.auth.Backend", "backend"),
        ("", "unknown"),
        (None, "unknown"),
    ],
)
def test_login_method(path: str | None, method: str) -> None:
    """Backend paths map to short, lower-case method labels."""
    assert login_method(path) == method


def test_active_users_are_those_logged_in_within_the_window() -> None:
    """The gauge counts users whose last_login is within METRICS_ACTIVE_USER_WINDOW seconds."""
    now = timezone.now()
    for name, ago in (("recent1", 10), ("recent2", 200), ("old", 1000), ("never", None)):
        user = User.objects.create_user(name)
        user.last_login = None if ago is None else now - timedelta(seconds=ago)
        user.save()
    collect_active_users(force=True)
    assert active_users_total._get() == 2
    with override_settings(METRICS_ACTIVE_USER_WINDOW=60):
        collect_active_users(force=True)
        assert active_users_total._get() == 1
    with override_settings(METRICS_ACTIVE_USER_WINDOW=3600):
        collect_active_users(force=True)
        assert active_users_total._get() == 3


def test_a_login_makes_a_user_active() -> None:
    """Logging in through Django sets last_login, so the user counts as active at the next scrape."""
    User.objects.create_user("carol", password="pw")
    collect_active_users(force=True)
    before = active_users_total._get()
    assert Client().login(username="carol", password="pw")
    collect_active_users(force=True)
    assert active_users_total._get() == before + 1


def test_active_users_query_runs_at_most_every_few_seconds() -> None:
    """A burst of scrapes costs one query; requests cost none."""
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    collect_active_users(force=True)
    with CaptureQueriesContext(connection) as captured:
        for _ in range(5):
            collect_active_users()
    assert len(captured.captured_queries) == 0
    with CaptureQueriesContext(connection) as captured:
        collect_active_users(force=True)
    assert len(captured.captured_queries) == 1


@override_settings(METRICS_ACTIVE_USER_WINDOW=0)
def test_window_zero_turns_the_query_off() -> None:
    """METRICS_ACTIVE_USER_WINDOW=0 runs no query."""
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    with CaptureQueriesContext(connection) as captured:
        collect_active_users(force=True)
    assert len(captured.captured_queries) == 0


def test_other_activities_count_by_name() -> None:
    """An activity other than registration/login/login_failed counts in django_user_activity_total."""
    from metrics.collectors import track_user_activity

    before = user_activity_total.labels("password_reset")._get()
    track_user_activity("password_reset")
    assert user_activity_total.labels("password_reset")._get() == before + 1
    failures = user_login_failures_total._get()
    track_user_activity("login_failed")
    assert user_login_failures_total._get() == failures + 1


def test_unknown_label_names_raise() -> None:
    """A label the metric does not have is a programming error: ValueError, nothing counted."""
    from metrics.collectors import track_user_activity

    before = user_registrations_total._get()
    with pytest.raises(ValueError, match="method"):
        track_user_activity("registration", method="x")
    with pytest.raises(ValueError, match="plan"):
        track_user_activity("login", plan="pro")
    assert user_registrations_total._get() == before


def test_invalid_label_values_fold_into_other(caplog: pytest.LogCaptureFixture) -> None:
    """Values outside [A-Za-z0-9_.:-]{1,64} are counted under `other`, with one warning."""
    from metrics.collectors import custom_metric_counter, track_custom_metric

    before = custom_metric_counter.labels("other", "created")._get()
    folded = labels_folded_total.labels("django_custom_metric_total", "type")._get()
    with caplog.at_level(logging.WARNING, logger="metrics"):
        track_custom_metric("order id 17", "created")
        track_custom_metric("x" * 65, "created")
        track_custom_metric("", "created")
    assert custom_metric_counter.labels("other", "created")._get() == before + 3
    assert labels_folded_total.labels("django_custom_metric_total", "type")._get() == folded + 3
    assert len([r for r in caplog.records if "folded" in r.getMessage()]) == 1
    assert b'type="order id 17"' not in generate_latest()


@override_settings(METRICS_MAX_LABEL_VALUES=3)
def test_label_values_beyond_the_limit_fold_into_other(caplog: pytest.LogCaptureFixture) -> None:
    """Past METRICS_MAX_LABEL_VALUES distinct values of a label, new values count under `other`."""
    from metrics.collectors import custom_metric_counter, track_custom_metric

    before = custom_metric_counter.labels("other", "sold")._get()
    sku0 = custom_metric_counter.labels("sku0", "sold")._get()
    with caplog.at_level(logging.WARNING, logger="metrics"):
        for i in range(10):
            track_custom_metric(f"sku{i}", "sold")
        track_custom_metric("sku0", "sold")  # a value seen before the limit keeps its series
    assert custom_metric_counter.labels("sku0", "sold")._get() == sku0 + 2
    assert custom_metric_counter.labels("other", "sold")._get() == before + 7
    assert len([r for r in caplog.records if "METRICS_MAX_LABEL_VALUES" in r.getMessage()]) == 1
    exposed = generate_latest().decode()
    assert 'type="sku2"' in exposed
    assert 'type="sku3"' not in exposed


def test_track_custom_metric_without_gauge_leaves_the_gauge_alone() -> None:
    """gauge_value=None counts the event and sets no gauge."""
    from metrics.collectors import custom_metric_gauge, track_custom_metric

    custom_metric_gauge.labels("refund").set(5)
    track_custom_metric("refund", "issued", value=2)
    assert custom_metric_gauge.labels("refund")._get() == 5
    track_custom_metric("refund", "issued", gauge_value=7)
    assert custom_metric_gauge.labels("refund")._get() == 7


def test_collecting_inside_an_event_loop_skips_the_query() -> None:
    """Collected from async code, the active-user gauge keeps its value instead of querying."""
    import asyncio

    from metrics.instrument import users

    active_users_total.set(42)

    async def scrape_in_loop() -> None:
        collect_active_users(force=True)

    asyncio.run(scrape_in_loop())
    assert active_users_total._get() == 42
    assert users._next_query_at == 0.0  # the next collection from sync code queries


@pytest.mark.django_db(transaction=True)
def test_scrape_through_the_asgi_handler_refreshes_active_users() -> None:
    """/metrics/ served by Django's ASGI handler runs the active-user query (in the view's thread)."""
    from asgiref.sync import async_to_sync
    from django.test import AsyncClient

    user = User.objects.create_user("dora")
    user.last_login = timezone.now()
    user.save()
    active_users_total.set(-1)
    from metrics.instrument import users

    users._next_query_at = 0.0

    async def get() -> int:
        response = await AsyncClient().get("/metrics/", headers={"X-Metrics-Token": "test-token"})
        return int(response.status_code)

    assert async_to_sync(get)() == 200
    assert active_users_total._get() == 1
