#!/usr/bin/env bash
# Installs PostgreSQL from Debian's packages if needed, starts its cluster, makes a `tuneforge`
# role and a `tuneforge_test` database, and prints the URL to use as TEST_DATABASE_URL.
# Needs root or sudo. Progress goes to stderr; stdout is only the URL.
set -euo pipefail
as_root() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }
as_postgres() { if [ "$(id -u)" -eq 0 ]; then runuser -u postgres -- "$@"; else sudo -u postgres "$@"; fi; }

servers() { ls -d /usr/lib/postgresql/*/bin/postgres 2>/dev/null; }
if [ -z "$(servers)" ]; then
  echo 'installing postgresql (apt-get)…' >&2
  as_root apt-get update -qq >&2
  # env: sudo's env_reset would drop a plain DEBIAN_FRONTEND=… prefix.
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >&2
fi
# The newest version with a server (a client-only package also adds a version folder).
version=$(servers | sort -V | tail -1 | cut -d/ -f5)
if ! pg_lsclusters -h | awk -v v="$version" '$1 == v && $2 == "main"' | grep -q .; then
  as_root pg_createcluster "$version" main >&2
fi
if ! pg_lsclusters -h | awk -v v="$version" '$1 == v && $2 == "main" && $4 == "online"' | grep -q .; then
  as_root pg_ctlcluster "$version" main start >&2
fi
port=$(pg_lsclusters -h | awk -v v="$version" '$1 == v && $2 == "main" { print $3 }')

as_postgres psql -q -p "$port" -v ON_ERROR_STOP=1 >&2 <<'SQL'
SELECT 'CREATE ROLE tuneforge LOGIN PASSWORD ''tuneforge''' WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'tuneforge')\gexec
SELECT 'CREATE DATABASE tuneforge_test OWNER tuneforge' WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = 'tuneforge_test')\gexec
SQL
echo "postgres://tuneforge:tuneforge@127.0.0.1:$port/tuneforge_test"
