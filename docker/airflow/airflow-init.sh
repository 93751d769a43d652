#!/usr/bin/env bash
# One-shot job run before the Airflow components start (via entrypoint.sh, so the environment rendered
# by the settings module is in place). Idempotent: safe on every `docker compose up`.
set -euo pipefail

mkdir -p "${AIRFLOW_HOME}/logs"

# Creating or upgrading the metadata schema also writes ${AIRFLOW_HOME}/airflow.cfg on the shared
# airflow-home volume the first time, with the generated secrets (fernet key, JWT secret, API secret
# key) that all four components must share.
airflow db migrate

# SimpleAuthManager reads user passwords from this JSON file ({"user": "password"}); write the admin
# password from SHOPSTREAM_AIRFLOW__ADMIN_PASSWORD so Airflow does not generate a random one.
python - <<'PY'
import json
import os
from pathlib import Path

from shopstream.settings import get_settings

a = get_settings().airflow
path = Path(os.environ["AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE"])
path.parent.mkdir(parents=True, exist_ok=True)
path.write_text(json.dumps({a.admin_user: a.admin_password.get_secret_value()}) + "\n")
path.chmod(0o600)
print(f"airflow-init: password of Airflow user {a.admin_user!r} written to {path}")
PY

echo "airflow-init: done"
