"""What a suite run found, and how it is told: outcomes, the suite result, the readable summary.

Pure logic (no GE import): GE validation results come in as plain dicts (``to_json_dict()``) and are
turned into :class:`ExpectationOutcome` rows. A GE SQL error arrives in ``exception_info`` with
``success`` false *or missing*; it always counts as a failure carrying its message, never as success.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any

from shopstream.quality.suites import ExpectationSpec

SAMPLE_SIZE = 5
_VALUE_CHARS = 120
_ERROR_CHARS = 600


class DataQualityError(RuntimeError):
    """A suite found critical failures; the message names them, with counts, samples and the report."""

    def __init__(self, message: str, result: SuiteResult | None = None) -> None:
        super().__init__(message)
        self.result = result


@dataclass(frozen=True)
class ExpectationOutcome:
    expectation: str                 # label: type(table.column) or type(table: name)
    type: str
    table: str
    column: str | None
    severity: str                    # critical | warning
    success: bool
    why: str = ""
    observed_value: Any = None
    unexpected_count: int | None = None
    element_count: int | None = None
    sample_values: list[Any] = field(default_factory=list)
    error: str | None = None         # GE raised (SQL error, missing column, ...): a failure
    kwargs: dict[str, Any] = field(default_factory=dict)

    @property
    def failed(self) -> bool:
        return not self.success

    def observed_text(self) -> str | None:
        """observed_value as stored in dq.results (JSON for structures, plain text for scalars)."""
        if self.error:
            return f"error: {self.error}"[:2000]
        if self.observed_value is None:
            if self.unexpected_count is not None and self.element_count is not None:
                return f"{self.unexpected_count} of {self.element_count} unexpected"
            return None
        if isinstance(self.observed_value, str):
            return self.observed_value[:2000]
        return json.dumps(self.observed_value, default=str)[:2000]

    def samples_text(self) -> str | None:
        return json.dumps(self.sample_values, default=str)[:4000] if self.sample_values else None


@dataclass
class SuiteResult:
    layer: str
    run_id: str
    outcomes: list[ExpectationOutcome]
    started_at: datetime
    finished_at: datetime
    where: str | dict[str, str] | None = None
    report_url: str | None = None      # the Airflow UI page of the report
    report_key: str | None = None      # the report's index page in the lake
    report_path: str | None = None     # the report's index page on local disk
    data_docs: list[str] = field(default_factory=list)  # GE Data Docs pages of this run (report-relative)
    timings: dict[str, float] = field(default_factory=dict)  # seconds per phase (import, setup, run, ...)

    @property
    def success(self) -> bool:
        """True when no critical expectation failed (warnings never fail a run)."""
        return not self.critical_failures

    @property
    def critical_failures(self) -> list[ExpectationOutcome]:
        return [o for o in self.outcomes if o.failed and o.severity == "critical"]

    @property
    def warnings(self) -> list[ExpectationOutcome]:
        """Failed warning-level expectations."""
        return [o for o in self.outcomes if o.failed and o.severity != "critical"]

    @property
    def evaluated(self) -> int:
        return len(self.outcomes)

    @property
    def failed(self) -> int:
        """Failed expectations of any severity (dq.runs.failed)."""
        return sum(1 for o in self.outcomes if o.failed)

    def summary(self) -> str:
        return format_summary(self)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d.update(success=self.success, evaluated=self.evaluated, failed=self.failed)
        return d


# ---------------------------------------------------------------------------- GE result -> outcome
def exception_message(exception_info: Any) -> str | None:
    """The error message in a GE ``exception_info``, whichever shape it has; None when nothing raised.

    GE 1.24 uses two shapes: ``{"raised_exception": bool, "exception_message": ...}`` for the expectation
    itself, and ``{"<MetricConfigurationID ...>": {"raised_exception": ..., ...}, ...}`` when a metric
    (usually its SQL) failed.
    """
    if not exception_info:
        return None
    if isinstance(exception_info, dict) and "raised_exception" in exception_info:
        infos: Iterable[Any] = [exception_info]
    elif isinstance(exception_info, dict):
        infos = exception_info.values()
    else:
        return str(exception_info)[:_ERROR_CHARS]
    messages: list[str] = []
    for info in infos:
        if not isinstance(info, dict):
            continue
        raised = info.get("raised_exception")
        if raised in (True, "True", "true") or (raised is None and info.get("exception_message")):
            msg = info.get("exception_message") or info.get("exception_traceback") or "unknown error"
            msg = _first_lines(str(msg))
            if msg not in messages:
                messages.append(msg)
    return "; ".join(messages)[:_ERROR_CHARS] if messages else None


def _first_lines(msg: str, n: int = 4) -> str:
    lines = [x.strip() for x in msg.strip().splitlines() if x.strip()]
    # drop SQLAlchemy's "Background on this error" trailer and caret lines
    lines = [x for x in lines if not x.startswith("(Background on this error") and set(x) != {"^"}]
    return " | ".join(lines[:n])


def outcome_from_ge(spec: ExpectationSpec, ge_result: dict[str, Any],
                    samples: list[Any] | None = None) -> ExpectationOutcome:
    """Turn one GE ``ExpectationValidationResult.to_json_dict()`` into an outcome for ``spec``."""
    result = ge_result.get("result") or {}
    error = exception_message(ge_result.get("exception_info"))
    success = bool(ge_result.get("success")) and error is None
    observed = result.get("observed_value")
    unexpected = result.get("unexpected_count")
    element = result.get("element_count")
    if spec.type == "unexpected_rows_expectation" and isinstance(observed, int | float):
        unexpected = int(observed)
    if samples is None:
        samples = _samples_from_result(result)
    if error is None and not success and not result and ge_result.get("success") is None:
        error = "Great Expectations returned no result for this expectation"
    return ExpectationOutcome(
        expectation=spec.label,
        type=spec.type,
        table=spec.table,
        column=spec.column,
        severity=spec.severity,
        success=success,
        why=spec.why,
        observed_value=observed,
        unexpected_count=int(unexpected) if isinstance(unexpected, int | float) else None,
        element_count=int(element) if isinstance(element, int | float) else None,
        sample_values=[] if success else list(samples)[:SAMPLE_SIZE],
        error=error,
        kwargs={k: v for k, v in spec.kwargs.items() if k not in ("batch_id",)},
    )


def missing_outcome(spec: ExpectationSpec, reason: str) -> ExpectationOutcome:
    """An expectation that produced no result (dropped by GE, or its table could not be read): a failure."""
    return ExpectationOutcome(
        expectation=spec.label, type=spec.type, table=spec.table, column=spec.column,
        severity=spec.severity, success=False, why=spec.why, error=reason,
        kwargs=dict(spec.kwargs),
    )


def _samples_from_result(result: dict[str, Any]) -> list[Any]:
    counts = result.get("partial_unexpected_counts")
    if counts:
        return [c.get("value") for c in counts][:SAMPLE_SIZE]
    values = result.get("partial_unexpected_list") or []
    out: list[Any] = []
    for v in values:
        if v not in out:
            out.append(v)
    details = (result.get("details") or {}).get("unexpected_rows")
    if not out and details:
        out = list(details)
    if not out and isinstance(result.get("details"), dict) and "mismatched" in result["details"]:
        out = [result["details"]["mismatched"]]
    return out[:SAMPLE_SIZE]


# ---------------------------------------------------------------------------- summary
def format_value(v: Any) -> str:
    if isinstance(v, dict):
        text = ", ".join(f"{k}={format_value(x)}" for k, x in v.items())
        return "{" + text + "}"
    if isinstance(v, float) and v.is_integer():
        text = str(v)
    elif isinstance(v, str):
        text = repr(v)
    else:
        text = str(v)
    return text if len(text) <= _VALUE_CHARS else text[: _VALUE_CHARS - 3] + "..."


def _rule(o: ExpectationOutcome) -> str:
    k = o.kwargs
    parts = []
    if "value_set" in k:
        parts.append("in " + ", ".join(map(str, k["value_set"])))
    if k.get("min_value") is not None or k.get("max_value") is not None:
        lo = "" if k.get("min_value") is None else f">= {k['min_value']}"
        hi = "" if k.get("max_value") is None else f"<= {k['max_value']}"
        parts.append(" and ".join(x for x in (lo, hi) if x))
    if "type_" in k:
        parts.append(f"type {k['type_']}")
    if "regex" in k:
        parts.append(f"matches {k['regex']}")
    if "mostly" in k:
        parts.append(f"mostly {k['mostly']}")
    return f" [{'; '.join(parts)}]" if parts else ""


def observed_summary(o: ExpectationOutcome) -> str:
    """What was found, without samples: an error, "3 of 120 rows unexpected (2.50%)", or the observed value."""
    if o.error:
        return f"could not be evaluated (counts as failed): {o.error}"
    if o.unexpected_count is not None:
        if o.element_count:
            rows = "row" if o.element_count == 1 else "rows"
            pct = 100.0 * o.unexpected_count / o.element_count
            return f"{o.unexpected_count} of {o.element_count} {rows} unexpected ({pct:.2f}%)"
        return f"{o.unexpected_count} unexpected {'row' if o.unexpected_count == 1 else 'rows'}"
    if o.observed_value is not None:
        return f"observed {format_value(o.observed_value)}"
    return "failed" if o.failed else "passed"


def describe(o: ExpectationOutcome) -> str:
    """One outcome as one or two readable lines: what failed, where, how many rows, samples, why."""
    head = f"{o.severity.upper()} {o.expectation}{_rule(o)}"
    if o.error:
        return f"{head}: {observed_summary(o)}"
    text = f"{head}: {observed_summary(o)}"
    if o.sample_values:
        text += "; sample: " + "; ".join(format_value(v) for v in o.sample_values[:SAMPLE_SIZE])
    if o.why:
        text += f"\n      why: {o.why}"
    return text


def format_summary(result: SuiteResult) -> str:
    crit, warn = result.critical_failures, result.warnings
    where = f" (where {result.where})" if result.where else ""
    if crit:
        head = (f"Data quality FAILED for suite {result.layer!r}, run {result.run_id!r}{where}: "
                f"{len(crit)} critical expectation(s) failed of {result.evaluated} evaluated"
                f"{f', {len(warn)} warning(s)' if warn else ''}.")
    else:
        head = (f"Data quality passed for suite {result.layer!r}, run {result.run_id!r}{where}: "
                f"{result.evaluated} expectations evaluated"
                f"{f', {len(warn)} warning(s)' if warn else ', no warnings'}.")
    lines = [head]
    if crit:
        lines.append("Critical failures:")
        lines += [f"  - {describe(o)}" for o in crit]
    if warn:
        lines.append("Warnings (reported, do not fail the run):")
        lines += [f"  - {describe(o)}" for o in warn]
    if result.report_url:
        lines.append(f"Report: {result.report_url}")
    if result.report_key:
        lines.append(f"Report in the lake: {result.report_key}")
    return "\n".join(lines)


def raise_for_failures(result: SuiteResult) -> SuiteResult:
    """Raise :class:`DataQualityError` with the summary if a critical expectation failed; else return."""
    if not result.success:
        raise DataQualityError(format_summary(result), result)
    return result
