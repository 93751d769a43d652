"""The whole flow on a small data set: generator -> Kafka -> lake -> bronze -> silver -> gold, through Airflow.

Gold (plus the late events silver set aside) reconciles exactly with the generator's truth; the gold update
starts the training DAG, whose gate makes a champion that scores feature rows; re-running the run changes
nothing; a broken input fails the right check and stops the layers below it; a check task's log is short
and its process started with Great Expectations imported.
The data run and the training run it starts are package fixtures (tests/e2e/conftest.py), shared with the
browser test.
"""

from __future__ import annotations

import io
from decimal import Decimal

import pandas as pd
import psycopg
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from shopstream.landing import manifest
from shopstream.landing.naming import EVENTS_PREFIX, object_key
from shopstream.stack.s3 import minio_client
from shopstream.training import tracking
from shopstream.training.gate import CHAMPION
from shopstream.training.records import model_runs

pytestmark = pytest.mark.e2e

# table -> columns that record when something ran (they differ between runs by design)
CHECKSUMMED = {
    "bronze.events": ["loaded_at"],
    "silver.events": [],
    "silver.late_events": ["set_aside_at"],
    "silver.rejected": [],
    "silver.sessions": [],
    "silver.reconciliation": ["processed_at", "run_id"],
    "gold.dim_date": [],
    "gold.dim_category": [],
    "gold.dim_brand": [],
    "gold.dim_product": [],
    "gold.dim_user": [],
    "gold.fact_events": [],
    "gold.fact_sessions": [],
    "gold.fact_daily_sales": [],
    "ml.cart_features": [],
}


def checksums(conn: psycopg.Connection) -> dict[str, str]:
    out = {}
    for table, skip in CHECKSUMMED.items():
        schema, name = table.split(".")
        cols = [r[0] for r in conn.execute(
            "select column_name from information_schema.columns where table_schema = %s and table_name = %s "
            "order by ordinal_position", (schema, name)) if r[0] not in skip]
        collist = ", ".join(cols)
        out[table] = conn.execute(
            f"select count(*) || ':' || coalesce(md5(string_agg(t::text, '|' order by t::text)), '') "
            f"from (select {collist} from {table}) t").fetchone()[0]
    return out


def test_gold_reconciles_with_the_generator_truth(data_run, stack_settings):
    truth, _, _ = data_run
    set_aside = truth.set_aside(stack_settings.pipeline.lateness_bound_s)   # late by the partition's clock
    with psycopg.connect(stack_settings.postgres.dsn()) as conn:
        # unique valid events per type: gold facts + the late events silver set aside
        by_type = dict(conn.execute(
            "select event_type, count(*) from (select event_type from gold.fact_events "
            "union all select event_type from silver.late_events) x group by 1").fetchall())
        assert by_type == {k: v for k, v in truth.unique_events_by_type.items() if v}
        # purchases and revenue per day
        days = conn.execute(
            "select d, sum(purchases)::int, sum(revenue) from ("
            " select to_char(to_date(date_key::text, 'YYYYMMDD'), 'YYYY-MM-DD') as d, purchases, revenue"
            " from gold.fact_daily_sales"
            " union all select to_char(event_time at time zone 'UTC', 'YYYY-MM-DD'), 1, price"
            " from silver.late_events where event_type = 'purchase') x group by 1 order by 1").fetchall()
        assert {d: p for d, p, _ in days if p} == truth.purchases_by_day
        assert {d: str(r) for d, p, r in days if p} == truth.revenue_by_day
        # no duplicate event keys in silver; duplicates and late counts match what was injected
        n, keys = conn.execute("select count(*), count(distinct event_key) from silver.events").fetchone()
        assert n == keys
        rec = conn.execute(
            "select sum(bronze_rows), sum(silver_rows), sum(duplicates), sum(late_set_aside), sum(rejected), "
            "count(*) filter (where bronze_rows <> silver_rows + duplicates + late_set_aside + rejected) "
            "from silver.reconciliation").fetchone()
        assert [int(x) for x in rec] == [truth.valid_messages, truth.unique_events - set_aside, truth.duplicates,
                                         set_aside, 0, 0]
        assert set_aside > 0
        # rejected at landing, per reason
        rejected = manifest.totals(conn)["rejected"]
        assert rejected == {k: v for k, v in truth.invalid_by_reason.items() if v}
        # one feature row per cart-add that was not set aside, with its label
        carts, converted = conn.execute("select count(*), count(*) filter (where label) from ml.cart_features").fetchone()
        late_carts = conn.execute("select count(*) from silver.late_events where event_type = 'cart'").fetchone()[0]
        assert carts + late_carts == truth.cart_adds
        assert 0 < converted < carts
        # every layer's checks passed and were recorded
        dq = dict(conn.execute("select suite, success from dq.runs where run_id = %s",
                               (data_run[1].run_id,)).fetchall())
        assert dq == {"bronze": True, "silver": True, "gold": True}
        assert Decimal(str(truth.revenue)) > 0


def test_a_passing_check_task_logs_under_40_lines(data_run):
    """GE's import-time INFO chatter stays out: a check task's log is warnings plus our summary. The task
    process starts with GE imported (the scheduler's PreloadingLocalExecutor imported it before forking)."""
    _, result, client = data_run
    for task_id in ("bronze.check_bronze", "silver.check_silver", "gold.check_gold"):
        ti = client.request("GET", f"/dags/shopstream_data/dagRuns/{result.run_id}/taskInstances/{task_id}")
        assert ti["state"] == "success", ti
        body = client.request("GET", f"/dags/shopstream_data/dagRuns/{result.run_id}/taskInstances/{task_id}"
                                     f"/logs/{ti['try_number']}", params={"full_content": "true"})
        lines = [e.get("event", "") if isinstance(e, dict) else str(e) for e in body["content"]]
        text = "\n".join(lines)
        assert "Data quality passed" in text, text[-3000:]
        assert "Skipping registering function" not in text
        assert "great_expectations already imported in this process" in text, f"{task_id}: no preload:\n{text}"
        assert len(text.splitlines()) < 40, f"{task_id}: {len(text.splitlines())} lines:\n{text}"


def test_gold_update_trains_a_champion_that_predicts(training_run, stack_settings):
    """data DAG -> gold asset -> training DAG (Ray Tune, MLflow, gate) -> `models:/<name>@champion` scores."""
    import mlflow

    from shopstream.features import FEATURE_COLUMNS

    s = stack_settings
    run, result = training_run
    assert run["run_type"] == "asset_triggered"
    assert result.state == "success", result.tasks
    assert {t: result.tasks[t] for t in ("check_champion", "extract", "tune", "train", "gate")} == dict.fromkeys(
        ("check_champion", "extract", "tune", "train", "gate"), "success")
    name = s.mlflow.registered_model
    champion = tracking.client(s).get_model_version_by_alias(name, CHAMPION)
    assert champion.tags["gate.decision"] == "passed"
    mlrun = tracking.client(s).get_run(champion.run_id)
    assert mlrun.data.tags[tracking.AIRFLOW_RUN_TAG] == run["dag_run_id"]
    records = [r for r in model_runs(s, name) if r["model_version"] == champion.version]
    assert len(records) == 1 and records[0]["gate_passed"] is True

    with psycopg.connect(s.postgres.dsn()) as conn:
        rows = conn.execute(f"select {', '.join(FEATURE_COLUMNS)} from ml.cart_features "
                            "order by event_key limit 200").fetchall()
    frame = pd.DataFrame(rows, columns=list(FEATURE_COLUMNS))
    tracking.configure(s)
    model = mlflow.pyfunc.load_model(f"models:/{name}@{CHAMPION}")
    proba = model.predict(frame)
    assert proba.shape == (len(frame),) and ((proba > 0) & (proba < 1)).all()
    assert proba.std() > 0   # it tells cart-adds apart


def test_rerunning_the_run_changes_nothing(data_run, stack_settings):
    _, result, client = data_run
    with psycopg.connect(stack_settings.postgres.dsn()) as conn:
        before = checksums(conn)
    client.request("POST", "/dags/shopstream_data/clearTaskInstances", json={
        "dry_run": False, "dag_run_id": result.run_id, "only_failed": False, "reset_dag_runs": True,
    })
    again = client.wait_for_run("shopstream_data", result.run_id, timeout=1800)
    assert again.state == "success", again.tasks
    with psycopg.connect(stack_settings.postgres.dsn()) as conn:
        after = checksums(conn)
    assert after == before


def test_broken_input_fails_the_bronze_check_and_stops_the_layers_below(data_run, stack_settings):
    """A lake object from a broken upstream writer (unknown event types) never reaches silver."""
    s = stack_settings
    _, _, client = data_run
    good = pq.read_table(io.BytesIO(minio_client(s).get_object(s.s3.lake_bucket, _any_events_key(s)).read()))
    bad = good.slice(0, 20).set_column(good.schema.get_field_index("event_type"), "event_type",
                                       pa.array(["clicked"] * 20))
    bad = bad.set_column(bad.schema.get_field_index("src_topic"), "src_topic", pa.array(["broken.writer"] * 20))
    from datetime import UTC, datetime

    hour = datetime(2019, 10, 1, tzinfo=UTC)
    key = object_key(EVENTS_PREFIX, hour, "broken.writer", 0, 0, 19)
    buf = io.BytesIO()
    pq.write_table(bad, buf)
    minio_client(s).put_object(s.s3.lake_bucket, key, io.BytesIO(buf.getvalue()), len(buf.getvalue()))
    with psycopg.connect(s.postgres.dsn(), autocommit=True) as conn:
        conn.execute(
            "insert into ops.landed_objects (object_key, kind, topic, kafka_partition, first_offset, last_offset, "
            "event_hour, rows, bytes) values (%s, 'events', 'broken.writer', 0, 0, 19, %s, 20, %s)",
            (key, hour, len(buf.getvalue())))
        silver_before = conn.execute("select count(*) from silver.events").fetchone()[0]
    try:
        result = client.run_dag("shopstream_data", timeout=1200)
        assert result.state == "failed"
        states = result.tasks
        assert states["bronze.check_bronze"] == "failed"
        assert states["silver.transform_silver"] == "upstream_failed"
        assert states["gold.transform_gold"] == "upstream_failed"
        with psycopg.connect(s.postgres.dsn()) as conn:
            failed = conn.execute(
                "select expectation, unexpected_count, sample_values from dq.results "
                "where run_id = %s and suite = 'bronze' and not success", (result.run_id,)).fetchall()
            assert conn.execute("select count(*) from silver.events").fetchone()[0] == silver_before
        assert any("event_type" in e for e, _, _ in failed), failed
        assert any(n == 20 and "clicked" in (samples or "") for e, n, samples in failed if "event_type" in e)
    finally:
        with psycopg.connect(s.postgres.dsn(), autocommit=True) as conn, conn.transaction():
            conn.execute("delete from bronze.events where object_key = %s", (key,))
            conn.execute("delete from bronze.loads where object_key = %s", (key,))
            conn.execute("delete from ops.landed_objects where object_key = %s", (key,))


def _any_events_key(s) -> str:
    with psycopg.connect(s.postgres.dsn()) as conn:
        return conn.execute("select object_key from ops.landed_objects where kind = 'events' "
                            "and topic = %s limit 1", (s.kafka.raw_topic,)).fetchone()[0]


def test_restate_param_brings_the_set_aside_events_into_gold_and_again_changes_nothing(data_run, stack_settings):
    """The data DAG's restate_from/restate_to Params: the late events of the range reach gold; the truth's
    purchases per day then hold for gold alone; a second identical run leaves every table as it was."""
    truth, _, client = data_run
    s = stack_settings
    conf = {"restate_from": "2019-09-01T00:00:00+00:00", "restate_to": "2019-11-01T00:00:00+00:00"}
    with psycopg.connect(s.postgres.dsn()) as conn:
        late = conn.execute("select count(*) from silver.late_events").fetchone()[0]
    assert late == truth.set_aside(s.pipeline.lateness_bound_s) > 0
    try:
        first = client.run_dag("shopstream_data", conf=conf, timeout=1800)
        assert first.state == "success", first.tasks
        with psycopg.connect(s.postgres.dsn()) as conn:
            assert conn.execute("select count(*) from silver.late_events").fetchone()[0] == 0
            assert conn.execute("select count(*) from silver.restated_events").fetchone()[0] == late
            days = dict(conn.execute("select to_char(to_date(date_key::text, 'YYYYMMDD'), 'YYYY-MM-DD'), "
                                     "sum(purchases)::int from gold.fact_daily_sales group by 1 "
                                     "having sum(purchases) > 0").fetchall())
            assert days == truth.purchases_by_day   # gold alone now holds every purchase
            assert conn.execute("select count(*) from silver.reconciliation where bronze_rows <> "
                                "silver_rows + duplicates + late_set_aside + rejected").fetchone()[0] == 0
            restated = conn.execute("select restated, late_share from silver.runs where run_id = %s",
                                    (first.run_id,)).fetchone()
            assert restated == (late, 0.0)
            before = checksums(conn)
        second = client.run_dag("shopstream_data", conf=conf, timeout=1800)
        assert second.state == "success", second.tasks
        with psycopg.connect(s.postgres.dsn()) as conn:
            assert checksums(conn) == before
    finally:
        client.request("PATCH", "/dags/shopstream_data", json={"is_paused": True})
