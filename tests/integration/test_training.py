"""Training on the real stack: PostgreSQL features, local Ray Tune, MLflow tracking + registry, the gate.

``ml.cart_features`` is filled with synthetic rows (5,000 over 30 days) whose label depends on the features;
runs use 1-3 trials. A good run (in process) becomes champion; a weak run through ``airflow dags test`` is
blocked by the gate. The Ray-cluster path (Ray job + deferred polling) runs against a real single-node
cluster when the Ray dashboard dependencies (``ray[default]``) are installed, and is skipped otherwise.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from shopstream.settings import Settings
from shopstream.stack.base import free_port, venv_bin
from shopstream.training import pipeline, tracking
from shopstream.training.gate import CHAMPION, PREVIOUS
from shopstream.training.records import model_runs
from shopstream.training.synthetic import synthetic_cart_features, write_cart_features
from shopstream.training.tune import ray_temp_dir
from shopstream.warehouse.ddl import ensure_schemas

pytestmark = pytest.mark.integration

WEAK_SPACE = """
version: weak-1
max_rounds: 1
early_stopping_rounds: 0
asha: {grace_period: 1, reduction_factor: 2}
fixed: {objective: "binary:logistic", eval_metric: [logloss, aucpr], tree_method: hist}
params:
  max_depth: {type: int, low: 1, high: 1}
  eta: {type: float, low: 0.05, high: 0.05}
"""


def fill_cart_features(settings: Settings, n: int = 5000, days: float = 30.0, seed: int = 7) -> int:
    """Test helper: replace ml.cart_features with synthetic rows (cheaper, more viewed, returning -> buys)."""
    with psycopg.connect(settings.postgres.dsn()) as conn:
        return write_cart_features(conn, synthetic_cart_features(n, days=days, seed=seed), replace=True)


@pytest.fixture(scope="module")
def features(stack, stack_settings) -> Iterator[int]:
    yield fill_cart_features(stack_settings)
    shutil.rmtree(ray_temp_dir(stack_settings), ignore_errors=True)   # the local Ray's logs of this session


@pytest.fixture(scope="module")
def weak_space(tmp_path_factory) -> Path:
    p = tmp_path_factory.mktemp("training") / "weak_space.yaml"
    p.write_text(WEAK_SPACE)
    return p


@pytest.fixture(scope="module")
def good_run(features, stack_settings) -> dict:
    return pipeline.run_all(stack_settings, airflow_run_id="it-good", trials=3)


def cli_gate(settings: Settings, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([venv_bin("shopstream"), "gate", *args], env=settings.service_env(),
                          capture_output=True, text=True, timeout=300)


def test_without_data_the_dag_skips_and_leaves_no_mlflow_run(stack, stack_settings):
    """A fresh stack (empty ml.cart_features, no champion): the run succeeds with extract and the tasks after it
    skipped, the log says why, and MLflow holds no (FAILED) training run. Runs before `features` fills the table."""
    s = stack_settings
    with psycopg.connect(s.postgres.dsn()) as conn:
        ensure_schemas(conn, only=("ml",))
        conn.execute("truncate table ml.cart_features")
    experiment, model = "shopstream-no-data-test", "shopstream-no-data-test-model"
    res = dags_test(s, {"trials": 1}, SHOPSTREAM_MLFLOW__EXPERIMENT=experiment,
                    SHOPSTREAM_MLFLOW__REGISTERED_MODEL=model)
    out = res.stdout + res.stderr
    assert res.returncode == 0, out[-5000:]
    assert "no training data yet: ml.cart_features holds no rows" in out, out[-5000:]
    mlclient = tracking.client(s)
    exp = mlclient.get_experiment_by_name(experiment)
    assert exp is None or not mlclient.search_runs([exp.experiment_id]), "a run was left in MLflow"


def test_a_run_registers_a_version_that_becomes_champion(good_run, stack_settings):
    s = stack_settings
    name = s.mlflow.registered_model
    version = good_run["model"]["version"]
    test = good_run["model"]["test"]
    assert good_run["split"]["rows"]["test"] > 500
    assert test["pr_auc"] > test["positive_rate"] + 0.15, test
    assert test["roc_auc"] > 0.65
    assert good_run["gate"]["passed"] and good_run["gate"]["champion"] == version

    mlclient = tracking.client(s)
    assert mlclient.get_model_version_by_alias(name, CHAMPION).version == version
    mv = mlclient.get_model_version(name, version)
    assert mv.tags["gate.decision"] == "passed" and mv.tags["gate.config_version"]
    run = mlclient.get_run(good_run["split"]["run_id"])
    assert run.info.status == "FINISHED"
    # a model-training experiment, so MLflow's UI opens it on its runs (not the GenAI traces view)
    assert mlclient.get_experiment(run.info.experiment_id).tags[tracking.EXPERIMENT_KIND_TAG] == \
        tracking.MODEL_TRAINING_KIND
    for m in ("test_roc_auc", "test_pr_auc", "test_log_loss", "test_brier", "test_ece", "test_f1",
              "test_raw_log_loss", "tune_best_valid_pr_auc", "tune_startup_s"):
        assert m in run.data.metrics
    assert run.data.params["tune.backend"] == "sequential"       # 5,000 rows: far below RAY_MIN_ROWS
    # calibrated on the validation rows; the calibration travels inside the model and the gate checks ECE
    cal = tracking.load_json(s, run.info.run_id, "calibration.json")
    assert cal["method"] == run.data.params["final.calibration"] == mv.tags["calibration"]
    assert cal["method"] in ("isotonic", "platt", "none") and set(cal["cross_fit_log_loss"]) == {"none", "platt",
                                                                                                 "isotonic"}
    assert "ece" in mv.tags["gate.report"]
    children = mlclient.search_runs(
        [run.info.experiment_id], filter_string=f"tags.mlflow.parentRunId = '{run.info.run_id}'"
    )
    assert len(children) == 3 and all(c.data.params and "valid_pr_auc" in c.data.metrics for c in children)
    plots = {Path(a.path).name for a in mlclient.list_artifacts(run.info.run_id, "plots")}
    assert plots == {"roc_curve.png", "pr_curve.png", "calibration.png", "feature_importance.png"}
    assert {Path(a.path).name for a in mlclient.list_artifacts(run.info.run_id, "data")} >= {
        "train.parquet", "valid.parquet", "test.parquet", "split.json"}

    rows = [r for r in model_runs(s, name) if r["run_id"] == run.info.run_id]
    assert len(rows) == 1
    assert rows[0]["gate_passed"] is True and rows[0]["champion_version"] == version
    assert rows[0]["pr_auc"] == pytest.approx(test["pr_auc"]) and rows[0]["n_test"] == test["n"]


def test_champion_loads_and_predicts_on_new_rows(good_run, stack_settings):
    import mlflow

    from shopstream.features import FEATURE_COLUMNS

    tracking.configure(stack_settings)
    model = mlflow.pyfunc.load_model(f"models:/{stack_settings.mlflow.registered_model}@{CHAMPION}")
    inner = model.unwrap_python_model()
    assert inner.calibration == tracking.load_json(stack_settings, good_run["split"]["run_id"], "calibration.json")
    assert set(model.metadata.get_input_schema().input_names()) == set(FEATURE_COLUMNS)
    new = synthetic_cart_features(300, seed=1234, key_prefix="new")
    proba = model.predict(new[list(FEATURE_COLUMNS)])
    assert proba.shape == (300,) and ((proba > 0) & (proba < 1)).all()
    # the raw frame as serving builds it: any column order, extra columns, nulls and unseen categories
    raw = new[["event_key", *reversed(FEATURE_COLUMNS)]].head(3).copy()
    raw.loc[raw.index[0], "brand"] = None
    raw.loc[raw.index[1], "category_l1"] = "garden"
    raw["hour"] = raw["hour"].astype("int32")
    assert model.predict(raw).shape == (3,)
    one = model.predict(raw.iloc[[2]])
    assert one[0] == pytest.approx(proba[2])


def test_a_weak_run_is_blocked_by_the_gate(good_run, stack_settings, weak_space):
    """Through the DAG (`airflow dags test`): one trial of 1-round stumps; the gate task fails, champion stays."""
    s = stack_settings
    name = s.mlflow.registered_model
    champion = good_run["model"]["version"]
    res = dags_test(s, {"trials": 1, "force": True, "search_space": str(weak_space)})
    out = res.stdout + res.stderr
    assert res.returncode != 0, out[-5000:]
    assert "gate FAILED" in out and "champion does not move" in out, out[-5000:]

    mlclient = tracking.client(s)
    assert mlclient.get_model_version_by_alias(name, CHAMPION).version == champion
    weak = str(max(int(v.version) for v in mlclient.search_model_versions(f"name = '{name}'")))
    assert weak != champion
    mv = mlclient.get_model_version(name, weak)
    assert mv.tags["gate.decision"] == "failed"
    assert "pr_auc" in mv.tags["gate.reasons"] and "regression" in mv.tags["gate.reasons"]
    assert mlclient.get_run(mv.run_id).data.params["best.max_depth"] == "1"

    row = next(r for r in model_runs(s, name) if r["run_id"] == mv.run_id)
    assert row["gate_passed"] is False and "pr_auc" in row["gate_reasons"] and row["champion_version"] == champion
    assert row["pr_auc"] < good_run["model"]["test"]["pr_auc"]

    res = cli_gate(s, "--version", weak)
    assert res.returncode == 1, res.stdout + res.stderr
    assert "gate FAILED" in res.stdout and "fails regression rule" in res.stdout
    res = cli_gate(s, "--version", champion, "--dry-run")
    assert res.returncode == 0, res.stdout + res.stderr
    res = cli_gate(s, "--version", "999")
    assert res.returncode == 2 and "could not decide" in res.stdout
    assert mlclient.get_model_version_by_alias(name, CHAMPION).version == champion
    with pytest.raises(Exception):  # noqa: B017 - champion never moved, so there is no `previous`
        mlclient.get_model_version_by_alias(name, PREVIOUS)


def test_retraining_is_idempotent_per_run(good_run, stack_settings):
    """Re-running train and gate for the same training run neither registers nor records twice."""
    s = stack_settings
    again = pipeline.train(s, good_run["split"]["run_id"])
    assert again["version"] == good_run["model"]["version"]
    pipeline.gate(s, again["version"])
    rows = [r for r in model_runs(s, s.mlflow.registered_model) if r["run_id"] == good_run["split"]["run_id"]]
    assert len(rows) == 1


def test_tuning_on_ray_reuses_the_long_lived_head(good_run, stack_settings, tmp_path):
    """The stack's long-lived Ray head (SHOPSTREAM_RAY__EMBEDDED): two tuning runs forced onto Ray both connect
    to it instead of starting a Ray of their own, and leave it running."""
    from shopstream.settings import environment
    from shopstream.stack.ray_head import RayService
    from shopstream.training.tune import make_spec, tune_data, tune_here

    with environment({"SHOPSTREAM_RAY__EMBEDDED": "true", "SHOPSTREAM_TRAINING__TUNE_BACKEND": "ray"}) as s:
        head = RayService(s)
        head.start()
        try:
            assert head.check() is None, f"the Ray head did not start: {head.check()}"
            pids = {p.pid for p in head.processes()}
            data = tune_data(tracking.fetch_split_dir(s, good_run["split"]["run_id"]))
            spec = make_spec(s, trials=2, max_rounds=20)
            runs = [tune_here(s, data, spec, tmp_path / str(i)) for i in range(2)]
            assert [(r.backend, r.ray) for r in runs] == [("ray-local", "long-lived")] * 2
            assert all(len(r.trials) == 2 and r.best_valid_pr_auc > 0 for r in runs)
            assert {p.pid for p in head.processes()} == pids and head.check() is None   # the same head, still up
        finally:
            head.stop()


def test_degradation_check_sees_a_drifted_champion(good_run, stack_settings):
    s = stack_settings
    healthy = pipeline.check_champion(s)
    assert healthy["degradation"]["degraded"] is False
    assert healthy["retrain"] is False and "healthy" in healthy["reason"]
    # newest days: labels no longer follow the features
    from datetime import UTC, datetime, timedelta

    drift = synthetic_cart_features(1500, days=2, seed=99, signal=0.0, key_prefix="drift",
                                    end=datetime(2026, 11, 1, tzinfo=UTC) + timedelta(days=2))
    with psycopg.connect(s.postgres.dsn()) as conn:
        write_cart_features(conn, drift)
    try:
        degraded = pipeline.check_champion(s)
        assert degraded["degradation"]["degraded"] is True, degraded
        assert degraded["retrain"] is True and "degraded" in degraded["reason"]
    finally:
        with psycopg.connect(s.postgres.dsn()) as conn:
            conn.execute("delete from ml.cart_features where event_key like 'drift-%'")


def dags_test(settings: Settings, conf: dict, **env_overrides: str) -> subprocess.CompletedProcess:
    env = {**settings.service_env(), **env_overrides}
    return subprocess.run(
        [venv_bin("airflow"), "dags", "test", "shopstream_training", "-c", json.dumps(conf)],
        env=env, capture_output=True, text=True, timeout=900,
    )


@pytest.fixture(scope="module")
def ray_cluster(stack_settings) -> Iterator[str]:
    """A real single-node Ray cluster with the Jobs API (dashboard), every port private; its address."""
    try:
        import ray.dashboard.optional_deps  # noqa: F401
    except ImportError as e:
        pytest.skip(f"the Ray Jobs API needs ray[default] (dashboard dependencies): {e}")
    ports = {k: free_port() for k in ("gcs", "dash", "client", "agent", "agent_grpc", "metrics", "rtenv", "nm", "om")}
    temp = Path(tempfile.mkdtemp(prefix="rc-", dir="/tmp"))
    env = {**os.environ, "RAY_AUTH_MODE": "disabled", "RAY_USAGE_STATS_ENABLED": "0",
           "PATH": f"{Path(venv_bin('python')).parent}:{os.environ.get('PATH', '')}"}
    argv = [venv_bin("ray"), "start", "--head", f"--port={ports['gcs']}", "--include-dashboard=true",
            "--dashboard-host=127.0.0.1", f"--dashboard-port={ports['dash']}",
            f"--ray-client-server-port={ports['client']}", f"--dashboard-agent-listen-port={ports['agent']}",
            f"--dashboard-agent-grpc-port={ports['agent_grpc']}", f"--metrics-export-port={ports['metrics']}",
            f"--runtime-env-agent-port={ports['rtenv']}", f"--node-manager-port={ports['nm']}",
            f"--object-manager-port={ports['om']}", "--num-cpus=2", f"--temp-dir={temp}",
            "--disable-usage-stats", "--block"]
    log = open(stack_settings.state_dir / "ray-head.log", "wb")
    proc = subprocess.Popen(argv, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    address = f"http://127.0.0.1:{ports['dash']}"
    try:
        deadline = time.monotonic() + 240
        while True:
            try:
                with urllib.request.urlopen(f"{address}/api/version", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"Ray head did not start: see {log.name}")
            time.sleep(2)
        yield address
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)
        log.close()
        shutil.rmtree(temp, ignore_errors=True)


def test_dag_tunes_on_a_ray_cluster_with_deferred_polling(features, stack_settings, ray_cluster):
    """SHOPSTREAM_RAY__ADDRESS set: tune is a Ray job, the task defers to RayJobTrigger, then the DAG finishes."""
    s = stack_settings
    name = "shopstream-purchase-intent-cluster"
    res = dags_test(s, {"trials": 2, "force": True}, SHOPSTREAM_MLFLOW__REGISTERED_MODEL=name,
                    SHOPSTREAM_RAY__ADDRESS=ray_cluster, SHOPSTREAM_RAY__POLL_INTERVAL_S="3")
    out = res.stdout + res.stderr
    assert res.returncode == 0, out[-5000:]
    assert "running trigger in line" in out   # the tune task deferred to RayJobTrigger
    mlclient = tracking.client(s)
    champion = mlclient.get_model_version_by_alias(name, CHAMPION)
    run = mlclient.get_run(champion.run_id)
    assert run.data.params["tune.backend"] == "ray-cluster"
    trials = mlclient.search_runs([run.info.experiment_id],
                                  filter_string=f"tags.mlflow.parentRunId = '{run.info.run_id}'")
    assert len(trials) == 2 and {t.data.tags["tune.backend"] for t in trials} == {"ray-cluster"}
    assert any(r["model_version"] == champion.version and r["gate_passed"] for r in model_runs(s, name))
