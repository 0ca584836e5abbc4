"""Model operations are counted from Django's signals, for METRICS_MODELS and the mixin."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from django.contrib.auth.models import Group, Permission
from django.db import models
from django.db.models import Value
from django.db.models.functions import Concat
from django.db.models.signals import post_delete, post_save
from django.test import override_settings
from django.test.utils import isolate_apps

from metrics.compat import ExportModelOperationsMixin
from metrics.instrument import models as model_events

INSERTS = "django_model_inserts_total"
UPDATES = "django_model_updates_total"
DELETES = "django_model_deletes_total"


@pytest.fixture
def disconnect() -> Iterator[None]:
    """Remove every receiver the test connected, so other tests run without them."""
    yield
    post_save.disconnect(dispatch_uid="metrics.models.save.all")
    post_delete.disconnect(dispatch_uid="metrics.models.delete.all")
    for model in list(model_events._watched):
        post_save.disconnect(sender=model, dispatch_uid=f"metrics.models.save.{id(model)}")
        post_delete.disconnect(sender=model, dispatch_uid=f"metrics.models.delete.{id(model)}")
        del model_events._watched[model]
    model_events._all.clear()


@pytest.mark.django_db
def test_listed_model_counts_insert_update_delete(disconnect, sample, sample_or_zero) -> None:
    """Created, changed and deleted instances count once each, by `app_label.Model`."""
    with override_settings(METRICS_MODELS=["auth.Group"]):
        model_events.install()
    before = [sample_or_zero(name, model="auth.Group") for name in (INSERTS, UPDATES, DELETES)]
    group = Group.objects.create(name="editors")
    group.name = "writers"
    group.save()
    group.delete()
    after = [sample(name, model="auth.Group") for name in (INSERTS, UPDATES, DELETES)]
    assert after == [b + 1 for b in before]


@pytest.mark.django_db
def test_unlisted_models_are_not_counted(disconnect, sample) -> None:
    """Only the listed models are watched: a Permission save adds nothing."""
    with override_settings(METRICS_MODELS=["auth.Group"]):
        model_events.install()
    # Absent, or at 0 when a `*` test created every model's series earlier in the run.
    before = sample(UPDATES, model="auth.Permission")
    Permission.objects.filter(codename="add_group").update(name="Can add group")  # Not a signal.
    permission = Permission.objects.get(codename="add_group")
    permission.save()
    assert sample(UPDATES, model="auth.Permission") == before


@pytest.mark.django_db
def test_every_model_with_star_and_what_signals_miss(disconnect, sample) -> None:
    """`*` counts every model; QuerySet.delete() is counted per row; bulk_create and update() are not."""
    with override_settings(METRICS_MODELS="*"):
        model_events.install()
    # Series exist at 0 for every installed model before any save.
    assert model_events._all[Permission] is not None
    assert sample(INSERTS, model="auth.Permission") is not None
    inserts = sample(INSERTS, model="auth.Group")
    updates = sample(UPDATES, model="auth.Group")
    deletes = sample(DELETES, model="auth.Group")
    assert None not in (inserts, updates, deletes)
    Group.objects.bulk_create([Group(name="a"), Group(name="b")])
    Group.objects.filter(name__in=["a", "b"]).update(name=Concat("name", Value("-c")))
    assert sample(INSERTS, model="auth.Group") == inserts
    assert sample(UPDATES, model="auth.Group") == updates
    Group.objects.filter(name__endswith="-c").delete()
    assert sample(DELETES, model="auth.Group") == deletes + 2


def test_no_receiver_by_default(disconnect) -> None:
    """With METRICS_MODELS unset, no receiver is connected (saves and fast deletes cost nothing)."""
    with override_settings(METRICS_MODELS=None):
        model_events.install()
    assert not post_save.has_listeners(Group)
    assert not post_delete.has_listeners(Group)


@isolate_apps("metrics")
def test_mixin_counts_under_its_name(disconnect, sample) -> None:
    """django-prometheus's mixin signature: series start at 0, then count from the model's signals."""

    class Dog(ExportModelOperationsMixin("dog"), models.Model):  # type: ignore[misc]
        class Meta:
            app_label = "metrics"

        def __str__(self) -> str:
            return str(self.pk)

    assert sample(INSERTS, model="dog") == 0
    dog = Dog(pk=1)
    post_save.send(sender=Dog, instance=dog, created=True)
    post_save.send(sender=Dog, instance=dog, created=False)
    post_delete.send(sender=Dog, instance=dog)
    assert [sample(name, model="dog") for name in (INSERTS, UPDATES, DELETES)] == [1, 1, 1]


@isolate_apps("metrics")
def test_mixin_model_is_not_counted_twice_with_star(disconnect, sample) -> None:
    """A model with the mixin counts under the mixin's name only, also when METRICS_MODELS is `*`."""

    class Cat(ExportModelOperationsMixin("cat"), models.Model):  # type: ignore[misc]
        class Meta:
            app_label = "metrics"

        def __str__(self) -> str:
            return str(self.pk)

    with override_settings(METRICS_MODELS="*"):
        model_events.install()
    post_save.send(sender=Cat, instance=Cat(pk=1), created=True)
    assert sample(INSERTS, model="cat") == 1
    assert sample(INSERTS, model="metrics.Cat") is None
