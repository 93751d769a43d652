"""Benchmark: landed events to gold (bronze COPY + Spark silver + Spark gold) vs pandas ``to_sql`` inserts.

Runs on a private embedded stack (PostgreSQL, S3 endpoint, broker) started for the run. The events are
generated, produced and landed first (not timed); then the timed part is exactly what the data DAG's
tasks run: ``bronze.load``, ``silver.build`` and ``gold.build`` (in one Spark session; the DAG's total adds
the second session start its two ``spark-submit`` tasks pay). The baseline loads landed rows into a table
with pandas ``to_sql`` row inserts, on fewer rows (it is slow), compared in rows/s.

    python bench/pipeline.py [--events 1000000] [--baseline-rows 20000]
"""

from __future__ import annotations

import argparse
import io
import os
import sys
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

sys.path.insert(0, str(Path(__file__).resolve().parent))
from report import machine, write_section  # noqa: E402
from stack import private_stack  # noqa: E402

from shopstream.events.generator import generate  # noqa: E402
from shopstream.events.producer import produce  # noqa: E402
from shopstream.landing.service import LandingConfig, LandingService  # noqa: E402
from shopstream.settings import Settings  # noqa: E402
from shopstream.stack.s3 import minio_client  # noqa: E402


def land(settings: Settings, n: int) -> None:
    print(f"generating, producing and landing {n:,} events (not timed) ...", flush=True)
    produce(settings, generate(n, seed=9, days=7).timed())
    svc = LandingService(settings, LandingConfig(idle_timeout_s=5.0, notify=False))
    try:
        print(svc.run(until_idle=True).summary(settings), flush=True)
    finally:
        svc.close()


def lake_to_gold(settings: Settings) -> dict:
    from shopstream.spark_session import spark_session
    from shopstream.warehouse import bronze, gold, silver

    t0 = time.monotonic()
    b = bronze.load(settings, "bench")
    t1 = time.monotonic()
    spark = spark_session(settings, "shopstream-bench")
    try:
        t2 = time.monotonic()
        s = silver.build(spark, settings, "bench")
        t3 = time.monotonic()
        g = gold.build(spark, settings, "bench")
        t4 = time.monotonic()
    finally:
        spark.stop()
    for r in (b, s, g):
        print(r.summary(), flush=True)
    return {"rows": b.rows, "bronze": t1 - t0, "spark_start": t2 - t1, "silver": t3 - t2, "gold": t4 - t3,
            "total": t4 - t0, "silver_rows": s.silver_rows, "features": g.features, "fact_events": g.fact_events,
            "read_partitions": settings.spark.read_partitions}


def naive_to_sql(settings: Settings, rows: int) -> dict:
    """pandas to_sql (method='multi') of landed rows into a plain table: the common tutorial path."""
    import sqlalchemy

    lake = minio_client(settings)
    tables, n = [], 0
    for obj in lake.list_objects(settings.s3.lake_bucket, prefix="events/", recursive=True):
        t = pq.read_table(io.BytesIO(lake.get_object(settings.s3.lake_bucket, obj.object_name).read()))
        tables.append(t)
        n += t.num_rows
        if n >= rows:
            break
    df = pa.concat_tables(tables).slice(0, rows).to_pandas()
    engine = sqlalchemy.create_engine(settings.postgres.url(settings.postgres.warehouse_db))
    t0 = time.monotonic()
    df.to_sql("naive_events", engine, schema="public", if_exists="replace", index=False, method="multi",
              chunksize=1000)
    seconds = time.monotonic() - t0
    engine.dispose()
    return {"rows": len(df), "seconds": seconds, "rate": len(df) / seconds}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--baseline-rows", type=int, default=20_000)
    args = parser.parse_args()
    with private_stack() as settings:
        land(settings, args.events)
        load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
        ours = lake_to_gold(settings)
        print(f"lake to gold: {ours}", flush=True)
        naive = naive_to_sql(settings, args.baseline_rows)
        print(f"naive: {naive}", flush=True)
    # the data DAG runs silver and gold as two spark-submit tasks: it pays the session start twice
    dag_total = ours["total"] + ours["spark_start"]
    rate = ours["rows"] / dag_total
    target = "met" if dag_total < 120 else "NOT met"
    body = f"""## Lake to gold: bronze COPY + Spark silver + Spark gold (issue 5)

Machine: {machine()}; load average before the timed part {load} (the cores are
shared). Private embedded stack; {args.events:,} generated events landed first (10% invalid
go to dead letters, so {ours['rows']:,} rows reach bronze). Timed: exactly the data DAG's transform steps,
Spark `local[*]` in one session; the DAG runs silver and gold as separate `spark-submit` tasks, so its
total counts the session start twice (GE checks between the layers are not timed).

| step | seconds |
|---|---:|
| bronze: {ours['rows']:,} rows from the lake with COPY | {ours['bronze']:.1f} |
| Spark session start | {ours['spark_start']:.1f} |
| silver: dedup, lateness, sessions -> {ours['silver_rows']:,} events | {ours['silver']:.1f} |
| gold: star schema ({ours['fact_events']:,} fact events) + {ours['features']:,} feature rows | {ours['gold']:.1f} |
| total, one session | {ours['total']:.1f} |
| **estimated total as the DAG runs it (+ the measured session start again, for gold's own spark-submit)** | **{dag_total:.1f}** |

| path | rows | seconds | rows/s |
|---|---:|---:|---:|
| shopstream lake -> gold (all three layers, as the DAG runs it) | {ours['rows']:,} | {dag_total:.1f} | {rate:,.0f} |
| naive: pandas `to_sql(method="multi")` into one table (baseline) | {naive['rows']:,} | {naive['seconds']:.1f} | {naive['rate']:,.0f} |

Ratio: **{rate / naive['rate']:,.1f}x** the baseline's rows/s, while doing three layers instead of one
plain insert. Target (1M events lake to gold under 2 minutes, as the DAG runs it): **{target}**.

How (see docs/pipeline.md): each job reads PostgreSQL with {ours['read_partitions']} parallel JDBC queries (one per
hash bucket of its key) instead of one, silver dedups and numbers sessions in one shuffle and cuts its four
outputs from one cached pass, gold reads once and computes features over Arrow batches, and bronze
downloads the next lake objects while it COPYs. Largest remaining costs: the COPY into the indexed
`silver.events`, and the Spark reads and shuffles on two shared cores.
"""
    print(f"wrote {write_section('pipeline', body)}")


if __name__ == "__main__":
    main()
