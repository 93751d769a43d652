"""Gate decisions: thresholds, regression against the champion with tolerance, config validation."""

from __future__ import annotations

import pytest

from shopstream.training.gate import DEFAULT_CONFIG, GateConfig, GateConfigError, GateFailed, decide

CONFIG = GateConfig.from_dict({
    "version": 7,
    "thresholds": {"pr_auc": {"min": 0.3}, "log_loss": {"max": 0.65}, "roc_auc": {"min": 0.6, "max": 0.999}},
    "regression": {"pr_auc": {"tolerance": 0.01}, "log_loss": {"tolerance": 0.02}},
})
GOOD = {"pr_auc": 0.60, "log_loss": 0.55, "roc_auc": 0.75}


def test_packaged_config_loads_and_is_versioned():
    cfg = GateConfig.load()
    assert cfg.source == str(DEFAULT_CONFIG)
    assert cfg.version and "pr_auc" in cfg.thresholds and "pr_auc" in cfg.regression


def test_pass_without_champion_checks_thresholds_only():
    d = decide(GOOD, None, CONFIG, candidate_version="1")
    assert d.passed and d.reasons == []
    assert {c.kind for c in d.checks} == {"threshold"}
    assert "no champion yet" in d.report()
    assert d.champion_after == "1"


def test_threshold_failures_are_named():
    d = decide({"pr_auc": 0.2, "log_loss": 0.7, "roc_auc": 0.75}, None, CONFIG, "3")
    assert not d.passed
    assert any(r.startswith("pr_auc 0.2000 fails threshold rule >= 0.3") for r in d.reasons)
    assert any(r.startswith("log_loss 0.7000 fails threshold rule <= 0.65") for r in d.reasons)
    assert d.champion_after is None


def test_missing_metric_fails():
    d = decide({"log_loss": 0.5, "roc_auc": 0.7}, None, CONFIG, "3")
    assert not d.passed and any(r.startswith("pr_auc nan") for r in d.reasons)


def test_regression_within_tolerance_passes():
    champion = {"pr_auc": 0.605, "log_loss": 0.54, "roc_auc": 0.76}
    d = decide(GOOD, champion, CONFIG, "5", "4")
    assert d.passed, d.report()
    assert {c.kind for c in d.checks} == {"threshold", "regression"}
    assert d.champion_after == "5"
    assert "version 4 keeps alias 'previous'" in d.report()


def test_regression_beyond_tolerance_fails_and_champion_stays():
    champion = {"pr_auc": 0.70, "log_loss": 0.50, "roc_auc": 0.80}
    d = decide(GOOD, champion, CONFIG, "5", "4")
    assert not d.passed
    assert d.champion_after == "4"
    assert len(d.reasons) == 2
    assert "pr_auc 0.6000 fails regression rule >= champion 0.7000 - 0.01" in d.reasons
    assert "log_loss 0.5500 fails regression rule <= champion 0.5000 + 0.02" in d.reasons
    assert "champion does not move" in d.report()


def test_lower_is_better_direction_for_log_loss():
    champion = {"pr_auc": 0.5, "log_loss": 0.60, "roc_auc": 0.7}
    assert decide(GOOD, champion, CONFIG, "2", "1").passed  # lower log loss than champion is fine


def test_champion_that_cannot_be_scored_fails_the_gate():
    d = decide(GOOD, None, CONFIG, "5", "4", champion_error="MlflowException: gone")
    assert not d.passed
    assert any("cannot score champion version 4" in r for r in d.reasons)


def test_candidate_already_champion_passes_without_regression():
    d = decide(GOOD, None, CONFIG, "4", "4")
    assert d.passed and "already the champion" in d.report() and "stays 'champion'" in d.report()


def test_gate_failed_carries_a_readable_report():
    d = decide({"pr_auc": 0.1, "log_loss": 0.5, "roc_auc": 0.7}, None, CONFIG, "9")
    d.model_name = "m"
    err = GateFailed(d)
    assert str(err).startswith("gate FAILED: m version 9")
    assert err.decision is d


@pytest.mark.parametrize(("raw", "match"), [
    ({"thresholds": {}}, "version"),
    ({"version": 1, "thresholds": {"auc": {"min": 0.5}}}, "thresholds.auc: unknown metric"),
    ({"version": 1, "thresholds": {"pr_auc": {"least": 0.5}}}, "min and/or max"),
    ({"version": 1, "regression": {"pr_auc": {"tolerance": -1}}}, "tolerance >= 0"),
    ({"version": 1, "regression": {"pr_auc": {}}}, "tolerance >= 0"),
    ({"version": 1, "thresholds": [{"pr_auc": {"min": 0.15}}]}, r"gate.yaml: `thresholds` must be a mapping"),
    ({"version": 1, "regression": ["pr_auc"]}, r"gate.yaml: `regression` must be a mapping"),
    ({"version": 1, "thresholds": {"pr_auc": {"min": "high"}}}, r"gate.yaml: thresholds.pr_auc.min: must be a number"),
    ({"version": 1, "thresholds": {"pr_auc": {"min": [1]}}}, r"thresholds.pr_auc.min: must be a number"),
    ({"version": 1, "regression": {"pr_auc": {"tolerance": "x"}}}, r"regression.pr_auc.tolerance: must be a number"),
])
def test_bad_config_names_the_key(raw, match):
    with pytest.raises(GateConfigError, match=match):
        GateConfig.from_dict(raw, source="gate.yaml")


def test_config_file_errors_name_the_file(tmp_path):
    with pytest.raises(GateConfigError, match="does not exist"):
        GateConfig.load(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("version: [unclosed")
    with pytest.raises(GateConfigError, match=str(bad)):
        GateConfig.load(bad)


def test_a_list_where_a_mapping_belongs_names_the_key_and_the_file(tmp_path):
    bad = tmp_path / "gate.yaml"
    bad.write_text("version: 2\nthresholds:\n  - pr_auc: {min: 0.15}\n")
    with pytest.raises(GateConfigError, match=f"{bad}: `thresholds` must be a mapping"):
        GateConfig.load(bad)
