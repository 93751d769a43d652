"""The final model: best parameters from tuning, test-set evaluation, MLflow model, registered version."""

from __future__ import annotations

import json
import tempfile
import warnings
from pathlib import Path
from typing import Any

from shopstream.settings import Settings

MODEL_ARTIFACT = "model"
PYFUNC_CODE = Path(__file__).with_name("pyfunc_model.py")


def version_tags(metrics: dict[str, float], prefix: str = "test.") -> dict[str, str]:
    return {f"{prefix}{k}": f"{v:.6g}" if isinstance(v, float) else str(v) for k, v in metrics.items()}


def train_final(settings: Settings, run_id: str) -> dict[str, Any]:
    """Train with the tuned parameters, evaluate on the test split, log model/metrics/plots, register a version.

    Returns a small summary: version, test metrics, row counts. Idempotent per training run: a version
    already registered from this run is returned instead of registering another one.
    """
    import mlflow
    import numpy as np
    import xgboost as xgb
    from mlflow.models import infer_signature

    from shopstream.training import evaluate, records, tracking
    from shopstream.training.dataset import categories_of, load_split, xy
    from shopstream.training.tune import BEST_ARTIFACT, SearchSpace, TuneData, TuneResult, fit

    name = settings.mlflow.registered_model
    mlclient = tracking.client(settings)
    split, spec = load_split(tracking.fetch_split_dir(settings, run_id))
    existing = _version_of_run(mlclient, name, run_id)
    if existing is not None:
        return _summary_of(mlclient, existing, split)

    best = TuneResult.from_dict(tracking.load_json(settings, run_id, BEST_ARTIFACT))
    space = SearchSpace.from_dict(best.space, source=best.space.get("source", "<tuned>"))
    cats = categories_of(split.train, spec)
    x_train, y_train = xy(split.train, spec, cats)
    x_valid, y_valid = xy(split.valid, spec, cats)
    x_test, y_test = xy(split.test, spec, cats)
    params = space.xgb_params(best.best_config, nthread=settings.ray.num_cpus, seed=settings.training.seed)
    booster, _ = fit(params, TuneData(x_train, y_train, x_valid, y_valid), space.max_rounds,
                     space.early_stopping_rounds)
    best_iteration = getattr(booster, "best_iteration", None)
    if best_iteration is not None:
        booster = booster[: best_iteration + 1]

    def predict(x):
        return booster.predict(xgb.DMatrix(x, enable_categorical=True)).astype("float64")

    p_valid, p_test = predict(x_valid), predict(x_test)
    threshold = evaluate.best_f1_threshold(y_valid, p_valid)
    test_metrics = evaluate.classification_metrics(y_test, p_test, threshold)
    valid_metrics = evaluate.classification_metrics(y_valid, p_valid, threshold)
    importance = {k: float(v) for k, v in booster.get_score(importance_type="total_gain").items()}

    with tempfile.TemporaryDirectory() as tmp:
        tmpdir = Path(tmp)
        booster_path = tmpdir / "booster.ubj"
        booster.save_model(booster_path)
        meta_path = tmpdir / "meta.json"
        meta_path.write_text(json.dumps({
            "features": spec.features, "categories": cats, "threshold": threshold,
            "label": "purchased in the same session after the cart-add", "training_run": run_id,
        }, indent=2))
        plots = evaluate.plot_files(y_test, p_test, importance, tmpdir / "plots", title="(test)")
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
            mlflow.log_params({f"final.{k}": v for k, v in best.best_config.items()}
                              | {"final.best_iteration": best_iteration, "final.threshold": round(threshold, 6)})
            for p in plots:
                mlflow.log_artifact(str(p), artifact_path="plots")
            mlflow.log_dict(importance, "feature_importance.json")

    mv = mlflow.register_model(info.model_uri, name, tags={
        "training_run": run_id, **version_tags(test_metrics), "gate.decision": "pending",
    })
    mlclient.update_model_version(name, mv.version, description=(
        f"XGBoost purchase-intent model from training run {run_id}: test PR-AUC {test_metrics['pr_auc']:.4f} "
        f"(positive rate {test_metrics['positive_rate']:.4f}), ROC-AUC {test_metrics['roc_auc']:.4f}."
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
