#!/usr/bin/env bash
# Creates the shopstream databases on the first start of the postgres container (an empty data volume):
# the official image runs every script in /docker-entrypoint-initdb.d once, as POSTGRES_USER.
# Names come from the same settings the services read (SHOPSTREAM_POSTGRES__*_DB). Idempotent.
set -euo pipefail

owner="${POSTGRES_USER:?POSTGRES_USER is not set}"

for db in \
    "${SHOPSTREAM_POSTGRES__WAREHOUSE_DB:-warehouse}" \
    "${SHOPSTREAM_POSTGRES__AIRFLOW_DB:-airflow}" \
    "${SHOPSTREAM_POSTGRES__MLFLOW_DB:-mlflow}" \
    "${SHOPSTREAM_POSTGRES__SUPERSET_DB:-superset}"; do
    psql -v ON_ERROR_STOP=1 --username "${owner}" --dbname postgres \
        --set=db="${db}" --set=owner="${owner}" <<'SQL'
SELECT format('CREATE DATABASE %I OWNER %I', :'db', :'owner')
WHERE NOT EXISTS (SELECT 1 FROM pg_database WHERE datname = :'db')
\gexec
SQL
    echo "init-databases: database ${db} ready (owner ${owner})"
done
