#!/usr/bin/env bash
# `make demo`: migrate the example site, create a demo superuser, serve it on 127.0.0.1:8000.
# Assumes `make build` ran (the Makefile's demo target depends on it).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
PY="$ROOT/.venv/bin/python"
HOST=127.0.0.1
PORT=${PORT:-8000}

export DJANGO_SETTINGS_MODULE=server.settings
export METRICS_ALLOWED_IPS=${METRICS_ALLOWED_IPS:-127.0.0.1}
export DJANGO_SUPERUSER_USERNAME=${DJANGO_SUPERUSER_USERNAME:-admin}
export DJANGO_SUPERUSER_PASSWORD=${DJANGO_SUPERUSER_PASSWORD:-admin}
export DJANGO_SUPERUSER_EMAIL=${DJANGO_SUPERUSER_EMAIL:-admin@example.com}

# A fresh store for every run (the directory is removed when the demo stops).
PROMETHEUS_MULTIPROC_DIR=$(mktemp -d -t metrics-demo-XXXXXX)
export PROMETHEUS_MULTIPROC_DIR
CELERY_PID=""
cleanup() {
  if [ -n "$CELERY_PID" ]; then kill "$CELERY_PID" 2>/dev/null; wait "$CELERY_PID" 2>/dev/null; fi
  wait 2>/dev/null
  rm -rf "$PROMETHEUS_MULTIPROC_DIR"
}
trap cleanup EXIT INT TERM

cd example
"$PY" manage.py migrate --noinput
# Idempotent: a second `make demo` finds the user already there.
"$PY" manage.py shell -v 0 -c "
from django.contrib.auth import get_user_model
import os
User = get_user_model()
name = os.environ['DJANGO_SUPERUSER_USERNAME']
if not User.objects.filter(username=name).exists():
    User.objects.create_superuser(name, os.environ['DJANGO_SUPERUSER_EMAIL'], os.environ['DJANGO_SUPERUSER_PASSWORD'])
"

# A Celery worker (prefork, 2 children) on the same store, when its broker answers: its task
# metrics show on the site's /metrics/ and on its own port 9808. No broker, no worker: the site
# runs all the same.
CELERY_NOTE="Celery              no broker reachable (set CELERY_BROKER_URL or start Redis): no worker"
if "$PY" -c "from server.celery import app; app.connection_for_write().ensure_connection(max_retries=1, timeout=2)" \
    >/dev/null 2>&1; then
  "$PY" -m celery -A server worker --pool prefork --concurrency 2 --loglevel warning \
    --metrics-port 9808 --metrics-address 127.0.0.1 >"$PROMETHEUS_MULTIPROC_DIR/celery.log" 2>&1 &
  CELERY_PID=$!
  "$PY" manage.py shell -v 0 -c "
from shop import tasks
for n in range(5):
    tasks.add.delay(n, n)
tasks.fail.delay()
tasks.flaky.delay(2)
tasks.send_email.delay()
"
  CELERY_NOTE="Celery worker       http://127.0.0.1:9808/metrics   (demo tasks sent: add, fail, flaky, send_email)"
fi

URL="http://$HOST:$PORT"
cat <<INFO

  Example site        $URL/
  Metrics             $URL/metrics/          (open to $METRICS_ALLOWED_IPS)
  Health              $URL/metrics/health/
  Readiness           $URL/metrics/readiness/
  Liveness            $URL/metrics/liveness/
  $CELERY_NOTE
  Admin               $URL/admin/            (user $DJANGO_SUPERUSER_USERNAME, password $DJANGO_SUPERUSER_PASSWORD)
  Try also            $URL/items/1/  $URL/api/items/  $URL/async/  $URL/stream/  $URL/boom/

  curl $URL/metrics/ | grep django_http_
  gunicorn with 2 workers sharing the multiprocess store $PROMETHEUS_MULTIPROC_DIR
  Stop with Ctrl-C.

INFO
# Two workers sharing a fresh multiprocess store: any worker's /metrics/ shows both.
export GUNICORN_BIND="$HOST:$PORT" GUNICORN_WORKERS=${GUNICORN_WORKERS:-2}
"$ROOT/.venv/bin/gunicorn" -c "$ROOT/deploy/gunicorn.conf.py" server.wsgi \
  --access-logfile - --log-level warning
