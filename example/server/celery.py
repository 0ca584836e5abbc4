"""The Celery app of the example site, in Celery's documented Django layout.

Run a worker from `example/`: `celery -A server worker --pool prefork --concurrency 2`.
Task metrics are recorded by `metrics.instrument.celery`; `install(app)` here also adds the
worker's `--metrics-port` option, which must exist before Celery parses the command line.
"""

import os

from celery import Celery

from metrics.instrument.celery import install

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "server.settings")

app = Celery("server")
# Every setting named CELERY_* in Django's settings (see settings/components/celery.py).
app.config_from_object("django.conf:settings", namespace="CELERY")
# tasks.py of every installed app (shop/tasks.py).
app.autodiscover_tasks()
install(app)
