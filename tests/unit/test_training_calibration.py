"""Calibration of the booster's scores: the fitted mappings, the automatic choice, ECE and the gate rule."""

from __future__ import annotations

import numpy as np
import pytest

from shopstream.training import calibration
from shopstream.training.gate import GateConfig, decide
from shopstream.training.pyfunc_model import calibrate


def scores(n: int = 20_000, seed: int = 0):
    """Labels drawn from true probabilities, and an over-confident score of them (the logit doubled)."""
    rng = np.random.default_rng(seed)
    z = rng.normal(-0.6, 1.0, n)
    p = 1 / (1 + np.exp(-z))
    y = (rng.random(n) < p).astype(int)
    return y, p, 1 / (1 + np.exp(-2 * z))


def test_isotonic_is_what_scikit_learn_predicts():
    from sklearn.isotonic import IsotonicRegression

    y, _, raw = scores(3000)
    cal = calibration.fit(y, raw, "isotonic")
    iso = IsotonicRegression(y_min=1e-4, y_max=1 - 1e-4, out_of_bounds="clip").fit(raw, y)
    probe = np.linspace(-0.1, 1.1, 500)
    assert np.allclose(calibrate(probe, cal), iso.predict(probe))


def test_platt_undoes_an_over_confident_logit():
    y, _, raw = scores()
    cal = calibration.fit(y, raw, "platt")
    assert cal["a"] == pytest.approx(0.5, abs=0.05) and cal["b"] == pytest.approx(0.0, abs=0.05)


def test_none_and_unknown_methods():
    p = np.array([0.1, 0.5, 0.9])
    assert calibrate(p, None).tolist() == p.tolist() == calibrate(p, {"method": "none"}).tolist()
    with pytest.raises(ValueError, match="unknown calibration method 'magic'"):
        calibrate(p, {"method": "magic"})
    with pytest.raises(ValueError, match="unknown calibration method"):
        calibration.fit([0, 1], [0.2, 0.8], "magic")


def test_auto_calibrates_a_miscalibrated_score_and_leaves_a_calibrated_one():
    y, p, raw = scores()
    fixed = calibration.choose(y, raw, "auto")
    assert fixed["method"] in ("platt", "isotonic")
    assert fixed["cross_fit_log_loss"][fixed["method"]] < fixed["cross_fit_log_loss"]["none"]
    assert calibration.expected_calibration_error(y, calibrate(raw, fixed)) < 0.02
    assert calibration.expected_calibration_error(y, raw) > 0.05
    kept = calibration.choose(y, p, "auto")      # already calibrated: nothing beats it by much
    assert calibration.expected_calibration_error(y, calibrate(p, kept)) < 0.02


def test_ece_on_a_known_case():
    y = np.array([0, 0, 1, 1])
    p = np.array([0.1, 0.1, 0.9, 0.5])         # bins: {0.1, 0.1} -> 0 of 2, {0.5} -> 1 of 1, {0.9} -> 1 of 1
    assert calibration.expected_calibration_error(y, p) == pytest.approx((2 * 0.1 + 0.5 + 0.1) / 4)
    mean_p, rate, rows = calibration.reliability(y, p, bins=2)
    assert rows.tolist() == [2, 2] and rate.tolist() == [0.0, 1.0] and mean_p.tolist() == pytest.approx([0.1, 0.7])


def test_the_gate_has_a_calibration_rule():
    config = GateConfig.load()
    assert "ece" in config.thresholds and "max" in config.thresholds["ece"]
    good = {"pr_auc": 0.6, "pr_auc_lift": 1.8, "roc_auc": 0.75, "log_loss": 0.55, "brier": 0.18, "ece": 0.01}
    assert decide(good, None, config).passed
    bad = decide({**good, "ece": 0.2}, None, config)
    assert not bad.passed and any(r.startswith("ece 0.2000 fails threshold") for r in bad.reasons)
    regress = GateConfig.from_dict({"version": 1, "regression": {"ece": {"tolerance": 0.01}}})
    assert not decide({"ece": 0.05}, {"ece": 0.02}, regress, "2", "1").passed      # lower is better
    assert decide({"ece": 0.02}, {"ece": 0.05}, regress, "2", "1").passed
