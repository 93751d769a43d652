#!/usr/bin/env bash
# One-shot job run before the Airflow components start (via entrypoint.sh, so the environment rendered
# by the settings module is in place). Idempotent: safe on every `docker compose up`.
set -euo pipefail

mkdir -p "${AIRFLOW_HOME}/logs"

# Creating or upgrading the metadata schema also writes ${AIRFLOW_HOME}/airflow.cfg on the shared
# airflow-home volume the first time, with the generated secrets (fernet key, JWT secret, API secret
# key) that all four components must share.
airflow db migrate

auth_manager="$(python -c 'from shopstream.settings import get_settings; print(get_settings().airflow.auth_manager)')"

if [[ "${auth_manager}" == "fab" ]]; then
    # FAB auth manager (SHOPSTREAM_AIRFLOW__AUTH_MANAGER=fab): its own tables and the default roles (Admin,
    # Op, User, Viewer, Public), then the admin user from SHOPSTREAM_AIRFLOW__ADMIN_* (created once; its
    # password is set from the settings on every run). More users: `airflow users create --role Viewer ...`.
    airflow fab-db migrate
    airflow sync-perm
    python - <<'PY'
import subprocess

from shopstream.settings import get_settings

a = get_settings().airflow
password = a.admin_password.get_secret_value()
listed = subprocess.run(["airflow", "users", "list", "--output", "plain"], check=True,
                        capture_output=True, text=True).stdout
if a.admin_user in listed.split():
    subprocess.run(["airflow", "users", "reset-password", "--username", a.admin_user, "--password", password],
                   check=True, stdout=subprocess.DEVNULL)
    print(f"airflow-init: FAB user {a.admin_user!r} exists; password set from SHOPSTREAM_AIRFLOW__ADMIN_PASSWORD")
else:
    subprocess.run(["airflow", "users", "create", "--username", a.admin_user, "--password", password,
                    "--role", "Admin", "--email", a.admin_email, "--firstname", "shopstream",
                    "--lastname", "admin"], check=True, stdout=subprocess.DEVNULL)
    print(f"airflow-init: FAB user {a.admin_user!r} created with the Admin role")
PY
else
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
fi

echo "airflow-init: done"
