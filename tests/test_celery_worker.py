"""The Celery worker's metrics port: the bootstep and its options (metrics.celery_worker).

The port serving a real prefork worker's counts is tested end to end in tests/e2e/test_celery.py.
"""

from __future__ import annotations

from celery import Celery
from django.test import override_settings

from metrics import celery_worker


def test_no_private_store_needed_when_the_port_is_off() -> None:
    """Without a metrics port the bootstep is left out: no server, no private store."""
    from celery import bootsteps

    step_class = celery_worker.metrics_step()
    assert issubclass(step_class, bootsteps.StartStopStep)
    with override_settings(METRICS_CELERY_WORKER_PORT=0):
        step = step_class(parent=object())
        assert step.include_if(object()) is False


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
