"""The expectation suites as files: ``expectations/<layer>.json``, one per layer, in GE 1.x suite format.

Each file is a Great Expectations ``ExpectationSuite`` (``name``, ``meta``, ``expectations``); every
expectation carries ``meta.severity`` (``critical`` fails the run, ``warning`` is reported only) and
``meta.why`` (what a failure means). A layer spans several tables, so an expectation names its table in
``meta.table`` (default: the suite's ``meta.table``). Optional ``meta.name`` labels an expectation that
has no column (the SQL ones).

At run time a layer's suite is split into one GE suite per (table, scope): ``table`` expectations
(columns and types, and any with ``meta.scope: "table"``) always run on the whole table, ``rows``
expectations on the table or, with a ``where`` filter, on a query asset that selects the filtered rows.
A kwarg may be ``{"$PARAMETER": name}``: the setting of that name (:data:`PARAMETERS`) is put in at run time
(:func:`with_parameters`), so thresholds live in the settings module. This module is pure (no GE import):
loading, checking, labelling and grouping.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from shopstream.settings import REPO_ROOT

EXPECTATIONS_DIR = REPO_ROOT / "expectations"
LAYERS = ("bronze", "silver", "gold")
SEVERITIES = ("critical", "warning")
SCOPES = ("table", "rows")

# Expectations about the table's structure: they run on the table asset even when rows are filtered
# (GE 1.24 cannot read column types through a query asset: it fails with KeyError 'type').
WHOLE_TABLE_TYPES = frozenset({
    "expect_column_to_exist",
    "expect_column_values_to_be_of_type",
    "expect_column_values_to_be_in_type_list",
    "expect_table_columns_to_match_set",
    "expect_table_columns_to_match_ordered_list",
    "expect_table_column_count_to_equal",
    "expect_table_column_count_to_be_between",
})

_TABLE_RE = re.compile(r"^[a-z_][a-z0-9_]*\.[a-z_][a-z0-9_]*$")
_JOIN_RE = re.compile(r"\bjoin\b", re.IGNORECASE)
# GE substitutes {batch} with "(select ...) AS subselect": an alias after it is a syntax error
_BATCH_ALIAS_RE = re.compile(
    r"\{batch\}\s+(?!(where|group|order|having|limit|union|except|intersect|window)\b)[a-z_]", re.IGNORECASE
)


PARAMETER = "$PARAMETER"
#: parameters a suite may use, and the setting (``pipeline`` section) each one is read from
PARAMETERS = {
    "set_aside_warning_share": "set_aside_warning_share",
    "set_aside_critical_share": "set_aside_critical_share",
}


def suite_parameters(settings: Any) -> dict[str, Any]:
    """The values of :data:`PARAMETERS` in these settings."""
    return {name: getattr(settings.pipeline, attr) for name, attr in PARAMETERS.items()}


class SuiteError(ValueError):
    """A suite file is malformed; the message names the file, the expectation and the rule."""


@dataclass(frozen=True)
class ExpectationSpec:
    """One expectation of a layer's suite, with what shopstream adds to it."""

    index: int                      # position in the file (stable order for reports)
    type: str                       # GE expectation type, e.g. expect_column_values_to_not_be_null
    kwargs: dict[str, Any]
    severity: str                   # critical | warning
    why: str
    table: str                      # schema.table
    name: str | None = None
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def scope(self) -> str:
        return str(self.meta.get("scope") or ("table" if self.type in WHOLE_TABLE_TYPES else "rows"))

    @property
    def column(self) -> str | None:
        if "column" in self.kwargs:
            return str(self.kwargs["column"])
        if "column_A" in self.kwargs:
            return f"{self.kwargs['column_A']}, {self.kwargs['column_B']}"
        if "column_list" in self.kwargs:
            return ", ".join(self.kwargs["column_list"])
        return None

    @property
    def label(self) -> str:
        """The expectation's name in dq.results and summaries: type + table and column (or name)."""
        if self.name:
            return f"{self.type}({self.table}: {self.name})"
        if "column" in self.kwargs:
            return f"{self.type}({self.table}.{self.kwargs['column']})"
        if self.column:
            return f"{self.type}({self.table}: {self.column})"
        return f"{self.type}({self.table})"

    def ge_config(self) -> dict[str, Any]:
        """The dict GE's ``ExpectationSuite`` accepts, with the label and table carried in meta."""
        meta = {**self.meta, "severity": self.severity, "why": self.why, "table": self.table,
                "label": self.label}
        return {
            "type": self.type,
            "kwargs": dict(self.kwargs),
            "meta": meta,
            "notes": self.why,
            "severity": self.severity,
        }


@dataclass(frozen=True)
class SuiteSpec:
    layer: str
    path: Path
    meta: dict[str, Any]
    expectations: tuple[ExpectationSpec, ...]

    @property
    def tables(self) -> list[str]:
        seen: list[str] = []
        for e in self.expectations:
            if e.table not in seen:
                seen.append(e.table)
        return seen

    @property
    def where_tables(self) -> list[str]:
        return list(self.meta.get("where_tables", []))

    def groups(self) -> dict[tuple[str, str], list[ExpectationSpec]]:
        """Expectations by (table, scope), in file order."""
        out: dict[tuple[str, str], list[ExpectationSpec]] = {}
        for e in self.expectations:
            out.setdefault((e.table, e.scope), []).append(e)
        return out

    def by_label(self) -> dict[str, ExpectationSpec]:
        return {e.label: e for e in self.expectations}

    def where_for(self, table: str, where: str | Mapping[str, str] | None) -> str | None:
        """The row filter for ``table``: a mapping names tables; a string applies to ``where_tables``."""
        if where is None:
            return None
        if isinstance(where, Mapping):
            return where.get(table)
        return where if table in self.where_tables else None


def suite_path(layer: str, directory: Path | None = None) -> Path:
    if layer not in LAYERS:
        raise SuiteError(f"unknown layer {layer!r}; the suites are {', '.join(LAYERS)} "
                         f"(files {EXPECTATIONS_DIR}/<layer>.json)")
    return (directory or EXPECTATIONS_DIR) / f"{layer}.json"


def load_suite(layer: str, directory: Path | None = None) -> SuiteSpec:
    """Read and check ``expectations/<layer>.json``; raise :class:`SuiteError` naming what is wrong."""
    path = suite_path(layer, directory)
    try:
        raw = json.loads(path.read_text())
    except FileNotFoundError:
        raise SuiteError(f"suite file {path} is missing: every layer needs expectations/<layer>.json") from None
    except json.JSONDecodeError as e:
        raise SuiteError(f"suite file {path} is not valid JSON: {e}") from None
    return parse_suite(raw, layer, path)


def parse_suite(raw: dict[str, Any], layer: str, path: Path) -> SuiteSpec:
    if raw.get("name") != layer:
        raise SuiteError(f"{path}: suite name must be {layer!r} (got {raw.get('name')!r})")
    meta = raw.get("meta") or {}
    default_table = meta.get("table")
    items = raw.get("expectations")
    if not isinstance(items, list) or not items:
        raise SuiteError(f"{path}: 'expectations' must be a non-empty list")
    specs: list[ExpectationSpec] = []
    for i, item in enumerate(items):
        where = f"{path}: expectation #{i} ({item.get('type', '?')})"
        if not isinstance(item.get("type"), str) or not isinstance(item.get("kwargs"), dict):
            raise SuiteError(f"{where}: needs a string 'type' and a 'kwargs' object")
        m = dict(item.get("meta") or {})
        severity = m.pop("severity", None)
        if severity not in SEVERITIES:
            raise SuiteError(f"{where}: meta.severity must be one of {SEVERITIES} (got {severity!r})")
        why = m.pop("why", None)
        if not isinstance(why, str) or not why.strip():
            raise SuiteError(f"{where}: meta.why must say what a failure means")
        table = m.pop("table", None) or default_table
        if not isinstance(table, str) or not _TABLE_RE.match(table):
            raise SuiteError(f"{where}: meta.table (or the suite's meta.table) must be schema.table (got {table!r})")
        name = m.pop("name", None)
        m.pop("label", None)
        if m.get("scope", "rows") not in SCOPES:
            raise SuiteError(f"{where}: meta.scope must be one of {SCOPES} (got {m['scope']!r})")
        for k, v in item["kwargs"].items():
            if isinstance(v, dict) and PARAMETER in v and v[PARAMETER] not in PARAMETERS:
                raise SuiteError(f"{where}: kwarg {k!r} names unknown parameter {v[PARAMETER]!r}; "
                                 f"known: {sorted(PARAMETERS)}")
        if item["type"] == "unexpected_rows_expectation":
            query = item["kwargs"].get("unexpected_rows_query", "")
            if "{batch}" not in query:
                raise SuiteError(f"{where}: unexpected_rows_query must select from {{batch}} (the rows checked)")
            if _BATCH_ALIAS_RE.search(query):
                raise SuiteError(
                    f"{where}: do not alias {{batch}} (GE substitutes it with an aliased subquery); "
                    f"write (select * from {{batch}}) x"
                )
            if _JOIN_RE.search(query):
                raise SuiteError(
                    f"{where}: write the query without JOIN (use EXISTS / IN / scalar subqueries): GE substitutes "
                    f"{{batch}} of a filtered batch without an alias when the query has a JOIN"
                )
            if not name:
                raise SuiteError(f"{where}: an unexpected_rows_expectation needs meta.name (its label)")
        specs.append(ExpectationSpec(i, item["type"], dict(item["kwargs"]), severity, why, table, name, m))
    labels = [s.label for s in specs]
    dupes = sorted({x for x in labels if labels.count(x) > 1})
    if dupes:
        raise SuiteError(f"{path}: labels must be unique within a suite (give meta.name): {dupes}")
    for t in meta.get("where_tables", []):
        if t not in {s.table for s in specs}:
            raise SuiteError(f"{path}: meta.where_tables names {t!r}, which no expectation checks")
    return SuiteSpec(layer, path, dict(meta), tuple(specs))


def with_parameters(spec: SuiteSpec, values: Mapping[str, Any]) -> SuiteSpec:
    """The suite with every ``{"$PARAMETER": name}`` kwarg replaced by ``values[name]``."""
    def put(v: Any) -> Any:
        return values[v[PARAMETER]] if isinstance(v, dict) and PARAMETER in v else v

    return replace(spec, expectations=tuple(
        replace(e, kwargs={k: put(v) for k, v in e.kwargs.items()}) for e in spec.expectations))


def ge_suite_name(layer: str, table: str, scope: str) -> str:
    """GE suite / validation definition name for one (table, scope) group (no dots: GE makes them folders)."""
    return f"{layer}__{table.replace('.', '_')}__{scope}"
