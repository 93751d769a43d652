"""The promotion gate: a new model version becomes ``champion`` only if it is good enough and no worse.

Rules come from a versioned YAML file (``gate.yaml`` beside this module by default, see its comments):
absolute ``thresholds`` on the candidate's test metrics, and ``regression`` tolerances against the current
champion, both models scored on the candidate's test set (the most recent period of its window).

Pass: alias ``champion`` moves to the candidate, the old champion keeps alias ``previous`` (rollback:
point ``champion`` back at it), the decision is tagged on the version. Fail: the version is tagged with the
reasons, ``champion`` stays, and :class:`GateFailed` carries a readable report. The same code runs as
``shopstream gate`` (exit 0 on pass, 1 on fail).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml

from shopstream.settings import REPO_ROOT, Settings

DEFAULT_CONFIG = Path(__file__).with_name("gate.yaml")
CHAMPION = "champion"
PREVIOUS = "previous"
LOWER_IS_BETTER = frozenset({"log_loss", "brier", "ece"})
KNOWN_METRICS = frozenset({"roc_auc", "pr_auc", "pr_auc_lift", "log_loss", "brier", "ece", "f1", "precision",
                           "recall"})


class GateConfigError(ValueError):
    """The gate config file is invalid; the message names the file and the key."""


class GateFailed(RuntimeError):
    """The candidate did not pass; ``str()`` is the readable report."""

    def __init__(self, decision: GateDecision) -> None:
        super().__init__(decision.report())
        self.decision = decision


# ------------------------------------------------------------------------------------------ config
@dataclass(frozen=True)
class GateConfig:
    version: str
    thresholds: dict[str, dict[str, float]]           # metric -> {"min": x} and/or {"max": y}
    regression: dict[str, float]                       # metric -> absolute tolerance
    source: str = ""

    @classmethod
    def load(cls, path: str | Path | None = None) -> GateConfig:
        p = Path(path) if path else DEFAULT_CONFIG
        if not p.is_absolute() and not p.exists():
            p = REPO_ROOT / p
        if not p.exists():
            raise GateConfigError(f"gate config {p} does not exist (SHOPSTREAM_TRAINING__GATE_CONFIG or --config)")
        try:
            raw = yaml.safe_load(p.read_text()) or {}
        except yaml.YAMLError as e:
            raise GateConfigError(f"{p}: not valid YAML: {e}") from None
        return cls.from_dict(raw, source=str(p))

    @classmethod
    def from_dict(cls, raw: dict, source: str = "<dict>") -> GateConfig:
        """Check and read a config mapping; :class:`GateConfigError` names the file (``source``) and the key."""
        if not isinstance(raw, dict) or "version" not in raw:
            raise GateConfigError(f"{source}: needs a top-level `version` (bump it with every change)")
        thresholds: dict[str, dict[str, float]] = {}
        for metric, bound in _section(raw, "thresholds", source, "metric: {min: x} and/or {max: y}").items():
            _known(metric, f"{source}: thresholds.{metric}")
            if not isinstance(bound, dict) or not set(bound) or not set(bound) <= {"min", "max"}:
                raise GateConfigError(f"{source}: thresholds.{metric} must be a mapping with min and/or max "
                                      f"(got {bound!r})")
            thresholds[metric] = {k: _number(v, f"{source}: thresholds.{metric}.{k}") for k, v in bound.items()}
        regression: dict[str, float] = {}
        for metric, rule in _section(raw, "regression", source, "metric: {tolerance: x}").items():
            _known(metric, f"{source}: regression.{metric}")
            tol = rule.get("tolerance") if isinstance(rule, dict) else rule
            where = f"{source}: regression.{metric}.tolerance"
            if tol is None or _number(tol, where) < 0:
                raise GateConfigError(f"{where}: needs a tolerance >= 0 (got {tol!r})")
            regression[metric] = float(tol)
        return cls(str(raw["version"]), thresholds, regression, source)


def _section(raw: dict, key: str, source: str, shape: str) -> dict:
    value = raw.get(key) or {}
    if not isinstance(value, dict):
        raise GateConfigError(f"{source}: `{key}` must be a mapping ({shape}), got {type(value).__name__} {value!r}")
    return value


def _number(v: object, where: str) -> float:
    if isinstance(v, bool) or not isinstance(v, int | float | str):
        raise GateConfigError(f"{where}: must be a number, got {type(v).__name__} {v!r}")
    try:
        return float(v)
    except ValueError:
        raise GateConfigError(f"{where}: must be a number, got {v!r}") from None


def _known(metric: str, where: str) -> None:
    if metric not in KNOWN_METRICS:
        raise GateConfigError(f"{where}: unknown metric (known: {', '.join(sorted(KNOWN_METRICS))})")


# ------------------------------------------------------------------------------------------ decision
@dataclass(frozen=True)
class Check:
    kind: str                 # threshold | regression
    metric: str
    value: float
    bound: float
    passed: bool
    rule: str                 # human-readable rule, e.g. ">= 0.15" or ">= champion 0.61 - 0.01"

    def line(self) -> str:
        mark = "ok  " if self.passed else "FAIL"
        return f"  [{mark}] {self.kind:<10} {self.metric:<12} {self.value:.4f}  (needs {self.rule})"


@dataclass
class GateDecision:
    passed: bool
    checks: list[Check]
    config_version: str
    candidate_version: str | None = None
    champion_version: str | None = None        # champion before the decision
    notes: list[str] = field(default_factory=list)
    candidate_metrics: dict[str, float] = field(default_factory=dict)
    champion_metrics: dict[str, float] | None = None
    model_name: str = ""

    @property
    def reasons(self) -> list[str]:
        """Why it failed: one sentence per failed check (empty when it passed)."""
        return [f"{c.metric} {c.value:.4f} fails {c.kind} rule {c.rule}" for c in self.checks if not c.passed] + [
            n for n in self.notes if n.startswith("cannot ")
        ]

    @property
    def champion_after(self) -> str | None:
        return self.candidate_version if self.passed else self.champion_version

    def report(self) -> str:
        head = f"gate {'PASSED' if self.passed else 'FAILED'}: {self.model_name} version {self.candidate_version}"
        champ = (f"current champion: version {self.champion_version}" if self.champion_version
                 else "current champion: none")
        lines = [head, f"{champ}; gate config version {self.config_version}", *self.notes_lines(),
                 *(c.line() for c in self.checks)]
        if self.passed and self.champion_version == self.candidate_version:
            lines.append(f"-> version {self.candidate_version} stays '{CHAMPION}'")
        elif self.passed:
            lines.append(f"-> alias '{CHAMPION}' moves to version {self.candidate_version}"
                         + (f"; version {self.champion_version} keeps alias '{PREVIOUS}'" if self.champion_version
                            and self.champion_version != self.candidate_version else ""))
        else:
            lines.append("-> champion does not move. Reasons: " + "; ".join(self.reasons))
        return "\n".join(lines)

    def notes_lines(self) -> list[str]:
        return [f"  note: {n}" for n in self.notes]


def decide(candidate: dict[str, float], champion: dict[str, float] | None, config: GateConfig,
           candidate_version: str | None = None, champion_version: str | None = None,
           champion_error: str | None = None) -> GateDecision:
    """Apply the config's rules to the candidate's metrics (and the champion's, on the same rows)."""
    checks: list[Check] = []
    notes: list[str] = []
    for metric, bound in config.thresholds.items():
        value = float(candidate.get(metric, math.nan))
        if "min" in bound:
            checks.append(Check("threshold", metric, value, bound["min"], _ge(value, bound["min"]),
                                f">= {bound['min']:g}"))
        if "max" in bound:
            checks.append(Check("threshold", metric, value, bound["max"], _le(value, bound["max"]),
                                f"<= {bound['max']:g}"))
    if champion_version is None:
        notes.append("no champion yet: no regression check")
    elif champion_version == candidate_version:
        notes.append("the candidate is already the champion")
    elif champion is None:
        notes.append(f"cannot score champion version {champion_version} on the test set: {champion_error}")
    else:
        for metric, tol in config.regression.items():
            value = float(candidate.get(metric, math.nan))
            ref = float(champion.get(metric, math.nan))
            if metric in LOWER_IS_BETTER:
                bound = ref + tol
                checks.append(Check("regression", metric, value, bound, _le(value, bound),
                                    f"<= champion {ref:.4f} + {tol:g}"))
            else:
                bound = ref - tol
                checks.append(Check("regression", metric, value, bound, _ge(value, bound),
                                    f">= champion {ref:.4f} - {tol:g}"))
    passed = all(c.passed for c in checks) and not any(n.startswith("cannot ") for n in notes)
    return GateDecision(passed, checks, config.version, candidate_version, champion_version, notes,
                        dict(candidate), dict(champion) if champion else None)


def _ge(v: float, b: float) -> bool:
    return not math.isnan(v) and v >= b


def _le(v: float, b: float) -> bool:
    return not math.isnan(v) and v <= b


# ------------------------------------------------------------------------------------------ MLflow side
def champion_version(mlclient, name: str) -> str | None:
    try:
        return str(mlclient.get_model_version_by_alias(name, CHAMPION).version)
    except Exception:  # noqa: BLE001 - no such alias / model
        return None


def latest_version(mlclient, name: str) -> str:
    versions = mlclient.search_model_versions(f"name = '{name}'")
    if not versions:
        raise LookupError(f"registered model {name!r} has no versions: train one first")
    return str(max(int(v.version) for v in versions))


def score_version(settings: Settings, name: str, version: str, frame) -> dict[str, Any]:
    """Metrics of a registered version on a labelled frame (through its logged pyfunc, as serving uses it)."""
    import mlflow

    from shopstream.training import evaluate, tracking
    from shopstream.training.dataset import LABEL

    tracking.configure(settings)
    model = mlflow.pyfunc.load_model(f"models:/{name}/{version}")
    threshold = 0.5
    try:
        threshold = float(model.unwrap_python_model().threshold)
    except Exception:  # noqa: BLE001 - a model not logged by this code
        pass
    schema = model.metadata.get_input_schema()
    inputs = frame[schema.input_names()] if schema is not None else frame.drop(columns=[LABEL])
    proba = model.predict(inputs)
    return evaluate.classification_metrics(frame[LABEL].astype(int), proba, threshold)


def evaluate_gate(settings: Settings, version: str | None = None, config: GateConfig | None = None) -> GateDecision:
    """Score the candidate (default: the newest version) and the champion on the candidate's test set; decide."""
    import pandas as pd

    from shopstream.training import tracking

    name = settings.mlflow.registered_model
    mlclient = tracking.client(settings)
    config = config or GateConfig.load(settings.training.gate_config or None)
    version = str(version) if version else latest_version(mlclient, name)
    mv = mlclient.get_model_version(name, version)
    if not mv.run_id:
        raise LookupError(f"{name} version {version} has no training run, so there is no test set to gate it on")
    test = pd.read_parquet(tracking.fetch_split_dir(settings, mv.run_id) / "test.parquet")
    candidate = score_version(settings, name, version, test)
    champ = champion_version(mlclient, name)
    champ_metrics, champ_error = None, None
    if champ and champ != version:
        try:
            champ_metrics = score_version(settings, name, champ, test)
        except Exception as e:  # noqa: BLE001 - reported as a failing reason
            champ_error = f"{type(e).__name__}: {e}"[:300]
    decision = decide(candidate, champ_metrics, config, version, champ, champ_error)
    decision.model_name = name
    return decision


def apply_decision(settings: Settings, decision: GateDecision) -> None:
    """Move aliases on pass, tag the version either way, and record the decision in ``ml.model_runs``."""
    from shopstream.training import records, tracking

    name = decision.model_name or settings.mlflow.registered_model
    mlclient = tracking.client(settings)
    v = decision.candidate_version
    if decision.passed and decision.champion_version != v:
        if decision.champion_version:
            mlclient.set_registered_model_alias(name, PREVIOUS, decision.champion_version)
            mlclient.set_model_version_tag(name, decision.champion_version, "replaced_by", str(v))
        mlclient.set_registered_model_alias(name, CHAMPION, v)
    tags = {
        "gate.decision": "passed" if decision.passed else "failed",
        "gate.reasons": "; ".join(decision.reasons),
        "gate.config_version": decision.config_version,
        "gate.champion_before": decision.champion_version or "",
        "gate.decided_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "gate.report": decision.report()[:4900],
    }
    for k, val in tags.items():
        mlclient.set_model_version_tag(name, v, k, val)
    mv = mlclient.get_model_version(name, v)
    if mv.run_id:
        try:
            records.record_gate(settings, run_id=mv.run_id, passed=decision.passed, reasons=decision.reasons,
                                champion_version=decision.champion_after)
        except LookupError:
            split = tracking.load_json(settings, mv.run_id, "data/split.json")["summary"]
            m = decision.candidate_metrics
            records.record_training(settings, run_id=mv.run_id, model_name=name, model_version=v,
                                    n_train=split["train"]["rows"], n_test=int(m.get("n", 0)),
                                    positive_rate=m.get("positive_rate", 0.0), metrics=m)
            records.record_gate(settings, run_id=mv.run_id, passed=decision.passed, reasons=decision.reasons,
                                champion_version=decision.champion_after)


def run_gate(settings: Settings, version: str | None = None, config_path: str | None = None,
             apply: bool = True) -> GateDecision:
    """Evaluate and (unless ``apply`` is false) act on the decision. Does not raise on a failed gate."""
    config = GateConfig.load(config_path or settings.training.gate_config or None)
    decision = evaluate_gate(settings, version, config)
    if apply:
        apply_decision(settings, decision)
    return decision
