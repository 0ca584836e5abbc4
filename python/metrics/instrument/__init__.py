"""Event sources: database, cache, process, user, model and Celery metrics, wired by `install()`.

`install()` is called from the app's `ready()`. It connects signal receivers, wraps Django's
connection and cache factories and registers collect hooks; it starts no thread and no server,
opens no connection and is safe to call more than once. Each part is described in its module and
in `docs/metrics.md`.
"""

from __future__ import annotations

import threading

__all__ = ["install"]

_lock = threading.Lock()
_installed = False


def install() -> None:
    """Wire the database, cache, system and user instrumentation (idempotent, cheap).

    With `METRICS_ENABLED` false at that moment nothing is wired, so nothing costs anything;
    a later call with it true wires everything then.
    """
    global _installed
    if _installed:
        return
    from metrics.conf import app_settings

    if not app_settings.ENABLED:
        return
    with _lock:
        if _installed:
            return
        from metrics import compat
        from metrics.instrument import cache, celery, db, models, system, users

        if compat.enabled():
            # Before the hooks below, which decide once whether to feed these families.
            compat.families()
        db.install()
        cache.install()
        system.install()
        users.install()
        models.install()
        # Does nothing without Celery; with it, task metrics for the site's current Celery app.
        celery.install()
        _installed = True
