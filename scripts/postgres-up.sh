#!/usr/bin/env bash
# Start the local PostgreSQL 15 cluster and create the test role and database (idempotent).
# The tests read RETINA_TEST_POSTGRES_URL; this script's defaults match theirs.
set -euo pipefail
version=${PG_VERSION:-15}
pg_ctlcluster --skip-systemctl-redirect "$version" main start 2>/dev/null || true
for _ in $(seq 1 30); do
  pg_isready -q -h 127.0.0.1 -p 5432 && break
  sleep 1
done
pg_isready -h 127.0.0.1 -p 5432
su postgres -c "psql -v ON_ERROR_STOP=1 -q" <<'SQL'
DO $$ BEGIN
  IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'retina') THEN
    CREATE ROLE retina LOGIN PASSWORD 'retina' CREATEDB;
  END IF;
END $$;
SQL
su postgres -c "psql -tAc \"SELECT 1 FROM pg_database WHERE datname='retina_test'\"" | grep -q 1 \
  || su postgres -c "createdb -O retina retina_test"
echo "PostgreSQL ready: postgresql+psycopg://retina:retina@127.0.0.1:5432/retina_test"
