#!/usr/bin/env bash
# The MLflow tracking server and registry: PostgreSQL backend store, artifacts proxied to MinIO.
# Runs via entrypoint.sh, so MLFLOW_S3_ENDPOINT_URL and the AWS_* credentials are already rendered by
# the settings module; the store URI, bucket, port and allowed hosts come from the same settings.
# With SHOPSTREAM_MLFLOW__AUTH_ENABLED=true (docker-compose) it runs MLflow's basic-auth app: every request but
# /health needs a login; its users and permissions live in the same database (MLflow's own tables), and
# the first start creates the admin SHOPSTREAM_MLFLOW__USERNAME / __PASSWORD that shopstream's clients use.
set -euo pipefail

if ! rendered="$(python - <<'PY'
import shlex

from shopstream.settings import get_settings

s = get_settings()
m = s.mlflow
values = {
    "BACKEND_STORE_URI": s.postgres.url(s.postgres.mlflow_db),
    "ARTIFACTS_DESTINATION": f"s3://{s.s3.mlflow_bucket}/artifacts",  # as the embedded stack
    "PORT": str(m.port),
    # Host headers accepted (DNS-rebinding protection): the service name other containers use and the
    # loopback address the host reaches the published port on.
    "ALLOWED_HOSTS": ",".join(
        [m.host, f"{m.host}:*", "localhost", "localhost:*", "127.0.0.1", "127.0.0.1:*"]
    ),
    "AUTH": "true" if m.auth_enabled else "",
    "ADMIN_USERNAME": m.username,
    "ADMIN_PASSWORD": m.password.get_secret_value(),
    "FLASK_SECRET_KEY": m.flask_secret_key.get_secret_value(),
}
if m.auth_enabled and not (m.username and values["ADMIN_PASSWORD"] and values["FLASK_SECRET_KEY"]):
    raise SystemExit("SHOPSTREAM_MLFLOW__AUTH_ENABLED=true needs SHOPSTREAM_MLFLOW__USERNAME, __PASSWORD and __FLASK_SECRET_KEY")
for key, value in values.items():
    print(f"srv_{key.lower()}={shlex.quote(value)}")
PY
)"; then
    echo "mlflow-server: could not read the shopstream settings" >&2
    exit 1
fi
eval "${rendered}"

# One worker and no job runner: about a quarter of the default memory (see stack-facts).
export MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false

# shellcheck disable=SC2154  # the srv_* variables are assigned by the eval above
app=()
if [[ -n "${srv_auth}" ]]; then
    # basic-auth app: its config file names the user store (the backend database; MLflow's auth tables
    # and migrations are separate from the tracking ones) and the permission of a logged-in user on what
    # others made; the admin login and the CSRF key come from the environment.
    auth_config="$(mktemp -d)/basic_auth.ini"
    cat >"${auth_config}" <<INI
[mlflow]
default_permission = READ
database_uri = ${srv_backend_store_uri//%/%%}
authorization_function = mlflow.server.auth:authenticate_request_basic_auth
INI
    chmod 600 "${auth_config}"
    export MLFLOW_AUTH_CONFIG_PATH="${auth_config}"
    export MLFLOW_AUTH_ADMIN_USERNAME="${srv_admin_username}"
    export MLFLOW_AUTH_ADMIN_PASSWORD="${srv_admin_password}"
    export MLFLOW_FLASK_SERVER_SECRET_KEY="${srv_flask_secret_key}"
    app=(--app-name basic-auth)
fi

# The schema first: creates the tables in an empty database, applies MLflow's migrations to an existing one
# (a new MLflow version in the image refuses to serve an old schema). Idempotent.
mlflow db upgrade "${srv_backend_store_uri}"

exec mlflow server "${app[@]}" \
    --backend-store-uri "${srv_backend_store_uri}" \
    --artifacts-destination "${srv_artifacts_destination}" \
    --host 0.0.0.0 \
    --port "${srv_port}" \
    --workers 1 \
    --allowed-hosts "${srv_allowed_hosts}"
