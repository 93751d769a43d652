"""Ray Tune over XGBoost: OptunaSearch samples the search space, ASHA stops weak trials early.

Where it runs:
- **local** (``SHOPSTREAM_RAY__ADDRESS`` empty), in the calling process (the Airflow task), chosen by
  :func:`choose_backend`: below ``SHOPSTREAM_TRAINING__RAY_MIN_ROWS`` training rows **sequentially**, without Ray
  (:mod:`shopstream.training.sequential`: the same search and successive-halving pruning with Optuna), else on
  **Ray**: the embedded stack's long-lived Ray head, or a private Ray when none runs
  (:mod:`shopstream.training.ray_runtime`);
- **cluster**: :func:`submit_job` submits ``python -m shopstream.training.tune job --run-id ...`` to the Ray
  Jobs API with this package as a runtime ``py_modules`` entry; the job fetches the split from MLflow, tunes on
  the cluster and writes the result back to the training run; the Airflow task defers meanwhile
  (:class:`shopstream.training.triggers.RayJobTrigger`).

Either way every trial becomes a nested MLflow run of the training run, and ``tune/best.json`` holds the result.
"""

from __future__ import annotations

import argparse
import logging
import math
import time
import uuid
from contextlib import ExitStack
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import yaml

from shopstream.settings import REPO_ROOT, Settings
from shopstream.training.ray_runtime import local_ray, ray_temp_dir  # noqa: F401 - part of this module's API

log = logging.getLogger(__name__)

METRIC = "valid_pr_auc"          # best validation PR-AUC (xgboost aucpr) so far in the trial
MODE = "max"
DEFAULT_SPACE = Path(__file__).with_name("search_space.yaml")
SPEC_ARTIFACT = "tune/spec.json"
BEST_ARTIFACT = "tune/best.json"


class SearchSpaceError(ValueError):
    """The search space file is invalid; the message names the file and the key."""


# ------------------------------------------------------------------------------------------ search space
@dataclass
class SearchSpace:
    """What a tuning run searches: XGBoost params with their ranges, fixed params, round budget, ASHA."""

    params: dict[str, dict[str, Any]]
    fixed: dict[str, Any] = field(default_factory=dict)
    max_rounds: int = 300
    early_stopping_rounds: int = 30
    grace_period: int = 15
    reduction_factor: int = 3
    report_every: int = 10
    version: int | str = 1
    source: str = ""

    @classmethod
    def load(cls, path: str | Path | None = None) -> SearchSpace:
        p = Path(path) if path else DEFAULT_SPACE
        if not p.is_absolute() and not p.exists():
            p = REPO_ROOT / p
        if not p.exists():
            raise SearchSpaceError(f"search space file {p} does not exist (SHOPSTREAM_TRAINING__SEARCH_SPACE)")
        try:
            raw = yaml.safe_load(p.read_text()) or {}
        except yaml.YAMLError as e:
            raise SearchSpaceError(f"{p}: not valid YAML: {e}") from None
        return cls.from_dict(raw, source=str(p))

    @classmethod
    def from_dict(cls, raw: dict, source: str = "<dict>") -> SearchSpace:
        if not isinstance(raw, dict):
            raise SearchSpaceError(f"{source}: expected a mapping at the top level")
        asha = raw.get("asha") or {}
        space = cls(
            params=dict(raw.get("params") or {}),
            fixed=dict(raw.get("fixed") or {}),
            max_rounds=int(raw.get("max_rounds", 300)),
            early_stopping_rounds=int(raw.get("early_stopping_rounds", 30)),
            grace_period=int(asha.get("grace_period", raw.get("grace_period", 15))),
            reduction_factor=int(asha.get("reduction_factor", raw.get("reduction_factor", 3))),
            report_every=int(asha.get("report_every", raw.get("report_every", 10))),
            version=raw.get("version", 1),
            source=source,
        )
        space.validate()
        return space

    def to_dict(self) -> dict:
        return {
            "version": self.version, "max_rounds": self.max_rounds, "early_stopping_rounds": self.early_stopping_rounds,
            "asha": {"grace_period": self.grace_period, "reduction_factor": self.reduction_factor,
                     "report_every": self.report_every},
            "fixed": self.fixed, "params": self.params, "source": self.source,
        }

    def validate(self) -> None:
        where = self.source
        if self.max_rounds < 1:
            raise SearchSpaceError(f"{where}: max_rounds must be at least 1")
        if not self.params:
            raise SearchSpaceError(f"{where}: params is empty; give at least one parameter to search")
        if self.report_every < 1:
            raise SearchSpaceError(f"{where}: asha.report_every must be at least 1 (boosting rounds per report)")
        for name, d in self.params.items():
            if not isinstance(d, dict) or "type" not in d:
                raise SearchSpaceError(f"{where}: params.{name} needs a mapping with a type (float, int, categorical)")
            kind = d["type"]
            if kind in ("float", "int"):
                if "low" not in d or "high" not in d or d["low"] > d["high"]:
                    raise SearchSpaceError(f"{where}: params.{name} needs low <= high")
                if d.get("log") and d["low"] <= 0:
                    raise SearchSpaceError(f"{where}: params.{name} is log-scaled, so low must be > 0")
            elif kind == "categorical":
                if not d.get("choices"):
                    raise SearchSpaceError(f"{where}: params.{name} needs a non-empty choices list")
            else:
                raise SearchSpaceError(f"{where}: params.{name} has unknown type {kind!r} (float, int, categorical)")

    def optuna_space(self) -> dict:
        """The params as Optuna distributions (what OptunaSearch samples)."""
        from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

        out = {}
        for name, d in self.params.items():
            if d["type"] == "float":
                out[name] = FloatDistribution(float(d["low"]), float(d["high"]), log=bool(d.get("log", False)))
            elif d["type"] == "int":
                out[name] = IntDistribution(int(d["low"]), int(d["high"]), log=bool(d.get("log", False)))
            else:
                out[name] = CategoricalDistribution(list(d["choices"]))
        return out

    def xgb_params(self, config: dict[str, Any], nthread: int, seed: int) -> dict[str, Any]:
        return {**self.fixed, **config, "nthread": nthread, "seed": seed}


@dataclass
class TuneSpec:
    """Everything a tuning run needs besides the data (JSON-able: it travels to a Ray job)."""

    trials: int
    space: dict
    seed: int = 42
    cpus_per_trial: int = 1
    max_concurrent: int = 2
    timeout_s: int = 3600

    @property
    def search_space(self) -> SearchSpace:
        return SearchSpace.from_dict(self.space, source=self.space.get("source", "<spec>"))


def make_spec(settings: Settings, trials: int | None = None, search_space: str | None = None,
              max_rounds: int | None = None) -> TuneSpec:
    """A spec from the settings, with the DAG form's overrides."""
    space = SearchSpace.load(search_space or settings.training.search_space or None)
    if max_rounds:
        space.max_rounds = int(max_rounds)
    return TuneSpec(
        trials=int(trials or settings.training.trials),
        space=space.to_dict(),
        seed=settings.training.seed,
        cpus_per_trial=settings.ray.cpus_per_trial,
        max_concurrent=max(1, settings.ray.num_cpus // settings.ray.cpus_per_trial),
        timeout_s=settings.training.tune_timeout_s,
    )


# ------------------------------------------------------------------------------------------ data
@dataclass
class TuneData:
    """Model matrices of the training and validation rows (prepared once, shared by every trial).

    ``key`` names this data in a process's cache of XGBoost matrices (:func:`matrices`): it travels with the
    data to Ray workers, so a reused worker builds the matrices once for all its trials.
    """

    x_train: Any
    y_train: Any
    x_valid: Any
    y_valid: Any
    key: str = field(default_factory=lambda: uuid.uuid4().hex)


_MATRICES: dict[tuple[str, int], tuple[Any, Any]] = {}


def matrices(data: TuneData, max_bin: int = 256) -> tuple[Any, Any]:
    """Training and validation ``QuantileDMatrix`` of ``data`` (built once per process, the last data only)."""
    import xgboost as xgb

    key = (data.key, int(max_bin))
    if key not in _MATRICES:
        _MATRICES.clear()
        dtrain = xgb.QuantileDMatrix(data.x_train, label=data.y_train, enable_categorical=True, max_bin=max_bin)
        dvalid = xgb.QuantileDMatrix(data.x_valid, label=data.y_valid, enable_categorical=True, ref=dtrain,
                                     max_bin=max_bin)
        _MATRICES[key] = (dtrain, dvalid)
    return _MATRICES[key]


def tune_data(split_dir: Path) -> TuneData:
    from shopstream.training.dataset import categories_of, load_split, xy

    split, spec = load_split(split_dir)
    cats = categories_of(split.train, spec)
    xt, yt = xy(split.train, spec, cats)
    xv, yv = xy(split.valid, spec, cats)
    return TuneData(xt, yt, xv, yv)


# ------------------------------------------------------------------------------------------ one model
def fit(params: dict[str, Any], data: TuneData, max_rounds: int, early_stopping_rounds: int,
        callbacks: list | None = None):
    """Train one booster with early stopping on validation PR-AUC; returns (booster, evals history)."""
    import xgboost as xgb

    dtrain, dvalid = matrices(data, int(params.get("max_bin", 256)))
    history: dict = {}
    booster = xgb.train(
        params, dtrain, num_boost_round=max_rounds, evals=[(dvalid, "valid")],
        early_stopping_rounds=early_stopping_rounds if early_stopping_rounds else None,
        evals_result=history, verbose_eval=False, callbacks=callbacks or [],
    )
    return booster, history.get("valid", {})


def best_of(history: dict) -> tuple[float, int, float]:
    """(best validation PR-AUC, its 1-based round, validation log loss at that round)."""
    aucpr = history.get("aucpr") or [float("nan")]
    i = max(range(len(aucpr)), key=lambda k: (aucpr[k], -k))
    logloss = history.get("logloss") or [float("nan")] * len(aucpr)
    return float(aucpr[i]), i + 1, float(logloss[i])


class Progress:
    """XGBoost callback base: tracks the best validation PR-AUC so far and calls :meth:`report` every
    ``every`` rounds (and on the last round), so a scheduler can stop the trial at its milestones."""

    def __init__(self, every: int, max_rounds: int) -> None:
        import xgboost as xgb

        self.every, self.max_rounds = every, max_rounds
        self.best = (-math.inf, 0, math.nan)          # (PR-AUC, 1-based round, log loss at that round)
        self.history: list[float] = []
        self.callback = type("ProgressCallback", (xgb.callback.TrainingCallback,), {
            "after_iteration": lambda _cb, model, epoch, evals_log: self._after(epoch, evals_log),
            "after_training": lambda _cb, model: self._final(model),
        })()
        self._reported = 0

    def _after(self, epoch: int, evals_log: dict) -> bool:
        m = evals_log["valid"]
        cur = float(m["aucpr"][-1])
        if cur > self.best[0]:
            self.best = (cur, epoch + 1, float(m["logloss"][-1]))
        self.history.append(self.best[0])
        rounds = epoch + 1
        if rounds % self.every == 0 or rounds == self.max_rounds:
            self._reported = rounds
            return bool(self.report(rounds))
        return False

    def _final(self, model):
        if self._reported != len(self.history) and self.history:   # stopped early between milestones
            self.report(len(self.history))
        return model

    def report(self, rounds: int) -> bool:
        """Hand the progress to the scheduler; True stops the trial."""
        raise NotImplementedError


def _trial(config: dict[str, Any], data: TuneData, spec: dict) -> None:
    """Ray Tune trainable: one XGBoost model, reporting every ``report_every`` rounds (ASHA's milestones)."""
    from ray import tune

    space = SearchSpace.from_dict(spec["space"])

    class Report(Progress):
        def report(self, rounds: int) -> bool:
            tune.report({METRIC: self.best[0], "valid_logloss": self.best[2], "best_iteration": self.best[1],
                         "rounds": rounds})
            return False

    params = space.xgb_params(config, nthread=spec["cpus_per_trial"], seed=spec["seed"])
    progress = Report(space.report_every, space.max_rounds)
    fit(params, data, space.max_rounds, space.early_stopping_rounds, callbacks=[progress.callback])


# ------------------------------------------------------------------------------------------ results
@dataclass
class TrialResult:
    number: int
    config: dict[str, Any]
    valid_pr_auc: float
    valid_logloss: float
    best_iteration: int
    rounds: int
    seconds: float
    status: str = "FINISHED"           # FINISHED | FAILED
    error: str | None = None
    history: list[float] = field(default_factory=list)   # best-so-far validation PR-AUC at each report
    history_rounds: list[int] = field(default_factory=list)  # the boosting round of each report


@dataclass
class TuneResult:
    best_config: dict[str, Any]
    best_valid_pr_auc: float
    best_iteration: int
    trials: list[TrialResult]
    wall_s: float
    backend: str                       # ray-local | ray-cluster | sequential
    space: dict = field(default_factory=dict)
    startup_s: float = 0.0             # paid before the first trial: starting or connecting to Ray
    ray: str = ""                      # long-lived | private | in-process | cluster ("" without Ray)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> TuneResult:
        trials = [TrialResult(**t) for t in d.get("trials", [])]
        return cls(**{**d, "trials": trials})


def _finish(trials: list[TrialResult], wall_s: float, backend: str, spec: TuneSpec) -> TuneResult:
    ok = [t for t in trials if t.status == "FINISHED" and not math.isnan(t.valid_pr_auc)]
    if not ok:
        errors = "; ".join(f"trial {t.number}: {t.error}" for t in trials if t.error)[:2000]
        raise RuntimeError(f"no tuning trial finished ({len(trials)} tried): {errors or 'no results'}")
    best = max(ok, key=lambda t: (t.valid_pr_auc, -t.number))
    return TuneResult(best.config, best.valid_pr_auc, best.best_iteration, trials, wall_s, backend, spec.space)


# ------------------------------------------------------------------------------------------ Ray
def run_ray_tune(data: TuneData, spec: TuneSpec, storage_dir: Path, name: str = "tune",
                 backend: str = "ray-local") -> TuneResult:
    """Tune on the Ray this process is connected to (call inside :func:`local_ray` or a Ray job)."""
    import ray
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler
    from ray.tune.search import ConcurrencyLimiter
    from ray.tune.search.optuna import OptunaSearch

    space = spec.search_space
    trainable = tune.with_resources(
        tune.with_parameters(_trial, data=data, spec=asdict(spec)), {"cpu": spec.cpus_per_trial}
    )
    searcher = ConcurrencyLimiter(OptunaSearch(space=space.optuna_space(), metric=METRIC, mode=MODE, seed=spec.seed),
                                  max_concurrent=spec.max_concurrent)
    scheduler = ASHAScheduler(time_attr="rounds", max_t=space.max_rounds,
                              grace_period=min(space.grace_period, space.max_rounds),
                              reduction_factor=space.reduction_factor)
    storage_dir.mkdir(parents=True, exist_ok=True)
    tuner = tune.Tuner(
        trainable,
        tune_config=tune.TuneConfig(metric=METRIC, mode=MODE, search_alg=searcher, scheduler=scheduler,
                                    num_samples=spec.trials, time_budget_s=spec.timeout_s, reuse_actors=True),
        run_config=tune.RunConfig(name=name, storage_path=str(storage_dir.resolve()), verbose=0,
                                  failure_config=tune.FailureConfig(max_failures=0)),
    )
    assert ray.is_initialized()
    t0 = time.monotonic()
    grid = tuner.fit()
    wall = time.monotonic() - t0
    trials = []
    for i, r in enumerate(grid):
        m = r.metrics or {}
        history: list[float] = []
        history_rounds: list[int] = []
        df = r.metrics_dataframe
        if df is not None and METRIC in df and "rounds" in df:
            history = [float(v) for v in df[METRIC].tolist()]
            history_rounds = [int(v) for v in df["rounds"].tolist()]
        trials.append(TrialResult(
            number=i, config=dict(r.config or {}),
            valid_pr_auc=float(m.get(METRIC, math.nan)), valid_logloss=float(m.get("valid_logloss", math.nan)),
            best_iteration=int(m.get("best_iteration", 0)), rounds=int(m.get("rounds", 0)),
            seconds=float(m.get("time_total_s", 0.0)),
            status="FAILED" if r.error else "FINISHED", error=str(r.error)[:500] if r.error else None,
            history=history, history_rounds=history_rounds,
        ))
    return _finish(trials, wall, backend, spec)


def run_sequential(data: TuneData, spec: TuneSpec, configs: list[dict[str, Any]], nthread: int | None = None
                   ) -> TuneResult:
    """The given configs trained one after another in this process, without Ray or ASHA (a baseline);
    each model may use ``nthread`` threads (default: the per-trial CPUs)."""
    space = spec.search_space
    trials = []
    t0 = time.monotonic()
    for i, config in enumerate(configs):
        t1 = time.monotonic()
        params = space.xgb_params(config, nthread=nthread or spec.cpus_per_trial, seed=spec.seed)
        _, hist = fit(params, data, space.max_rounds, space.early_stopping_rounds)
        auc, it, ll = best_of(hist)
        trials.append(TrialResult(i, dict(config), auc, ll, it, len(hist.get("aucpr", [])), time.monotonic() - t1))
    return _finish(trials, time.monotonic() - t0, "sequential", spec)


# ------------------------------------------------------------------------------------------ MLflow
def log_trials(mlclient, parent_run_id: str, result: TuneResult) -> list[str]:
    """Each trial as a nested run of the training run: its params, final metrics and per-round history."""
    from mlflow.entities import Metric, Param, RunTag

    parent = mlclient.get_run(parent_run_id)
    exp = parent.info.experiment_id
    ids = []
    now = int(time.time() * 1000)
    for t in result.trials:
        run = mlclient.create_run(exp, tags={
            "mlflow.parentRunId": parent_run_id, "mlflow.runName": f"trial-{t.number:02d}",
            "shopstream.kind": "trial", "tune.backend": result.backend,
        })
        rid = run.info.run_id
        metrics = [Metric(k, float(v), now, 0) for k, v in (
            ("valid_pr_auc", t.valid_pr_auc), ("valid_logloss", t.valid_logloss),
            ("best_iteration", t.best_iteration), ("rounds", t.rounds), ("seconds", t.seconds),
        ) if v is not None and not (isinstance(v, float) and math.isnan(v))]
        steps = t.history_rounds if len(t.history_rounds) == len(t.history) else range(1, len(t.history) + 1)
        metrics += [Metric("valid_pr_auc_by_round", float(v), now, int(step)) for step, v in zip(steps, t.history, strict=True)]
        params = [Param(k, str(v)) for k, v in t.config.items()]
        tags = [RunTag("tune.stopped_early", str(t.rounds < result.space.get("max_rounds", t.rounds)).lower())]
        if t.error:
            tags.append(RunTag("tune.error", t.error[:5000]))
        for i in range(0, max(len(metrics), 1), 1000):
            mlclient.log_batch(rid, metrics=metrics[i:i + 1000], params=params if i == 0 else [],
                               tags=tags if i == 0 else [])
        mlclient.set_terminated(rid, "FINISHED" if t.status == "FINISHED" else "FAILED")
        ids.append(rid)
    return ids


def record_result(mlclient, parent_run_id: str, result: TuneResult) -> dict:
    """Log trials (nested), the best params and ``tune/best.json`` to the training run; the small summary."""
    log_trials(mlclient, parent_run_id, result)
    from mlflow.entities import Metric, Param

    now = int(time.time() * 1000)
    mlclient.log_batch(parent_run_id, metrics=[
        Metric("tune_best_valid_pr_auc", result.best_valid_pr_auc, now, 0),
        Metric("tune_wall_s", result.wall_s, now, 0),
        Metric("tune_startup_s", result.startup_s, now, 0),
        Metric("tune_trials", float(len(result.trials)), now, 0),
        Metric("tune_rounds", float(sum(t.rounds for t in result.trials)), now, 0),
    ], params=[Param(f"best.{k}", str(v)) for k, v in result.best_config.items()]
            + [Param("tune.backend", result.backend)] + ([Param("tune.ray", result.ray)] if result.ray else []))
    mlclient.log_dict(parent_run_id, result.to_dict(), BEST_ARTIFACT)
    return summary(result)


def summary(result: TuneResult) -> dict:
    return {"best_config": result.best_config, "best_valid_pr_auc": result.best_valid_pr_auc,
            "best_iteration": result.best_iteration, "trials": len(result.trials), "wall_s": round(result.wall_s, 1),
            "startup_s": round(result.startup_s, 1), "backend": result.backend, "ray": result.ray}


def choose_backend(settings: Settings, train_rows: int) -> tuple[str, str]:
    """``("ray" | "sequential", why)`` for tuning ``train_rows`` rows in this process.

    ``SHOPSTREAM_TRAINING__TUNE_BACKEND`` forces one; ``auto`` tunes sequentially (Optuna in this process, no
    Ray) below ``SHOPSTREAM_TRAINING__RAY_MIN_ROWS`` training rows, where starting trials on Ray costs more
    than it saves (the crossover measured by ``bench/training.py``), and on Ray from there on.
    """
    t = settings.training
    if t.tune_backend != "auto":
        return t.tune_backend, f"SHOPSTREAM_TRAINING__TUNE_BACKEND={t.tune_backend}"
    if train_rows < t.ray_min_rows:
        return "sequential", f"{train_rows:,} training rows < SHOPSTREAM_TRAINING__RAY_MIN_ROWS={t.ray_min_rows:,}"
    return "ray", f"{train_rows:,} training rows >= SHOPSTREAM_TRAINING__RAY_MIN_ROWS={t.ray_min_rows:,}"


def tune_here(settings: Settings, data: TuneData, spec: TuneSpec, storage_dir: Path) -> TuneResult:
    """Tune ``data`` in this process: sequentially or on a local Ray, as :func:`choose_backend` says."""
    from shopstream.training.sequential import run_search

    backend, why = choose_backend(settings, len(data.y_train))
    log.info("tuning %d trials %s (%s)", spec.trials, "sequentially" if backend == "sequential" else "on Ray", why)
    if backend == "sequential":
        return run_search(data, spec, nthread=settings.ray.num_cpus)
    stack = ExitStack()
    try:
        session = stack.enter_context(local_ray(settings))
    except Exception as e:
        if settings.training.tune_backend == "ray":
            raise
        log.warning("Ray did not start (%s: %s); tuning sequentially instead", type(e).__name__, str(e)[:300])
        result = run_search(data, spec, nthread=settings.ray.num_cpus)
        result.ray = f"unavailable ({type(e).__name__})"
        return result
    with stack:
        result = run_ray_tune(data, spec, storage_dir, backend="ray-local")
    result.startup_s, result.ray = session.startup_s, session.kind
    return result


def tune_local(settings: Settings, run_id: str, spec: TuneSpec) -> dict:
    """Tune the training run's split in this process (sequentially or on a local Ray); log all to the run."""
    from shopstream.training import tracking

    mlclient = tracking.client(settings)
    mlclient.log_dict(run_id, asdict(spec), SPEC_ARTIFACT)
    data = tune_data(tracking.fetch_split_dir(settings, run_id))
    result = tune_here(settings, data, spec, tracking.run_dir(settings, run_id) / "ray_results")
    return record_result(mlclient, run_id, result)


# ------------------------------------------------------------------------------------------ Ray cluster job
def job_headers(settings: Settings) -> dict[str, str]:
    token = settings.ray.auth_token.get_secret_value()
    return {"Authorization": f"Bearer {token}"} if token else {}


def submit_job(settings: Settings, run_id: str, spec: TuneSpec) -> str:
    """Submit the tuning of a training run as a Ray job; returns its submission id.

    A retried task re-attaches to the run's job while it is pending, running or succeeded; after a failed or
    stopped one it submits a new job (``shopstream-tune-<run id>-<n>``).
    """
    from ray.job_submission import JobStatus, JobSubmissionClient

    from shopstream.training import tracking

    mlclient = tracking.client(settings)
    mlclient.log_dict(run_id, asdict(spec), SPEC_ARTIFACT)
    prefix = f"shopstream-tune-{run_id}"
    jobs = JobSubmissionClient(settings.ray.address, headers=job_headers(settings))
    mine = sorted((j for j in jobs.list_jobs() if (j.submission_id or "").startswith(prefix)),
                  key=lambda j: j.start_time or 0)
    if mine and mine[-1].status not in (JobStatus.FAILED, JobStatus.STOPPED):
        return mine[-1].submission_id
    job_id = prefix if not mine else f"{prefix}-{len(mine)}"
    package = Path(__file__).resolve().parents[1]
    jobs.submit_job(
        submission_id=job_id,
        entrypoint=f"python -m shopstream.training.tune job --run-id {run_id} --tracking-uri {settings.mlflow.uri}",
        runtime_env={
            "py_modules": [str(package)],
            "env_vars": {"MLFLOW_TRACKING_URI": settings.mlflow.uri, "RAY_USAGE_STATS_ENABLED": "0"},
        },
        metadata={"shopstream.training_run": run_id},
    )
    return job_id


def job_main(run_id: str, tracking_uri: str) -> dict:
    """Entry point of the Ray job: fetch spec and split from MLflow, tune on this cluster, write results."""
    import tempfile

    import mlflow
    import ray
    from mlflow import MlflowClient

    mlflow.set_tracking_uri(tracking_uri)
    mlclient = MlflowClient(tracking_uri=tracking_uri)
    with tempfile.TemporaryDirectory() as tmp:
        spec_path = mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path=SPEC_ARTIFACT, dst_path=tmp)
        import json

        spec = TuneSpec(**json.loads(Path(spec_path).read_text()))
        data_dir = mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path="data", dst_path=tmp)
        data = tune_data(Path(data_dir))
        ray.init()
        try:
            result = run_ray_tune(data, spec, Path(tmp) / "ray_results", backend="ray-cluster")
            result.ray = "cluster"
        finally:
            ray.shutdown()
    return record_result(mlclient, run_id, result)


def read_best(settings: Settings, run_id: str) -> dict:
    """The summary of a finished tuning, read back from the training run."""
    from shopstream.training import tracking

    return summary(TuneResult.from_dict(tracking.load_json(settings, run_id, BEST_ARTIFACT)))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m shopstream.training.tune")
    sub = parser.add_subparsers(dest="cmd", required=True)
    job = sub.add_parser("job", help="tune a training run (the Ray job entry point)")
    job.add_argument("--run-id", required=True)
    job.add_argument("--tracking-uri", required=True)
    args = parser.parse_args(argv)
    print(job_main(args.run_id, args.tracking_uri))


if __name__ == "__main__":
    main()
