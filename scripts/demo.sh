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
trap 'rm -rf "$PROMETHEUS_MULTIPROC_DIR"' EXIT INT TERM

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

URL="http://$HOST:$PORT"
cat <<INFO

  Example site        $URL/
  Metrics             $URL/metrics/          (open to $METRICS_ALLOWED_IPS)
  Health              $URL/metrics/health/
  Readiness           $URL/metrics/readiness/
  Liveness            $URL/metrics/liveness/
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
