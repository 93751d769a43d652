"""SparkSession and JDBC access configured from settings (master, driver jar, UTC everywhere).

Two ways to a session: :func:`spark_session` starts a driver in this process (spark-submit jobs, tests,
benchmarks); :func:`connect_session` is a client of the long-lived Spark Connect server the stack starts
(:mod:`shopstream.stack.spark_connect`), attached to one shared server-side session, so a task pays
neither a JVM start nor, for the Python code the jobs run on the server (``mapInArrow``), a Python worker
start.
"""

from __future__ import annotations

import hashlib
import logging
import os
import sys
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from shopstream.settings import Settings

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession

log = logging.getLogger(__name__)


def jdbc_jar(settings: Settings) -> Path:
    """The PostgreSQL JDBC driver jar, or an error saying how to get it."""
    jar = Path(settings.spark.jdbc_jar)
    if not jar.exists():
        raise FileNotFoundError(
            f"PostgreSQL JDBC driver {jar} not found: install Debian's libpostgresql-jdbc-java "
            f"(`make install` does as root) or set SHOPSTREAM_SPARK__JDBC_JAR."
        )
    return jar


def runtime_conf(settings: Settings) -> dict[str, str]:
    """Session settings every job relies on (a Connect client sets them on its session too)."""
    return {
        "spark.sql.session.timeZone": "UTC",
        "spark.sql.shuffle.partitions": str(settings.spark.shuffle_partitions),
        "spark.sql.execution.arrow.pyspark.enabled": "true",
    }


def driver_conf(settings: Settings) -> dict[str, str]:
    """Everything a driver needs: the JDBC jar on its class path, memory, UTC clocks, no UI."""
    jar = str(jdbc_jar(settings))
    return {
        "spark.jars": jar,
        "spark.driver.extraClassPath": jar,
        "spark.driver.memory": settings.spark.driver_memory,
        "spark.ui.enabled": "false",
        "spark.driver.extraJavaOptions": "-Duser.timezone=UTC",
        "spark.executor.extraJavaOptions": "-Duser.timezone=UTC",
        **runtime_conf(settings),
    }


def spark_session(settings: Settings, app_name: str) -> SparkSession:
    """A session on ``settings.spark.master`` with the PostgreSQL JDBC driver and Arrow enabled."""
    from pyspark.sql import SparkSession

    conf = driver_conf(settings)
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    os.environ.setdefault("PYSPARK_DRIVER_PYTHON", sys.executable)
    builder = SparkSession.builder.master(settings.spark.master).appName(app_name)
    for k, v in conf.items():
        builder = builder.config(k, v)
    return builder.getOrCreate()


SHARED_SESSION_GENERATIONS = 20  # a server-side session that expired cannot be reattached: the next one is used


def shared_session_id(settings: Settings, generation: int = 0) -> str:
    """The id of the server-side session every client of this stack shares (a UUID derived from the Connect
    URL, the state dir and a generation number)."""
    seed = f"shopstream|{settings.spark.connect_url}|{settings.state_dir}|{generation}".encode()
    return str(uuid.UUID(bytes=hashlib.md5(seed).digest(), version=4))  # noqa: S324 - an id, not a secret


def with_session_id(url: str, session_id: str) -> str:
    """``sc://host:port[/;params]`` with ``session_id`` added to its parameters."""
    base, _, params = url.partition("/;")
    base = base.rstrip("/")
    return f"{base}/;{params + ';' if params else ''}session_id={session_id}"


def connect_session(settings: Settings, url: str | None = None) -> SparkSession:
    """A Spark Connect client session on the shared server-side session of the stack's Connect server.

    Clients (one per task) attach to the same server-side session and leave it open when they stop, so the
    Python workers it started for ``mapInArrow`` stay warm for the next task (Spark starts Python workers
    per server-side session and keeps them until the server stops). Cached data is dropped first: the
    cache is shared, and a crashed task must not leave a stale copy of its input behind.
    ``url``: ``sc://host:port`` (default: from settings; the data DAG passes its Airflow connection's).
    """
    from pyspark.errors import PySparkException
    from pyspark.sql import SparkSession

    base = url or settings.spark.connect_url
    for generation in range(SHARED_SESSION_GENERATIONS):
        spark = SparkSession.builder.remote(with_session_id(base, shared_session_id(settings, generation))).create()
        spark.release_session_on_close = False   # the session outlives this client: see above
        try:
            for k, v in runtime_conf(settings).items():
                spark.conf.set(k, v)
        except PySparkException as e:
            if "SESSION_CLOSED" not in str(e):
                raise
            log.info("shared Spark Connect session %d expired on the server; attaching to the next", generation)
            spark.stop()
            continue
        spark.catalog.clearCache()
        return spark
    raise RuntimeError(f"the Spark Connect server at {base} refused {SHARED_SESSION_GENERATIONS} shared "
                       "sessions as closed: restart it (`shopstream down spark-connect && shopstream up`)")


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


CONNECT_SERVER_CLASS = "org.apache.spark.sql.connect.service.SparkConnectServer"


def connect_server_jar() -> Path:
    """The Spark Connect server jar the pyspark distribution ships (``pyspark/jars/spark-connect_*.jar``)."""
    import pyspark

    jars = sorted((Path(pyspark.__file__).parent / "jars").glob("spark-connect_*.jar"))
    if not jars:
        raise FileNotFoundError(f"no spark-connect_*.jar in {Path(pyspark.__file__).parent / 'jars'}: the pyspark "
                                "distribution ships it; reinstall pyspark (`make install`) or set "
                                "SHOPSTREAM_SPARK__MODE=submit")
    return jars[-1]


def connect_server_argv(settings: Settings, local_dir: Path) -> list[str]:
    """spark-submit command line of the long-lived Spark Connect server (a driver on ``settings.spark.master``)."""
    s = settings.spark
    conf = {
        **driver_conf(settings),
        "spark.connect.grpc.binding.address": s.connect_host,
        "spark.connect.grpc.binding.port": str(s.connect_port),
        # the shared session lives as long as runs come; an expired one is replaced (connect_session)
        "spark.connect.session.manager.defaultSessionTimeout": "7d",
        "spark.local.dir": str(local_dir),
        "spark.log.level": "WARN",
        "spark.ui.enabled": "true",     # a task's own session has none; the long-lived server shows its jobs
        "spark.ui.port": str(s.ui_port),
        "spark.port.maxRetries": "0",   # the UI on its own port or a clear failure, never on a neighbour's
    }
    argv = ["spark-submit", "--master", s.master, "--name", "shopstream-connect", "--class", CONNECT_SERVER_CLASS]
    for k, v in conf.items():
        argv += ["--conf", f"{k}={v}"]
    return [*argv, str(connect_server_jar())]


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
