"""The dq tables: write one suite run (replace-by-key, one transaction) and read runs for the UI page."""

from __future__ import annotations

from typing import Any

import psycopg
from psycopg.rows import dict_row

from shopstream.quality.results import SuiteResult


def write_run(conn: psycopg.Connection, result: SuiteResult) -> None:
    """Replace dq.runs and dq.results of (run_id, suite) with this result, in one transaction."""
    key = (result.run_id, result.layer)
    with conn.transaction():
        conn.execute("delete from dq.results where run_id = %s and suite = %s", key)
        conn.execute("delete from dq.runs where run_id = %s and suite = %s", key)
        conn.execute(
            "insert into dq.runs (run_id, suite, success, evaluated, failed, report_url, report_key, "
            "started_at, finished_at) values (%s, %s, %s, %s, %s, %s, %s, %s, %s)",
            (*key, result.success, result.evaluated, result.failed, result.report_url, result.report_key,
             result.started_at, result.finished_at),
        )
        with conn.cursor() as cur:
            cur.executemany(
                "insert into dq.results (run_id, suite, expectation, severity, success, observed_value, "
                "unexpected_count, sample_values) values (%s, %s, %s, %s, %s, %s, %s, %s)",
                [
                    (*key, o.expectation, o.severity, o.success, o.observed_text(), o.unexpected_count,
                     o.samples_text())
                    for o in result.outcomes
                ],
            )


def recent_runs(conn: psycopg.Connection, limit: int = 50, suite: str | None = None,
                run_id: str | None = None) -> list[dict[str, Any]]:
    """Newest suite runs first, optionally for one suite or one run id."""
    clauses, params = [], []
    if suite:
        clauses.append("suite = %s")
        params.append(suite)
    if run_id:
        clauses.append("run_id = %s")
        params.append(run_id)
    where = f"where {' and '.join(clauses)}" if clauses else ""
    with conn.cursor(row_factory=dict_row) as cur:
        cur.execute(
            "select run_id, suite, success, evaluated, failed, report_url, report_key, started_at, finished_at "
            f"from dq.runs {where} order by finished_at desc, suite limit %s",
            (*params, limit),
        )
        return cur.fetchall()


def run_results(conn: psycopg.Connection, run_id: str, suite: str) -> list[dict[str, Any]]:
    with conn.cursor(row_factory=dict_row) as cur:
        cur.execute(
            "select expectation, severity, success, observed_value, unexpected_count, sample_values "
            "from dq.results where run_id = %s and suite = %s order by success, severity, expectation",
            (run_id, suite),
        )
        return cur.fetchall()


def set_aside_shares(conn: psycopg.Connection, run_ids: list[str]) -> dict[str, dict[str, Any]]:
    """Per silver run: rows in, late / duplicate / rejected counts and shares, restated (``silver.runs``)."""
    if not run_ids:
        return {}
    try:
        with conn.cursor(row_factory=dict_row) as cur:
            cur.execute(
                "select run_id, bronze_rows, late_set_aside, duplicates, rejected, restated, late_share, "
                "duplicate_share, rejected_share from silver.runs where run_id = any(%s)", (run_ids,))
            return {r["run_id"]: r for r in cur.fetchall()}
    except psycopg.errors.UndefinedTable:  # no silver run yet
        conn.rollback()
        return {}


def format_shares(r: dict[str, Any]) -> str:
    """``late 1.9% (380), duplicates 2.0% (400), rejected 0.0% (0) of 20,000 rows``."""
    return (f"late {r['late_share']:.1%} ({r['late_set_aside']:,}), duplicates {r['duplicate_share']:.1%} "
            f"({r['duplicates']:,}), rejected {r['rejected_share']:.1%} ({r['rejected']:,}) of "
            f"{r['bronze_rows']:,} bronze rows" + (f"; {r['restated']:,} late events restated" if r["restated"] else ""))
