#!/usr/bin/env bash
# Set up and run the whole service on its embedded defaults: SQLite, var/media, a local Redis,
# a cpu worker (prefork), a gpu-queue worker (prefork: one child on a GPU, one per core without one), beat (the
# stuck-chunk reaper and storage clean-up) and the web server.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
export NUMBA_CACHE_DIR=${NUMBA_CACHE_DIR:-$PWD/var/numba-cache}
REDIS_ADDR=${REDIS_ADDR:-127.0.0.1:6379}
export REDIS_URL=${REDIS_URL:-redis://$REDIS_ADDR/0}
case "$REDIS_URL" in redis://127.0.0.1*|redis://localhost*) scripts/ensure_redis.sh "$REDIS_ADDR" ;; esac
PORT=${PORT:-8000}
PY=.venv/bin/python

$PY manage.py migrate --noinput
ADMIN_USERNAME=${ADMIN_USERNAME:-admin}
if [ -z "${ADMIN_PASSWORD:-}" ]; then
  [ -f var/admin-password ] || $PY -c "import secrets; print(secrets.token_urlsafe(12))" > var/admin-password
  ADMIN_PASSWORD=$(cat var/admin-password)
fi
$PY manage.py ensure_admin --username "$ADMIN_USERNAME" --password "$ADMIN_PASSWORD"

pids=()
cleanup() { kill "${pids[@]}" 2>/dev/null || true; wait 2>/dev/null || true; }
trap cleanup EXIT INT TERM
mkdir -p var/log
.venv/bin/celery -A accentsite worker -Q cpu -n cpu@%h --concurrency "$(nproc)" --loglevel INFO >> var/log/worker-cpu.log 2>&1 &
pids+=($!)
# The gpu-queue worker (models: classify, embed, train), always prefork so Celery's time limits apply:
# on a GPU one child, which initialises CUDA after the fork (the parent runs no torch op); without a
# GPU the models run on the CPU, one child per core (one torch thread each), so a classify job uses
# the whole machine instead of one core.
if [ "${WORKER_DEVICE:-auto}" != cpu ] && $PY -c "import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)" 2>/dev/null; then
  GPU_POOL=(--pool prefork --concurrency 1)
else
  GPU_POOL=(--pool prefork --concurrency "$(nproc)")
fi
.venv/bin/celery -A accentsite worker -Q gpu,interactive -n gpu@%h "${GPU_POOL[@]}" --loglevel INFO >> var/log/worker-gpu.log 2>&1 &
pids+=($!)
.venv/bin/celery -A accentsite beat --schedule var/celerybeat-schedule --loglevel INFO >> var/log/beat.log 2>&1 &
pids+=($!)
$PY manage.py runserver "127.0.0.1:$PORT" --noreload >> var/log/web.log 2>&1 &
pids+=($!)
sleep 2
cat <<MSG

accentsite is running (logs in var/log/):
  admin      http://127.0.0.1:$PORT/admin/   user: $ADMIN_USERNAME  password: $ADMIN_PASSWORD
  API        http://127.0.0.1:$PORT/api/v1/
  API docs   http://127.0.0.1:$PORT/api/docs/
  health     http://127.0.0.1:$PORT/healthz/ready   (liveness: /healthz/live)
Ctrl-C stops it.
MSG
wait -n "${pids[@]}"
