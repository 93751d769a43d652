"""Smoke DAG: proves the warehouse, the S3 lake, the Kafka broker and MLflow from inside Airflow.

Wiring only; the checks live in ``shopstream.smoke``.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from airflow.sdk import dag, task

DEFAULT_ARGS = {"owner": "shopstream", "retries": 2, "retry_delay": timedelta(seconds=10)}


@dag(
    dag_id="shopstream_smoke",
    schedule=None,
    start_date=datetime(2024, 1, 1),
    catchup=False,
    default_args=DEFAULT_ARGS,
    tags=["shopstream", "smoke"],
    description="Checks that the warehouse, the S3 lake, the Kafka broker and MLflow answer from Airflow",
    doc_md=__doc__,
)
def shopstream_smoke():
    @task
    def warehouse(run_id: str | None = None) -> dict:
        from shopstream.smoke import check_warehouse

        return check_warehouse(run_id)

    @task
    def lake(run_id: str | None = None) -> dict:
        from shopstream.settings import get_settings
        from shopstream.smoke import check_s3

        return check_s3(run_id, get_settings().s3.lake_bucket)

    @task
    def broker(run_id: str | None = None) -> dict:
        from shopstream.smoke import check_kafka

        return check_kafka(run_id)

    @task
    def tracking(run_id: str | None = None) -> dict:
        from shopstream.settings import get_settings
        from shopstream.smoke import check_mlflow

        return check_mlflow(run_id, get_settings().mlflow.uri)

    warehouse()
    lake()
    broker()
    tracking()


shopstream_smoke()
