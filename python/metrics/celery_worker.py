"""The Celery worker's own metrics port: a worker bootstep and its command-line options.

`metrics.instrument.celery.install(app)` adds both to an app: `celery worker --metrics-port N
--metrics-address A` (defaults `METRICS_CELERY_WORKER_PORT`, off, and
`METRICS_CELERY_WORKER_ADDRESS`, `0.0.0.0`) makes the worker's main process serve the merged
metrics of its pool with `metrics.worker_http.serve`, once the pool has started. Celery is
imported only when the bootstep is built: it is an optional dependency.
"""

from __future__ import annotations

import atexit
import logging
import shutil
import tempfile
from typing import TYPE_CHECKING, Any

from metrics import core
from metrics.conf import app_settings

if TYPE_CHECKING:
    # Imported when the bootstep starts: a process that never serves the port never loads it.
    from metrics.worker_http import MetricsServer

logger = logging.getLogger("metrics")

# The metrics server of this process (the worker's main process), once the bootstep started it.
_server: MetricsServer | None = None


def close_inherited_server() -> None:
    """Close the metrics server's sockets in a pool process forked after it started."""
    if _server is not None:
        _server.close_inherited()


def metrics_step() -> type:
    """Return the worker bootstep serving the metrics port (built lazily: Celery is optional)."""
    from celery import bootsteps

    # Celery ships no type hints: its base class is Any to mypy.
    class MetricsServerStep(bootsteps.StartStopStep):  # type: ignore[misc]
        """Serve the worker's merged metrics from its main process, after the pool started."""

        name = "metrics.celery_worker.MetricsServerStep"
        requires = ("celery.worker.components:Pool",)

        def __init__(
            self,
            parent: Any,
            metrics_port: int | None = None,
            metrics_address: str | None = None,
            **kwargs: Any,
        ) -> None:
            super().__init__(parent, **kwargs)
            self.port = app_settings.CELERY_WORKER_PORT if metrics_port is None else metrics_port
            self.address = metrics_address or app_settings.CELERY_WORKER_ADDRESS
            self.enabled = bool(self.port) and app_settings.ENABLED
            if self.enabled and core.multiprocess_dir() is None:
                # Without a shared store every prefork child would keep its counts to itself and
                # this port would show only the main process: give the worker a private store
                # before the pool forks.
                path = tempfile.mkdtemp(prefix="metrics-celery-")
                core.enable_multiprocess(path)
                atexit.register(shutil.rmtree, path, True)
                logger.info("metrics: PROMETHEUS_MULTIPROC_DIR unset; the worker's store is %s", path)

        def include_if(self, parent: Any) -> bool:
            return self.enabled

        def create(self, parent: Any) -> Any:
            return self

        def start(self, parent: Any) -> None:
            global _server
            from metrics.worker_http import serve

            try:
                _server = serve(self.address, self.port)
            except OSError as exc:
                # The worker keeps working; Prometheus reports the target down (alert TargetDown).
                logger.error("metrics: cannot serve on %s:%s: %s", self.address, self.port, exc)

        def stop(self, parent: Any) -> None:
            global _server
            if _server is not None:
                _server.stop()
                _server = None

        shutdown = stop

        def terminate(self, parent: Any) -> None:
            self.stop(parent)

    return MetricsServerStep


def add_worker_options(app: Any) -> None:
    """Add `--metrics-port` and `--metrics-address` to `celery worker`, and the bootstep using them."""
    from click import Option

    app.user_options["worker"].add(
        Option(
            ["--metrics-port"],
            type=int,
            default=None,
            help="Serve the worker's metrics on this port (0: off; default METRICS_CELERY_WORKER_PORT).",
        )
    )
    app.user_options["worker"].add(
        Option(
            ["--metrics-address"],
            default=None,
            help="Address of the metrics port (default METRICS_CELERY_WORKER_ADDRESS, 0.0.0.0).",
        )
    )
    app.steps["worker"].add(metrics_step())
