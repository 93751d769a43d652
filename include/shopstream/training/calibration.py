"""Probability calibration of the booster's scores, fitted on the validation split, and how to measure it.

A calibration is a small JSON-able mapping from the booster's raw probability to a calibrated one, stored in
the logged model's ``meta.json`` and applied by the model itself
(:func:`shopstream.training.pyfunc_model.calibrate`), so everything that scores through the model (serving,
the gate, the degradation check) gets calibrated probabilities:

- ``isotonic``: a monotone step function (scikit-learn's ``IsotonicRegression``), kept as the points
  ``x``/``y`` it interpolates between (``numpy.interp``, clipped at the ends);
- ``platt``: ``sigmoid(a * logit(p) + b)`` (a logistic regression on the raw logit);
- ``none``: the raw probability.

``auto`` (``SHOPSTREAM_TRAINING__CALIBRATION``) cross-fits isotonic and Platt on two halves of the
validation rows, keeps the one with the lower held-out log loss (``none`` when neither beats the raw
scores) and refits it on all validation rows.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from shopstream.training.pyfunc_model import calibrate

METHODS = ("auto", "isotonic", "platt", "none")
ECE_BINS = 15


def _logit(p: np.ndarray) -> np.ndarray:
    p = np.clip(np.asarray(p, dtype="float64"), 1e-7, 1 - 1e-7)
    return np.log(p / (1 - p))


def fit(y_true, proba, method: str) -> dict[str, Any]:
    """A calibration of ``method`` (isotonic, platt or none) fitted on labelled raw probabilities."""
    y = np.asarray(y_true).astype(int)
    p = np.asarray(proba, dtype="float64")
    if method == "none" or len(np.unique(y)) < 2:
        return {"method": "none"}
    if method == "isotonic":
        from sklearn.isotonic import IsotonicRegression

        iso = IsotonicRegression(y_min=1e-4, y_max=1 - 1e-4, out_of_bounds="clip").fit(p, y)
        return {"method": "isotonic", "x": iso.X_thresholds_.tolist(), "y": iso.y_thresholds_.tolist()}
    if method == "platt":
        from sklearn.linear_model import LogisticRegression

        lr = LogisticRegression(C=1e6, max_iter=1000).fit(_logit(p).reshape(-1, 1), y)
        return {"method": "platt", "a": float(lr.coef_[0][0]), "b": float(lr.intercept_[0])}
    raise ValueError(f"unknown calibration method {method!r} (one of {', '.join(METHODS)})")


def choose(y_true, proba, method: str = "auto", seed: int = 42) -> dict[str, Any]:
    """The calibration to log: ``method`` itself, or for ``auto`` the cross-fitted best (see the module doc)."""
    if method != "auto":
        return fit(y_true, proba, method)
    from sklearn.metrics import log_loss

    y = np.asarray(y_true).astype(int)
    p = np.asarray(proba, dtype="float64")
    folds = np.random.default_rng(seed).permutation(len(y)) % 2
    scores: dict[str, float] = {}
    for m in ("none", "platt", "isotonic"):
        losses = []
        for k in (0, 1):
            train, held = folds != k, folds == k
            if len(np.unique(y[train])) < 2 or len(np.unique(y[held])) < 2:
                losses.append(np.inf if m != "none" else 0.0)
                continue
            cal = fit(y[train], p[train], m)
            losses.append(log_loss(y[held], np.clip(calibrate(p[held], cal), 1e-7, 1 - 1e-7), labels=[0, 1]))
        scores[m] = float(np.mean(losses))
    best = min(scores, key=lambda m: (scores[m], m != "none"))
    out = fit(y, p, best)
    out["cross_fit_log_loss"] = {m: round(v, 6) for m, v in scores.items()}
    return out


def expected_calibration_error(y_true, proba, bins: int = ECE_BINS) -> float:
    """ECE: the row-weighted mean |observed rate - mean probability| over ``bins`` equal-width bins of [0, 1]."""
    y = np.asarray(y_true, dtype="float64")
    p = np.asarray(proba, dtype="float64")
    if len(y) == 0:
        return float("nan")
    which = np.minimum((p * bins).astype(int), bins - 1)
    n = np.bincount(which, minlength=bins)
    gap = np.abs(np.bincount(which, weights=y, minlength=bins) - np.bincount(which, weights=p, minlength=bins))
    return float(gap.sum() / n.sum())


def reliability(y_true, proba, bins: int = 10) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Reliability curve on equal-count bins: (mean probability, observed rate, rows) per bin."""
    y = np.asarray(y_true, dtype="float64")
    p = np.asarray(proba, dtype="float64")
    order = np.argsort(p, kind="stable")
    parts = [part for part in np.array_split(order, min(bins, max(1, len(p)))) if len(part)]
    return (np.array([p[i].mean() for i in parts]), np.array([y[i].mean() for i in parts]),
            np.array([len(i) for i in parts]))
