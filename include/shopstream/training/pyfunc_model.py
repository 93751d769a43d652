"""The logged purchase-intent model: a raw feature frame in, the purchase probability out.

Logged with MLflow's models-from-code: MLflow stores THIS FILE with the model and runs it when the model is
loaded, so it imports nothing from shopstream (only numpy, pandas, xgboost and mlflow). Training code imports
:func:`prepare_features` from here, so training and serving share one preprocessing.

Artifacts of a logged model:
- ``booster``: the XGBoost booster (UBJSON);
- ``meta``: JSON with ``features`` (column order), ``categories`` (per categorical column, the known values in
  code order), ``calibration`` (how the booster's raw probability maps to the calibrated one, fitted on the
  validation set; see :func:`calibrate`; absent = none) and ``threshold`` (the decision threshold, chosen on the
  validation set's calibrated probabilities).

``predict(frame)`` takes a DataFrame with at least the feature columns (extra columns are ignored; string
columns may hold unseen values or nulls, which the trees treat as missing) and returns a 1-D float64 array of
calibrated P(purchase), one per row, in row order.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from mlflow.models import set_model
from mlflow.pyfunc import PythonModel


def prepare_features(frame: pd.DataFrame, features: list[str], categories: dict[str, list[str]]) -> pd.DataFrame:
    """The model's input matrix: categorical columns with fixed category lists, every other column as float."""
    missing = [c for c in features if c not in frame.columns]
    if missing:
        raise ValueError(f"input frame lacks the feature columns {missing}; it needs all of {features}")
    out: dict[str, Any] = {}
    for col in features:
        values = frame[col]
        if col in categories:
            obj = values.astype(object)
            obj = obj.where(values.notna(), None)
            out[col] = pd.Categorical(obj, categories=categories[col])
        else:
            out[col] = pd.to_numeric(values, errors="raise").astype("float64")
    return pd.DataFrame(out, index=frame.index)


def calibrate(proba: np.ndarray, calibration: dict[str, Any] | None) -> np.ndarray:
    """Calibrated probabilities from the booster's raw ones (float64 in, float64 out).

    ``calibration`` is ``{"method": "isotonic", "x": [...], "y": [...]}`` (piecewise-linear through the points,
    constant beyond the ends), ``{"method": "platt", "a": a, "b": b}`` (``sigmoid(a * logit(p) + b)``), or
    ``None`` / ``{"method": "none"}`` (unchanged).
    """
    p = np.asarray(proba, dtype="float64")
    method = (calibration or {}).get("method", "none")
    if method == "none":
        return p
    if method == "isotonic":
        return np.interp(p, np.asarray(calibration["x"], dtype="float64"), np.asarray(calibration["y"], dtype="float64"))
    if method == "platt":
        q = np.clip(p, 1e-7, 1 - 1e-7)
        return 1.0 / (1.0 + np.exp(-(calibration["a"] * np.log(q / (1 - q)) + calibration["b"])))
    raise ValueError(f"unknown calibration method {method!r} in the model's meta.json")


class PurchaseIntentModel(PythonModel):
    """XGBoost booster plus the preprocessing it was trained with and the calibration of its output."""

    def load_context(self, context) -> None:
        import xgboost as xgb

        meta = json.loads(Path(context.artifacts["meta"]).read_text())
        self.features: list[str] = meta["features"]
        self.categories: dict[str, list[str]] = meta["categories"]
        self.threshold: float = float(meta["threshold"])
        self.calibration: dict[str, Any] | None = meta.get("calibration")
        self.booster = xgb.Booster()
        self.booster.load_model(context.artifacts["booster"])

    def predict(self, context, model_input: pd.DataFrame, params: dict[str, Any] | None = None) -> np.ndarray:
        import xgboost as xgb

        if not isinstance(model_input, pd.DataFrame):
            model_input = pd.DataFrame(model_input)
        x = prepare_features(model_input, self.features, self.categories)
        dmatrix = xgb.DMatrix(x, enable_categorical=True)
        return self.calibrated(self.booster.predict(dmatrix).astype("float64"))

    def calibrated(self, raw: np.ndarray) -> np.ndarray:
        """This model's calibration applied to raw booster probabilities (serving's fast path uses it too)."""
        return calibrate(raw, self.calibration)


set_model(PurchaseIntentModel())
