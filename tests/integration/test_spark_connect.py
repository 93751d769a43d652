"""The stack's long-lived Spark Connect server builds the same silver and gold as a driver of one's own.

Events are produced (Kafka timestamps: now), landed and loaded into bronze of a warehouse database of this
module's own; silver and gold are built once on a local ``local[*]`` session (the spark-submit jobs' path)
and once, from empty layers, through ``shopstream.pipeline.transform`` on the stack's Spark Connect server
(the data DAG's default path): every silver and gold table has the same checksum. The run's freshness
(Kafka arrival to gold) is recorded in ``dq.freshness`` and shown by ``shopstream status``.
"""

from __future__ import annotations

import psycopg
import pytest

from shopstream.events.generator import generate
from shopstream.events.producer import produce
from shopstream.pipeline import transform
from shopstream.settings import Settings
from shopstream.warehouse import bronze, gold, silver

from .test_landing import land
from .test_replay import TABLES, replay_settings  # noqa: F401 - a fixture of this module too

pytestmark = pytest.mark.integration
RUN = "connect-1"


@pytest.fixture(scope="module")
def loaded(replay_settings: Settings) -> Settings:  # noqa: F811
    s = replay_settings
    produce(s, ((k, v) for k, v in generate(3000, seed=41, days=2)))   # no timestamps: arrival is now
    land(s)
    assert bronze.load(s, RUN).rows > 0
    return s


def checksums(settings: Settings) -> dict[str, str]:
    """Count and md5 of every silver and gold table's rows (without when a late event was set aside)."""
    with psycopg.connect(settings.postgres.dsn()) as conn:
        return {t: conn.execute(
            "select count(*) || ':' || coalesce(md5(string_agg(r, '|' order by r)), '') "
            f"from (select (to_jsonb(x) - 'set_aside_at')::text as r from {t} x) rows").fetchone()[0]
            for t in TABLES}


def test_the_connect_server_is_part_of_the_stack(stack, stack_settings):
    assert stack_settings.spark.mode == "connect"
    row = {r.name: r for r in stack.status()}["spark-connect"]
    assert row.state == "healthy", row


def test_connect_and_local_sessions_build_the_same_silver_and_gold(loaded):
    from shopstream.spark_session import spark_session

    s = loaded
    spark = spark_session(s, "shopstream-connect-test")
    try:
        silver.build(spark, s, RUN)
        gold.build(spark, s, RUN)
    finally:
        spark.stop()
    local = checksums(s)
    assert all(not v.startswith("0:") for t, v in local.items() if t != "silver.late_events"), local

    with psycopg.connect(s.postgres.dsn(), autocommit=True) as conn:
        conn.execute(f"truncate {', '.join(TABLES)}, silver.rejected, silver.reconciliation, silver.runs")
    assert checksums(s)["gold.fact_events"] == "0:"
    result = transform(s, "silver", RUN)
    assert result["silver_rows"] > 0
    assert transform(s, "gold", RUN)["fact_events"] > 0
    assert checksums(s) == local
    assert transform(s, "gold", RUN)["fact_events"] > 0   # again, on the same shared server-side session
    assert checksums(s) == local


def test_freshness_of_the_run_is_recorded_and_shown(loaded):
    from shopstream.cli import freshness_rows

    s = loaded
    with psycopg.connect(s.postgres.dsn()) as conn:
        events, median_s, worst_s, landed_s, in_gold = conn.execute(
            "select events, median_s, worst_s, landed_median_s, "
            "(select count(*) from gold.fact_events) from dq.freshness where run_id = %s", (RUN,)).fetchone()
    assert events == in_gold > 0
    assert 0 < landed_s <= median_s <= worst_s < 3600   # produced, landed and built within this test
    rows = freshness_rows(s)
    assert rows and rows[0][0] == RUN
