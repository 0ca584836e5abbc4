"""`metrics.instrument.install()`: the hooks wired at start-up, once, and only while metrics are on."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent.parent

# A fresh process: the test process wired everything when its app registry became ready, and
# nothing of it can be unwired. The app's ready() calls install() with METRICS_ENABLED=false.
LATE_INSTALL = """
import json, os
import django
django.setup()
from django.contrib.auth.signals import user_logged_in
from django.core.cache import caches
from django.db.backends.base.base import BaseDatabaseWrapper
from django.db.backends.signals import connection_created
from django.db.models.signals import post_save
from metrics import core
import metrics.instrument as instrument
from metrics.conf import app_settings
from metrics.instrument import cache, db, system, users

def wired():
    return {
        "installed": instrument._installed,
        "db connect": BaseDatabaseWrapper.connect is db._counted_connect,
        "db signal": any(r[0][0] == "metrics.instrument.db" for r in connection_created.receivers),
        "caches": caches.__dict__.get("create_connection") is cache._create_connection,
        "process hook": core._process_hooks.count(system.collect_process),
        "logins": sum(r[0][0] == "metrics.instrument.users.logged_in" for r in user_logged_in.receivers),
        "saves": len(post_save.receivers),
    }

report = {"disabled": wired()}
os.environ["METRICS_ENABLED"] = "true"
app_settings.clear_cache()
instrument.install()
report["enabled"] = wired()
instrument._installed = False  # as if install() ran again from another entry point
instrument.install()
report["again"] = wired()
print(json.dumps(report))
"""


def test_install_wires_nothing_while_disabled_and_everything_once_later() -> None:
    """install() with METRICS_ENABLED false wires nothing; a later call wires each hook once."""
    env = {
        **os.environ,
        "METRICS_ENABLED": "false",
        "DJANGO_SETTINGS_MODULE": "tests.settings",
        "PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "python")]),
    }
    out = subprocess.run(
        [sys.executable, "-c", LATE_INSTALL],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    report = json.loads(out.stdout)
    saves = report["disabled"]["saves"]
    assert report["disabled"] == {
        "installed": False,
        "db connect": False,
        "db signal": False,
        "caches": False,
        "process hook": 0,
        "logins": 0,
        "saves": saves,
    }
    # The user model's registration receiver is the one post_save receiver install() adds here.
    wired = {
        "installed": True,
        "db connect": True,
        "db signal": True,
        "caches": True,
        "process hook": 1,
        "logins": 1,
        "saves": saves + 1,
    }
    assert report["enabled"] == wired
    # Every part is idempotent: wiring again adds no second receiver, patch or hook.
    assert report["again"] == wired
