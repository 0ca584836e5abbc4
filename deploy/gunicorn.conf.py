"""gunicorn settings for a site using the `metrics` app in multiprocess mode.

Use with `gunicorn -c deploy/gunicorn.conf.py server.wsgi`, with PROMETHEUS_MULTIPROC_DIR set in
the environment (a directory on local disk, shared by the master and its workers).
"""

import os

bind = os.environ.get("GUNICORN_BIND", "127.0.0.1:8000")
workers = int(os.environ.get("GUNICORN_WORKERS", "2"))
# Recycling workers is safe: what a worker counted is folded into the store's archive when it exits.
max_requests = int(os.environ.get("GUNICORN_MAX_REQUESTS", "0"))
max_requests_jitter = int(os.environ.get("GUNICORN_MAX_REQUESTS_JITTER", "0"))


def when_ready(server):
    """Serve /metrics/ from the master on METRICS_EXPORT_PORT (if set): answered when workers are busy.

    Never raises (gunicorn stops its master on an exception from a hook).
    """
    try:
        from metrics.worker_http import start_export_server

        start_export_server()
    except Exception:
        server.log.exception("metrics: the export port could not start")


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
