"""History replayed by anyone's client reaches gold; lateness is event time; set-aside rows are never silent.

A Kaggle-format file (in time order, as the data set's files are) is produced by kafka-python, which sets no
timestamp (the broker stamps today's time), half of it as plain JSON and half as Kafka Connect envelopes. It
lands, and bronze, silver and gold are built with the real Spark jobs into a warehouse database of this
module's own (so the shared stack's warehouse, which other tests reconcile, is not touched):

* gold's purchases and revenue per day equal the file's own sums, and nothing is set aside as late;
* a second replay of older history, all of it far behind its partitions' clocks, is set aside as late: the
  silver suite fails on the run's late share and the DQ page names it;
* restating that range brings it into gold, exactly; restating again changes nothing.
"""

from __future__ import annotations

import uuid
import zlib
from decimal import Decimal

import orjson
import psycopg
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pytest

from shopstream.events.generator import generate
from shopstream.events.kaggle import read_kaggle, write_kaggle_csv
from shopstream.pipeline import run_scope
from shopstream.settings import Settings
from shopstream.warehouse import bronze, gold, silver

from .test_landing import kafka_python_send, land

pytestmark = pytest.mark.integration

TABLES = ["silver.events", "silver.late_events", "silver.sessions", "gold.fact_events", "gold.fact_sessions",
          "gold.fact_daily_sales", "gold.dim_user", "gold.dim_product", "ml.cart_features"]


@pytest.fixture(scope="module")
def replay_settings(stack, stack_settings: Settings):
    """Private topics, consumer group and warehouse database; the database is dropped afterwards."""
    tag = uuid.uuid4().hex[:8]
    db = f"replay_{tag}"
    with psycopg.connect(stack_settings.postgres.dsn("postgres"), autocommit=True) as conn:
        conn.execute(f'create database "{db}"')
    kafka = stack_settings.kafka.model_copy(update={
        "raw_topic": f"replay.{tag}", "invalid_topic": f"replay-invalid.{tag}", "landing_group": f"replay-{tag}"})
    pg = stack_settings.postgres.model_copy(update={"warehouse_db": db})
    try:
        yield stack_settings.model_copy(update={"kafka": kafka, "postgres": pg})
    finally:
        with psycopg.connect(stack_settings.postgres.dsn("postgres"), autocommit=True) as conn:
            conn.execute(f'drop database if exists "{db}" with (force)')


@pytest.fixture(scope="module")
def spark(replay_settings):
    from shopstream.spark_session import spark_session

    session = spark_session(replay_settings, "shopstream-replay-test")
    yield session
    session.stop()


def history_file(tmp_path, seed: int, start: str, days: float, n: int):
    """A Kaggle CSV of clean history in time order, and its own purchases and revenue per day (read back
    from the CSV with Arrow alone)."""
    from datetime import datetime

    messages = list(generate(n, seed=seed, start=datetime.fromisoformat(start), days=days, invalid_rate=0.0,
                             duplicate_rate=0.0, late_rate=0.0))
    path = tmp_path / f"history-{seed}.csv"
    write_kaggle_csv(messages, path)
    t = pacsv.read_csv(path, convert_options=pacsv.ConvertOptions(column_types={"price": pa.string()}))
    buys = t.filter(pc.equal(t["event_type"], "purchase"))
    days_ = pc.utf8_slice_codeunits(buys["event_time"].cast(pa.string()), 0, 10).to_pylist()
    sums: dict[str, list] = {}
    for d, price in zip(days_, buys["price"].to_pylist(), strict=True):
        n_, total = sums.get(d, (0, Decimal(0)))
        sums[d] = (n_ + 1, total + Decimal(price))
    return path, sums


def replay(settings: Settings, path) -> int:
    """Produce the file with kafka-python (no timestamps); every other session as a Kafka Connect envelope."""
    schema = {"type": "struct", "optional": False, "name": "kaggle.event"}
    out = []
    for key, value in read_kaggle(path):
        if zlib.crc32(key) % 2:
            value = orjson.dumps({"schema": schema, "payload": orjson.loads(value)})
        out.append((key, value))
    kafka_python_send(settings, out)
    return len(out)


def build(spark, settings: Settings, run_id: str, **restate) -> silver.SilverResult:
    bronze.load(settings, run_id)
    result = silver.build(spark, settings, run_id, restate_from=restate.get("start"), restate_to=restate.get("end"))
    gold.build(spark, settings, run_id)
    return result


def gold_days(settings: Settings) -> dict[str, tuple[int, Decimal]]:
    with psycopg.connect(settings.postgres.dsn()) as conn:
        return {d: (int(p), r) for d, p, r in conn.execute(
            "select to_char(to_date(date_key::text, 'YYYYMMDD'), 'YYYY-MM-DD'), sum(purchases), sum(revenue) "
            "from gold.fact_daily_sales group by 1 having sum(purchases) > 0 order by 1")}


def checksums(settings: Settings) -> dict[str, str]:
    with psycopg.connect(settings.postgres.dsn()) as conn:
        return {t: conn.execute(f"select count(*) || ':' || coalesce(md5(string_agg(x::text, '|' order by x::text)), "
                                f"'') from {t} x").fetchone()[0] for t in TABLES}


def test_history_replayed_without_timestamps_reaches_gold(replay_settings, spark, tmp_path_factory):
    s = replay_settings
    path, sums = history_file(tmp_path_factory.mktemp("h1"), seed=31, start="2019-11-04T00:00:00+00:00",
                              days=3, n=6000)
    n = replay(s, path)
    assert land(s).stats.valid == n
    result = build(spark, s, "replay-1")
    assert result.late == 0 and result.rejected == 0 and result.silver_rows == n
    assert gold_days(s) == sums   # purchases and revenue per day: the file's own sums, to the cent


def test_mostly_late_input_fails_silver_and_the_dq_page_names_the_share(replay_settings, spark, tmp_path_factory):
    from shopstream.quality import run_suite
    from shopstream.quality.store import format_shares, set_aside_shares
    from shopstream.quality.web import render_results_page

    s = replay_settings
    path, _ = history_file(tmp_path_factory.mktemp("h2"), seed=32, start="2019-10-01T00:00:00+00:00",
                           days=2, n=3000)
    replay(s, path)   # a month older than what the partitions have seen: far behind every partition's clock
    land(s)
    result = build(spark, s, "replay-2")
    assert result.late == result.bronze_rows == 3000 and result.silver_rows == 0
    check = run_suite(s, "silver", "replay-2", where=run_scope("silver", "replay-2"))
    assert not check.success
    failed = {o.expectation: o for o in check.outcomes if not o.success}
    late = failed["expect_column_values_to_be_between(silver.runs: late_share_at_most_critical_share)"]
    assert late.severity == "critical" and late.sample_values == [1.0]
    assert "late_share_at_most_warning_share" in " ".join(failed)
    with psycopg.connect(s.postgres.dsn()) as conn:
        shares = set_aside_shares(conn, ["replay-2"])["replay-2"]
        run = conn.execute("select * from dq.runs where run_id = 'replay-2' and suite = 'silver'").fetchone()
    assert format_shares(shares).startswith("late 100.0% (3,000)")
    cols = ["run_id", "suite", "success", "evaluated", "failed", "report_url", "report_key", "started_at",
            "finished_at"]
    page = render_results_page(dict(zip(cols, run, strict=True)), [], "/dq", shares)
    assert "Set aside by this run:</strong> late 100.0% (3,000)" in page


def test_restating_the_range_brings_it_into_gold_and_again_changes_nothing(replay_settings, spark):
    s = replay_settings
    with psycopg.connect(s.postgres.dsn()) as conn:
        late_before = conn.execute("select count(*) from silver.late_events").fetchone()[0]
        purchases = dict(conn.execute(
            "select to_char(event_time at time zone 'UTC', 'YYYY-MM-DD'), count(*) from silver.late_events "
            "where event_type = 'purchase' group by 1").fetchall())
    assert late_before == 3000
    before = gold_days(s)
    result = build(spark, s, "restate-1", start="2019-10-01T00:00:00+00:00", end="2019-10-03T00:00:00+00:00")
    assert result.restated == 3000 and result.late == 0
    after = gold_days(s)
    assert {d: p for d, (p, _) in after.items() if d < "2019-10-03"} == purchases
    assert {d: v for d, v in after.items() if d >= "2019-11-01"} == before
    with psycopg.connect(s.postgres.dsn()) as conn:
        rec = conn.execute("select count(*) from silver.reconciliation "
                           "where bronze_rows <> silver_rows + duplicates + late_set_aside + rejected").fetchone()[0]
        assert rec == 0 and conn.execute("select count(*) from silver.late_events").fetchone()[0] == 0
    first = checksums(s)
    again = build(spark, s, "restate-2", start="2019-10-01T00:00:00+00:00", end="2019-10-03T00:00:00+00:00")
    assert again.restated == 3000 and checksums(s) == first
