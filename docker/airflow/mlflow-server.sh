#!/usr/bin/env bash
# The MLflow tracking server and registry: PostgreSQL backend store, artifacts proxied to MinIO.
# Runs via entrypoint.sh, so MLFLOW_S3_ENDPOINT_URL and the AWS_* credentials are already rendered by
# the settings module; the store URI, bucket, port and allowed hosts come from the same settings.
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
}
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
exec mlflow server \
    --backend-store-uri "${srv_backend_store_uri}" \
    --artifacts-destination "${srv_artifacts_destination}" \
    --host 0.0.0.0 \
    --port "${srv_port}" \
    --workers 1 \
    --allowed-hosts "${srv_allowed_hosts}"
