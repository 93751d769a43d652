#!/usr/bin/env bash
# Entrypoint of the shopstream image (also used as a wrapper by the health checks).
#
# docker-compose.yaml passes only SHOPSTREAM_* settings. The Airflow configuration derived from them
# (AIRFLOW_HOME, AIRFLOW__*, AIRFLOW_CONN_*, the AWS/MLflow S3 variables) is rendered by the settings
# module, Settings.airflow_env(), exactly as in the embedded stack: this script only evaluates it.
set -euo pipefail

if ! rendered="$(shopstream env --format shell)"; then
    printf '%s\n' "${rendered}" >&2
    echo "entrypoint: 'shopstream env --format shell' failed; fix the SHOPSTREAM_* variable named above." >&2
    exit 1
fi
eval "${rendered}"

if [[ $# -eq 0 ]]; then
    set -- airflow version
fi
exec "$@"
