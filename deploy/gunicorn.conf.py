"""gunicorn settings for a site using the `metrics` app in multiprocess mode.

Use with `gunicorn -c deploy/gunicorn.conf.py server.wsgi`. With PROMETHEUS_MULTIPROC_DIR set in the
environment (a directory on local disk) the master and its workers share it; without it they
share a private directory of this server instance (docs/multiprocess.md, "Zero configuration").
"""

import os

bind = os.environ.get("GUNICORN_BIND", "127.0.0.1:8000")
workers = int(os.environ.get("GUNICORN_WORKERS", "2"))
# Recycling workers is safe: what a worker counted is folded into the store's archive when it exits.
max_requests = int(os.environ.get("GUNICORN_MAX_REQUESTS", "0"))
max_requests_jitter = int(os.environ.get("GUNICORN_MAX_REQUESTS_JITTER", "0"))


def _report_master(server):
    """Write the master's own process values (memory, threads...) into the store.

    The master is a live process of the store as soon as it imports the site's modules (a Celery
    app in the project package does), so its process gauges have a series; without this it
    would show zero bytes of memory for good. Never raises.
    """
    try:
        if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
            from metrics.instrument.system import collect_process

            collect_process()
    except Exception:
        server.log.exception("metrics: the master's process values could not be read")


def when_ready(server):
    """Serve /metrics/ from the master on METRICS_EXPORT_PORT (if set): answered when workers are busy.

    Also reports the master's own process values. Never raises (gunicorn stops its master on an
    exception from a hook).
    """
    try:
        from metrics.worker_http import start_export_server

        start_export_server()
    except Exception:
        server.log.exception("metrics: the export port could not start")
    _report_master(server)


def child_exit(server, worker):
    """Fold the exited worker's values into the archive now, so no scrape has to.

    gunicorn stops its master when a hook raises: nothing here may. `mark_process_dead` logs
    and counts its own failures; this guard also covers the import.
    """
    try:
        from metrics.core import mark_process_dead

        mark_process_dead(worker.pid)
    except Exception:
        server.log.exception("metrics: folding worker %s's values failed; the next scrape will", worker.pid)
    _report_master(server)
