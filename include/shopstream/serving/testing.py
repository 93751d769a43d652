"""Small registered models for tests and benchmarks, made by the training code in seconds.

:func:`register_quick_model` runs the training pipeline's own steps on synthetic ``ml.cart_features`` rows
(:mod:`shopstream.training.synthetic`) without touching the warehouse table and without Ray Tune: the time
split and its files (:mod:`shopstream.training.dataset`), a training run in MLflow, fixed XGBoost parameters
recorded where tuning would record its best trial, then :func:`shopstream.training.train.train_final`, which
logs the same pyfunc model (``pyfunc_model.py``) with its threshold and registers a version. The version
has everything the gate needs (its test split), so :func:`shopstream.training.gate.run_gate` can promote it.
"""

from __future__ import annotations

import math
from typing import Any

from shopstream.settings import Settings

QUICK_SPACE = {
    "version": "quick-1",
    "max_rounds": 40,
    "early_stopping_rounds": 0,
    "asha": {"grace_period": 1, "reduction_factor": 2},
    "fixed": {"objective": "binary:logistic", "eval_metric": ["logloss", "aucpr"], "tree_method": "hist",
              "max_cat_to_onehot": 4, "max_bin": 64},
    "params": {"max_depth": {"type": "int", "low": 1, "high": 8}},
}


def register_quick_model(settings: Settings, *, seed: int = 7, rows: int = 3000, rounds: int = 40,
                         max_depth: int = 3, eta: float = 0.2, signal: float = 1.0) -> dict[str, Any]:
    """Train and register a small model of ``settings.mlflow.registered_model``; returns train_final's summary."""
    from shopstream.features import CATEGORICAL, FEATURE_COLUMNS
    from shopstream.training import tracking
    from shopstream.training.dataset import FeatureSpec, save_split, time_split
    from shopstream.training.synthetic import synthetic_cart_features
    from shopstream.training.train import train_final
    from shopstream.training.tune import BEST_ARTIFACT, TuneResult

    t = settings.training
    df = synthetic_cart_features(rows, days=10, seed=seed, signal=signal, key_prefix=f"quick{seed}")
    split = time_split(df, t.valid_share, t.test_share)
    spec = FeatureSpec(list(FEATURE_COLUMNS), list(CATEGORICAL))
    run_id = tracking.training_run(settings, None, tags={"shopstream.quick_model": "true"})
    mlclient = tracking.client(settings)
    mlclient.log_dict(run_id, split.summary(), "data/summary.json")
    directory = tracking.run_dir(settings, run_id) / "data"
    save_split(split, spec, directory)
    tracking.log_split_files(mlclient, run_id, directory)
    space = {**QUICK_SPACE, "max_rounds": rounds}
    config = {"max_depth": max_depth, "eta": eta}
    best = TuneResult(config, math.nan, rounds - 1, [], 0.0, "fixed", space)
    mlclient.log_dict(run_id, best.to_dict(), BEST_ARTIFACT)
    return train_final(settings, run_id)
