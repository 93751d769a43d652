"""Gold: the star schema and the ML feature table, rebuilt for what a silver run changed (Spark).

Unit of work: the users with events in the hours the silver run reconciled (their facts, sessions,
dimension rows and cart-add features depend on their whole history) and the dates of those hours (daily
sales). Spark computes everything; the write is one transaction: COPY into temp staging tables, upsert
the dimensions (new brands get new keys), delete-then-insert the facts and features by user and date.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

import psycopg
import pyarrow as pa

from shopstream.features import FEATURE_COLUMNS, ID_COLUMNS, LABEL, user_feature_rows
from shopstream.settings import Settings
from shopstream.spark_session import read_query
from shopstream.warehouse.copy import copy_arrow
from shopstream.warehouse.ddl import ensure_schemas
from shopstream.warehouse.silver import hours_literal

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession

FEATURE_TABLE_COLUMNS = [*ID_COLUMNS, *FEATURE_COLUMNS, LABEL]

STAGING = """
create temp table stage_events (event_key text, date_key int, event_time timestamptz, event_type text,
    user_id bigint, product_id bigint, category_id bigint, brand text, user_session text, price numeric(12,2))
    on commit drop;
create temp table stage_daily (date_key int, category_id bigint, brand text, views bigint, carts bigint,
    purchases bigint, revenue numeric(14,2), buyers bigint) on commit drop;
create temp table stage_categories (category_id bigint, category_code text, category_l1 text, category_l2 text,
    category_l3 text) on commit drop;
create temp table stage_products (product_id bigint, category_id bigint, brand text, first_seen timestamptz,
    last_seen timestamptz, last_price numeric(12,2)) on commit drop;
create temp table stage_users (user_id bigint, first_seen timestamptz, last_seen timestamptz, n_sessions int,
    n_purchases int, revenue numeric(14,2)) on commit drop;
create temp table stage_dates (date date) on commit drop;
"""

UPSERTS = """
insert into gold.dim_date (date_key, date, year, quarter, month, day, iso_weekday, is_weekend)
select to_char(date, 'YYYYMMDD')::int, date, extract(year from date), extract(quarter from date),
       extract(month from date), extract(day from date), extract(isodow from date), extract(isodow from date) >= 6
from (select distinct date from stage_dates) d
on conflict (date_key) do nothing;

insert into gold.dim_category (category_id, category_code, category_l1, category_l2, category_l3)
select distinct on (category_id) category_id, category_code, category_l1, category_l2, category_l3
from stage_categories order by category_id, category_code nulls last
on conflict (category_id) do update set category_code = coalesce(excluded.category_code, gold.dim_category.category_code),
    category_l1 = coalesce(excluded.category_l1, gold.dim_category.category_l1),
    category_l2 = coalesce(excluded.category_l2, gold.dim_category.category_l2),
    category_l3 = coalesce(excluded.category_l3, gold.dim_category.category_l3);

insert into gold.dim_brand (brand_key, brand) values (0, '(unknown)') on conflict do nothing;
insert into gold.dim_brand (brand_key, brand)
select (select coalesce(max(brand_key), 0) from gold.dim_brand) + row_number() over (order by brand), brand
from (select distinct brand from stage_products where brand is not null
      except select brand from gold.dim_brand) b;

insert into gold.dim_product (product_id, category_id, brand_key, first_seen, last_seen, last_price)
select p.product_id, p.category_id, coalesce(b.brand_key, 0), p.first_seen, p.last_seen, p.last_price
from stage_products p left join gold.dim_brand b on b.brand = p.brand
on conflict (product_id) do update set
    first_seen = least(gold.dim_product.first_seen, excluded.first_seen),
    category_id = case when excluded.last_seen >= gold.dim_product.last_seen then excluded.category_id
                       else gold.dim_product.category_id end,
    brand_key = case when excluded.last_seen >= gold.dim_product.last_seen then excluded.brand_key
                     else gold.dim_product.brand_key end,
    last_price = case when excluded.last_seen >= gold.dim_product.last_seen then excluded.last_price
                      else gold.dim_product.last_price end,
    last_seen = greatest(gold.dim_product.last_seen, excluded.last_seen);

insert into gold.dim_user (user_id, first_seen, last_seen, n_sessions, n_purchases, revenue)
select user_id, first_seen, last_seen, n_sessions, n_purchases, revenue from stage_users
on conflict (user_id) do update set first_seen = excluded.first_seen, last_seen = excluded.last_seen,
    n_sessions = excluded.n_sessions, n_purchases = excluded.n_purchases, revenue = excluded.revenue;
"""

REPLACE_FACTS = """
delete from gold.fact_events where user_id in (select user_id from stage_users);
insert into gold.fact_events (event_key, date_key, event_time, event_type, user_id, product_id, category_id,
    brand_key, user_session, price)
select e.event_key, e.date_key, e.event_time, e.event_type, e.user_id, e.product_id, e.category_id,
       coalesce(b.brand_key, 0), e.user_session, e.price
from stage_events e left join gold.dim_brand b on b.brand = e.brand;

delete from gold.fact_sessions where user_id in (select user_id from stage_users);
insert into gold.fact_sessions (user_session, user_id, date_key, session_start, duration_s, n_views, n_carts,
    n_purchases, revenue, converted)
select user_session, user_id, to_char(session_start at time zone 'UTC', 'YYYYMMDD')::int, session_start,
       duration_s, n_views, n_carts, n_purchases, revenue, n_purchases > 0
from silver.sessions where user_id in (select user_id from stage_users);

delete from gold.fact_daily_sales where date_key in (select distinct date_key from stage_daily);
insert into gold.fact_daily_sales (date_key, category_id, brand_key, views, carts, purchases, revenue, buyers)
select d.date_key, d.category_id, coalesce(b.brand_key, 0), sum(d.views), sum(d.carts), sum(d.purchases),
       sum(d.revenue), sum(d.buyers)
from stage_daily d left join gold.dim_brand b on b.brand = d.brand
group by 1, 2, 3;

delete from ml.cart_features where user_id in (select user_id from stage_users);
"""


@dataclass
class GoldResult:
    users: int
    dates: int
    fact_events: int
    features: int
    positive_rate: float
    seconds: float

    def summary(self) -> str:
        return (
            f"gold: {self.users:,} users and {self.dates} dates rebuilt: {self.fact_events:,} fact events, "
            f"{self.features:,} cart-add feature rows (positive rate {self.positive_rate:.1%}) in {self.seconds:.1f}s"
        )


def _features(events: DataFrame) -> DataFrame:
    """Cart-add features per user through the shared definition in :mod:`shopstream.features`."""
    from pyspark.sql import types as T

    schema = T.StructType([
        T.StructField("event_key", T.StringType()),
        T.StructField("event_time", T.TimestampType()),
        T.StructField("user_id", T.LongType()),
        T.StructField("user_session", T.StringType()),
        T.StructField("product_id", T.LongType()),
        T.StructField("category_l1", T.StringType()),
        T.StructField("category_l2", T.StringType()),
        T.StructField("brand", T.StringType()),
        T.StructField("price", T.DoubleType()),
        *[T.StructField(c, T.IntegerType()) for c in (
            "hour", "weekday", "session_events_before", "session_views_before", "session_carts_before",
            "session_distinct_products")],
        T.StructField("session_duration_s", T.DoubleType()),
        *[T.StructField(c, T.IntegerType()) for c in (
            "product_views_in_session", "user_prior_sessions", "user_prior_carts", "user_prior_purchases")],
        T.StructField("label", T.BooleanType()),
    ])
    cols = ["event_key", "event_time", "event_type", "product_id", "category_code", "brand", "price", "user_id",
            "user_session"]

    arrow_types = {T.StringType(): pa.string(), T.TimestampType(): pa.timestamp("us", tz="UTC"),
                   T.LongType(): pa.int64(), T.IntegerType(): pa.int32(), T.DoubleType(): pa.float64(),
                   T.BooleanType(): pa.bool_()}
    arrow_schema = pa.schema([(f.name, arrow_types[f.dataType]) for f in schema.fields])

    def per_partition(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        """Rows arrive sorted by user: replay each user's events (a user's rows may span batches)."""
        from datetime import UTC

        user: list[dict] = []
        out: list[dict] = []
        for batch in batches:
            for d in batch.to_pylist():
                if user and d["user_id"] != user[0]["user_id"]:
                    out.extend(user_feature_rows(user))
                    user = []
                if d["event_time"].tzinfo is None:
                    d["event_time"] = d["event_time"].replace(tzinfo=UTC)
                d["price"] = float(d["price"])
                user.append(d)
            if len(out) >= 10_000:
                yield pa.RecordBatch.from_pylist(out, arrow_schema)
                out = []
        if user:
            out.extend(user_feature_rows(user))
        if out:
            yield pa.RecordBatch.from_pylist(out, arrow_schema)

    ordered = events.select(*cols).repartition("user_id").sortWithinPartitions("user_id", "event_time", "event_key")
    return ordered.mapInArrow(per_partition, schema)


FRESHNESS = """
insert into dq.freshness (run_id, events, first_arrival, last_arrival, gold_at, median_s, worst_s,
                          landed_median_s, landed_worst_s)
with clock as (select clock_timestamp() as gold_at),
arrived as (
    select b.event_key, min(b.src_timestamp) as arrival, min(o.landed_at) as landed
    from bronze.loads l join bronze.events b using (object_key) join ops.landed_objects o using (object_key)
    where l.run_id = %(run)s group by b.event_key
),
reached as (select a.*, extract(epoch from c.gold_at - a.arrival)::float8 as age_s,
                   extract(epoch from c.gold_at - a.landed)::float8 as landed_age_s
            from arrived a join gold.fact_events f using (event_key) cross join clock c)
select %(run)s, count(*), min(arrival), max(arrival), (select gold_at from clock),
       percentile_cont(0.5) within group (order by age_s), max(age_s),
       percentile_cont(0.5) within group (order by landed_age_s), max(landed_age_s)
from reached having count(*) > 0
"""


def record_freshness(conn: psycopg.Connection, run_id: str) -> None:
    """Record (replace) in ``dq.freshness`` how long the events this run loaded took from Kafka to gold.

    Per event: gold's commit time (the clock at the end of gold's transaction) minus its Kafka timestamp
    (the arrival time a live producer or the broker stamps; a replay that stamps historical times, as
    ``shopstream produce`` does with the generator's simulated arrivals, shows their age instead), and minus
    the landing time of its lake object. Median and worst per run; no row for a run that loaded nothing.
    """
    conn.execute("delete from dq.freshness where run_id = %s", (run_id,))
    conn.execute(FRESHNESS, {"run": run_id})


def build(spark: SparkSession, settings: Settings, run_id: str) -> GoldResult:
    """Rebuild gold for the users and dates the silver run ``run_id`` touched; one transaction."""
    from pyspark.sql import functions as F

    t0 = time.monotonic()
    with psycopg.connect(settings.postgres.dsn(), autocommit=True) as conn:
        ensure_schemas(conn, only=("silver", "gold", "ml", "dq"))
        hours = [r[0].isoformat() for r in conn.execute(
            "select event_hour from silver.reconciliation where run_id = %s order by 1", (run_id,))]
    if not hours:
        return GoldResult(0, 0, 0, 0, 0.0, time.monotonic() - t0)
    in_hours = (f"event_time >= '{hours[0]}'::timestamptz and event_time < '{hours[-1]}'::timestamptz "
                f"+ interval '1 hour' and event_hour = any({hours_literal(hours)})")
    # one read for both units of work: the affected users' whole history and all events of the affected dates
    rows = read_query(spark, settings, (
        f"with users as (select distinct user_id from silver.events where {in_hours}), "
        f"days as (select distinct (h at time zone 'UTC')::date as day from unnest({hours_literal(hours)}) h) "
        "select e.*, e.user_id in (select user_id from users) as of_user, "
        "e.event_date in (select day from days) as of_day from silver.events e "
        "where e.user_id in (select user_id from users) or e.event_date in (select day from days)"
    ), bucket_by="user_id").cache()
    events = rows.where("of_user").drop("of_user", "of_day")
    day_events = rows.where("of_day").select("event_date", "category_id", "brand", "event_type", "price", "user_id")
    is_type = lambda t: F.when(F.col("event_type") == t, 1).otherwise(0)  # noqa: E731
    date_key = F.date_format("event_date", "yyyyMMdd").cast("int")
    staged = {
        "stage_events": events.select(
            "event_key", F.date_format("event_time", "yyyyMMdd").cast("int").alias("date_key"), "event_time",
            "event_type", "user_id", "product_id", "category_id", "brand", "user_session", "price"),
        "stage_daily": day_events.groupBy(date_key.alias("date_key"), "category_id", "brand").agg(
            F.sum(is_type("view")).alias("views"), F.sum(is_type("cart")).alias("carts"),
            F.sum(is_type("purchase")).alias("purchases"),
            F.coalesce(F.sum(F.when(F.col("event_type") == "purchase", F.col("price"))), F.lit(0))
            .cast("decimal(14,2)").alias("revenue"),
            F.countDistinct(F.when(F.col("event_type") == "purchase", F.col("user_id"))).alias("buyers")),
        "stage_categories": events.select("category_id", "category_code", "category_l1", "category_l2",
                                          "category_l3").distinct(),
        "stage_products": events.groupBy("product_id").agg(
            F.max_by("category_id", "event_time").alias("category_id"),
            F.max_by("brand", "event_time").alias("brand"),
            F.min("event_time").alias("first_seen"), F.max("event_time").alias("last_seen"),
            F.max_by("price", "event_time").alias("last_price")),
        "stage_users": events.groupBy("user_id").agg(
            F.min("event_time").alias("first_seen"), F.max("event_time").alias("last_seen"),
            F.countDistinct("user_session").cast("int").alias("n_sessions"),
            F.sum(is_type("purchase")).cast("int").alias("n_purchases"),
            F.coalesce(F.sum(F.when(F.col("event_type") == "purchase", F.col("price"))), F.lit(0))
            .cast("decimal(14,2)").alias("revenue")),
        "stage_dates": events.select(F.to_date("event_time").alias("date"))
        .union(day_events.select(F.col("event_date").alias("date"))).distinct(),
    }
    arrow = {name: df.toArrow() for name, df in staged.items()}
    features = _features(events).toArrow()
    rows.unpersist()

    with psycopg.connect(settings.postgres.dsn(), autocommit=True) as conn, conn.transaction():
        conn.execute(STAGING)
        for name, table in arrow.items():
            copy_arrow(conn, f"pg_temp.{name}", table)
        conn.execute(UPSERTS)
        conn.execute(REPLACE_FACTS)
        copy_arrow(conn, "ml.cart_features", features, FEATURE_TABLE_COLUMNS)
        record_freshness(conn, run_id)
    labels = features.column("label").to_pylist()
    rate = sum(labels) / len(labels) if labels else 0.0
    return GoldResult(arrow["stage_users"].num_rows, len({h[:10] for h in hours}), arrow["stage_events"].num_rows,
                      features.num_rows, rate, time.monotonic() - t0)
