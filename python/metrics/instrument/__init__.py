"""Event sources: database, cache, process and user metrics, wired by `install()`.

`install()` is called from the app's `ready()`. It connects signal receivers, wraps Django's
connection and cache factories and registers collect hooks; it starts no thread and no server,
opens no connection and is safe to call more than once.
"""

from __future__ import annotations

import threading

__all__ = ["install"]

_lock = threading.Lock()
_installed = False


def install() -> None:
    """Wire the database, cache, system and user instrumentation (idempotent, cheap)."""
    global _installed
    if _installed:
        return
    with _lock:
        if _installed:
            return
        from metrics.instrument import cache, db, system, users

        db.install()
        cache.install()
        system.install()
        users.install()
        _installed = True
