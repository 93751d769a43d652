#!/usr/bin/env bash
# Creates one role per service and its database on the first start of the postgres container (an empty data
# volume): the official image runs every script in /docker-entrypoint-initdb.d once, as the superuser
# (POSTGRES_USER). Each role owns only its database; CONNECT is revoked from PUBLIC, so no role can open
# another service's database. Names and passwords come from the same settings the services read
# (SHOPSTREAM_POSTGRES__*). Idempotent: a role that exists gets its password set again.
set -euo pipefail

superuser="${POSTGRES_USER:?POSTGRES_USER is not set}"

# database:role:password-variable of each service (the warehouse is SHOPSTREAM_POSTGRES__USER's)
services=(
    "${SHOPSTREAM_POSTGRES__WAREHOUSE_DB:-warehouse}:${SHOPSTREAM_POSTGRES__USER:?}:SHOPSTREAM_POSTGRES__PASSWORD"
    "${SHOPSTREAM_POSTGRES__AIRFLOW_DB:-airflow}:${SHOPSTREAM_POSTGRES__AIRFLOW_USER:?}:SHOPSTREAM_POSTGRES__AIRFLOW_PASSWORD"
    "${SHOPSTREAM_POSTGRES__MLFLOW_DB:-mlflow}:${SHOPSTREAM_POSTGRES__MLFLOW_USER:?}:SHOPSTREAM_POSTGRES__MLFLOW_PASSWORD"
    "${SHOPSTREAM_POSTGRES__SUPERSET_DB:-superset}:${SHOPSTREAM_POSTGRES__SUPERSET_USER:?}:SHOPSTREAM_POSTGRES__SUPERSET_PASSWORD"
)

for entry in "${services[@]}"; do
    IFS=: read -r db role password_var <<<"${entry}"
    password="${!password_var:?${password_var} is not set}"
    psql -v ON_ERROR_STOP=1 --username "${superuser}" --dbname postgres \
        --set=db="${db}" --set=role="${role}" --set=password="${password}" <<'SQL'
SELECT format('CREATE ROLE %I LOGIN', :'role')
WHERE NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = :'role')
\gexec
SELECT format('ALTER ROLE %I WITH LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE PASSWORD %L', :'role', :'password')
\gexec
SELECT format('CREATE DATABASE %I OWNER %I', :'db', :'role')
WHERE NOT EXISTS (SELECT 1 FROM pg_database WHERE datname = :'db')
\gexec
SELECT format('ALTER DATABASE %I OWNER TO %I', :'db', :'role')
\gexec
SELECT format('REVOKE ALL ON DATABASE %I FROM PUBLIC', :'db')
\gexec
SQL
    echo "init-databases: database ${db} owned by role ${role}, closed to the other roles"
done
