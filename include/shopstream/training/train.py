"""The final model: best parameters from tuning, calibration on the validation split, test-set evaluation,
MLflow model (calibration inside), registered version."""

from __future__ import annotations

import json
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from shopstream.settings import Settings

MODEL_ARTIFACT = "model"
PYFUNC_CODE = Path(__file__).with_name("pyfunc_model.py")


def version_tags(metrics: dict[str, float], prefix: str = "test.") -> dict[str, str]:
    return {f"{prefix}{k}": f"{v:.6g}" if isinstance(v, float) else str(v) for k, v in metrics.items()}


@dataclass
class FinalModel:
    """The final booster of a training run, its calibration and threshold, and its validation/test scores."""

    booster: Any
    categories: dict[str, list[str]]
    calibration: dict[str, Any]
    threshold: float
    best_iteration: int | None
    y_valid: Any
    raw_valid: Any
    p_valid: Any
    y_test: Any
    raw_test: Any
    p_test: Any

    def raw_predict(self, x) -> Any:
        """The booster's uncalibrated probabilities of a model matrix."""
        import xgboost as xgb

        return self.booster.predict(xgb.DMatrix(x, enable_categorical=True)).astype("float64")

    def predict(self, x) -> Any:
        """Calibrated probabilities of a model matrix (what the logged model returns)."""
        from shopstream.training.pyfunc_model import calibrate

        return calibrate(self.raw_predict(x), self.calibration)


def fit_final(settings: Settings, split, spec, config: dict[str, Any], space) -> FinalModel:
    """Train the booster of ``config`` (early stopping on validation), calibrate it on the validation rows
    (``SHOPSTREAM_TRAINING__CALIBRATION``) and choose the F1-best threshold on the calibrated probabilities."""
    from shopstream.training import calibration, evaluate
    from shopstream.training.dataset import categories_of, xy
    from shopstream.training.pyfunc_model import calibrate
    from shopstream.training.tune import TuneData, fit

    cats = categories_of(split.train, spec)
    x_train, y_train = xy(split.train, spec, cats)
    x_valid, y_valid = xy(split.valid, spec, cats)
    x_test, y_test = xy(split.test, spec, cats)
    params = space.xgb_params(config, nthread=settings.ray.num_cpus, seed=settings.training.seed)
    booster, _ = fit(params, TuneData(x_train, y_train, x_valid, y_valid), space.max_rounds,
                     space.early_stopping_rounds)
    best_iteration = getattr(booster, "best_iteration", None)
    if best_iteration is not None:
        booster = booster[: best_iteration + 1]
    final = FinalModel(booster, cats, {"method": "none"}, 0.5, best_iteration, y_valid, None, None, y_test, None, None)
    final.raw_valid, final.raw_test = final.raw_predict(x_valid), final.raw_predict(x_test)
    final.calibration = calibration.choose(y_valid, final.raw_valid, settings.training.calibration,
                                           seed=settings.training.seed)
    final.p_valid = calibrate(final.raw_valid, final.calibration)
    final.p_test = calibrate(final.raw_test, final.calibration)
    final.threshold = evaluate.best_f1_threshold(y_valid, final.p_valid)   # on calibrated probabilities, as served
    return final


def train_final(settings: Settings, run_id: str) -> dict[str, Any]:
    """Train with the tuned parameters, calibrate on the validation split, evaluate on the test split, log
    model/metrics/plots, register a version.

    Returns a small summary: version, test metrics, row counts. Idempotent per training run: a version
    already registered from this run is returned instead of registering another one.
    """
    import mlflow
    import numpy as np
    from mlflow.models import infer_signature

    from shopstream.training import evaluate, records, tracking
    from shopstream.training.dataset import load_split, xy
    from shopstream.training.tune import BEST_ARTIFACT, SearchSpace, TuneResult

    name = settings.mlflow.registered_model
    mlclient = tracking.client(settings)
    split, spec = load_split(tracking.fetch_split_dir(settings, run_id))
    existing = _version_of_run(mlclient, name, run_id)
    if existing is not None:
        return _summary_of(mlclient, existing, split)

    best = TuneResult.from_dict(tracking.load_json(settings, run_id, BEST_ARTIFACT))
    space = SearchSpace.from_dict(best.space, source=best.space.get("source", "<tuned>"))
    final = fit_final(settings, split, spec, best.best_config, space)
    booster, cats, cal, threshold = final.booster, final.categories, final.calibration, final.threshold
    best_iteration = final.best_iteration
    y_test, p_test, raw_test = final.y_test, final.p_test, final.raw_test
    predict = final.predict
    test_metrics = evaluate.classification_metrics(y_test, p_test, threshold)
    valid_metrics = evaluate.classification_metrics(final.y_valid, final.p_valid, threshold)
    raw_metrics = evaluate.classification_metrics(
        y_test, raw_test, evaluate.best_f1_threshold(final.y_valid, final.raw_valid))
    importance = {k: float(v) for k, v in booster.get_score(importance_type="total_gain").items()}

    with tempfile.TemporaryDirectory() as tmp:
        tmpdir = Path(tmp)
        booster_path = tmpdir / "booster.ubj"
        booster.save_model(booster_path)
        meta_path = tmpdir / "meta.json"
        meta_path.write_text(json.dumps({
            "features": spec.features, "categories": cats, "threshold": threshold, "calibration": cal,
            "label": "purchased in the same session after the cart-add", "training_run": run_id,
        }, indent=2))
        plots = evaluate.plot_files(y_test, p_test, importance, tmpdir / "plots", title="(test)",
                                    references={f"raw booster (before {cal['method']} calibration)": raw_test})
        example = split.test[spec.features].head(5).reset_index(drop=True)
        with warnings.catch_warnings():  # the integer-columns hint: the table's integer features are NOT NULL
            warnings.filterwarnings("ignore", message=".*Integer columns in Python cannot represent missing")
            signature = infer_signature(example, np.asarray(predict(xy(example.assign(label=False), spec, cats)[0])))

        mlflow.set_experiment(experiment_id=mlclient.get_run(run_id).info.experiment_id)
        with mlflow.start_run(run_id=run_id):
            info = mlflow.pyfunc.log_model(
                name=MODEL_ARTIFACT,
                python_model=str(PYFUNC_CODE),
                artifacts={"booster": str(booster_path), "meta": str(meta_path)},
                signature=signature,
                input_example=example,
                pip_requirements=_requirements(),
            )
            mlflow.log_metrics({f"test_{k}": float(v) for k, v in test_metrics.items()})
            mlflow.log_metrics({f"valid_{k}": float(v) for k, v in valid_metrics.items()})
            mlflow.log_metrics({f"test_raw_{k}": float(v) for k, v in raw_metrics.items()})
            mlflow.log_params({f"final.{k}": v for k, v in best.best_config.items()}
                              | {"final.best_iteration": best_iteration, "final.threshold": round(threshold, 6),
                                 "final.calibration": cal["method"]})
            mlflow.log_dict(cal, "calibration.json")
            for p in plots:
                mlflow.log_artifact(str(p), artifact_path="plots")
            mlflow.log_dict(importance, "feature_importance.json")

    mv = mlflow.register_model(info.model_uri, name, tags={
        "training_run": run_id, **version_tags(test_metrics), "gate.decision": "pending",
        "calibration": cal["method"],
    })
    mlclient.update_model_version(name, mv.version, description=(
        f"XGBoost purchase-intent model from training run {run_id}: test PR-AUC {test_metrics['pr_auc']:.4f} "
        f"(positive rate {test_metrics['positive_rate']:.4f}), ROC-AUC {test_metrics['roc_auc']:.4f}, log loss "
        f"{test_metrics['log_loss']:.4f} and ECE {test_metrics['ece']:.4f} after {cal['method']} calibration "
        f"(raw booster: log loss {raw_metrics['log_loss']:.4f}, ECE {raw_metrics['ece']:.4f})."
    ))
    mlclient.set_terminated(run_id, "FINISHED")
    records.record_training(
        settings, run_id=run_id, model_name=name, model_version=str(mv.version), n_train=len(split.train),
        n_test=len(split.test), positive_rate=test_metrics["positive_rate"], metrics=test_metrics,
    )
    return {"version": str(mv.version), "run_id": run_id, "model_uri": f"models:/{name}/{mv.version}",
            "test": test_metrics, "n_train": len(split.train), "n_valid": len(split.valid), "n_test": len(split.test)}


def _requirements() -> list[str]:
    from importlib.metadata import version

    return [f"{p}=={version(p)}" for p in ("mlflow", "xgboost", "pandas", "numpy", "scikit-learn")]


def _version_of_run(mlclient, name: str, run_id: str):
    try:
        found = mlclient.search_model_versions(f"name = '{name}' and run_id = '{run_id}'")
    except Exception:  # noqa: BLE001 - registered model does not exist yet
        return None
    return max(found, key=lambda v: int(v.version)) if found else None


def _summary_of(mlclient, mv, split) -> dict[str, Any]:
    run = mlclient.get_run(mv.run_id)
    test = {k[len("test_"):]: v for k, v in run.data.metrics.items() if k.startswith("test_")}
    return {"version": str(mv.version), "run_id": mv.run_id, "model_uri": f"models:/{mv.name}/{mv.version}",
            "test": test, "n_train": len(split.train), "n_valid": len(split.valid), "n_test": len(split.test)}
