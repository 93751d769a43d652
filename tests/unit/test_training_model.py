"""The logged model's preprocessing and metrics: raw feature frame in, probability out."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from shopstream.training.evaluate import best_f1_threshold, classification_metrics, plot_files
from shopstream.training.pyfunc_model import prepare_features

FEATURES = ["brand", "price", "hour"]
CATS = {"brand": ["apple", "samsung"]}


def test_prepare_features_fixes_categories_and_numeric_types():
    frame = pd.DataFrame({"brand": ["samsung", None, "nokia"], "price": [10, 20.5, 3], "hour": [1, 2, 3],
                          "extra": ["x", "y", "z"]})
    x = prepare_features(frame, FEATURES, CATS)
    assert list(x.columns) == FEATURES
    assert list(x["brand"].cat.categories) == ["apple", "samsung"]
    assert x["brand"].cat.codes.tolist() == [1, -1, -1]      # null and unseen values are missing
    assert x["price"].dtype == "float64" and x["hour"].dtype == "float64"


def test_prepare_features_names_missing_columns():
    with pytest.raises(ValueError, match=r"lacks the feature columns \['hour'\]"):
        prepare_features(pd.DataFrame({"brand": ["a"], "price": [1.0]}), FEATURES, CATS)


def test_categories_codes_do_not_depend_on_the_rows():
    a = prepare_features(pd.DataFrame({"brand": ["samsung"], "price": [1], "hour": [1]}), FEATURES, CATS)
    b = prepare_features(pd.DataFrame({"brand": ["apple", "samsung"], "price": [1, 1], "hour": [1, 1]}),
                         FEATURES, CATS)
    assert a["brand"].cat.codes.iloc[0] == b["brand"].cat.codes.iloc[1] == 1


def test_metrics_on_a_known_case():
    y = np.array([0, 0, 1, 1])
    p = np.array([0.1, 0.4, 0.35, 0.8])
    m = classification_metrics(y, p, threshold=0.5)
    assert m["roc_auc"] == pytest.approx(0.75)
    assert m["positive_rate"] == 0.5 and m["pr_auc_lift"] == pytest.approx(m["pr_auc"] / 0.5)
    assert m["f1"] == pytest.approx(2 / 3)
    assert m["brier"] == pytest.approx(np.mean((p - y) ** 2))
    assert 0 < best_f1_threshold(y, p) <= 0.8


def test_plots_are_written(tmp_path):
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 200)
    p = np.clip(y * 0.3 + rng.random(200) * 0.7, 0, 1)
    files = plot_files(y, p, {"price": 3.0, "hour": 1.0}, tmp_path)
    assert [f.name for f in files] == ["roc_curve.png", "pr_curve.png", "calibration.png", "feature_importance.png"]
    assert all(f.stat().st_size > 1000 for f in files)
