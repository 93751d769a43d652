"""The served model: ``models:/<name>@champion``, reloaded when the alias moves, and a micro-batching predictor.

:class:`ModelManager` resolves the alias to a version, loads that version with ``mlflow.pyfunc.load_model``,
checks it answers (a probability in [0, 1] for a fresh-session example) and only then swaps it in: one
attribute assignment, so a request uses either the old or the new model, never a mix, and nothing in
flight fails. A background thread polls the alias every ``SHOPSTREAM_SERVING__RELOAD_INTERVAL_S``. When the
alias is missing or the new version does not load or answer, the old model keeps serving and
:attr:`ModelManager.problem` says why (``/ready`` shows it, the log has it).

Probabilities are the model's calibrated ones (the calibration fitted on the validation set is part of the
logged model), and the decision threshold is the one the model was logged with (chosen on the validation set's
calibrated probabilities by training and used by the gate's metrics); a model without one gets 0.5, as the
gate does.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any

from shopstream.features import CATEGORICAL, FEATURE_COLUMNS
from shopstream.settings import Settings

log = logging.getLogger("shopstream.serving.model")

CHAMPION = "champion"
DEFAULT_THRESHOLD = 0.5


def limit_threads() -> None:
    """One OpenMP thread for XGBoost: concurrent requests are batched, and threads fight on few cores."""
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")


@dataclass(frozen=True)
class LoadedModel:
    name: str
    version: str
    model: Any                      # mlflow.pyfunc.PyFuncModel
    threshold: float
    run_id: str | None
    loaded_at: datetime
    booster: BoosterPath | None = None   # set when it answers exactly as the pyfunc (checked at load)
    calibration: str = "none"            # the logged model's calibration method (isotonic, platt, none)

    @property
    def path(self) -> str:
        return "booster" if self.booster is not None else "pyfunc"

    def predict_pyfunc(self, rows: list[dict[str, Any]]) -> list[float]:
        """The registered pyfunc's ``predict`` on the rows' feature frame."""
        import numpy as np

        out = np.asarray(self.model.predict(feature_frame(rows)), dtype="float64").reshape(-1)
        if len(out) != len(rows):
            raise ValueError(f"model {self.name} v{self.version} returned {len(out)} values for {len(rows)} rows")
        return out.tolist()

    def predict(self, rows: list[dict[str, Any]]) -> list[float]:
        """Probabilities of feature rows (the booster path when verified, else the pyfunc)."""
        return self.booster(rows) if self.booster is not None else self.predict_pyfunc(rows)

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "version": self.version, "threshold": self.threshold,
                "calibration": self.calibration, "run_id": self.run_id,
                "loaded_at": self.loaded_at.isoformat(timespec="seconds"), "predict_path": self.path}


def feature_frame(rows: list[dict[str, Any]]):
    """The model's input: one row per feature dict, columns in :data:`FEATURE_COLUMNS` order.

    Text columns are built as object columns: pandas would make an all-null column float64, which the
    model signature's ``string`` type refuses (a single cart-add without a brand would fail).
    """
    import pandas as pd

    return pd.DataFrame({
        c: pd.Series([r[c] for r in rows], dtype=object) if c in CATEGORICAL else pd.Series([r[c] for r in rows])
        for c in FEATURE_COLUMNS
    })


class BoosterPath:
    """The logged model's own booster and category codes, without the per-call pandas work.

    :class:`shopstream.training.pyfunc_model.PurchaseIntentModel` codes each text column by its position in
    the logged category list (unknown values and nulls are missing) and every other column as float64, then
    predicts with its booster and applies its calibration (the model's own ``calibrated``). This does the same with a dict and a numpy array (a few hundred microseconds
    instead of milliseconds a call). It is only used after :func:`verify_booster_path` found it gives exactly
    the pyfunc's probabilities on a probe set covering known, unknown and missing categories.
    """

    def __init__(self, inner: Any) -> None:
        self.booster = inner.booster
        self.features: list[str] = list(inner.features)
        self.codes = {c: {v: float(i) for i, v in enumerate(values)} for c, values in inner.categories.items()}
        self.calibrated = getattr(inner, "calibrated", None)   # models logged before calibration have none

    def __call__(self, rows: list[dict[str, Any]]) -> list[float]:
        import numpy as np

        nan = float("nan")
        x = np.empty((len(rows), len(self.features)), dtype=np.float64)
        for j, c in enumerate(self.features):
            codes = self.codes.get(c)
            if codes is not None:
                x[:, j] = [nan if r[c] is None else codes.get(r[c], nan) for r in rows]
            else:
                x[:, j] = [nan if r[c] is None else float(r[c]) for r in rows]
        raw = self.booster.inplace_predict(x).astype("float64")
        return (self.calibrated(raw) if self.calibrated is not None else raw).tolist()


def probe_rows(categories: dict[str, list[str]], n: int = 96) -> list[dict[str, Any]]:
    """Feature rows covering known, unknown and missing categories and a spread of numbers (seeded)."""
    import random

    rng = random.Random(0)
    base = example_features()
    rows = []
    for i in range(n):
        r = dict(base)
        for c in CATEGORICAL:
            known = categories.get(c) or []
            pick = rng.random()
            r[c] = None if pick < 0.2 else f"unseen-{i}" if pick < 0.3 or not known else rng.choice(known)
        for c in FEATURE_COLUMNS:
            if c in CATEGORICAL:
                continue
            if isinstance(base[c], float):
                r[c] = round(rng.choice([0.0, 1.0, 9.99, 100.0]) * rng.lognormvariate(0, 1.5), 2)
            else:
                r[c] = rng.choice([0, 1, 2, 3, 5, 8, 13, 40])
        r["hour"], r["weekday"] = rng.randrange(24), rng.randrange(1, 8)
        rows.append(r)
    return rows


def verify_booster_path(loaded: LoadedModel) -> BoosterPath | None:
    """A :class:`BoosterPath` for a model logged by our pyfunc code that matches its pyfunc exactly, else None."""
    try:
        inner = loaded.model.unwrap_python_model()
        fast = BoosterPath(inner)
        rows = probe_rows(inner.categories)
    except Exception as e:  # noqa: BLE001 - not a model of ours: the pyfunc serves
        log.info("%s v%s: no booster path (%s); the pyfunc serves", loaded.name, loaded.version, e)
        return None
    got, want = fast(rows), loaded.predict_pyfunc(rows)
    if got != want:
        bad = sum(1 for a, b in zip(got, want, strict=True) if a != b)
        log.warning("%s v%s: the booster path differs from the pyfunc on %d of %d probe rows; the pyfunc serves",
                    loaded.name, loaded.version, bad, len(rows))
        return None
    return fast


def example_features() -> dict[str, Any]:
    """Features of a cart-add in a fresh session of a new user (the warm-up and self-check row)."""
    from shopstream.features import SessionState, UserState, features_for

    return features_for(UserState(), SessionState(), "warm-up", 1, 100.0, datetime(2019, 10, 1, 12, tzinfo=UTC),
                        "electronics.smartphone", "samsung")


class ModelManager:
    """The current champion, loaded and swapped; thread-safe to read (:attr:`current`)."""

    def __init__(self, settings: Settings, name: str | None = None, alias: str = CHAMPION,
                 interval_s: float | None = None, on_change=None) -> None:
        self.settings = settings
        self.name = name or settings.mlflow.registered_model
        self.alias = alias
        self.interval_s = interval_s if interval_s is not None else settings.serving.reload_interval_s
        self.current: LoadedModel | None = None
        self.problem: str | None = None
        self.failed_version: str | None = None     # a version that did not load: retried after retry_failed_s
        self.failed_at = 0.0
        self.retry_failed_s = max(60.0, 6 * self.interval_s)
        self.on_change = on_change                 # called with (LoadedModel | None, problem | None)
        self.reloads = {"loaded": 0, "failed": 0}
        self.on_reload = None                      # called with "loaded" or "failed" after each load attempt
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._client = None

    # ----------------------------------------------------------------- MLflow
    def _mlflow(self):
        if self._client is None:
            from shopstream.training import tracking

            self._client = tracking.client(self.settings)
        return self._client

    def champion_version(self) -> str | None:
        """The version the alias points at (None when there is no such alias or model)."""
        from mlflow.exceptions import MlflowException

        try:
            return str(self._mlflow().get_model_version_by_alias(self.name, self.alias).version)
        except MlflowException as e:
            if e.error_code in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE", "NOT_FOUND"):
                return None
            raise

    def load_version(self, version: str) -> LoadedModel:
        """Load and self-check one version (raises when it cannot serve)."""
        import mlflow

        limit_threads()
        mv = self._mlflow().get_model_version(self.name, version)
        model = mlflow.pyfunc.load_model(f"models:/{self.name}/{version}")
        threshold = DEFAULT_THRESHOLD
        calibration = "none"
        try:
            inner = model.unwrap_python_model()
            threshold = float(getattr(inner, "threshold", DEFAULT_THRESHOLD))
            calibration = str((getattr(inner, "calibration", None) or {}).get("method", "none"))
            booster = getattr(inner, "booster", None)
            if booster is not None:
                booster.set_param({"nthread": 1})
        except Exception:  # noqa: BLE001 - not a python_function model logged by our code
            pass
        loaded = LoadedModel(self.name, str(version), model, threshold, mv.run_id, datetime.now(UTC),
                             calibration=calibration)
        p = loaded.predict_pyfunc([example_features()])[0]
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"the self-check prediction is {p!r}, not a probability")
        if self.settings.serving.booster_fast_path:
            fast = verify_booster_path(loaded)
            if fast is not None:
                loaded = replace(loaded, booster=fast)
        return loaded

    # ----------------------------------------------------------------- refresh
    def refresh(self) -> bool:
        """Point at the alias's current version; True when the served model changed."""
        with self._lock:
            try:
                version = self.champion_version()
            except Exception as e:  # noqa: BLE001 - MLflow unreachable: keep serving
                self._set_problem(f"cannot read alias '{self.alias}' of {self.name}: {type(e).__name__}: {e}"[:500])
                return False
            if version is None:
                self._set_problem(f"registered model {self.name} has no '{self.alias}' alias"
                                  + (f"; still serving version {self.current.version}" if self.current else ""))
                return False
            if self.current is not None and self.current.version == version:
                self._set_problem(None)
                return False
            if version == self.failed_version and time.monotonic() - self.failed_at < self.retry_failed_s:
                return False
            try:
                t0 = time.monotonic()
                loaded = self.load_version(version)
            except Exception as e:  # noqa: BLE001 - a broken model must not take the service down
                self.failed_version = version
                self.failed_at = time.monotonic()
                self.reloads["failed"] += 1
                if self.on_reload:
                    self.on_reload("failed")
                keep = f"; still serving version {self.current.version}" if self.current else ""
                self._set_problem(f"{self.name} version {version} ('{self.alias}') failed to load: "
                                  f"{type(e).__name__}: {e}"[:500] + keep)
                log.error("%s", self.problem)
                return False
            old = self.current
            self.current = loaded            # the swap: one reference assignment
            self.failed_version = None
            self.reloads["loaded"] += 1
            if self.on_reload:
                self.on_reload("loaded")
            self._set_problem(None)
            log.info("serving %s version %s (was %s), threshold %.4f, loaded in %.1fs", self.name, version,
                     old.version if old else "none", loaded.threshold, time.monotonic() - t0)
            if self.on_change:
                self.on_change(loaded, None)
            return True

    def _set_problem(self, problem: str | None) -> None:
        if problem != self.problem:
            if problem:
                log.warning("%s", problem)
            self.problem = problem
            if self.on_change:
                self.on_change(self.current, problem)

    # ----------------------------------------------------------------- poller
    def start(self) -> None:
        """Poll the alias in a daemon thread until :meth:`stop`."""
        if self._thread is not None:
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._poll, name="champion-poller", daemon=True)
        self._thread.start()

    def _poll(self) -> None:
        while not self._stop.wait(self.interval_s):
            try:
                self.refresh()
            except Exception:  # noqa: BLE001 - the poller must survive anything
                log.exception("champion poll failed")

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
            self._thread = None
