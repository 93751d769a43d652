"""Render docs/configuration.md from the settings module, so the doc cannot drift from the code."""

from __future__ import annotations

from pathlib import Path

from shopstream.settings import REPO_ROOT, setting_fields

DOC_PATH = REPO_ROOT / "docs" / "configuration.md"

HEADER = """# Configuration

Every setting is read by one module, `include/shopstream/settings.py`, from environment variables and an
optional `.env` file in the working directory. Names are `SHOPSTREAM_<SECTION>__<FIELD>`. The defaults run
the embedded stack on one machine; docker-compose sets the same names (see `.env.example`).

A bad value stops every command at start-up with a message naming the variable, for example:

```
Invalid shopstream settings:
  SHOPSTREAM_POSTGRES__PORT: Input should be a valid integer, unable to parse string as an integer (got 'x')
Fix the environment variable or the .env file and start again.
```

A `SHOPSTREAM_*` variable that is no setting (in the environment or `.env`) stops the start too, naming the
closest setting, so a typo never leaves a default silently in force:

```
Unknown shopstream settings (a typo would otherwise leave the default in force):
  SHOPSTREAM_KAFKA__BOOTSTRAP_SERVER (from the environment): unknown setting; did you mean SHOPSTREAM_KAFKA__BOOTSTRAP_SERVERS?
```

The settings also render the other tools' configuration, so it exists in one place: `shopstream env`
prints it (`AIRFLOW__*` options, the `AIRFLOW_CONN_SHOPSTREAM_*` connections in JSON form,
`AWS_*` and `MLFLOW_S3_ENDPOINT_URL`). Airflow connections: `shopstream_warehouse` (postgres),
`shopstream_s3` (aws, with the endpoint URL), `shopstream_kafka` and `shopstream_kafka_consumer`
(kafka), `shopstream_mlflow` (http), `shopstream_spark` (spark: the master spark-submit uses) and
`shopstream_spark_connect` (spark_connect: the Spark Connect server the data DAG's Spark tasks use).

This file is generated: `shopstream config-doc` rewrites it, and a test fails when it is stale.

| variable | default | meaning |
|---|---|---|
"""


def render() -> str:
    """The Markdown text of docs/configuration.md."""
    rows = [f"| `{var}` | `{default}` | {desc} |" for var, default, desc in setting_fields()]
    return HEADER + "\n".join(rows) + "\n"


def write(path: Path = DOC_PATH) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(render())
    return path
