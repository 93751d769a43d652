#!/usr/bin/env bash
# Superset: upgrade the metadata schema, ensure the admin user and the default roles, then serve.
# Idempotent, so it runs on every start (no separate init container: one less memory budget).
set -euo pipefail

superset db upgrade

if ! superset fab create-admin \
    --username "${SUPERSET_ADMIN_USER:?SUPERSET_ADMIN_USER is not set}" \
    --password "${SUPERSET_ADMIN_PASSWORD:?SUPERSET_ADMIN_PASSWORD is not set}" \
    --email "${SUPERSET_ADMIN_EMAIL:?SUPERSET_ADMIN_EMAIL is not set}" \
    --firstname Superset --lastname Admin; then
    echo "start: create-admin failed (an existing admin is kept); continuing" >&2
fi

superset init

exec gunicorn \
    --bind 0.0.0.0:8088 \
    --workers 1 --worker-class gthread --threads 8 \
    --timeout 120 \
    --limit-request-line 0 --limit-request-field_size 0 \
    "superset.app:create_app()"
