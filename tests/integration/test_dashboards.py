"""Superset dashboards on the real stack: the assets import idempotently (a re-import updates, never
duplicates) and every chart's data endpoint returns rows over a small demo data set.

The browser test (each dashboard rendered in headless Chromium) is tests/e2e/test_dashboards_browser.py.
"""

from __future__ import annotations

import json
import random
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import psycopg
import pytest

from shopstream.dashboards.importer import (
    ASSETS_DIR,
    SupersetClient,
    asset_files,
    dashboards_in,
    import_dashboards,
)
from shopstream.settings import Settings
from shopstream.warehouse.ddl import ensure_schemas

pytestmark = pytest.mark.integration

# ------------------------------------------------------------------------------------------ demo data
# A small, deterministic data set in every table the dashboards read. Keys are chosen so they cannot collide
# with what the pipeline writes in the same session (category ids from 9e15, "demo-" event keys, ...).
DEMO_DAYS = 14
DEMO_START = datetime.now(UTC).date() - timedelta(days=DEMO_DAYS)  # the last two weeks: beside the pipeline's data
CATEGORIES = [
    (9_000_000_000_000_001, "electronics.smartphone"), (9_000_000_000_000_002, "electronics.audio.headphone"),
    (9_000_000_000_000_003, "appliances.kitchen.washer"), (9_000_000_000_000_004, "computers.notebook"),
    (9_000_000_000_000_005, "apparel.shoes"), (9_000_000_000_000_006, None),
]
BRANDS = [(9001, "samsung"), (9002, "apple"), (9003, "xiaomi"), (9004, "huawei"), (9005, "lenovo"),
          (9006, "bosch"), (9007, "nike")]
REVENUE_PER_DAY = "Revenue per event day (complete days)"
REASONS = ["malformed_json", "missing_field", "wrong_type", "unknown_event_type", "negative_price", "bad_timestamp"]


def load_demo_data(conn: psycopg.Connection) -> dict[str, int]:
    """Insert the demo rows (idempotent); return how many rows each table got."""
    rng = random.Random(7)
    days = [DEMO_START + timedelta(days=i) for i in range(DEMO_DAYS)]
    rows: dict[str, list[tuple]] = {k: [] for k in (
        "dim_date", "dim_category", "dim_brand", "fact_daily_sales", "fact_events", "fact_sessions",
        "dq_runs", "landed_objects", "reconciliation", "silver_runs", "model_runs", "freshness")}
    for d in days:
        rows["dim_date"].append((int(d.strftime("%Y%m%d")), d, d.year, (d.month - 1) // 3 + 1, d.month, d.day,
                                 d.isoweekday(), d.isoweekday() >= 6))
    for cid, code in CATEGORIES:
        parts = (code.split(".") if code else []) + [None, None, None]
        rows["dim_category"].append((cid, code, parts[0], parts[1], parts[2]))
    rows["dim_brand"] = list(BRANDS)
    for d in days:
        dk = int(d.strftime("%Y%m%d"))
        for cid, _ in CATEGORIES:
            for bkey, _ in rng.sample(BRANDS, 3):
                views = rng.randint(200, 1500)
                carts = rng.randint(20, views // 5)
                purchases = rng.randint(5, carts // 2)
                revenue = round(purchases * rng.uniform(20, 400), 2)
                rows["fact_daily_sales"].append((dk, cid, bkey, views, carts, purchases, revenue,
                                                 max(1, purchases - rng.randint(0, 3))))
        # sessions and their events
        for s in range(40):
            user = 9_000_000 + rng.randint(0, 150)
            session = f"demo-{d.isoformat()}-{s}"
            start = datetime(d.year, d.month, d.day, rng.randint(0, 22), rng.randint(0, 59), tzinfo=UTC)
            n_views, n_carts = rng.randint(1, 8), rng.randint(0, 3)
            n_purchases = rng.randint(0, 1) if n_carts else 0
            revenue = 0.0
            t = start
            cid, _ = rng.choice(CATEGORIES)
            bkey, _ = rng.choice(BRANDS)
            product = 9_000_000_000 + rng.randint(0, 500)
            price = round(rng.uniform(10, 900), 2)
            seq = ["view"] * n_views + ["cart"] * n_carts + ["purchase"] * n_purchases
            for i, etype in enumerate(seq):
                t = t + timedelta(seconds=rng.randint(5, 240))
                if etype == "purchase":
                    revenue += price
                rows["fact_events"].append((f"demo-{session}-{i}", dk, t, etype, user, product, cid, bkey, session,
                                            price))
            rows["fact_sessions"].append((session, user, dk, start, int((t - start).total_seconds()), n_views,
                                          n_carts, n_purchases, round(revenue, 2), n_purchases > 0))
    # data quality: three suites, every 4 hours, a few failures
    t0 = datetime(DEMO_START.year, DEMO_START.month, DEMO_START.day, tzinfo=UTC)
    for i in range(DEMO_DAYS * 6):
        started = t0 + timedelta(hours=4 * i)
        for suite, evaluated in (("bronze", 6), ("silver", 9), ("gold", 7)):
            failed = 1 if rng.random() < 0.12 else 0
            rows["dq_runs"].append((f"demo-run-{i}", suite, failed == 0, evaluated, failed,
                                    f"http://127.0.0.1/dq/{suite}/{i}", None, started,
                                    started + timedelta(seconds=rng.randint(2, 30))))
    # dead letters and reconciliation, hourly
    for h in range(DEMO_DAYS * 24):
        hour = t0 + timedelta(hours=h)
        if h % 3 == 0:
            reasons = {r: rng.randint(1, 40) for r in rng.sample(REASONS, rng.randint(1, 4))}
            rows["landed_objects"].append((
                f"demo/deadletter/{hour:%Y/%m/%d/%H}/events.invalid-0-{h}.parquet", "deadletter", "events.invalid",
                0, h * 100, h * 100 + sum(reasons.values()) - 1, hour, sum(reasons.values()), 4096,
                json.dumps(reasons), hour + timedelta(minutes=5)))
        bronze = rng.randint(800, 1200)
        dups, late, rej = rng.randint(0, 25), rng.randint(0, 12), rng.randint(0, 3)
        rows["reconciliation"].append((hour, bronze, bronze - dups - late - rej, dups, late, rej, "demo-run",
                                       hour + timedelta(hours=1)))
        if h % 6 == 0:   # silver runs and the shares they set aside
            rows["silver_runs"].append((f"demo-run-silver-{h}", 6, 6 * bronze, 6 * (bronze - dups - late - rej),
                                        6 * dups, 6 * late, 6 * rej, 0, late / bronze, dups / bronze, rej / bronze,
                                        hour + timedelta(hours=1)))
            first = hour + timedelta(minutes=50)   # data runs: their events' Kafka arrival to gold
            median, worst = rng.uniform(30, 90), rng.uniform(90, 240)
            rows["freshness"].append((f"demo-run-{h}", bronze, first, first + timedelta(minutes=10),
                                      first + timedelta(seconds=600 + median), median, worst, median - 8, worst - 8))
    # model runs: a version per training run, gates, champion
    champion = None
    for v in range(1, 7):
        auc = 0.70 + 0.02 * v + rng.uniform(-0.015, 0.015)
        passed = v != 4
        if passed:
            champion = str(v)
        rows["model_runs"].append((
            f"demo-model-run-{v}", "shopstream-purchase-intent", str(v),
            t0 + timedelta(days=2 * v), 40_000 + 1_000 * v, 10_000, 0.31, auc, auc - 0.25, 0.55 - 0.01 * v,
            0.18, 0.52 + 0.01 * v, 0.45, passed,
            "roc_auc above the champion's" if passed else "roc_auc 0.004 below the champion's", champion))

    sql = {
        "dim_date": "insert into gold.dim_date (date_key, date, year, quarter, month, day, iso_weekday, "
                    "is_weekend) values (%s,%s,%s,%s,%s,%s,%s,%s) on conflict do nothing",
        "dim_category": "insert into gold.dim_category (category_id, category_code, category_l1, category_l2, "
                        "category_l3) values (%s,%s,%s,%s,%s) on conflict do nothing",
        "dim_brand": "insert into gold.dim_brand (brand_key, brand) values (%s,%s) on conflict do nothing",
        "fact_daily_sales": "insert into gold.fact_daily_sales (date_key, category_id, brand_key, views, carts, "
                            "purchases, revenue, buyers) values (%s,%s,%s,%s,%s,%s,%s,%s) on conflict do nothing",
        "fact_events": "insert into gold.fact_events (event_key, date_key, event_time, event_type, user_id, "
                       "product_id, category_id, brand_key, user_session, price) "
                       "values (%s,%s,%s,%s,%s,%s,%s,%s,%s,%s) on conflict do nothing",
        "fact_sessions": "insert into gold.fact_sessions (user_session, user_id, date_key, session_start, "
                         "duration_s, n_views, n_carts, n_purchases, revenue, converted) "
                         "values (%s,%s,%s,%s,%s,%s,%s,%s,%s,%s) on conflict do nothing",
        "dq_runs": "insert into dq.runs (run_id, suite, success, evaluated, failed, report_url, report_key, "
                   "started_at, finished_at) values (%s,%s,%s,%s,%s,%s,%s,%s,%s) on conflict do nothing",
        "landed_objects": "insert into ops.landed_objects (object_key, kind, topic, kafka_partition, first_offset, "
                          "last_offset, event_hour, rows, bytes, reasons, landed_at) "
                          "values (%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s) on conflict do nothing",
        "silver_runs": "insert into silver.runs (run_id, hours, bronze_rows, silver_rows, duplicates, late_set_aside, "
                       "rejected, restated, late_share, duplicate_share, rejected_share, processed_at) "
                       "values (%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s) on conflict do nothing",
        "reconciliation": "insert into silver.reconciliation (event_hour, bronze_rows, silver_rows, duplicates, "
                          "late_set_aside, rejected, run_id, processed_at) values (%s,%s,%s,%s,%s,%s,%s,%s) "
                          "on conflict do nothing",
        "freshness": "insert into dq.freshness (run_id, events, first_arrival, last_arrival, gold_at, median_s, "
                     "worst_s, landed_median_s, landed_worst_s) values (%s,%s,%s,%s,%s,%s,%s,%s,%s) "
                     "on conflict do nothing",
        "model_runs": "insert into ml.model_runs (run_id, model_name, model_version, trained_at, n_train, n_test, "
                      "positive_rate, roc_auc, pr_auc, log_loss, brier, f1, threshold, gate_passed, gate_reasons, "
                      "champion_version) values (%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s) "
                      "on conflict do nothing",
    }
    with conn.transaction(), conn.cursor() as cur:
        for table, stmt in sql.items():
            cur.executemany(stmt, rows[table])
    return {k: len(v) for k, v in rows.items()}


def unload_demo_data(conn: psycopg.Connection) -> None:
    """Remove every demo row again, so the pipeline's own tests see only the pipeline's data."""
    with conn.transaction():
        conn.execute("delete from gold.fact_events where event_key like 'demo-%%'")
        conn.execute("delete from gold.fact_sessions where user_session like 'demo-%%'")
        conn.execute("delete from gold.fact_daily_sales where category_id >= 9000000000000000")
        conn.execute("delete from gold.dim_category where category_id >= 9000000000000000")
        conn.execute("delete from gold.dim_brand b where brand_key between 9001 and 9007 and not exists "
                     "(select 1 from gold.fact_events f where f.brand_key = b.brand_key)")
        conn.execute("delete from gold.dim_date d where date >= %s and not exists "
                     "(select 1 from gold.fact_events f where f.date_key = d.date_key)", (DEMO_START,))
        conn.execute("delete from dq.runs where run_id like 'demo-run-%%'")
        conn.execute("delete from dq.freshness where run_id like 'demo-run-%%'")
        conn.execute("delete from ops.landed_objects where object_key like 'demo/%%'")
        conn.execute("delete from silver.reconciliation where run_id = 'demo-run'")
        conn.execute("delete from silver.runs where run_id like 'demo-run-silver-%%'")
        conn.execute("delete from ml.model_runs where run_id like 'demo-model-run-%%'")


# ------------------------------------------------------------------------------------------ fixtures
@pytest.fixture(scope="module")
def superset(stack, stack_settings: Settings) -> Iterator[Settings]:
    if not stack_settings.superset.enabled:
        pytest.fail("SHOPSTREAM_SUPERSET__ENABLED is false: the dashboards tests need Superset in the stack")
    assert stack.get("superset").check() is None
    with psycopg.connect(stack_settings.postgres.dsn(), autocommit=True) as conn:
        ensure_schemas(conn)
        counts = load_demo_data(conn)
    assert all(counts.values()), counts
    yield stack_settings
    with psycopg.connect(stack_settings.postgres.dsn(), autocommit=True) as conn:
        unload_demo_data(conn)


@pytest.fixture(scope="module")
def client(superset: Settings):
    with SupersetClient(superset) as c:
        yield c


def _counts(client: SupersetClient) -> dict[str, int]:
    return {res: len(client.list_all(res)) for res in ("database", "dataset", "chart", "dashboard")}


# ------------------------------------------------------------------------------------------ REST tests
def test_assets_are_well_formed():
    """Fixed UUIDs, no password in the database file, and every chart carries its query_context."""
    files = asset_files()
    assert files["metadata.yaml"]["type"] == "assets"
    uuids = [str(c["uuid"]) for rel, c in files.items() if rel != "metadata.yaml"]
    assert len(uuids) == len(set(uuids))
    for rel, c in files.items():
        if rel.startswith("databases/"):
            assert "password" not in c
            assert ":XXXXXXXXXX@" in c["sqlalchemy_uri"]
        if rel.startswith("charts/"):
            qc = json.loads(c["query_context"])
            assert qc["queries"], rel
            assert qc["form_data"]["viz_type"] == c["viz_type"] == c["params"]["viz_type"], rel
    assert [d.slug for d in dashboards_in()] == ["shopstream-sales", "shopstream-data-quality", "shopstream-model"]


def test_import_twice_does_not_duplicate(superset: Settings, client: SupersetClient):
    files = asset_files()
    expected = {
        "database": sum(rel.startswith("databases/") for rel in files),
        "dataset": sum(rel.startswith("datasets/") for rel in files),
        "chart": sum(rel.startswith("charts/") for rel in files),
        "dashboard": sum(rel.startswith("dashboards/") for rel in files),
    }
    # the stack imported once at start; import twice more
    first = import_dashboards(superset)
    after_first = _counts(client)
    second = import_dashboards(superset)
    after_second = _counts(client)
    assert after_first == after_second == expected
    assert first.charts == second.charts == expected["chart"]
    # the database connection points at the warehouse and works with the password given at import
    dbs = client.list_all("database")
    assert [d["database_name"] for d in dbs] == [superset.superset.database_name]
    r = client.request("GET", f"/api/v1/database/{dbs[0]['id']}/connection")
    assert r.status_code == 200, r.text
    uri = r.json()["result"]["sqlalchemy_uri"]
    assert f"@{superset.postgres.host}:{superset.postgres.port}/{superset.postgres.warehouse_db}" in uri
    assert f"{superset.postgres.user}:XXXXXXXXXX@" in uri  # the password is stored encrypted, never shown


def test_reimport_overwrites_changes(superset: Settings, client: SupersetClient):
    """An edit made in Superset is replaced by the assets' version on the next import."""
    chart = next(c for c in client.list_all("chart") if c["slice_name"] == REVENUE_PER_DAY)
    r = client.request("PUT", f"/api/v1/chart/{chart['id']}", json={"slice_name": "edited by hand"})
    assert r.status_code == 200, r.text
    import_dashboards(superset)
    names = {c["slice_name"] for c in client.list_all("chart")}
    assert REVENUE_PER_DAY in names and "edited by hand" not in names


def test_every_chart_returns_rows(superset: Settings, client: SupersetClient):
    charts = client.list_all("chart")
    assert charts
    problems = []
    for ch in charts:
        r = client.request("GET", f"/api/v1/chart/{ch['id']}/data/")
        if r.status_code != 200:
            problems.append(f"{ch['slice_name']}: HTTP {r.status_code} {r.text[:300]}")
            continue
        results = r.json()["result"]
        if not results or any(q.get("error") for q in results) or not all(q.get("rowcount") for q in results):
            problems.append(f"{ch['slice_name']}: {[(q.get('rowcount'), q.get('error')) for q in results]}")
    assert not problems, "\n".join(problems)


def test_every_dashboard_lists_its_charts(superset: Settings, client: SupersetClient):
    files = asset_files()
    for rel, d in files.items():
        if not rel.startswith("dashboards/"):
            continue
        want = {v["meta"]["uuid"] for v in d["position"].values() if isinstance(v, dict) and v.get("type") == "CHART"}
        body = client.get_json(f"/api/v1/dashboard/{d['slug']}/charts")
        got = {c["form_data"].get("slice_id") for c in body["result"]}
        assert len(got) == len(want), (rel, got)


def test_assets_dir_is_packaged():
    assert (ASSETS_DIR / "metadata.yaml").exists()
