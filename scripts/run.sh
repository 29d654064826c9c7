#!/usr/bin/env bash
# Set up and run the whole service on its embedded defaults: SQLite, var/media, a local Redis,
# a cpu worker (prefork), a gpu-queue worker (prefork: one child on a GPU, one per core without one),
# an interactive worker (/predict and small jobs: capacity batch chunks cannot take), beat (the
# stuck-chunk reaper and storage clean-up) and the web server (gunicorn, gthread, as in production).
#
# PORT (8000): the web server's port on 127.0.0.1. REDIS_ADDR (127.0.0.1:6379): where Redis is;
# started here when nothing answers there, and stopped again on Ctrl-C. REDIS_URL overrides both.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
export NUMBA_CACHE_DIR=${NUMBA_CACHE_DIR:-$PWD/var/numba-cache}
REDIS_ADDR=${REDIS_ADDR:-127.0.0.1:6379}
export REDIS_URL=${REDIS_URL:-redis://$REDIS_ADDR/0}
PORT=${PORT:-8000}
PY=.venv/bin/python

pids=()
redis_pidfile=""
cleanup() {
  trap - EXIT INT TERM
  echo
  echo "== stopping accentsite"
  kill -TERM "${pids[@]}" 2>/dev/null || true
  wait "${pids[@]}" 2>/dev/null || true
  if [ -n "$redis_pidfile" ] && [ -f "$redis_pidfile" ]; then  # only a Redis this script started
    kill "$(cat "$redis_pidfile")" 2>/dev/null || true
    echo "== stopped the Redis started for this run"
  fi
}
trap cleanup EXIT
trap 'cleanup; exit 0' INT TERM  # Ctrl-C is how it is meant to stop: not an error

case "$REDIS_URL" in
  redis://127.0.0.1*|redis://localhost*)
    if ! scripts/ensure_redis.sh "$REDIS_ADDR" --check 2>/dev/null; then
      scripts/ensure_redis.sh "$REDIS_ADDR"
      redis_pidfile="$PWD/var/redis/redis-${REDIS_ADDR##*:}.pid"
    fi ;;
esac

$PY manage.py migrate --noinput
ADMIN_USERNAME=${ADMIN_USERNAME:-admin}
if [ -z "${ADMIN_PASSWORD:-}" ]; then
  [ -f var/admin-password ] || $PY -c "import secrets; print(secrets.token_urlsafe(12))" > var/admin-password
  ADMIN_PASSWORD=$(cat var/admin-password)
fi
$PY manage.py ensure_admin --username "$ADMIN_USERNAME" --password "$ADMIN_PASSWORD"

mkdir -p var/log
.venv/bin/celery -A accentsite worker -Q cpu -n cpu@%h --concurrency "$(nproc)" --loglevel INFO >> var/log/worker-cpu.log 2>&1 &
pids+=($!)
# The gpu-queue worker (models: classify, embed, train, Whisper), always prefork so Celery's time limits
# apply: on a GPU one child, which initialises CUDA after the fork (the parent runs no torch op); without a
# GPU the models run on the CPU, one child per core (one torch thread each).
if [ "${WORKER_DEVICE:-auto}" != cpu ] && $PY -c "import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)" 2>/dev/null; then
  GPU_POOL=(--pool prefork --concurrency 1)
else
  GPU_POOL=(--pool prefork --concurrency "$(nproc)")
fi
.venv/bin/celery -A accentsite worker -Q gpu -n gpu@%h "${GPU_POOL[@]}" --loglevel INFO >> var/log/worker-gpu.log 2>&1 &
pids+=($!)
# What a person waits for (/predict, small jobs) has a process of its own: never behind a batch.
.venv/bin/celery -A accentsite worker -Q interactive -n interactive@%h --pool prefork \
  --concurrency "${INTERACTIVE_WORKER_CONCURRENCY:-1}" --loglevel INFO >> var/log/worker-interactive.log 2>&1 &
pids+=($!)
.venv/bin/celery -A accentsite beat --schedule var/celerybeat-schedule --loglevel INFO >> var/log/beat.log 2>&1 &
pids+=($!)
GUNICORN_WORKERS=${GUNICORN_WORKERS:-2} .venv/bin/gunicorn -c gunicorn.conf.py accentsite.wsgi \
  --bind "127.0.0.1:$PORT" >> var/log/web.log 2>&1 &
pids+=($!)

echo "== waiting for http://127.0.0.1:$PORT/healthz/ready (database, broker, storage, a worker per queue, Whisper)"
ready=""
for _ in $(seq 300); do
  for pid in "${pids[@]}"; do
    kill -0 "$pid" 2>/dev/null || { echo "!! a process exited early; see var/log/" >&2; exit 1; }
  done
  if $PY -c "import urllib.request,sys; urllib.request.urlopen('http://127.0.0.1:$PORT/healthz/ready', timeout=5)" 2>/dev/null; then
    ready=1; break
  fi
  sleep 1
done
[ -n "$ready" ] || { echo "!! not ready after 300 s; see var/log/ and http://127.0.0.1:$PORT/healthz/ready" >&2; exit 1; }
cat <<MSG

accentsite is ready (logs in var/log/):
  admin      http://127.0.0.1:$PORT/admin/   user: $ADMIN_USERNAME  password: $ADMIN_PASSWORD
  API        http://127.0.0.1:$PORT/api/v1/
  API docs   http://127.0.0.1:$PORT/api/docs/
  health     http://127.0.0.1:$PORT/healthz/ready   (liveness: /healthz/live)
  Redis      $REDIS_URL
Ctrl-C stops it (and the Redis it started, if it started one).
MSG
wait -n "${pids[@]}"
