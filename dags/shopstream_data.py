"""Data DAG: landed events -> bronze -> silver -> gold in PostgreSQL, with Great Expectations between layers.

Runs hourly on data intervals and whenever the landing service reports new data (an asset watched on the
landed-notification topic). A critical expectation failing stops the layers below it; the Data quality
page of this UI lists every run's reports. Triggered by hand, the form can ask to rebuild an event-time
range, and to restate the late events silver set aside in a range into silver and gold. Wiring only: the work lives in ``shopstream.pipeline`` and the Spark jobs in ``spark/``.

The Spark tasks run on the stack's long-lived Spark Connect server (``SHOPSTREAM_SPARK__MODE=connect``, the
``shopstream_spark_connect`` connection) or, with ``submit``, each as its own spark-submit. Where a landing
service lands (``SHOPSTREAM_PIPELINE__LAND_IN_DAG=false``) the DAG has no land task.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from airflow.providers.apache.spark.operators.spark_submit import SparkSubmitOperator
from airflow.sdk import AssetOrTimeSchedule, CronDataIntervalTimetable, Param, TaskGroup, dag, task

from shopstream.assets import GOLD_FEATURES, landed_asset
from shopstream.settings import get_settings
from shopstream.spark_session import SPARK_DIR, submit_conf

settings = get_settings()
DEFAULT_ARGS = {"owner": "shopstream", "retries": 2, "retry_delay": timedelta(seconds=30)}
RANGE_ARGS = ["--start={{ params.reprocess_from or '' }}", "--end={{ params.reprocess_to or '' }}",
              "--restate-from={{ params.restate_from or '' }}", "--restate-to={{ params.restate_to or '' }}"]


@dag(
    dag_id="shopstream_data",
    schedule=AssetOrTimeSchedule(
        timetable=CronDataIntervalTimetable(settings.pipeline.schedule, timezone="UTC"), assets=landed_asset()
    ) if settings.pipeline.schedule else [landed_asset()],
    start_date=datetime(2026, 1, 1),
    catchup=False,
    max_active_runs=1,
    default_args=DEFAULT_ARGS,
    tags=["shopstream", "data"],
    description="Landed events -> bronze -> silver -> gold in PostgreSQL, Great Expectations checks between layers",
    doc_md=__doc__,
    params={
        "reprocess_from": Param(
            None, type=["null", "string"], format="date-time", title="Rebuild from (event time)",
            description="Also rebuild silver and gold for events at or after this time (UTC). Empty: only new data.",
        ),
        "reprocess_to": Param(
            None, type=["null", "string"], format="date-time", title="Rebuild until (event time)",
            description="End of the range to rebuild (exclusive). Empty: no upper bound.",
        ),
        "restate_from": Param(
            None, type=["null", "string"], format="date-time", title="Restate late events from (event time)",
            description="Bring the late events silver set aside (silver.late_events) with event time at or after "
                        "this (UTC) into silver and gold. Idempotent: restating a range again changes nothing.",
        ),
        "restate_to": Param(
            None, type=["null", "string"], format="date-time", title="Restate late events until (event time)",
            description="End of the restate range (exclusive). Empty: no upper bound.",
        ),
    },
)
def shopstream_data():
    @task
    def land() -> dict:
        from shopstream.pipeline import land

        return land(get_settings())

    with TaskGroup("bronze") as bronze:
        @task
        def load(run_id: str | None = None, data_interval_end=None, params=None) -> dict:
            from shopstream.pipeline import load_bronze

            return load_bronze(get_settings(), run_id, data_interval_end,
                               rebuild=bool(params["reprocess_from"] or params["restate_from"]))

        @task
        def check_bronze(run_id: str | None = None) -> dict:
            from shopstream.pipeline import check

            return check(get_settings(), "bronze", run_id)

        load() >> check_bronze()

    with TaskGroup("silver") as silver:
        if settings.spark.mode == "connect":
            @task(task_id="transform_silver")
            def transform_silver_on_connect(run_id: str | None = None, params=None) -> dict:
                from shopstream.pipeline import connect_url, transform

                return transform(get_settings(), "silver", run_id, connect_url(),
                                 start=params["reprocess_from"], end=params["reprocess_to"],
                                 restate_from=params["restate_from"], restate_to=params["restate_to"])

            transform_silver = transform_silver_on_connect()
        else:
            transform_silver = SparkSubmitOperator(
                task_id="transform_silver",
                conn_id="shopstream_spark",
                application=str(SPARK_DIR / "silver.py"),
                application_args=["--run-id", "{{ run_id }}", *RANGE_ARGS],
                conf=submit_conf(settings),
                name="shopstream-silver",
            )

        @task
        def check_silver(run_id: str | None = None) -> dict:
            from shopstream.pipeline import check

            return check(get_settings(), "silver", run_id)

        transform_silver >> check_silver()

    with TaskGroup("gold") as gold:
        if settings.spark.mode == "connect":
            @task(task_id="transform_gold")
            def transform_gold_on_connect(run_id: str | None = None) -> dict:
                from shopstream.pipeline import connect_url, transform

                return transform(get_settings(), "gold", run_id, connect_url())

            transform_gold = transform_gold_on_connect()
        else:
            transform_gold = SparkSubmitOperator(
                task_id="transform_gold",
                conn_id="shopstream_spark",
                application=str(SPARK_DIR / "gold.py"),
                application_args=["--run-id", "{{ run_id }}"],
                conf=submit_conf(settings),
                name="shopstream-gold",
            )

        @task(outlets=[GOLD_FEATURES])
        def check_gold(run_id: str | None = None) -> dict:
            from shopstream.pipeline import check

            return check(get_settings(), "gold", run_id)

        transform_gold >> check_gold()

    @task
    def summary(run_id: str | None = None) -> dict:
        from shopstream.pipeline import summarize

        return summarize(get_settings(), run_id)

    if settings.pipeline.land_in_dag:   # else the landing service lands: no task for it on the way to gold
        land() >> bronze
    bronze >> silver >> gold >> summary()


shopstream_data()
