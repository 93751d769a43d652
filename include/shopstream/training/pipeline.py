"""One function per task of the ``shopstream_training`` DAG (the DAG file only wires them).

Tasks pass the MLflow training run id (and small summaries) between them; the data travels as files.
"""

from __future__ import annotations

import logging
from typing import Any

from shopstream.settings import Settings

log = logging.getLogger(__name__)


def check_champion(settings: Settings, force: bool = False) -> dict[str, Any]:
    """Degradation check of the champion, then the retrain decision: ``{"retrain", "reason", "degradation"}``."""
    from shopstream.training.degradation import check_degradation, retrain_decision

    report = check_degradation(settings)
    log.info("degradation check: %s", report.message)
    if report.degraded:
        log.warning("CHAMPION DEGRADED: %s", report.message)
    retrain, reason = retrain_decision(report, settings.training.refresh_hours, force)
    log.info("retrain: %s (%s)", retrain, reason)
    return {"retrain": retrain, "reason": reason, "degradation": report.to_dict()}


def extract(settings: Settings, airflow_run_id: str | None, window_days: float | None = None,
            reason: str = "") -> dict[str, Any]:
    """Window of ``ml.cart_features`` -> time split -> data check -> files, logged to a new training run.

    Raises :class:`~shopstream.training.dataset.NoTrainingData` before any MLflow run exists when the table
    holds no rows yet (the DAG skips then), and ``DataCheckError`` when the data cannot make a model.
    """
    import psycopg

    from shopstream.training import tracking
    from shopstream.training.dataset import (
        TABLE,
        NoTrainingData,
        check_split,
        feature_spec,
        load_window,
        save_split,
        time_split,
    )
    from shopstream.warehouse.ddl import ensure_schemas

    t = settings.training
    window = float(window_days or t.window_days)
    with psycopg.connect(settings.postgres.dsn()) as conn:
        ensure_schemas(conn, only=("ml",))
        spec = feature_spec(conn)
        df = load_window(conn, window)
    if df.empty:
        raise NoTrainingData(
            f"no training data yet: {TABLE} holds no rows. The data DAG (shopstream_data) fills it from the "
            f"landed events; training runs again when it updates the table (and on its schedule)."
        )
    split = time_split(df, t.valid_share, t.test_share)
    run_id = tracking.training_run(settings, airflow_run_id, tags={"retrain_reason": reason[:4000]} if reason else None)
    mlclient = tracking.client(settings)
    summary = split.summary()
    mlclient.log_dict(run_id, summary, "data/summary.json")
    for k, v in {"window_days": window, "valid_share": t.valid_share, "test_share": t.test_share,
                 "features": ",".join(spec.features)[:6000]}.items():
        mlclient.log_param(run_id, k, v)
    mlclient.log_metric(run_id, "window_rows", len(df))
    try:
        check_split(split, t.min_rows, t.min_class_rows, window_rows=len(df))
    except Exception as e:
        mlclient.set_tag(run_id, "data_check", str(e)[:5000])
        mlclient.set_terminated(run_id, "FAILED")
        raise
    tracking.prune_run_dirs(settings, keep_days=7)
    directory = tracking.run_dir(settings, run_id) / "data"
    save_split(split, spec, directory)
    tracking.log_split_files(mlclient, run_id, directory)
    for name in ("train", "valid", "test"):
        mlclient.log_metric(run_id, f"rows_{name}", summary[name]["rows"])
        mlclient.log_metric(run_id, f"positive_rate_{name}", summary[name]["positive_rate"])
    log.info("split of %s rows: %s", len(df), summary)
    return {"run_id": run_id, "rows": {n: summary[n]["rows"] for n in ("train", "valid", "test")},
            "test_start": summary["test_start"], "purged": summary["purged"]}


def tune(settings: Settings, run_id: str, trials: int | None = None, search_space: str | None = None,
         max_rounds: int | None = None) -> dict[str, Any]:
    """Ray Tune on a local Ray (the cluster path is :class:`shopstream.training.operators.TuneOperator`)."""
    from shopstream.training.tune import make_spec, tune_local

    return tune_local(settings, run_id, make_spec(settings, trials, search_space, max_rounds))


def train(settings: Settings, run_id: str) -> dict[str, Any]:
    """Final model with the best parameters; test metrics, plots, MLflow model, registered version."""
    from shopstream.training.train import train_final

    out = train_final(settings, run_id)
    log.info("registered %s version %s: test %s", settings.mlflow.registered_model, out["version"], out["test"])
    return out


def gate(settings: Settings, version: str, config_path: str | None = None) -> dict[str, Any]:
    """The promotion gate on ``version``; raises :class:`~shopstream.training.gate.GateFailed` when it fails."""
    from shopstream.training.gate import GateFailed, run_gate

    decision = run_gate(settings, version, config_path)
    log.info("%s", decision.report())
    if not decision.passed:
        raise GateFailed(decision)
    return {"passed": True, "version": decision.candidate_version, "champion": decision.champion_after,
            "previous": decision.champion_version, "config_version": decision.config_version}


def run_all(settings: Settings, airflow_run_id: str | None = None, trials: int | None = None,
            window_days: float | None = None, search_space: str | None = None,
            max_rounds: int | None = None, reason: str = "") -> dict[str, Any]:
    """extract -> tune (local Ray) -> train -> gate in this process (tests, benchmarks, the command line)."""
    split = extract(settings, airflow_run_id, window_days, reason)
    tuned = tune(settings, split["run_id"], trials, search_space, max_rounds)
    model = train(settings, split["run_id"])
    return {"split": split, "tune": tuned, "model": model, "gate": gate(settings, model["version"])}


def champion_summary(settings: Settings) -> dict[str, Any] | None:
    """The champion's version, test metrics and MLflow URLs (for `make demo` and status pages); None if none."""
    from shopstream.training import tracking
    from shopstream.training.gate import champion_version

    name = settings.mlflow.registered_model
    mlclient = tracking.client(settings)
    version = champion_version(mlclient, name)
    if version is None:
        return None
    mv = mlclient.get_model_version(name, version)
    run = mlclient.get_run(mv.run_id) if mv.run_id else None
    metrics = {k[len("test_"):]: v for k, v in (run.data.metrics if run else {}).items() if k.startswith("test_")}
    base = settings.mlflow.uri
    return {
        "model": name, "version": version, "run_id": mv.run_id, "metrics": metrics,
        "model_url": f"{base}/#/models/{name}/versions/{version}",
        "run_url": f"{base}/#/experiments/{run.info.experiment_id}/runs/{mv.run_id}" if run else None,
        "experiment_url": tracking.experiment_url(base, run.info.experiment_id) if run else None,
    }
