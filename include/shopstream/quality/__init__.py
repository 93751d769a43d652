"""Data quality: one Great Expectations suite per layer, results in the dq tables, Data Docs in the UI.

    from shopstream.quality import run_suite, raise_for_failures
    result = run_suite(settings, "silver", run_id, where="event_hour = '2019-10-01 10:00+00'")
    raise_for_failures(result)      # DataQualityError naming the failed critical expectations

Importing this package does not import great_expectations (that happens inside ``run_suite``).
"""

from shopstream.quality.results import (
    DataQualityError,
    ExpectationOutcome,
    SuiteResult,
    format_summary,
    raise_for_failures,
)
from shopstream.quality.runner import run_suite
from shopstream.quality.suites import LAYERS, SuiteError, load_suite

__all__ = [
    "LAYERS",
    "DataQualityError",
    "ExpectationOutcome",
    "SuiteError",
    "SuiteResult",
    "format_summary",
    "load_suite",
    "raise_for_failures",
    "run_suite",
]
