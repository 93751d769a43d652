"""The suite files: they parse as GE 1.x suites, every expectation has a severity and a reason, labels are unique."""

from __future__ import annotations

import copy
import json

import pytest

from shopstream.quality.suites import (
    EXPECTATIONS_DIR,
    LAYERS,
    WHOLE_TABLE_TYPES,
    SuiteError,
    ge_suite_name,
    load_suite,
    parse_suite,
    suite_path,
)


def raw(layer: str) -> dict:
    return json.loads(suite_path(layer).read_text())


@pytest.mark.parametrize("layer", LAYERS)
def test_every_expectation_has_severity_and_why(layer):
    for e in raw(layer)["expectations"]:
        assert e["meta"]["severity"] in ("critical", "warning"), e
        assert len(e["meta"]["why"]) > 20, e


@pytest.mark.parametrize("layer", LAYERS)
def test_suite_loads_with_unique_labels(layer):
    spec = load_suite(layer)
    labels = [e.label for e in spec.expectations]
    assert len(labels) == len(set(labels)) == len(raw(layer)["expectations"])
    assert spec.layer == layer and spec.where_tables
    assert all("." in t for t in spec.tables)


def test_suite_contents_cover_the_brief():
    bronze = load_suite("bronze").by_label()
    assert bronze["expect_table_row_count_to_be_between(bronze.events)"].severity == "critical"
    assert "expect_compound_columns_to_be_unique(bronze.events: src_topic, src_partition, src_offset)" in bronze
    assert bronze["expect_column_values_to_be_in_set(bronze.events.event_type)"].kwargs["value_set"] == [
        "view", "cart", "remove_from_cart", "purchase"]
    silver = load_suite("silver").by_label()
    assert silver["expect_column_values_to_be_unique(silver.events.event_key)"].severity == "critical"
    recon = silver["unexpected_rows_expectation(silver.reconciliation: bronze_rows_accounted_for)"]
    assert recon.severity == "critical"
    assert "bronze_rows <> silver_rows + duplicates + late_set_aside + rejected" in recon.kwargs["unexpected_rows_query"]
    gold = load_suite("gold").by_label()
    for col, dim in [("user_id", "dim_user"), ("product_id", "dim_product"), ("category_id", "dim_category"),
                     ("brand_key", "dim_brand"), ("date_key", "dim_date")]:
        assert gold[f"unexpected_rows_expectation(gold.fact_events: {col}_in_{dim})"].severity == "critical"
    assert gold["unexpected_rows_expectation(ml.cart_features: label_positive_rate_between_5_and_95_percent)"
                ].severity == "warning"
    assert gold["expect_column_values_to_be_between(ml.cart_features.hour)"].kwargs == {
        "column": "hour", "min_value": 0, "max_value": 23}


def test_whole_table_expectations_are_grouped_apart():
    groups = load_suite("bronze").groups()
    assert set(groups) == {("bronze.events", "table"), ("bronze.events", "rows"), ("bronze.loads", "rows")}
    whole = groups[("bronze.events", "table")]
    assert [e.type for e in whole if e.type not in WHOLE_TABLE_TYPES] == ["expect_table_row_count_to_be_between"]
    assert all(e.type not in WHOLE_TABLE_TYPES for e in groups[("bronze.events", "rows")])
    assert ge_suite_name("gold", "ml.cart_features", "rows") == "gold__ml_cart_features__rows"


def test_where_applies_to_where_tables_or_a_mapping():
    spec = load_suite("gold")
    assert spec.where_for("gold.fact_events", "date_key = 20191001") == "date_key = 20191001"
    assert spec.where_for("ml.cart_features", "date_key = 20191001") is None
    assert spec.where_for("ml.cart_features", {"ml.cart_features": "hour = 1"}) == "hour = 1"
    assert spec.where_for("gold.fact_events", {"ml.cart_features": "hour = 1"}) is None
    assert spec.where_for("gold.fact_events", None) is None


@pytest.mark.parametrize("layer", LAYERS)
def test_suite_files_parse_as_great_expectations_suites(layer):
    """GE drops an invalid expectation with only a log line: every one must survive, also as rebuilt at run time."""
    import great_expectations as gx

    suite = gx.ExpectationSuite(**raw(layer))
    assert len(suite.expectations) == len(raw(layer)["expectations"])
    for (table, scope), specs in load_suite(layer).groups().items():
        built = gx.ExpectationSuite(name=ge_suite_name(layer, table, scope), expectations=[s.ge_config() for s in specs])
        assert [e.meta["label"] for e in built.expectations] == [s.label for s in specs]
        assert [str(e.severity.value) for e in built.expectations] == [s.severity for s in specs]


def _bad(mutate) -> dict:
    r = copy.deepcopy(raw("silver"))
    mutate(r)
    return r


@pytest.mark.parametrize("mutate, message", [
    (lambda r: r["expectations"][0]["meta"].pop("severity"), "meta.severity must be one of"),
    (lambda r: r["expectations"][0]["meta"].update(severity="fatal"), "meta.severity must be one of"),
    (lambda r: r["expectations"][0]["meta"].update(why=""), "meta.why"),
    (lambda r: r["expectations"][0]["meta"].update(table="events"), "schema.table"),
    (lambda r: r.update(name="gold"), "suite name must be 'silver'"),
    (lambda r: r["expectations"].append(copy.deepcopy(r["expectations"][1])), "labels must be unique"),
    (lambda r: r["expectations"][-1]["kwargs"].update(unexpected_rows_query="select 1 from silver.sessions"),
     "must select from {batch}"),
    (lambda r: r["expectations"][-1]["kwargs"].update(
        unexpected_rows_query="select * from (select * from {batch}) b join gold.dim_user u on true"),
     "without JOIN"),
    (lambda r: r["expectations"][-1]["kwargs"].update(unexpected_rows_query="select * from {batch} b"),
     "do not alias"),
    (lambda r: r["meta"].update(where_tables=["silver.nope"]), "which no expectation checks"),
    (lambda r: r["expectations"][0]["meta"].update(scope="schema"), "meta.scope must be one of"),
])
def test_malformed_suites_are_rejected_with_the_reason(mutate, message):
    with pytest.raises(SuiteError, match=message) as exc:
        parse_suite(_bad(mutate), "silver", EXPECTATIONS_DIR / "silver.json")
    assert "silver.json" in str(exc.value)


def test_unknown_layer_names_the_choices():
    with pytest.raises(SuiteError, match="bronze, silver, gold"):
        load_suite("platinum")


def test_thresholds_come_from_the_settings():
    from shopstream.quality.suites import suite_parameters, with_parameters
    from shopstream.settings import load_settings

    spec = load_suite("silver")
    shares = [e for e in spec.expectations if e.table == "silver.runs"]
    assert {e.kwargs["column"] for e in shares} == {"late_share", "duplicate_share", "rejected_share"}
    assert {e.severity for e in shares} == {"warning", "critical"}
    s = load_settings(pipeline={"set_aside_warning_share": 0.07, "set_aside_critical_share": 0.3})
    resolved = {(e.kwargs["column"], e.severity): e.kwargs["max_value"]
                for e in with_parameters(spec, suite_parameters(s)).expectations if e.table == "silver.runs"}
    assert resolved[("late_share", "warning")] == 0.07 and resolved[("late_share", "critical")] == 0.3
    bad = raw("silver")
    bad["expectations"][0]["kwargs"]["max_value"] = {"$PARAMETER": "late_shar"}
    with pytest.raises(SuiteError, match="unknown parameter 'late_shar'"):
        parse_suite(bad, "silver", suite_path("silver"))
