"""SparkSession and JDBC access configured from settings (master, driver jar, UTC everywhere)."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from shopstream.settings import Settings

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession


def spark_session(settings: Settings, app_name: str) -> SparkSession:
    """A session on ``settings.spark.master`` with the PostgreSQL JDBC driver and Arrow enabled."""
    from pyspark.sql import SparkSession

    jar = Path(settings.spark.jdbc_jar)
    if not jar.exists():
        raise FileNotFoundError(
            f"PostgreSQL JDBC driver {jar} not found: install Debian's libpostgresql-jdbc-java "
            f"(`make install` does as root) or set SHOPSTREAM_SPARK__JDBC_JAR."
        )
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    os.environ.setdefault("PYSPARK_DRIVER_PYTHON", sys.executable)
    return (
        SparkSession.builder.master(settings.spark.master)
        .appName(app_name)
        .config("spark.jars", str(jar))
        .config("spark.driver.extraClassPath", str(jar))
        .config("spark.driver.memory", settings.spark.driver_memory)
        .config("spark.sql.session.timeZone", "UTC")
        .config("spark.sql.shuffle.partitions", str(settings.spark.shuffle_partitions))
        .config("spark.sql.execution.arrow.pyspark.enabled", "true")
        .config("spark.ui.enabled", "false")
        .config("spark.driver.extraJavaOptions", "-Duser.timezone=UTC")
        .config("spark.executor.extraJavaOptions", "-Duser.timezone=UTC")
        .getOrCreate()
    )


def run_job(app_name: str, build: Callable[[SparkSession, Settings], Any], result_path: str | None = None) -> Any:
    """Run one job body on a fresh session: print its summary, optionally write its result as JSON."""
    import json

    from shopstream.settings import get_settings

    settings = get_settings()
    spark = spark_session(settings, app_name)
    try:
        result = build(spark, settings)
    finally:
        spark.stop()
    print(result.summary())
    if result_path:
        with open(result_path, "w") as f:
            json.dump(result.__dict__, f)
    return result


SPARK_DIR = Path(__file__).resolve().parents[2] / "spark"


def submit_conf(settings: Settings) -> dict[str, str]:
    """spark-submit ``--conf`` values every job needs (the driver jar must be on the driver's class path)."""
    jar = settings.spark.jdbc_jar
    return {
        "spark.jars": jar,
        "spark.driver.extraClassPath": jar,
        "spark.driver.memory": settings.spark.driver_memory,
        "spark.sql.session.timeZone": "UTC",
    }


def submit_argv(settings: Settings, job: str, *args: str) -> list[str]:
    """The spark-submit command line for ``spark/<job>.py`` (as the Airflow task and the docs run it)."""
    argv = ["spark-submit", "--master", settings.spark.master]
    for k, v in submit_conf(settings).items():
        argv += ["--conf", f"{k}={v}"]
    return [*argv, str(SPARK_DIR / f"{job}.py"), *args]


def jdbc_url(settings: Settings) -> str:
    pg = settings.postgres
    return f"jdbc:postgresql://{pg.host}:{pg.port}/{pg.warehouse_db}"


BUCKET_COLUMN = "_read_bucket"


def read_query(spark: SparkSession, settings: Settings, query: str, bucket_by: str | None = None,
               num_partitions: int | None = None) -> DataFrame:
    """Read the result of a SQL query over JDBC.

    Without ``bucket_by`` the query is one JDBC partition: one connection, one core. With it (a column of
    the result), the read is ``num_partitions`` (default ``settings.spark.read_partitions``) queries run
    in parallel, each returning the rows of one hash bucket of that column, so the buckets are disjoint and
    complete and all rows with the same key arrive in the same partition.
    """
    pg = settings.postgres
    reader = (
        spark.read.format("jdbc")
        .option("url", jdbc_url(settings))
        .option("driver", "org.postgresql.Driver")
        .option("user", pg.user)
        .option("password", pg.password.get_secret_value())
        .option("fetchsize", "20000")
        .option("sessionInitStatement", "set time zone 'UTC'")
    )
    n = num_partitions or settings.spark.read_partitions
    if bucket_by is None or n == 1:
        return reader.option("query", query).load()
    # hashtext is int4: widen before abs() so -2^31 does not overflow
    bucketed = (f"(select q.*, abs(hashtext(q.{bucket_by}::text)::bigint) % {n} as {BUCKET_COLUMN} "
                f"from ({query}) q) as bucketed")
    return (
        reader.option("dbtable", bucketed)
        .option("partitionColumn", BUCKET_COLUMN)
        .option("lowerBound", "0")
        .option("upperBound", str(n))
        .option("numPartitions", str(n))
        .load()
        .drop(BUCKET_COLUMN)
    )
