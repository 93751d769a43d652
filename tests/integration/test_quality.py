"""Data quality on the real stack: GE suites per layer against PostgreSQL, dq rows, reports, the UI page."""

from __future__ import annotations

import shutil
import uuid
from pathlib import Path

import httpx
import psycopg
import pytest

from shopstream.quality import DataQualityError, raise_for_failures, run_suite
from shopstream.quality.report import local_reports_root, run_slug
from shopstream.settings import Settings
from shopstream.stack.s3 import minio_client
from shopstream.warehouse.ddl import ensure_schemas

pytestmark = pytest.mark.integration

TABLES = [
    "bronze.events", "bronze.loads", "silver.events", "silver.reconciliation", "silver.sessions",
    "gold.dim_date", "gold.dim_category", "gold.dim_brand", "gold.dim_product", "gold.dim_user",
    "gold.fact_events", "gold.fact_daily_sales", "ml.cart_features",
]


# ---------------------------------------------------------------------------- data
def _bronze(conn, rows, first_offset=0, object_key="events/o1.parquet"):
    """Bronze rows as the loader writes them, with the object's bronze.loads record kept in step."""
    for i, (ts, etype, product, price, user, session, key) in enumerate(rows, first_offset):
        conn.execute(
            "insert into bronze.events values (%s, %s, %s, 2, 'electronics.smartphone', 'acme', %s, %s, %s, %s,"
            " 'events.raw', 0, %s, %s::timestamptz + interval '2 seconds', %s, now())",
            (ts, etype, product, price, user, session, key, i, ts, object_key),
        )
    conn.execute(
        "insert into bronze.loads values (%(k)s, (select count(*) from bronze.events where object_key = %(k)s),"
        " 'test') on conflict (object_key) do update set rows = excluded.rows", {"k": object_key},
    )


def _silver(conn, key, ts, etype, price, seq, *, session="s1", code="electronics.smartphone",
            l1="electronics", copies=1):
    conn.execute(
        "insert into silver.events values (%(k)s, %(ts)s, date_trunc('hour', %(ts)s::timestamptz, 'UTC'),"
        " (%(ts)s::timestamptz at time zone 'UTC')::date, %(t)s, 1, 2, %(code)s, %(l1)s, 'smartphone', null,"
        " 'acme', %(p)s, 10, %(s)s, %(ts)s::timestamptz + interval '2 seconds', 2, %(c)s, %(seq)s)",
        {"k": key, "ts": ts, "t": etype, "p": price, "s": session, "code": code, "l1": l1, "c": copies,
         "seq": seq},
    )


def load_good(conn: psycopg.Connection) -> None:
    """A small consistent warehouse: every layer's suite passes on it without warnings."""
    conn.execute(f"truncate {', '.join(TABLES)}")
    h = "2019-10-01 10:00:"
    _bronze(conn, [
        (h + "01+00", "view", 1, 5.5, 10, "s1", "k1"),
        (h + "03+00", "cart", 1, 5.5, 10, "s1", "k2"),
        (h + "03+00", "cart", 1, 5.5, 10, "s1", "k2"),   # a re-sent copy: bronze keeps it
        (h + "09+00", "purchase", 1, 5.5, 10, "s1", "k3"),
        (h + "20+00", "cart", 1, 5.5, 11, "s2", "k4"),
    ])
    _silver(conn, "k1", h + "01+00", "view", 5.5, 1)
    _silver(conn, "k2", h + "03+00", "cart", 5.5, 2, copies=2)
    _silver(conn, "k3", h + "09+00", "purchase", 5.5, 3)
    _silver(conn, "k4", h + "20+00", "cart", 5.5, 1, session="s2")
    conn.execute("insert into silver.reconciliation values ('2019-10-01 10:00+00', 5, 4, 1, 0, 0, 'test', now())")
    conn.execute(
        "insert into silver.sessions values ('s1', 10, '2019-10-01 10:00:01+00', '2019-10-01 10:00:09+00', 8,"
        " 3, 1, 1, 0, 1, 5.5), ('s2', 11, '2019-10-01 10:00:20+00', '2019-10-01 10:00:20+00', 0, 1, 0, 1, 0, 0, 0)"
    )
    conn.execute("insert into gold.dim_date values (20191001, '2019-10-01', 2019, 4, 10, 1, 2, false)")
    conn.execute("insert into gold.dim_category values (2, 'electronics.smartphone', 'electronics', 'smartphone', null)")
    conn.execute("insert into gold.dim_brand values (0, 'unknown'), (1, 'acme')")
    conn.execute("insert into gold.dim_product values (1, 2, 1, '2019-10-01 10:00:01+00', '2019-10-01 10:00:20+00', 5.5)")
    conn.execute(
        "insert into gold.dim_user values (10, '2019-10-01 10:00:01+00', '2019-10-01 10:00:09+00', 1, 1, 5.5),"
        " (11, '2019-10-01 10:00:20+00', '2019-10-01 10:00:20+00', 1, 0, 0)"
    )
    for key, ts, etype, user, session in [
        ("k1", h + "01+00", "view", 10, "s1"), ("k2", h + "03+00", "cart", 10, "s1"),
        ("k3", h + "09+00", "purchase", 10, "s1"), ("k4", h + "20+00", "cart", 11, "s2"),
    ]:
        conn.execute(
            "insert into gold.fact_events values (%s, 20191001, %s, %s, %s, 1, 2, 1, %s, 5.5)",
            (key, ts, etype, user, session),
        )
    conn.execute("insert into gold.fact_daily_sales values (20191001, 2, 1, 1, 2, 1, 5.5, 1)")
    for key, ts, user, session, label in [("k2", h + "03+00", 10, "s1", True), ("k4", h + "20+00", 11, "s2", False)]:
        conn.execute(
            "insert into ml.cart_features values (%s, %s, %s, %s, 1, 'electronics', 'smartphone', 'acme', 5.5,"
            " 10, 2, 1, 1, 0, 1, 2.0, 1, 0, 0, 0, %s)",
            (key, ts, user, session, label),
        )


@pytest.fixture
def warehouse(stack, stack_settings: Settings) -> Settings:
    with psycopg.connect(stack_settings.postgres.dsn(), autocommit=True) as conn:
        ensure_schemas(conn)
        load_good(conn)
    return stack_settings


def sql(settings: Settings, query: str, params=()) -> list[tuple]:
    with psycopg.connect(settings.postgres.dsn(), autocommit=True) as conn:
        return conn.execute(query, params).fetchall()


def dq_rows(settings: Settings, run_id: str, suite: str) -> tuple[list[tuple], list[tuple]]:
    runs = sql(settings, "select success, evaluated, failed, report_url, report_key from dq.runs "
                         "where run_id = %s and suite = %s", (run_id, suite))
    results = sql(settings, "select expectation, severity, success, observed_value, unexpected_count, "
                            "sample_values from dq.results where run_id = %s and suite = %s "
                            "order by expectation", (run_id, suite))
    return runs, results


def new_run_id(tag: str) -> str:
    return f"manual__2019-10-01T10:00:00+00:00-{tag}-{uuid.uuid4().hex[:6]}"


# ---------------------------------------------------------------------------- tests
@pytest.mark.parametrize("layer", ["bronze", "silver", "gold"])
def test_good_data_passes(warehouse, layer):
    s = warehouse
    run_id = new_run_id("good")
    result = run_suite(s, layer, run_id)
    assert result.success, result.summary()
    assert result.warnings == [], result.summary()
    assert raise_for_failures(result) is result
    assert result.evaluated >= 20
    runs, results = dq_rows(s, run_id, layer)
    assert runs[0][:3] == (True, result.evaluated, 0)
    assert len(results) == result.evaluated and all(r[2] for r in results)
    # the report: local folder and the lake, with this run's Data Docs pages
    assert Path(result.report_path).is_file()
    assert result.data_docs and all(p.startswith("validations/") for p in result.data_docs)
    lake = minio_client(s)
    keys = {o.object_name for o in lake.list_objects(s.s3.lake_bucket, prefix=f"dq-reports/{run_slug(run_id)}/{layer}/",
                                                      recursive=True)}
    assert result.report_key in keys
    assert {f"dq-reports/{run_slug(run_id)}/{layer}/{p}" for p in result.data_docs} <= keys
    # no credential in the GE project files
    gx_yml = (Path(s.state_dir) / "gx" / layer / "gx" / "great_expectations.yml").read_text()
    assert "${GX_SHOPSTREAM_WAREHOUSE_URL}" in gx_yml
    assert s.postgres.password.get_secret_value() not in gx_yml


def test_bronze_bad_rows_fail_with_a_readable_summary(warehouse):
    s = warehouse
    with psycopg.connect(s.postgres.dsn(), autocommit=True) as conn:
        _bronze(conn, [("2019-10-01 10:00:30+00", "bogus", 1, -2.5, 10, "s1", "k9")], first_offset=100)
    run_id = new_run_id("bronze-bad")
    result = run_suite(s, "bronze", run_id)
    assert not result.success
    failed = {o.expectation: o for o in result.critical_failures}
    price = failed["expect_column_values_to_be_between(bronze.events.price)"]
    assert (price.unexpected_count, price.element_count, price.sample_values) == (1, 6, [-2.5])
    assert failed["expect_column_values_to_be_in_set(bronze.events.event_type)"].sample_values == ["bogus"]
    assert len(failed) == 2, result.summary()

    with pytest.raises(DataQualityError) as exc:
        raise_for_failures(result)
    msg = str(exc.value)
    assert "FAILED for suite 'bronze'" in msg and "2 critical expectation(s) failed" in msg
    assert "expect_column_values_to_be_between(bronze.events.price) [>= 0]: 1 of 6 rows unexpected" in msg
    assert "sample: -2.5" in msg and "sample: 'bogus'" in msg
    assert f"/dq/reports/{run_slug(run_id)}/bronze/index.html" in msg
    assert exc.value.result is result

    runs, results = dq_rows(s, run_id, "bronze")
    assert runs[0][:3] == (False, result.evaluated, 2)
    bad = {r[0]: r for r in results if not r[2]}
    assert bad["expect_column_values_to_be_between(bronze.events.price)"][4:] == (1, "[-2.5]")


def test_a_run_that_loaded_nothing_passes_and_a_short_load_fails(warehouse):
    """The data DAG checks only the objects a run loaded: none is fine, a load missing rows is not."""
    s = warehouse
    scope = "object_key in (select object_key from bronze.loads where run_id = '{}')"
    quiet = run_suite(s, "bronze", new_run_id("quiet"), where=scope.format("no-such-run"))
    assert quiet.success, quiet.summary()
    with psycopg.connect(s.postgres.dsn(), autocommit=True) as conn:
        _bronze(conn, [("2019-10-01 10:00:40+00", "view", 1, 5.5, 10, "s1", "k10")], first_offset=200,
                object_key="events/o2.parquet")
        conn.execute("update bronze.loads set rows = 3, run_id = 'short-run' where object_key = 'events/o2.parquet'")
    short = run_suite(s, "bronze", new_run_id("short"), where=scope.format("short-run"))
    assert [o.expectation for o in short.critical_failures] == [
        "unexpected_rows_expectation(bronze.loads: loaded_rows_present)"]
    assert short.critical_failures[0].sample_values == [
        {"object_key": "events/o2.parquet", "loaded_rows": 3, "bronze_rows": 1}]


def test_silver_reconciliation_gap_and_where_filter(warehouse):
    s = warehouse
    with psycopg.connect(s.postgres.dsn(), autocommit=True) as conn:
        # hour 11: a price above the bound, a code without l1, and a reconciliation that loses a row
        _silver(conn, "k20", "2019-10-01 11:00:05+00", "view", 200000, 1, session="s3")
        _silver(conn, "k21", "2019-10-01 11:00:06+00", "view", 3, 2, session="s3", l1=None)
        conn.execute("insert into silver.reconciliation values ('2019-10-01 11:00+00', 4, 2, 1, 0, 0, 't', now())")
        conn.execute("insert into silver.sessions values ('s3', 12, '2019-10-01 11:00:05+00',"
                     " '2019-10-01 11:00:06+00', 1, 2, 2, 0, 0, 0, 0)")
    run_id = new_run_id("silver-bad")
    result = run_suite(s, "silver", run_id)
    crit = {o.expectation: o for o in result.critical_failures}
    recon = crit["unexpected_rows_expectation(silver.reconciliation: bronze_rows_accounted_for)"]
    assert recon.unexpected_count == 1
    assert recon.sample_values[0]["bronze_rows"] == 4 and recon.sample_values[0]["difference"] == 1
    assert crit["expect_column_values_to_be_between(silver.events.price)"].sample_values == [200000.0]
    assert len(crit) == 2, result.summary()
    warn = {o.expectation for o in result.warnings}
    assert warn == {"unexpected_rows_expectation(silver.events: category_l1_set_when_code_set)"}
    msg = result.summary()
    assert "bronze_rows_accounted_for" in msg and "difference=1" in msg
    assert "Warnings (reported, do not fail the run):" in msg and "category_l1_set_when_code_set" in msg

    # the same suite on hour 10 only: the bad hour is outside the batch
    hour10 = run_suite(s, "silver", new_run_id("silver-h10"), where="event_hour = '2019-10-01 10:00+00'")
    assert hour10.success and not hour10.warnings, hour10.summary()
    assert hour10.where == "event_hour = '2019-10-01 10:00+00'"


def test_gold_fact_without_dimension(warehouse):
    s = warehouse
    with psycopg.connect(s.postgres.dsn(), autocommit=True) as conn:
        conn.execute("insert into gold.fact_events values ('k99', 20191001, '2019-10-01 12:00+00', 'view', 999,"
                     " 1, 2, 1, 's9', 5.5)")
        conn.execute("update ml.cart_features set label = true")
    result = run_suite(s, "gold", new_run_id("gold-bad"))
    crit = {o.expectation: o for o in result.critical_failures}
    assert set(crit) == {"unexpected_rows_expectation(gold.fact_events: user_id_in_dim_user)"}, result.summary()
    assert crit["unexpected_rows_expectation(gold.fact_events: user_id_in_dim_user)"].sample_values == [
        {"event_key": "k99", "user_id": 999}
    ]
    rate = [o for o in result.warnings if "label_positive_rate" in o.expectation]
    assert rate and rate[0].sample_values == [{"rows": 2, "positive_rate": 1.0}]
    with pytest.raises(DataQualityError, match=r"user_id_in_dim_user\): 1 unexpected row; sample: \{event_key='k99'"):
        raise_for_failures(result)


def test_rerun_of_a_run_id_replaces_its_rows_and_report(warehouse):
    s = warehouse
    with psycopg.connect(s.postgres.dsn(), autocommit=True) as conn:
        _bronze(conn, [("2019-10-01 10:00:30+00", "view", 1, -1.0, 10, "s1", "k9")], first_offset=100)
    run_id = new_run_id("rerun")
    first = run_suite(s, "bronze", run_id)
    rows1 = dq_rows(s, run_id, "bronze")
    second = run_suite(s, "bronze", run_id)
    rows2 = dq_rows(s, run_id, "bronze")
    assert rows1 == rows2 and len(rows2[0]) == 1
    assert [o.expectation for o in first.outcomes] == [o.expectation for o in second.outcomes]
    prefix = f"dq-reports/{run_slug(run_id)}/bronze/"
    keys = {o.object_name for o in minio_client(s).list_objects(s.s3.lake_bucket, prefix=prefix, recursive=True)}
    pages = {prefix + p for p in second.data_docs}
    assert pages <= keys and not ({prefix + p for p in first.data_docs} - pages) & keys  # old pages removed
    local = local_reports_root(s.state_dir) / run_slug(run_id) / "bronze" / "validations"
    assert len(list(local.rglob("*.html"))) == len(second.data_docs)


def test_sql_error_counts_as_failure(warehouse):
    result = run_suite(warehouse, "bronze", new_run_id("sqlerr"), where="no_such_column = 1")
    assert not result.success
    errored = [o for o in result.outcomes if o.error]
    assert errored and all(not o.success for o in errored)
    assert any("no_such_column" in o.error for o in errored)
    # whole-table expectations (columns, types, row count) still ran on the table
    whole = [o for o in result.outcomes if o.type in ("expect_column_values_to_be_of_type",
                                                        "expect_table_row_count_to_be_between")]
    assert len(whole) == 12 and all(o.success for o in whole)
    assert "could not be evaluated (counts as failed)" in result.summary()


# ---------------------------------------------------------------------------- the UI page
def test_data_quality_page_requires_login(warehouse):
    s = warehouse
    run_id = new_run_id("page")
    result = run_suite(s, "gold", run_id)
    base = s.airflow.base_url
    http = httpx.Client(base_url=base, trust_env=False, timeout=30, follow_redirects=False)

    # no token: nothing but 401 (or a redirect to the login page for a browser)
    for path in ("/dq/", "/dq/api/runs", f"/dq/runs/gold?run_id={run_id}",
                 f"/dq/reports/{run_slug(run_id)}/gold/index.html"):
        r = http.get(path)
        assert r.status_code == 401, (path, r.status_code, r.text[:200])
        assert run_id not in r.text
    r = http.get("/dq/", headers={"Accept": "text/html"})
    assert r.status_code in (302, 307) and "/auth/login" in r.headers["location"]
    r = http.get("/dq/api/runs", headers={"Authorization": "Bearer not-a-jwt"})
    assert r.status_code in (401, 403) and run_id not in r.text
    assert http.get("/dq/icon.svg").status_code == 200  # the nav icon is not data

    token = http.post("/auth/token", json={
        "username": s.airflow.admin_user, "password": s.airflow.admin_password.get_secret_value(),
    }).json()["access_token"]
    auth = {"Authorization": f"Bearer {token}"}
    r = http.get("/dq/", headers=auth)
    assert r.status_code == 200 and run_id in r.text
    link = f"/dq/reports/{run_slug(run_id)}/gold/index.html"
    assert link in r.text
    runs = http.get("/dq/api/runs", params={"suite": "gold", "run_id": run_id}, headers=auth).json()
    assert [(x["run_id"], x["success"], x["evaluated"]) for x in runs] == [(run_id, True, result.evaluated)]
    # the UI's iframe authenticates with the _token cookie the login sets
    r = httpx.get(base + "/dq/", cookies={"_token": token}, trust_env=False, timeout=30)
    assert r.status_code == 200 and run_id in r.text
    details = http.get("/dq/runs/gold", params={"run_id": run_id}, headers=auth)
    assert details.status_code == 200 and "user_id_in_dim_user" in details.text

    # the report and its Data Docs pages, from local disk and (when the disk copy is gone) from the lake
    r = http.get(link, headers=auth)
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    assert "Data quality: gold" in r.text
    page = f"/dq/reports/{run_slug(run_id)}/gold/{result.data_docs[0]}"
    r = http.get(page, headers=auth)
    assert r.status_code == 200 and "<html" in r.text.lower() and "Validation" in r.text
    shutil.rmtree(local_reports_root(s.state_dir) / run_slug(run_id))
    r = http.get(page, headers=auth)
    assert r.status_code == 200 and "<html" in r.text.lower()
    assert http.get(f"/dq/reports/{run_slug(run_id)}/gold/..%2F..%2Fsecret", headers=auth).status_code == 404

    # the plugin is registered with its nav entry
    plugins = http.get("/api/v2/plugins", headers=auth).json()["plugins"]
    mine = [p for p in plugins if p["name"] == "shopstream_data_quality"]
    assert mine and mine[0]["external_views"][0]["href"] == "/dq/"
