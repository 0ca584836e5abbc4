"""Celery: the broker and result backend, from the environment.

`CELERY_BROKER_URL` names the broker (`redis://...` or `amqp://guest:guest@127.0.0.1:5672//`);
unset, the Redis of `REDIS_URL` serves, else `redis://127.0.0.1:6379/0`. `server/celery.py`
reads every `CELERY_*` setting here (Celery's documented Django layout).
"""

import os

CELERY_BROKER_URL = (
    os.environ.get("CELERY_BROKER_URL") or os.environ.get("REDIS_URL") or "redis://127.0.0.1:6379/0"
)
# Results in Redis when the broker is Redis (so `make demo` can show `.get()`); set it for RabbitMQ.
CELERY_RESULT_BACKEND = os.environ.get("CELERY_RESULT_BACKEND") or (
    CELERY_BROKER_URL if CELERY_BROKER_URL.startswith(("redis://", "rediss://")) else None
)
CELERY_TASK_DEFAULT_QUEUE = os.environ.get("CELERY_TASK_DEFAULT_QUEUE", "celery")
# Celery 5.3+ warns unless this is said explicitly; retrying is what a worker should do.
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
CELERY_TASK_SERIALIZER = "json"
CELERY_RESULT_SERIALIZER = "json"
CELERY_ACCEPT_CONTENT = ["json"]

# The worker's own metrics port (0: off). `celery -A server worker --metrics-port 9808` overrides it.
METRICS_CELERY_WORKER_PORT = os.environ.get("METRICS_CELERY_WORKER_PORT", "0")
