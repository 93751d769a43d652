"""The warehouse's tables, one DDL block per schema: the contract every stage, suite and dashboard uses.

Schemas: ``bronze`` (landed rows as loaded), ``silver`` (typed, deduplicated, sessionized), ``gold``
(star schema), ``ml`` (features, model metrics), ``ops`` (manifest, run bookkeeping, see
:mod:`shopstream.landing.manifest`), ``dq`` (data quality results).
"""

from __future__ import annotations

import psycopg

BRONZE = """
create schema if not exists bronze;
create table if not exists bronze.events (
    event_time     timestamptz not null,
    event_type     text not null,
    product_id     bigint not null,
    category_id    bigint not null,
    category_code  text,
    brand          text,
    price          double precision not null,
    user_id        bigint not null,
    user_session   text not null,
    event_key      text not null,
    src_topic      text not null,
    src_partition  int not null,
    src_offset     bigint not null,
    src_timestamp  timestamptz not null,      -- Kafka timestamp = arrival time
    object_key     text not null,             -- lake object the row was loaded from
    loaded_at      timestamptz not null,
    partition_max_event_time timestamptz,     -- largest event time landed before it in its partition
    primary key (src_topic, src_partition, src_offset)
);
alter table bronze.events add column if not exists partition_max_event_time timestamptz;
create index if not exists bronze_events_object_key on bronze.events (object_key);
create index if not exists bronze_events_event_time on bronze.events (event_time);
create table if not exists bronze.loads (
    object_key     text primary key,          -- one row per lake object loaded (idempotent per object)
    rows           int not null,
    run_id         text not null,
    loaded_at      timestamptz not null default now()
);
"""

SILVER = """
create schema if not exists silver;
create table if not exists silver.events (
    event_key        text primary key,        -- deterministic hash of the identifying fields
    event_time       timestamptz not null,
    event_hour       timestamptz not null,    -- date_trunc('hour', event_time) (UTC)
    event_date       date not null,
    event_type       text not null check (event_type in ('view', 'cart', 'remove_from_cart', 'purchase')),
    product_id       bigint not null,
    category_id      bigint not null,
    category_code    text,
    category_l1      text,                    -- category_code split on '.'; null when no code
    category_l2      text,
    category_l3      text,
    brand            text,
    price            numeric(12, 2) not null,
    user_id          bigint not null,
    user_session     text not null,
    arrival_time     timestamptz not null,    -- first arrival (Kafka timestamp) of the event
    lateness_s       bigint not null,         -- seconds behind the largest earlier event time of its partition (>= 0)
    copies           int not null,            -- how many times the event arrived (1 = no re-send)
    session_seq      int not null             -- 1-based order of the event within its session
);
create index if not exists silver_events_hour on silver.events (event_hour);
create index if not exists silver_events_session on silver.events (user_session);
create index if not exists silver_events_user on silver.events (user_id, event_time);
create table if not exists silver.late_events (   -- set aside: later than the lateness bound (watermark)
    event_key        text primary key,
    event_time       timestamptz not null,
    event_hour       timestamptz not null,
    event_type       text not null,
    product_id       bigint not null,
    price            numeric(12, 2) not null,
    user_id          bigint not null,
    user_session     text not null,
    arrival_time     timestamptz not null,
    lateness_s       bigint not null,
    bound_s          bigint not null,
    set_aside_at     timestamptz not null default now()
);
create table if not exists silver.rejected (      -- events bronze accepted that silver cannot use
    src_topic        text not null,
    src_partition    int not null,
    src_offset       bigint not null,
    event_key        text not null unique,
    user_session     text not null,
    event_hour       timestamptz,
    reason           text not null,
    detail           text not null,
    primary key (src_topic, src_partition, src_offset)
);
create table if not exists silver.sessions (
    user_session     text primary key,
    user_id          bigint not null,
    session_start    timestamptz not null,
    session_end      timestamptz not null,
    duration_s       bigint not null,
    n_events         int not null,
    n_views          int not null,
    n_carts          int not null,
    n_removes        int not null,
    n_purchases      int not null,
    revenue          numeric(14, 2) not null
);
create table if not exists silver.restated_events (  -- late events brought back into silver on request
    event_key        text primary key,
    event_time       timestamptz not null,
    event_hour       timestamptz not null,
    run_id           text not null,           -- the run whose restate range took it in
    restated_at      timestamptz not null default now()
);
create table if not exists silver.runs (          -- one row per silver run: what it set aside, as shares
    run_id           text primary key,
    hours            int not null,
    bronze_rows      bigint not null,
    silver_rows      bigint not null,
    duplicates       bigint not null,
    late_set_aside   bigint not null,
    rejected         bigint not null,
    restated         bigint not null,         -- late events of these hours restated into silver (in silver_rows)
    late_share       double precision not null,   -- late_set_aside / bronze_rows (0 when no rows)
    duplicate_share  double precision not null,
    rejected_share   double precision not null,
    processed_at     timestamptz not null default now()
);
create table if not exists silver.reconciliation (  -- one row per processed event hour
    event_hour       timestamptz primary key,
    bronze_rows      bigint not null,
    silver_rows      bigint not null,
    duplicates       bigint not null,
    late_set_aside   bigint not null,
    rejected         bigint not null,
    run_id           text not null,
    processed_at     timestamptz not null default now()
);
"""

GOLD = """
create schema if not exists gold;
create table if not exists gold.dim_date (
    date_key     int primary key,              -- yyyymmdd
    date         date not null unique,
    year         int not null,
    quarter      int not null,
    month        int not null,
    day          int not null,
    iso_weekday  int not null,                 -- 1 = Monday
    is_weekend   boolean not null
);
create table if not exists gold.dim_category (
    category_id   bigint primary key,
    category_code text,
    category_l1   text,
    category_l2   text,
    category_l3   text
);
create table if not exists gold.dim_brand (
    brand_key  int primary key,                -- 0 = unknown brand
    brand      text not null unique
);
create table if not exists gold.dim_product (
    product_id    bigint primary key,
    category_id   bigint not null,
    brand_key     int not null,
    first_seen    timestamptz not null,
    last_seen     timestamptz not null,
    last_price    numeric(12, 2) not null      -- price at last_seen
);
create table if not exists gold.dim_user (
    user_id       bigint primary key,
    first_seen    timestamptz not null,
    last_seen     timestamptz not null,
    n_sessions    int not null,
    n_purchases   int not null,
    revenue       numeric(14, 2) not null
);
create table if not exists gold.fact_events (
    event_key     text primary key,
    date_key      int not null,
    event_time    timestamptz not null,
    event_type    text not null,
    user_id       bigint not null,
    product_id    bigint not null,
    category_id   bigint not null,
    brand_key     int not null,
    user_session  text not null,
    price         numeric(12, 2) not null
);
create index if not exists fact_events_date on gold.fact_events (date_key);
create table if not exists gold.fact_sessions (
    user_session  text primary key,
    user_id       bigint not null,
    date_key      int not null,                -- date of session start
    session_start timestamptz not null,
    duration_s    bigint not null,
    n_views       int not null,
    n_carts       int not null,
    n_purchases   int not null,
    revenue       numeric(14, 2) not null,
    converted     boolean not null
);
create table if not exists gold.fact_daily_sales (
    date_key      int not null,
    category_id   bigint not null,
    brand_key     int not null,
    views         bigint not null,
    carts         bigint not null,
    purchases     bigint not null,
    revenue       numeric(14, 2) not null,
    buyers        bigint not null,
    primary key (date_key, category_id, brand_key)
);
"""

ML = """
create schema if not exists ml;
create table if not exists ml.cart_features (     -- one row per cart-add; features known at that moment
    event_key                   text primary key,
    event_time                  timestamptz not null,
    user_id                     bigint not null,
    user_session                text not null,
    product_id                  bigint not null,
    category_l1                 text,
    category_l2                 text,
    brand                       text,
    price                       double precision not null,
    hour                        int not null,       -- 0-23 UTC
    weekday                     int not null,       -- 1 = Monday
    session_events_before       int not null,
    session_views_before        int not null,
    session_carts_before        int not null,
    session_distinct_products   int not null,
    session_duration_s          double precision not null,
    product_views_in_session    int not null,
    user_prior_sessions         int not null,
    user_prior_carts            int not null,
    user_prior_purchases        int not null,
    label                       boolean not null    -- purchased in the same session after the cart-add
);
create index if not exists cart_features_time on ml.cart_features (event_time);
create table if not exists ml.model_runs (        -- one row per training run, for dashboards
    run_id            text primary key,
    model_name        text not null,
    model_version     text,
    trained_at        timestamptz not null,
    n_train           int not null,
    n_test            int not null,
    positive_rate     double precision not null,
    roc_auc           double precision,
    pr_auc            double precision,
    log_loss          double precision,
    brier             double precision,
    f1                double precision,
    threshold         double precision,
    gate_passed       boolean,
    gate_reasons      text,
    champion_version  text
);
"""

DQ = """
create schema if not exists dq;
create table if not exists dq.runs (             -- one row per suite run
    run_id        text not null,
    suite         text not null,               -- bronze | silver | gold
    success       boolean not null,
    evaluated     int not null,
    failed        int not null,
    report_url    text,                        -- Data Docs page (Airflow UI plugin link)
    report_key    text,                        -- copy of the report in the lake
    started_at    timestamptz not null,
    finished_at   timestamptz not null,
    primary key (run_id, suite)
);
create table if not exists dq.results (          -- one row per expectation per suite run
    run_id          text not null,
    suite           text not null,
    expectation     text not null,             -- expectation type + column, e.g. expect_column_values_to_not_be_null(price)
    severity        text not null,             -- critical | warning
    success         boolean not null,
    observed_value  text,
    unexpected_count bigint,
    sample_values   text,
    primary key (run_id, suite, expectation)
);
create table if not exists dq.freshness (        -- one row per data run that brought new events into gold
    run_id             text primary key,
    events             int not null,           -- events this run loaded that are in gold.fact_events
    first_arrival      timestamptz not null,   -- their earliest and latest Kafka timestamp
    last_arrival       timestamptz not null,
    gold_at            timestamptz not null,   -- when gold committed them
    median_s           double precision not null,  -- gold_at - Kafka timestamp, median over the events
    worst_s            double precision not null,  -- ... largest
    landed_median_s    double precision not null,  -- gold_at - landing time of the event's lake object
    landed_worst_s     double precision not null
);
"""

SCHEMAS: dict[str, str] = {"bronze": BRONZE, "silver": SILVER, "gold": GOLD, "ml": ML, "dq": DQ}


def ensure_schemas(conn: psycopg.Connection, only: tuple[str, ...] | None = None) -> None:
    """Create the warehouse's schemas and tables if missing (idempotent, safe to run concurrently)."""
    from shopstream.landing.manifest import DDL as OPS

    with conn.transaction():
        conn.execute("select pg_advisory_xact_lock(hashtext('shopstream.warehouse.ddl'))")
        conn.execute(OPS)
        for name, ddl in SCHEMAS.items():
            if only is None or name in only:
                conn.execute(ddl)
