"""Run a layer's suite with Great Expectations 1.x and record it: dq tables, Data Docs, lake copy.

``run_suite`` builds (or reuses) a file-mode GE project under ``<state_dir>/gx/<layer>``, connects a
PostgreSQL data source whose connection string is ``${GX_SHOPSTREAM_WAREHOUSE_URL}`` (substituted from the
environment at run time, so no credential lands in ``great_expectations.yml``), adds one asset per
table (a query asset when rows are filtered), one GE suite and validation definition per (table, scope),
runs them in one checkpoint that updates Data Docs, and then:

* turns every result into an outcome with its severity (a GE error counts as a failure, with its message),
* fetches a few violating rows of failed SQL expectations (GE's SUMMARY format carries none),
* writes this run's report folder (summary page + its Data Docs pages) and uploads it to the lake,
* replaces dq.runs / dq.results of (run_id, suite) in one transaction.

``great_expectations`` takes seconds to import: it is imported inside the functions that need it (in the
embedded stack's Airflow tasks it is already imported: ``shopstream.airflow_executor``).
Runs of the same layer are serialized with a file lock (GE's file stores are not safe to share).
"""

from __future__ import annotations

import fcntl
import logging
import os
import shutil
import sys
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import psycopg
from psycopg.rows import dict_row

from shopstream.quality.report import (
    local_reports_root,
    report_prefix,
    report_url,
    run_slug,
    upload_bundle,
    write_bundle,
)
from shopstream.quality.results import (
    SAMPLE_SIZE,
    ExpectationOutcome,
    SuiteResult,
    missing_outcome,
    outcome_from_ge,
)
from shopstream.quality.store import write_run
from shopstream.quality.suites import (
    ExpectationSpec,
    SuiteSpec,
    ge_suite_name,
    load_suite,
    suite_parameters,
    with_parameters,
)
from shopstream.settings import Settings

log = logging.getLogger(__name__)

URL_ENV = "GX_SHOPSTREAM_WAREHOUSE_URL"
DATASOURCE = "warehouse"
KEEP_LOCAL_DAYS = 14  # GE's own stores and local report folders; the lake copy and dq tables keep everything


@dataclass
class _Group:
    suite_name: str
    table: str
    scope: str
    where: str | None
    specs: list[ExpectationSpec]

    @property
    def batch_sql(self) -> str:
        """What ``{batch}`` stands for in this group's SQL expectations (as GE 1.24 substitutes it)."""
        return f"(select * from {self.table} where {self.where or 'true'}) AS subselect"


def gx_root(settings: Settings, layer: str) -> Path:
    """The GE project root of a layer (GE keeps its files in ``<root>/gx``)."""
    return Path(settings.state_dir) / "gx" / layer


def data_docs_dir(settings: Settings, layer: str) -> Path:
    return gx_root(settings, layer) / "gx" / "uncommitted" / "data_docs" / "local_site"


@contextmanager
def _locked(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def run_suite(settings: Settings, layer: str, run_id: str,
              where: str | Mapping[str, str] | None = None) -> SuiteResult:
    """Validate ``layer`` (bronze | silver | gold) for ``run_id`` and record the result.

    ``where`` filters the rows checked: an SQL predicate applied to the suite's ``where_tables``
    (for example ``"event_hour = '2019-10-01 10:00+00'"`` for silver), or a mapping table -> predicate.
    Whole-table expectations (columns, types, ``meta.scope: "table"``) always see the whole table.
    Re-running the same ``run_id`` replaces its dq rows and report. Never raises for failed expectations:
    call :func:`raise_for_failures` on the result (the summary is also logged, warnings included).
    """
    # at the start of an Airflow task, "already imported" means the scheduler's preload reached the task process
    log.info("great_expectations %s", "already imported in this process"
             if "great_expectations" in sys.modules else "not imported yet: importing it (seconds)")
    spec = with_parameters(load_suite(layer), suite_parameters(settings))
    where_value: str | dict[str, str] | None = dict(where) if isinstance(where, Mapping) else where
    started = datetime.now(UTC)
    run_name = run_slug(run_id)
    groups = [
        _Group(ge_suite_name(layer, table, scope), table, scope,
               spec.where_for(table, where) if scope == "rows" else None, specs)
        for (table, scope), specs in spec.groups().items()
    ]
    t0 = time.monotonic()
    timings: dict[str, float] = {}
    with _locked(gx_root(settings, layer) / ".lock"):
        timings["wait_lock"] = time.monotonic() - t0
        ge_results, errors = _validate(settings, spec, groups, run_name, timings)
        t = time.monotonic()
        outcomes = _outcomes(settings, groups, ge_results, errors)
        timings["samples"] = time.monotonic() - t
        finished = datetime.now(UTC)
        result = SuiteResult(layer, run_id, outcomes, started, finished, where_value, timings=timings)
        prefix = report_prefix(run_id, layer)
        result.report_url = report_url(settings.airflow.ui_url, run_id, layer)
        result.report_key = f"{prefix}/index.html"
        local = local_reports_root(settings.state_dir) / run_name / layer
        index = write_bundle(result, local, data_docs_dir(settings, layer),
                             [g.suite_name for g in groups], run_name)
        result.report_path = str(index)
    t = time.monotonic()
    _publish(settings, result, local, prefix)
    _prune(settings, layer)
    timings["publish"] = time.monotonic() - t
    timings["total"] = time.monotonic() - t0
    log.info("%s", result.summary())
    log.info("DQ %s %s: %s in %.1fs (%s)", layer, run_id, "passed" if result.success else "FAILED",
             timings["total"], ", ".join(f"{k} {v:.1f}s" for k, v in timings.items()))
    return result


# ---------------------------------------------------------------------------- GE
def _validate(settings: Settings, spec: SuiteSpec, groups: list[_Group], run_name: str,
              timings: dict[str, float]) -> tuple[dict[str, dict[str, Any]], dict[str, str]]:
    """Run the checkpoint; return GE results by label, and errors by label for what could not run."""
    t = time.monotonic()
    _quiet_gx()
    import great_expectations as gx
    from great_expectations.checkpoint import UpdateDataDocsAction
    from great_expectations.core.run_identifier import RunIdentifier
    from great_expectations.data_context.types.base import ProgressBarsConfig

    timings["import_gx"] = time.monotonic() - t
    t = time.monotonic()
    os.environ[URL_ENV] = settings.postgres.url(settings.postgres.warehouse_db)
    root = gx_root(settings, spec.layer)
    root.mkdir(parents=True, exist_ok=True)
    # Checkpoints and validation definitions are rebuilt on every run (assets change with the filter);
    # stale ones would point at deleted assets and GE fails to load them, so they go first.
    for store in ("checkpoints", "validation_definitions"):
        for f in (root / "gx" / store).glob("*.json"):
            f.unlink()
    ctx = gx.get_context(mode="file", project_root_dir=str(root))
    bars = ctx.variables.progress_bars
    if isinstance(bars, dict):
        bars = ProgressBarsConfig(**bars)
    if bars is None or bars.globally or bars.metric_calculations:
        ctx.variables.progress_bars = ProgressBarsConfig(globally=False, metric_calculations=False)
        ctx.variables.save()

    ds = ctx.data_sources.add_or_update_postgres(name=DATASOURCE, connection_string="${" + URL_ENV + "}")
    errors: dict[str, str] = {}
    vds = []
    batches: dict[str, Any] = {}  # asset name -> batch definition (table and rows groups share a table asset)
    for g in groups:
        try:
            asset_name = f"{g.table}.filtered" if g.where else g.table
            batch = batches.get(asset_name)
            if batch is None:
                if any(a.name == asset_name for a in ds.assets):
                    ds.delete_asset(asset_name)
                if g.where:
                    asset = ds.add_query_asset(asset_name, query=f"select * from {g.table} where {g.where}")
                else:
                    schema, table = g.table.split(".", 1)
                    asset = ds.add_table_asset(asset_name, table_name=table, schema_name=schema)
                batch = batches[asset_name] = asset.add_batch_definition_whole_table("all")
            suite = gx.ExpectationSuite(
                name=g.suite_name,
                expectations=[s.ge_config() for s in g.specs],
                meta={"layer": spec.layer, "table": g.table, "scope": g.scope, "source": str(spec.path)},
            )
            built = {e.meta.get("label") for e in suite.expectations}
            for s in g.specs:
                if s.label not in built:
                    errors[s.label] = (f"Great Expectations rejected this expectation's configuration "
                                       f"(check its kwargs in {spec.path})")
            suite = ctx.suites.add_or_update(suite)
            vds.append(ctx.validation_definitions.add_or_update(
                gx.ValidationDefinition(name=g.suite_name, data=batch, suite=suite)))
        except Exception as e:  # noqa: BLE001 - a table GE cannot read fails its expectations, not the run
            msg = f"cannot validate {g.table}: {type(e).__name__}: {str(e).strip().splitlines()[0][:400]}"
            for s in g.specs:
                errors.setdefault(s.label, msg)
    by_label: dict[str, dict[str, Any]] = {}
    if not vds:
        return by_label, errors
    checkpoint = ctx.checkpoints.add_or_update(gx.Checkpoint(
        name=f"shopstream_{spec.layer}",
        validation_definitions=vds,
        actions=[UpdateDataDocsAction(name="data_docs")],
        result_format={"result_format": "SUMMARY", "partial_unexpected_count": 20},
    ))
    _forget_run(root, [g.suite_name for g in groups], run_name)
    timings["setup"] = time.monotonic() - t
    t = time.monotonic()
    try:
        res = checkpoint.run(run_id=RunIdentifier(run_name=run_name))
        timings["checkpoint"] = time.monotonic() - t
    except Exception as e:  # noqa: BLE001
        msg = f"the checkpoint failed: {type(e).__name__}: {str(e).strip().splitlines()[0][:400]}"
        for g in groups:
            for s in g.specs:
                errors.setdefault(s.label, msg)
        return by_label, errors
    for vr in res.run_results.values():
        for r in vr.results:
            d = r.to_json_dict()
            label = (d.get("expectation_config") or {}).get("meta", {}).get("label")
            if label:
                by_label[label] = d
    return by_label, errors


def _quiet_gx() -> None:
    """Keep a check task's log to warnings and our summary: GE logs ~220 INFO lines while it imports
    ("Skipping registering function ..."), so its loggers go to WARNING before the import; pyspark's
    pandas-version FutureWarning (GE imports pyspark, the checks do not use it) is dropped."""
    import warnings

    logging.getLogger("great_expectations").setLevel(logging.WARNING)
    warnings.filterwarnings("ignore", message="PySpark does not yet fully support pandas", category=FutureWarning)


def _forget_run(root: Path, suite_names: list[str], run_name: str) -> None:
    """Drop GE's stored results and pages of an earlier attempt of the same run (re-runs replace)."""
    gx_dir = root / "gx" / "uncommitted"
    for suite in suite_names:
        for d in (gx_dir / "validations" / suite / run_name,
                  gx_dir / "data_docs" / "local_site" / "validations" / suite / run_name):
            shutil.rmtree(d, ignore_errors=True)


# ---------------------------------------------------------------------------- outcomes
def _outcomes(settings: Settings, groups: list[_Group], ge_results: dict[str, dict[str, Any]],
              errors: dict[str, str]) -> list[ExpectationOutcome]:
    out: list[tuple[int, ExpectationOutcome]] = []
    for g in groups:
        for s in g.specs:
            if s.label in errors and s.label not in ge_results:
                out.append((s.index, missing_outcome(s, errors[s.label])))
                continue
            d = ge_results.get(s.label)
            if d is None:
                out.append((s.index, missing_outcome(s, "Great Expectations returned no result for it")))
                continue
            samples = None
            observed = (d.get("result") or {}).get("observed_value")
            if (s.type == "unexpected_rows_expectation" and not d.get("success")
                    and isinstance(observed, int) and observed > 0):
                samples = _fetch_rows(settings, s.kwargs["unexpected_rows_query"], g.batch_sql)
            out.append((s.index, outcome_from_ge(s, d, samples)))
    return [o for _, o in sorted(out, key=lambda x: x[0])]


def _fetch_rows(settings: Settings, query: str, batch_sql: str) -> list[dict[str, Any]] | None:
    """A few rows of a failed SQL expectation (GE's SUMMARY results carry only the count)."""
    sql = f"select * from ({query.format(batch=batch_sql)}) as unexpected limit {SAMPLE_SIZE}"
    try:
        with psycopg.connect(settings.postgres.dsn(), autocommit=True, row_factory=dict_row) as conn:
            conn.execute("set statement_timeout = '60s'")
            rows = conn.execute(sql).fetchall()
    except psycopg.Error as e:
        log.warning("could not fetch sample rows: %s", e)
        return None
    return [{k: _plain(v) for k, v in r.items()} for r in rows]


def _plain(v: Any) -> Any:
    if isinstance(v, Decimal):
        return float(v) if v == v.to_integral_value() or abs(v) < 1e15 else str(v)
    if isinstance(v, datetime):
        return v.isoformat()
    if v is None or isinstance(v, bool | int | float | str):
        return v
    return str(v)


# ---------------------------------------------------------------------------- publish
def _publish(settings: Settings, result: SuiteResult, local: Path, prefix: str) -> None:
    from shopstream.stack.s3 import minio_client

    upload_bundle(minio_client(settings), settings.s3.lake_bucket, local, prefix)
    with psycopg.connect(settings.postgres.dsn()) as conn:
        write_run(conn, result)


def _prune(settings: Settings, layer: str, keep_days: int = KEEP_LOCAL_DAYS) -> None:
    """Remove local GE results/pages and local report folders older than ``keep_days``."""
    cutoff = time.time() - keep_days * 86400
    uncommitted = gx_root(settings, layer) / "gx" / "uncommitted"
    candidates = [
        *(uncommitted / "validations").glob("*/*"),
        *(uncommitted / "data_docs" / "local_site" / "validations").glob("*/*"),
        *local_reports_root(settings.state_dir).glob(f"*/{layer}"),
    ]
    for d in candidates:
        try:
            if d.is_dir() and d.stat().st_mtime < cutoff:
                shutil.rmtree(d, ignore_errors=True)
        except OSError:
            continue
