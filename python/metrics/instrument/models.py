"""Model operations: `django_model_inserts_total`, `_updates_total`, `_deletes_total` by `model`.

Counted from Django's `post_save` (`created` tells an insert from an update) and `post_delete`
signals, for the models listed in `METRICS_MODELS` (`"*"`: every model) and for models using
`metrics.compat.ExportModelOperationsMixin`. The `model` label is the model's
`app_label.ModelName` (the mixin's models: the name given to the mixin).

What the signals see, and so what is counted: `Model.save()` (also through `create()`,
`get_or_create()`, `update_or_create()`, the admin, `loaddata`), `Model.delete()` and
`QuerySet.delete()` (Django sends `post_delete` for every row it deletes, cascades included).
What they do not see, and is not counted here: `bulk_create()`, `bulk_update()`,
`QuerySet.update()` and raw SQL; the statements these send are in `django_db_queries_total`.
A `post_delete` receiver also stops Django's fast path for `QuerySet.delete()` on the counted
models (each row is then collected and signalled), which is why nothing is counted by default.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

from django.db.models.signals import post_delete, post_save

from metrics.collectors import model_deletes_total, model_inserts_total, model_updates_total

logger = logging.getLogger("metrics")

_lock = threading.Lock()
# Model class -> (inserts, updates, deletes) children, for the classes counted under a fixed label.
_watched: dict[type, tuple[Any, Any, Any]] = {}
# The `METRICS_MODELS="*"` children, by model class (filled as models are first saved or deleted).
_all: dict[type, tuple[Any, Any, Any] | None] = {}


def prepare_label(label: str) -> tuple[Any, Any, Any]:
    """Return the three children of `label`, created at once so every series starts at 0."""
    return (
        model_inserts_total.labels(label),
        model_updates_total.labels(label),
        model_deletes_total.labels(label),
    )


def _on_save(sender: Any, created: bool = False, **kwargs: Any) -> None:
    children = _watched.get(sender)
    if children is None:
        return
    try:
        (children[0] if created else children[1]).inc()
    except Exception:
        logger.exception("metrics: could not count a save of %r", sender)


def _on_delete(sender: Any, **kwargs: Any) -> None:
    children = _watched.get(sender)
    if children is None:
        return
    try:
        children[2].inc()
    except Exception:
        logger.exception("metrics: could not count a delete of %r", sender)


def watch(model: type, label: str) -> None:
    """Count saves and deletes of `model` (signals sent with `sender=model`) under `label`."""
    with _lock:
        _watched[model] = prepare_label(label)
    # One receiver function for every model; the sender argument makes Django call it only for
    # this model, so other models' signals do not reach it.
    post_save.connect(_on_save, sender=model, weak=False, dispatch_uid=f"metrics.models.save.{id(model)}")
    post_delete.connect(
        _on_delete, sender=model, weak=False, dispatch_uid=f"metrics.models.delete.{id(model)}"
    )


def _all_children(sender: Any) -> tuple[Any, Any, Any] | None:
    try:
        return _all[sender]
    except KeyError:
        pass
    meta = getattr(sender, "_meta", None)
    # Models with the mixin are counted under its name, by their own receivers.
    children: tuple[Any, Any, Any] | None = None
    if meta is not None and getattr(sender, "_metrics_model_label", None) is None:
        children = prepare_label(meta.label)
    _all[sender] = children
    return children


def _on_save_any(sender: Any, created: bool = False, **kwargs: Any) -> None:
    try:
        children = _all_children(sender)
        if children is not None:
            (children[0] if created else children[1]).inc()
    except Exception:
        logger.exception("metrics: could not count a save of %r", sender)


def _on_delete_any(sender: Any, **kwargs: Any) -> None:
    try:
        children = _all_children(sender)
        if children is not None:
            children[2].inc()
    except Exception:
        logger.exception("metrics: could not count a delete of %r", sender)


def install() -> None:
    """Connect the receivers `METRICS_MODELS` asks for (none by default); safe to call again."""
    from django.apps import apps

    from metrics.conf import ALL_MODELS, app_settings

    wanted = app_settings.MODELS
    if wanted == ALL_MODELS:
        post_save.connect(_on_save_any, weak=False, dispatch_uid="metrics.models.save.all")
        post_delete.connect(_on_delete_any, weak=False, dispatch_uid="metrics.models.delete.all")
        # Series at 0 for every installed model, so rates exist before the first save.
        for model in apps.get_models():
            _all_children(model)
        return
    for label in wanted:
        try:
            model = apps.get_model(label)
        except (LookupError, ValueError):
            continue  # Reported by the system check metrics.E023.
        if getattr(model, "_metrics_model_label", None) is None:
            watch(model, model._meta.label)
