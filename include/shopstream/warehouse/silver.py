"""Silver: type and clean bronze rows, dedup re-sends, set aside late events, sessionize (Spark).

Unit of work: the sessions that have events in the affected hours (the hours a run loaded into bronze,
or a range asked for by hand). Each such session is rebuilt from ALL its bronze rows, so a late event
updates the hour it belongs to, and its session, and re-running gives the same rows. The write is one
transaction: delete the sessions' rows, COPY the new ones, recompute ``silver.reconciliation`` for the
hours they touch.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

import psycopg

from shopstream.settings import Settings
from shopstream.spark_session import read_query
from shopstream.warehouse.copy import copy_arrow
from shopstream.warehouse.ddl import ensure_schemas

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession

# an event stamped more than this after it arrived has a broken clock: rejected with a reason
MAX_CLOCK_SKEW_S = 300

# the bronze columns silver uses (not the lake object and load time)
BRONZE_INPUT = [
    "event_time", "event_type", "product_id", "category_id", "category_code", "brand", "price", "user_id",
    "user_session", "event_key", "src_topic", "src_partition", "src_offset", "src_timestamp",
]
SILVER_COLUMNS = [
    "event_key", "event_time", "event_hour", "event_date", "event_type", "product_id", "category_id",
    "category_code", "category_l1", "category_l2", "category_l3", "brand", "price", "user_id", "user_session",
    "arrival_time", "lateness_s", "copies", "session_seq",
]
LATE_COLUMNS = [
    "event_key", "event_time", "event_hour", "event_type", "product_id", "price", "user_id", "user_session",
    "arrival_time", "lateness_s", "bound_s",
]
REJECTED_COLUMNS = [
    "src_topic", "src_partition", "src_offset", "event_key", "user_session", "event_hour", "reason", "detail",
]
SESSION_COLUMNS = [
    "user_session", "user_id", "session_start", "session_end", "duration_s", "n_events", "n_views", "n_carts",
    "n_removes", "n_purchases", "revenue",
]


@dataclass
class SilverResult:
    hours_in: int
    sessions: int
    bronze_rows: int
    silver_rows: int
    duplicates: int
    late: int
    rejected: int
    hours_out: list[str]
    seconds: float

    def summary(self) -> str:
        return (
            f"silver: {self.sessions:,} sessions rebuilt from {self.bronze_rows:,} bronze rows -> "
            f"{self.silver_rows:,} events, {self.duplicates:,} duplicates dropped, {self.late:,} late set aside, "
            f"{self.rejected:,} rejected; {len(self.hours_out)} hours reconciled in {self.seconds:.1f}s"
        )


def hours_literal(hours: list[str]) -> str:
    """A PostgreSQL timestamptz[] literal."""
    return "'{" + ",".join(f'"{h}"' for h in hours) + "}'::timestamptz[]"


def affected_hours(conn: psycopg.Connection, run_id: str, start: str | None = None, end: str | None = None) -> list[str]:
    """Hours to (re)build: those whose objects this run loaded, plus bronze hours in [start, end)."""
    rows = conn.execute(
        "select distinct o.event_hour from bronze.loads l join ops.landed_objects o using (object_key) "
        "where l.run_id = %(run)s "
        "union select distinct date_trunc('hour', event_time, 'UTC') from bronze.events "
        "where %(start)s::timestamptz is not null and event_time >= %(start)s and event_time < %(end)s "
        "order by 1",
        {"run": run_id, "start": start, "end": end or "infinity"},
    ).fetchall()
    return [r[0].isoformat() for r in rows]


def deduplicate(bronze: DataFrame) -> DataFrame:
    """One row per ``event_key``: its first arrival, with ``copies``, ``arrival_time``, raw lateness and hour."""
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    # event_key hashes user_session, so grouping by (user_session, event_key) is grouping by event_key; with
    # the rows distributed by session, the session window in transform() needs no second shuffle
    by_key = Window.partitionBy("user_session", "event_key")
    first_arrival = by_key.orderBy("src_timestamp", "src_partition", "src_offset")
    return (
        bronze.repartition("user_session")
        .withColumn("copies", F.count(F.lit(1)).over(by_key))
        .withColumn("rn", F.row_number().over(first_arrival))
        .where("rn = 1")
        .drop("rn")
        .withColumn("arrival_time", F.col("src_timestamp"))
        .withColumn(
            "lateness_raw",
            F.floor((F.unix_micros("arrival_time") - F.unix_micros("event_time")) / F.lit(1_000_000)).cast("long"),
        )
        .withColumn("event_hour", F.date_trunc("hour", "event_time"))
    )


def classify(df: DataFrame, bound_s: int) -> DataFrame:
    """Deduplicated rows -> each one's ``kind`` (event, late, rejected), typed columns and ``session_seq``.

    ``session_seq`` numbers the events (kind ``event``) of a session; the window runs on the distribution
    by session that :func:`deduplicate` made, so classifying costs no shuffle.
    """
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    levels = F.split(F.col("category_code"), r"\.")
    lateness = F.greatest(F.col("lateness_raw"), F.lit(0))
    kind = (F.when(F.col("lateness_raw") < -MAX_CLOCK_SKEW_S, "rejected")
            .when(lateness >= F.lit(bound_s), "late").otherwise("event"))
    in_session = Window.partitionBy("user_session", "kind").orderBy("event_time", "event_key")
    return (
        df.withColumn("kind", kind)
        .withColumn("lateness_s", lateness)
        .withColumn("category_code", F.when(F.col("category_code") == "", None).otherwise(F.col("category_code")))
        .withColumn("brand", F.when(F.col("brand") == "", None).otherwise(F.col("brand")))
        .withColumn("category_l1", F.when(F.col("category_code").isNotNull(), levels.getItem(0)))
        .withColumn("category_l2", F.when(F.size(levels) > 1, levels.getItem(1)))
        .withColumn(
            "category_l3",
            F.when(F.size(levels) > 2, F.array_join(F.slice(levels, 3, 1000), ".")),
        )
        .withColumn("event_date", F.to_date("event_time"))
        .withColumn("price", F.col("price").cast("decimal(12,2)"))
        .withColumn("session_seq", F.row_number().over(in_session))
    )


def transform(classified: DataFrame, bound_s: int) -> dict[str, DataFrame]:
    """Classified rows of whole sessions -> silver events, late events, rejected events and sessions."""
    from pyspark.sql import functions as F

    rejected = classified.where("kind = 'rejected'").select(
        "src_topic", "src_partition", "src_offset", "event_key", "user_session", "event_hour",
        F.lit("event_after_arrival").alias("reason"),
        F.concat(F.lit("event_time "), F.col("event_time").cast("string"), F.lit(" is "),
                 (-F.col("lateness_raw")).cast("string"), F.lit(f"s after its arrival (max skew {MAX_CLOCK_SKEW_S}s)"))
        .alias("detail"),
    )
    late = classified.where("kind = 'late'").select(
        "event_key", "event_time", "event_hour", "event_type", "product_id", "price", "user_id", "user_session",
        "arrival_time", "lateness_s", F.lit(bound_s).cast("long").alias("bound_s"),
    )
    events = classified.where("kind = 'event'").select(*SILVER_COLUMNS)
    sessions = events.groupBy("user_session").agg(
        F.min("user_id").alias("user_id"),
        F.min("event_time").alias("session_start"),
        F.max("event_time").alias("session_end"),
        F.count(F.lit(1)).cast("int").alias("n_events"),
        F.sum(F.when(F.col("event_type") == "view", 1).otherwise(0)).cast("int").alias("n_views"),
        F.sum(F.when(F.col("event_type") == "cart", 1).otherwise(0)).cast("int").alias("n_carts"),
        F.sum(F.when(F.col("event_type") == "remove_from_cart", 1).otherwise(0)).cast("int").alias("n_removes"),
        F.sum(F.when(F.col("event_type") == "purchase", 1).otherwise(0)).cast("int").alias("n_purchases"),
        F.coalesce(F.sum(F.when(F.col("event_type") == "purchase", F.col("price"))), F.lit(0))
        .cast("decimal(14,2)").alias("revenue"),
    ).withColumn(
        "duration_s", (F.unix_seconds("session_end") - F.unix_seconds("session_start")).cast("long")
    ).select(*SESSION_COLUMNS)
    return {"events": events, "late": late, "rejected": rejected, "sessions": sessions}


def build(spark: SparkSession, settings: Settings, run_id: str, start: str | None = None,
          end: str | None = None) -> SilverResult:
    """Rebuild silver for the sessions of this run's affected hours; one transaction."""
    from pyspark.sql import functions as F

    t0 = time.monotonic()
    with psycopg.connect(settings.postgres.dsn(), autocommit=True) as conn:
        ensure_schemas(conn, only=("bronze", "silver"))
        hours = affected_hours(conn, run_id, start, end)
    if not hours:
        return SilverResult(0, 0, 0, 0, 0, 0, 0, [], time.monotonic() - t0)
    bronze = read_query(spark, settings, (
        f"select {', '.join(f'b.{c}' for c in BRONZE_INPUT)} from bronze.events b where b.user_session in ("
        "select distinct user_session from bronze.events "
        f"where event_time >= '{hours[0]}'::timestamptz and event_time < '{hours[-1]}'::timestamptz + interval '1 hour' "
        f"and date_trunc('hour', event_time, 'UTC') = any({hours_literal(hours)}))"
    ), bucket_by="user_session")
    # one pass (one shuffle, by session) computes every row's outcome; the outputs are cheap cuts of it
    classified = classify(deduplicate(bronze), settings.pipeline.lateness_bound_s).cache()
    frames = transform(classified, settings.pipeline.lateness_bound_s)
    tables = {name: df.toArrow() for name, df in frames.items()}
    # every bronze row is one copy of a kept key, and every session keeps at least one row
    sessions = classified.select("user_session").distinct().toArrow()
    bronze_rows = classified.agg(F.sum("copies")).first()[0] or 0
    classified.unpersist()

    with psycopg.connect(settings.postgres.dsn(), autocommit=True) as conn, conn.transaction():
        conn.execute("create temp table touched_sessions (user_session text primary key) on commit drop")
        copy_arrow(conn, "pg_temp.touched_sessions", sessions)
        for table in ("silver.events", "silver.late_events", "silver.rejected", "silver.sessions"):
            conn.execute(f"delete from {table} where user_session in (select user_session from touched_sessions)")
        copy_arrow(conn, "silver.events", tables["events"], SILVER_COLUMNS)
        copy_arrow(conn, "silver.late_events", tables["late"], LATE_COLUMNS)
        copy_arrow(conn, "silver.rejected", tables["rejected"], REJECTED_COLUMNS)
        copy_arrow(conn, "silver.sessions", tables["sessions"], SESSION_COLUMNS)
        hours_out = [r[0] for r in conn.execute(
            "select distinct date_trunc('hour', event_time, 'UTC') from bronze.events "
            "where user_session in (select user_session from touched_sessions) order by 1"
        )]
        reconcile(conn, hours_out, run_id)
    t = tables
    duplicates = bronze_rows - (t["events"].num_rows + t["late"].num_rows + t["rejected"].num_rows)
    return SilverResult(
        len(hours), sessions.num_rows, bronze_rows, t["events"].num_rows, duplicates, t["late"].num_rows,
        t["rejected"].num_rows, [h.isoformat() for h in hours_out], time.monotonic() - t0,
    )


def reconcile(conn: psycopg.Connection, hours: list, run_id: str) -> None:
    """Recompute ``silver.reconciliation`` for these hours from the tables themselves."""
    conn.execute("delete from silver.reconciliation where event_hour = any(%s)", (hours,))
    conn.execute(
        """
        insert into silver.reconciliation
            (event_hour, bronze_rows, silver_rows, duplicates, late_set_aside, rejected, run_id)
        select h, b.n, s.n, b.n - b.keys, l.n, r.n, %(run)s
        from unnest(%(hours)s::timestamptz[]) as h
        cross join lateral (select count(*) as n, count(distinct event_key) as keys from bronze.events
                            where event_time >= h and event_time < h + interval '1 hour') b
        cross join lateral (select count(*) as n from silver.events where event_hour = h) s
        cross join lateral (select count(*) as n from silver.late_events where event_hour = h) l
        cross join lateral (select count(*) as n from silver.rejected where event_hour = h) r
        """,
        {"hours": hours, "run": run_id},
    )
