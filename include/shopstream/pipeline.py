"""Task bodies of the data DAG: each is a plain function of settings and the run, re-runnable as is."""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Any

import psycopg

from shopstream.settings import Settings

log = logging.getLogger("shopstream.pipeline")

LAYER_TABLES = {
    "bronze": ["bronze.events"],
    "silver": ["silver.events", "silver.late_events", "silver.rejected", "silver.sessions"],
    "gold": ["gold.fact_events", "gold.fact_sessions", "gold.fact_daily_sales", "gold.dim_user",
             "gold.dim_product", "ml.cart_features"],
}


def land(settings: Settings) -> dict[str, Any]:
    """Drain the raw topic into the lake (until idle) unless a landing service does it."""
    from shopstream.landing.service import LandingConfig, LandingService

    if not settings.pipeline.land_in_dag:
        log.info("SHOPSTREAM_PIPELINE__LAND_IN_DAG is false: the landing service lands; nothing to do")
        return {"skipped": True}
    svc = LandingService(settings, LandingConfig(idle_timeout_s=5.0, notify=False))
    try:
        stats = svc.run(until_idle=True)
    finally:
        svc.close()
    log.info(stats.summary(settings))
    return {"messages": stats.messages, "valid": stats.valid, "rejected": stats.rejected,
            "by_reason": dict(stats.by_reason), "objects": stats.objects}


def load_bronze(settings: Settings, run_id: str, landed_before: datetime | None = None,
                rebuild: bool = False) -> dict[str, Any]:
    """Load the landed objects not yet in bronze (those landed before the interval's end).

    With nothing new to load (and no rebuild asked for) the run skips the layers below: no checks on
    empty batches, and the gold asset is not updated, so training is not started for nothing.
    """
    from airflow.sdk.exceptions import AirflowSkipException

    from shopstream.warehouse import bronze

    result = bronze.load(settings, run_id, landed_before)
    log.info(result.summary())
    if not result.hours and not rebuild:  # a retry of this run still sees the objects it loaded before
        raise AirflowSkipException("no new landed objects: nothing to load, the layers below are skipped")
    return {"objects": result.objects, "rows": result.rows, "hours": len(result.hours)}


SPARK_CONNECT_CONN = "shopstream_spark_connect"


def connect_url(conn_id: str = SPARK_CONNECT_CONN) -> str:
    """The Spark Connect server's URL from its Airflow connection (rendered from settings, editable in the UI)."""
    from airflow.providers.apache.spark.hooks.spark_connect import SparkConnectHook

    return SparkConnectHook(conn_id).get_connection_url()


def transform(settings: Settings, layer: str, run_id: str, connect_url: str | None = None, **ranges: str | None
              ) -> dict[str, Any]:
    """Build ``layer`` (silver | gold) for the run on the Spark Connect server (``SHOPSTREAM_SPARK__MODE=connect``).

    ``connect_url``: ``sc://host:port`` (the data DAG passes its ``shopstream_spark_connect`` connection's;
    default from settings). ``ranges`` (silver): ``start``, ``end``, ``restate_from``, ``restate_to``
    (ISO-8601 event times; empty: none), as the spark-submit job takes them.
    """
    import warnings

    from shopstream.spark_session import connect_session
    from shopstream.warehouse import gold, silver

    # pandas 3 makes pyspark warn on every import: known and harmless (the check tasks quiet it too)
    warnings.filterwarnings("ignore", message="PySpark does not yet fully support pandas", category=FutureWarning)
    spark = connect_session(settings, connect_url)
    spark.addTag(f"shopstream-{layer}")   # the Spark UI's jobs say which layer ran them
    try:
        if layer == "silver":
            result = silver.build(spark, settings, run_id, ranges.get("start") or None, ranges.get("end") or None,
                                  ranges.get("restate_from") or None, ranges.get("restate_to") or None)
        elif layer == "gold":
            result = gold.build(spark, settings, run_id)
        else:
            raise ValueError(f"no Spark transform for layer {layer!r} (silver or gold)")
    finally:
        spark.stop()
    log.info(result.summary())
    return dict(result.__dict__)


def run_scope(layer: str, run_id: str) -> str | dict[str, str] | None:
    """SQL predicate selecting the rows this run wrote in ``layer`` (per table for silver; None: whole tables)."""
    rid = run_id.replace("'", "''")
    if layer == "bronze":
        return f"object_key in (select object_key from bronze.loads where run_id = '{rid}')"
    if layer == "silver":
        hours = f"event_hour in (select event_hour from silver.reconciliation where run_id = '{rid}')"
        return {"silver.events": hours, "silver.reconciliation": hours, "silver.runs": f"run_id = '{rid}'"}
    if layer == "gold":
        return (f"date_key in (select distinct to_char(event_hour at time zone 'UTC', 'YYYYMMDD')::int "
                f"from silver.reconciliation where run_id = '{rid}')")
    return None


def check(settings: Settings, layer: str, run_id: str) -> dict[str, Any]:
    """Run the layer's expectation suite on this run's rows; fail with a readable summary if a critical one fails."""
    from shopstream.quality import raise_for_failures, run_suite
    from shopstream.warehouse.ddl import ensure_schemas

    with psycopg.connect(settings.postgres.dsn(), autocommit=True) as conn:
        ensure_schemas(conn, only=("dq",))
    result = run_suite(settings, layer, run_id, where=run_scope(layer, run_id))
    raise_for_failures(result)
    return {"suite": layer, "success": result.success, "report": result.report_url}


def layer_counts(settings: Settings) -> dict[str, int]:
    """Rows per table of every layer."""
    with psycopg.connect(settings.postgres.dsn()) as conn:
        out = {}
        for tables in LAYER_TABLES.values():
            for t in tables:
                try:
                    out[t] = conn.execute(f"select count(*) from {t}").fetchone()[0]
                except psycopg.errors.UndefinedTable:
                    conn.rollback()
                    out[t] = 0
        return out


def summarize(settings: Settings, run_id: str) -> dict[str, Any]:
    """Counts per layer and this run's data quality results, logged as one readable block."""
    counts = layer_counts(settings)
    from shopstream.quality.store import format_shares, set_aside_shares

    with psycopg.connect(settings.postgres.dsn()) as conn:
        dq = conn.execute(
            "select suite, success, evaluated, failed, report_url from dq.runs where run_id = %s order by suite",
            (run_id,),
        ).fetchall()
        shares = set_aside_shares(conn, [run_id]).get(run_id)
    lines = [f"shopstream_data {run_id}"]
    lines += [f"  {t:<24} {n:>12,}" for t, n in counts.items()]
    if shares:
        lines.append(f"  silver set aside: {format_shares(shares)}")
    lines += [f"  dq {s:<8} {'passed' if ok else 'FAILED'} ({ev - fl}/{ev} expectations) {url or ''}"
              for s, ok, ev, fl, url in dq]
    log.info("\n".join(lines))
    return {"counts": counts, "dq": [{"suite": s, "success": ok} for s, ok, *_ in dq],
            "set_aside": {k: shares[k] for k in ("late_share", "duplicate_share", "rejected_share")} if shares else {}}
