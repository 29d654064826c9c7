#!/usr/bin/env bash
# Start the local PostgreSQL cluster when it does not answer (CI machines have one installed).
set -euo pipefail
if pg_isready -q -h 127.0.0.1 -p 5432 2>/dev/null; then exit 0; fi
if [ -d /etc/postgresql ]; then
  pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -1)" main start
  for _ in $(seq 50); do pg_isready -q -h 127.0.0.1 -p 5432 && exit 0; sleep 0.2; done
fi
echo "PostgreSQL does not answer on 127.0.0.1:5432 and could not be started." >&2
exit 1
