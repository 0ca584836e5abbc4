"""The Celery worker's metrics port: the bootstep and its options (metrics.celery_worker).

The port serving a real prefork worker's counts is tested end to end in tests/e2e/test_celery.py.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from celery import Celery
from django.test import override_settings

from metrics import celery_worker, core

ROOT = Path(__file__).resolve().parent.parent

# Run in a fresh process: a bootstep with its port on gives the process a private shared store,
# which cannot be undone in the test process.
PORT_ON = """
import json, os
import django
django.setup()
from celery import Celery
from metrics import celery_worker, core
app = Celery("port-on", broker="memory://", set_as_current=False)
celery_worker.add_worker_options(app)
(step_class,) = [s for s in app.steps["worker"] if s.name == "metrics.celery_worker.MetricsServerStep"]
before = core.multiprocess_dir()
step = step_class(parent=object(), metrics_port=9999, metrics_address="127.0.0.1")
store = core.multiprocess_dir()
print(json.dumps({
    "before": before,
    "included": step.include_if(object()),
    "bound": [step.address, step.port],
    "store": os.path.basename(store) if store else None,
    "store_is_dir": bool(store) and os.path.isdir(store),
}))
"""


def test_no_private_store_needed_when_the_port_is_off() -> None:
    """Without a metrics port the bootstep is left out: no server, no private store."""
    from celery import bootsteps

    step_class = celery_worker.metrics_step()
    assert issubclass(step_class, bootsteps.StartStopStep)
    store = core.multiprocess_dir()
    with override_settings(METRICS_CELERY_WORKER_PORT=0):
        step = step_class(parent=object())
        assert step.include_if(object()) is False
    assert core.multiprocess_dir() == store
    assert celery_worker._server is None


def test_worker_options_and_bootstep_are_added() -> None:
    """`celery worker` gains --metrics-port and --metrics-address, and the bootstep reading them."""
    app = Celery("options", broker="memory://", set_as_current=False)
    celery_worker.add_worker_options(app)
    options = {name for option in app.user_options["worker"] for name in option.opts}
    assert {"--metrics-port", "--metrics-address"} <= options
    steps = [step for step in app.steps["worker"] if step.name == "metrics.celery_worker.MetricsServerStep"]
    assert len(steps) == 1
    with override_settings(METRICS_CELERY_WORKER_PORT=9999, METRICS_CELERY_WORKER_ADDRESS="127.0.0.1"):
        step = steps[0](parent=object(), metrics_port=0)
        # The option wins over the setting: 0 turns the port off.
        assert step.include_if(object()) is False
        with override_settings(METRICS_ENABLED=False):
            step = steps[0](parent=object())
            assert (step.port, step.address) == (9999, "127.0.0.1")
            assert step.include_if(object()) is False


def test_bootstep_is_included_with_a_port_and_gets_a_private_store() -> None:
    """With a port and metrics on, the bootstep runs, on a private store when none is configured."""
    env = {
        **{k: v for k, v in os.environ.items() if k != "PROMETHEUS_MULTIPROC_DIR"},
        "DJANGO_SETTINGS_MODULE": "tests.settings",
        "PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "python")]),
    }
    out = subprocess.run(
        [sys.executable, "-c", PORT_ON],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    report = json.loads(out.stdout)
    assert report["before"] is None
    assert report["included"] is True
    assert report["bound"] == ["127.0.0.1", 9999]
    assert report["store"].startswith("metrics-celery-")
    assert report["store_is_dir"] is True
