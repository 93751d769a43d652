"""MLflow plumbing shared by the training steps: client, experiment, the run of a training, its files.

One training run = one MLflow run (the *training run*) in the experiment ``SHOPSTREAM_MLFLOW__EXPERIMENT``:
it holds the split (``data/``), the tuning spec and result (``tune/``), the trials as nested runs, the model,
its test metrics and plots. Tasks pass its run id to each other; big data stays in files (the state dir,
with MLflow artifacts as the copy any worker or Ray node can fetch).
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

from shopstream.settings import Settings

AIRFLOW_RUN_TAG = "airflow_run_id"
KIND_TAG = "shopstream.kind"
# how MLflow 3 tells an experiment's type: without it the UI guesses, and opens an empty GenAI (traces) view
EXPERIMENT_KIND_TAG = "mlflow.experimentKind"
MODEL_TRAINING_KIND = "custom_model_development"
#: MLflow 3.x's UI keeps a per-browser GenAI/model-training switch (GenAI by default); this query selects
#: the model-training view, so a printed link opens on runs, not on an empty Traces page
MODEL_TRAINING_VIEW = "workflowType=machine_learning"


def experiment_url(base: str, experiment_id: str) -> str:
    """The MLflow UI link to an experiment's runs, in the model-training view."""
    return f"{base.rstrip('/')}/#/experiments/{experiment_id}/runs?{MODEL_TRAINING_VIEW}"


def configure(settings: Settings) -> None:
    """Point this process's MLflow (and boto, for S3 artifact roots) at the settings' services."""
    import mlflow

    os.environ.update(settings.s3_env())
    os.environ.update(settings.mlflow.client_env())   # the login, where the server runs its basic-auth app
    os.environ["MLFLOW_TRACKING_URI"] = settings.mlflow.uri
    mlflow.set_tracking_uri(settings.mlflow.uri)
    mlflow.set_registry_uri(settings.mlflow.uri)


def client(settings: Settings):
    from mlflow import MlflowClient

    configure(settings)
    return MlflowClient(tracking_uri=settings.mlflow.uri, registry_uri=settings.mlflow.uri)


def experiment_id(mlclient, name: str) -> str:
    """Id of the experiment ``name``, created (or restored) as a model-training experiment if needed."""
    exp = mlclient.get_experiment_by_name(name)
    if exp is not None:
        if exp.lifecycle_stage == "deleted":
            mlclient.restore_experiment(exp.experiment_id)
        if exp.tags.get(EXPERIMENT_KIND_TAG) != MODEL_TRAINING_KIND:   # made before the tag was set
            mlclient.set_experiment_tag(exp.experiment_id, EXPERIMENT_KIND_TAG, MODEL_TRAINING_KIND)
        return exp.experiment_id
    try:
        return mlclient.create_experiment(name, tags={EXPERIMENT_KIND_TAG: MODEL_TRAINING_KIND})
    except Exception:  # noqa: BLE001 - created concurrently
        return mlclient.get_experiment_by_name(name).experiment_id


def training_run(settings: Settings, airflow_run_id: str | None, tags: dict[str, str] | None = None) -> str:
    """The training run of an Airflow run (re-used when a task is retried), or a new one."""
    mlclient = client(settings)
    exp = experiment_id(mlclient, settings.mlflow.experiment)
    if airflow_run_id:
        found = mlclient.search_runs(
            [exp], filter_string=f"tags.{AIRFLOW_RUN_TAG} = '{_quote(airflow_run_id)}' and tags.`{KIND_TAG}` = 'training'",
            max_results=1,
        )
        if found:
            return found[0].info.run_id
    all_tags = {KIND_TAG: "training", "mlflow.runName": f"training {airflow_run_id or ''}".strip(), **(tags or {})}
    if airflow_run_id:
        all_tags[AIRFLOW_RUN_TAG] = airflow_run_id
    return mlclient.create_run(exp, tags=all_tags).info.run_id


def _quote(s: str) -> str:
    return s.replace("'", "\\'")


def run_dir(settings: Settings, run_id: str) -> Path:
    """Local working directory of a training run (in the state dir)."""
    d = settings.state_dir / "training" / "runs" / run_id
    d.mkdir(parents=True, exist_ok=True)
    return d


def prune_run_dirs(settings: Settings, keep_days: float = 7.0) -> int:
    """Delete local run directories older than ``keep_days`` (a cache: MLflow holds every run's files)."""
    import shutil
    import time

    root = settings.state_dir / "training" / "runs"
    if not root.exists():
        return 0
    cutoff = time.time() - keep_days * 86400
    old = [d for d in root.iterdir() if d.is_dir() and d.stat().st_mtime < cutoff]
    for d in old:
        shutil.rmtree(d, ignore_errors=True)
    return len(old)


def load_json(settings: Settings, run_id: str, artifact_file: str) -> Any:
    import mlflow

    configure(settings)
    with tempfile.TemporaryDirectory() as tmp:
        path = mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path=artifact_file, dst_path=tmp)
        return json.loads(Path(path).read_text())


def log_split_files(mlclient, run_id: str, directory: Path) -> None:
    """Copy the split's files to the run's ``data/`` artifacts (so any worker or Ray node can fetch them)."""
    mlclient.log_artifacts(run_id, str(directory), artifact_path="data")


def fetch_split_dir(settings: Settings, run_id: str) -> Path:
    """Directory holding the run's split files: the local copy if this machine has it, else downloaded."""
    import mlflow

    local = settings.state_dir / "training" / "runs" / run_id / "data"
    if (local / "split.json").exists() and all((local / f"{n}.parquet").exists() for n in ("train", "valid", "test")):
        return local
    configure(settings)
    local.mkdir(parents=True, exist_ok=True)
    mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path="data", dst_path=str(local.parent))
    return local
