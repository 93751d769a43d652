"""Outcomes from GE results, severity handling, the summary, raise_for_failures, report helpers."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from shopstream.quality.report import render_index, run_slug, safe_page
from shopstream.quality.results import (
    DataQualityError,
    SuiteResult,
    exception_message,
    missing_outcome,
    outcome_from_ge,
    raise_for_failures,
)
from shopstream.quality.suites import load_suite
from shopstream.quality.web import _report_link, render_runs_page

SILVER = load_suite("silver").by_label()
PRICE = SILVER["expect_column_values_to_be_between(silver.events.price)"]
L1 = SILVER["unexpected_rows_expectation(silver.events: category_l1_set_when_code_set)"]
RECON = SILVER["unexpected_rows_expectation(silver.reconciliation: bronze_rows_accounted_for)"]
T0 = datetime(2019, 10, 1, 11, 0, tzinfo=UTC)

NO_ERROR = {"raised_exception": False, "exception_traceback": None, "exception_message": None}
SQL_ERROR = {
    "MetricConfigurationID(metric_name='unexpected_rows_query.table', ...)": {
        "exception_traceback": "Traceback ...",
        "exception_message": '(psycopg.errors.UndefinedColumn) column "nope" does not exist\n'
                             "LINE 1: select * from x where nope = 1\n              ^\n"
                             "(Background on this error at: https://sqlalche.me/e/21/f405)",
        "raised_exception": True,
    }
}


def ge(success, result=None, exc=None):
    return {"success": success, "result": result or {}, "exception_info": exc or NO_ERROR}


def price_fail():
    return outcome_from_ge(PRICE, ge(False, {
        "element_count": 120, "unexpected_count": 3, "partial_unexpected_list": [200000.0, 150000.5, 200000.0],
        "partial_unexpected_counts": [{"value": 200000.0, "count": 2}, {"value": 150000.5, "count": 1}],
    }))


def suite_result(*outcomes):
    return SuiteResult("silver", "scheduled__2019-10-01T11:00:00+00:00", list(outcomes), T0, T0,
                       report_url="http://airflow/dq/reports/r/silver/index.html",
                       report_key="dq-reports/r/silver/index.html")


def test_exception_info_shapes():
    assert exception_message(NO_ERROR) is None
    assert exception_message({}) is None
    msg = exception_message(SQL_ERROR)
    assert msg.startswith('(psycopg.errors.UndefinedColumn) column "nope" does not exist')
    assert "Background on this error" not in msg
    assert exception_message({"raised_exception": True, "exception_message": "boom"}) == "boom"


def test_sql_error_is_a_failure_even_if_ge_says_success():
    o = outcome_from_ge(RECON, ge(True, {}, SQL_ERROR))
    assert not o.success and "nope" in o.error
    assert o.observed_text().startswith("error: ")
    o = outcome_from_ge(RECON, {"success": None, "result": {}, "exception_info": {}})
    assert not o.success and o.error


def test_outcome_fields():
    o = price_fail()
    assert (o.success, o.severity, o.unexpected_count, o.element_count) == (False, "critical", 3, 120)
    assert o.sample_values == [200000.0, 150000.5]
    assert o.observed_text() == "3 of 120 unexpected" and o.samples_text() == "[200000.0, 150000.5]"
    rows = outcome_from_ge(RECON, ge(False, {"observed_value": 2}), samples=[{"event_hour": "h", "difference": 1}])
    assert rows.unexpected_count == 2 and rows.sample_values == [{"event_hour": "h", "difference": 1}]
    ok = outcome_from_ge(PRICE, ge(True, {"element_count": 5, "unexpected_count": 0}))
    assert ok.success and ok.sample_values == []


def test_warnings_do_not_fail_and_are_listed():
    warn = outcome_from_ge(L1, ge(False, {"observed_value": 1}), samples=[{"event_key": "k21"}])
    res = suite_result(warn, outcome_from_ge(PRICE, ge(True, {"element_count": 5, "unexpected_count": 0})))
    assert res.success and res.failed == 1 and res.evaluated == 2
    assert raise_for_failures(res) is res
    text = res.summary()
    assert text.startswith("Data quality passed for suite 'silver'") and "1 warning(s)" in text
    assert "WARNING unexpected_rows_expectation(silver.events: category_l1_set_when_code_set)" in text


def test_critical_failure_raises_a_readable_summary():
    err = outcome_from_ge(RECON, ge(False, {}, SQL_ERROR))
    warn = outcome_from_ge(L1, ge(False, {"observed_value": 1}), samples=[{"event_key": "k21", "category_l1": None}])
    res = suite_result(price_fail(), err, warn)
    with pytest.raises(DataQualityError) as exc:
        raise_for_failures(res)
    msg = str(exc.value)
    lines = msg.splitlines()
    assert lines[0] == ("Data quality FAILED for suite 'silver', run 'scheduled__2019-10-01T11:00:00+00:00': "
                        "2 critical expectation(s) failed of 3 evaluated, 1 warning(s).")
    assert ("  - CRITICAL expect_column_values_to_be_between(silver.events.price) [>= 0 and <= 100000]: "
            "3 of 120 rows unexpected (2.50%); sample: 200000.0; 150000.5") in lines
    assert any("bronze_rows_accounted_for): could not be evaluated (counts as failed): "
               '(psycopg.errors.UndefinedColumn) column "nope"' in x for x in lines)
    assert "      why: Prices lie between 0 and 100000" in msg
    assert lines.index("Warnings (reported, do not fail the run):") > lines.index("Critical failures:")
    assert "sample: {event_key='k21', category_l1=None}" in msg
    assert msg.endswith("Report in the lake: dq-reports/r/silver/index.html")
    assert "Report: http://airflow/dq/reports/r/silver/index.html" in msg
    assert exc.value.result is res


def test_missing_result_is_a_failure():
    o = missing_outcome(PRICE, "cannot validate silver.events: TestConnectionError: no such table")
    assert not o.success and "could not be evaluated" in suite_result(o).summary()


def test_run_slug_is_safe_and_distinct():
    a, b = run_slug("manual__2019-10-01T10:00:00+00:00"), run_slug("manual__2019-10-01T10_00_00_00_00")
    assert a != b and "/" not in a and ":" not in a and "+" not in a
    assert run_slug("plain-run_1.2") == "plain-run_1.2"
    assert run_slug("../../etc") != "../../etc" and "/" not in run_slug("../../etc")


@pytest.mark.parametrize("path, ok", [
    ("index.html", True), ("validations/s/r/t/warehouse-gold.fact_events.html", True),
    ("../x", False), ("a/../../x", False), ("/etc/passwd", False), ("", False), ("a b.html", False),
])
def test_safe_page(path, ok):
    assert (safe_page(path) is not None) is ok


def test_html_is_escaped():
    o = outcome_from_ge(L1, ge(False, {"observed_value": 1}), samples=[{"event_key": "<script>x</script>"}])
    page = render_index(suite_result(o))
    assert "<script>x" not in page and "&lt;script&gt;" in page
    rows = [{"run_id": "<b>r</b>", "suite": "gold", "success": True, "evaluated": 3, "failed": 0,
             "finished_at": T0, "report_key": "dq-reports/r/gold/index.html"}]
    listing = render_runs_page(rows, "/dq", None, None)
    assert "<b>r</b>" not in listing and "/dq/reports/r/gold/index.html" in listing
    assert _report_link("/dq", "elsewhere/x.html") is None


def test_runs_page_and_results_page_name_the_shares_set_aside():
    from shopstream.quality.web import render_results_page

    shares = {"run_id": "r1", "bronze_rows": 1000, "late_set_aside": 830, "duplicates": 20, "rejected": 0,
              "restated": 0, "late_share": 0.83, "duplicate_share": 0.02, "rejected_share": 0.0}
    rows = [{"run_id": "r1", "suite": "silver", "success": False, "evaluated": 40, "failed": 2,
             "finished_at": T0, "report_key": None, "shares": shares}]
    listing = render_runs_page(rows, "/dq", None, None)
    assert "late 83.0% (830), duplicates 2.0% (20), rejected 0.0% (0) of 1,000 bronze rows" in listing
    page = render_results_page(rows[0], [], "/dq", shares)
    assert "Set aside by this run:</strong> late 83.0% (830)" in page
