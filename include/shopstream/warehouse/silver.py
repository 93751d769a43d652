"""Silver: type and clean bronze rows, dedup re-sends, set aside late events, sessionize (Spark).

Unit of work: the sessions that have events in the affected hours (the hours a run loaded into bronze,
or a range asked for by hand). Each such session is rebuilt from ALL its bronze rows, so a late event
updates the hour it belongs to, and its session, and re-running gives the same rows. The write is one
transaction: delete the sessions' rows, COPY the new ones, recompute ``silver.reconciliation`` for the
hours they touch and record the run's shares set aside in ``silver.runs``.

Late is :mod:`shopstream.events.lateness`'s rule: an event more than the bound behind the largest earlier
event time of its Kafka partition (``partition_max_event_time``, landed with each row). A *restate* range
(event time) brings the late events set aside in it back: their keys go to ``silver.restated_events`` and
they are events from then on, in every rebuild of their sessions.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

import psycopg

from shopstream.events.lateness import MAX_CLOCK_SKEW_S
from shopstream.settings import Settings
from shopstream.spark_session import read_query
from shopstream.warehouse.copy import copy_arrow
from shopstream.warehouse.ddl import ensure_schemas

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession

# MAX_CLOCK_SKEW_S (imported): an event stamped more than this after it arrived has a broken clock: rejected

# the bronze columns silver uses (not the lake object and load time)
BRONZE_INPUT = [
    "event_time", "event_type", "product_id", "category_id", "category_code", "brand", "price", "user_id",
    "user_session", "event_key", "src_topic", "src_partition", "src_offset", "src_timestamp",
    "partition_max_event_time",
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
    restated: int = 0

    def summary(self) -> str:
        def share(n: int) -> str:
            return f"{n / self.bronze_rows:.1%}" if self.bronze_rows else "0%"

        return (
            f"silver: {self.sessions:,} sessions rebuilt from {self.bronze_rows:,} bronze rows -> "
            f"{self.silver_rows:,} events ({self.restated:,} restated late events among them), "
            f"{self.duplicates:,} duplicates dropped ({share(self.duplicates)}), {self.late:,} late set aside "
            f"({share(self.late)}), {self.rejected:,} rejected ({share(self.rejected)}); "
            f"{len(self.hours_out)} hours reconciled in {self.seconds:.1f}s"
        )


def hours_literal(hours: list[str]) -> str:
    """A PostgreSQL timestamptz[] literal."""
    return "'{" + ",".join(f'"{h}"' for h in hours) + "}'::timestamptz[]"


def affected_hours(conn: psycopg.Connection, run_id: str, start: str | None = None, end: str | None = None,
                   restate_from: str | None = None, restate_to: str | None = None) -> list[str]:
    """Hours to (re)build: those whose objects this run loaded, bronze hours in [start, end), and the hours
    of the events restated in [restate_from, restate_to)."""
    rows = conn.execute(
        "select distinct o.event_hour from bronze.loads l join ops.landed_objects o using (object_key) "
        "where l.run_id = %(run)s "
        "union select distinct date_trunc('hour', event_time, 'UTC') from bronze.events "
        "where %(start)s::timestamptz is not null and event_time >= %(start)s and event_time < %(end)s "
        "union select distinct event_hour from silver.restated_events "
        "where %(rfrom)s::timestamptz is not null and event_time >= %(rfrom)s and event_time < %(rto)s "
        "order by 1",
        {"run": run_id, "start": start, "end": end or "infinity", "rfrom": restate_from,
         "rto": restate_to or "infinity"},
    ).fetchall()
    return [r[0].isoformat() for r in rows]


def restate(conn: psycopg.Connection, run_id: str, start: str, end: str | None = None) -> int:
    """Take the late events set aside with event time in [start, end) back into silver; how many were new.

    Idempotent: a key restated once stays restated (a second run over the range finds nothing new).
    """
    with conn.transaction():
        return conn.execute(
            "insert into silver.restated_events (event_key, event_time, event_hour, run_id) "
            "select event_key, event_time, event_hour, %(run)s from silver.late_events "
            "where event_time >= %(start)s and event_time < %(end)s on conflict (event_key) do nothing",
            {"run": run_id, "start": start, "end": end or "infinity"},
        ).rowcount


def deduplicate(bronze: DataFrame) -> DataFrame:
    """One row per ``event_key``: its first arrival, with ``copies``, ``arrival_time``, ``lateness_raw``
    (arrival - event time, s: the clock-skew rule), ``behind_us`` (partition clock - event time) and hour."""
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
        .withColumn("behind_us", F.unix_micros("partition_max_event_time") - F.unix_micros("event_time"))
        .withColumn("event_hour", F.date_trunc("hour", "event_time"))
    )


def classify(df: DataFrame, bound_s: int) -> DataFrame:
    """Deduplicated rows -> each one's ``kind`` (event, late, rejected), typed columns and ``session_seq``.

    Late: more than ``bound_s`` behind the partition's clock (strictly, as in :func:`~shopstream.events.
    lateness.is_late`), unless restated. ``session_seq`` numbers the events (kind ``event``) of a session;
    the window runs on the distribution by session that :func:`deduplicate` made, so classifying costs no
    shuffle.
    """
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    levels = F.split(F.col("category_code"), r"\.")
    behind = F.col("behind_us")
    lateness = F.coalesce(F.greatest(F.floor(behind / F.lit(1_000_000)), F.lit(0)), F.lit(0)).cast("long")
    late = behind.isNotNull() & (behind > F.lit(bound_s * 1_000_000)) & ~F.col("restated")
    skewed = (F.col("lateness_raw") < -MAX_CLOCK_SKEW_S) & (F.unix_micros("arrival_time") > 0)  # -1: no timestamp
    kind = (F.when(skewed, "rejected")
            .when(late, "late").otherwise("event"))
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
          end: str | None = None, restate_from: str | None = None, restate_to: str | None = None) -> SilverResult:
    """Rebuild silver for the sessions of this run's affected hours (restating the late events of
    ``[restate_from, restate_to)`` first); one transaction."""

    t0 = time.monotonic()
    with psycopg.connect(settings.postgres.dsn(), autocommit=True) as conn:
        ensure_schemas(conn, only=("bronze", "silver"))
        if restate_from:
            restate(conn, run_id, restate_from, restate_to)
        hours = affected_hours(conn, run_id, start, end, restate_from, restate_to)
        if not hours:
            record_run(conn, run_id)
    if not hours:
        return SilverResult(0, 0, 0, 0, 0, 0, 0, [], time.monotonic() - t0)
    bronze = read_query(spark, settings, (
        f"select {', '.join(f'b.{c}' for c in BRONZE_INPUT)}, "
        "exists (select 1 from silver.restated_events r where r.event_key = b.event_key) as restated "
        "from bronze.events b where b.user_session in ("
        "select distinct user_session from bronze.events "
        f"where event_time >= '{hours[0]}'::timestamptz and event_time < '{hours[-1]}'::timestamptz + interval '1 hour' "
        f"and date_trunc('hour', event_time, 'UTC') = any({hours_literal(hours)}))"
    ), bucket_by="user_session")
    # one pass (one shuffle, by session) computes every row's outcome; the outputs are cheap cuts of it
    classified = classify(deduplicate(bronze), settings.pipeline.lateness_bound_s).cache()
    frames = transform(classified, settings.pipeline.lateness_bound_s)
    tables = {name: df.toArrow() for name, df in frames.items()}
    # every session keeps at least one row
    sessions = classified.select("user_session").distinct().toArrow()
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
        run = record_run(conn, run_id)
    return SilverResult(
        len(hours), sessions.num_rows, run["bronze_rows"], run["silver_rows"], run["duplicates"],
        run["late_set_aside"], run["rejected"], [h.isoformat() for h in hours_out], time.monotonic() - t0,
        run["restated"],
    )


def record_run(conn: psycopg.Connection, run_id: str) -> dict:
    """Write the run's totals and shares set aside (over the hours it reconciled) to ``silver.runs``."""
    row = conn.execute(
        """
        insert into silver.runs (run_id, hours, bronze_rows, silver_rows, duplicates, late_set_aside, rejected,
                                 restated, late_share, duplicate_share, rejected_share)
        select %(run)s, count(*), coalesce(sum(bronze_rows), 0), coalesce(sum(silver_rows), 0),
               coalesce(sum(duplicates), 0), coalesce(sum(late_set_aside), 0), coalesce(sum(rejected), 0),
               (select count(*) from silver.restated_events x where x.event_hour in (
                    select event_hour from silver.reconciliation where run_id = %(run)s)
                and exists (select 1 from silver.events e where e.event_key = x.event_key)),
               coalesce(sum(late_set_aside)::float8 / nullif(sum(bronze_rows), 0), 0),
               coalesce(sum(duplicates)::float8 / nullif(sum(bronze_rows), 0), 0),
               coalesce(sum(rejected)::float8 / nullif(sum(bronze_rows), 0), 0)
        from silver.reconciliation where run_id = %(run)s
        on conflict (run_id) do update set hours = excluded.hours, bronze_rows = excluded.bronze_rows,
            silver_rows = excluded.silver_rows, duplicates = excluded.duplicates,
            late_set_aside = excluded.late_set_aside, rejected = excluded.rejected, restated = excluded.restated,
            late_share = excluded.late_share, duplicate_share = excluded.duplicate_share,
            rejected_share = excluded.rejected_share, processed_at = now()
        returning bronze_rows, silver_rows, duplicates, late_set_aside, rejected, restated
        """,
        {"run": run_id},
    ).fetchone()
    return dict(zip(("bronze_rows", "silver_rows", "duplicates", "late_set_aside", "rejected", "restated"), row,
                    strict=True))


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
