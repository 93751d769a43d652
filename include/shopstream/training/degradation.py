"""Degradation check: the champion scored on the newest labelled rows, and whether a run should retrain.

The champion's *registered* PR-AUC is the test PR-AUC of its training run. If its PR-AUC on the newest
``SHOPSTREAM_TRAINING__DEGRADATION_DAYS`` of ``ml.cart_features`` is more than
``SHOPSTREAM_TRAINING__DEGRADATION_SHARE`` below that, it has degraded and the run retrains (the gate still
decides whether the new version replaces it).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from datetime import UTC, datetime

from shopstream.settings import Settings


@dataclass
class DegradationReport:
    champion_version: str | None
    registered_pr_auc: float | None = None
    current_pr_auc: float | None = None
    rows: int = 0
    positives: int = 0
    since: str | None = None
    degraded: bool | None = None          # None: could not tell (no champion, too few rows, one class)
    champion_age_hours: float | None = None
    message: str = ""

    def to_dict(self) -> dict:
        return asdict(self)


def assess(registered: float, current: float, share: float) -> tuple[bool, str]:
    """Degraded when ``current`` is more than ``share`` (relative) below ``registered``."""
    floor = registered * (1 - share)
    drop = (registered - current) / registered if registered > 0 else 0.0
    if current < floor:
        return True, (f"champion PR-AUC on the newest data is {current:.4f}, {drop:.1%} below its registered "
                      f"{registered:.4f} (allowed: {share:.0%}, floor {floor:.4f})")
    return False, (f"champion PR-AUC on the newest data is {current:.4f} vs registered {registered:.4f} "
                   f"({-drop:+.1%}; floor {floor:.4f})")


def retrain_decision(report: DegradationReport, refresh_hours: float, force: bool) -> tuple[bool, str]:
    """Whether this run trains a new model, and why (pure: the DAG's short-circuit uses it)."""
    if force:
        return True, "requested (force)"
    if report.champion_version is None:
        return True, "no champion yet"
    if report.degraded:
        return True, f"champion version {report.champion_version} degraded: {report.message}"
    age = report.champion_age_hours
    if age is None or age >= refresh_hours:
        return True, (f"scheduled refresh: champion version {report.champion_version} is "
                      f"{'of unknown age' if age is None else f'{age:.1f} h old'} (refresh after {refresh_hours:g} h)")
    return False, (f"champion version {report.champion_version} is healthy ({report.message or 'not checked'}) "
                   f"and {age:.1f} h old (refresh after {refresh_hours:g} h): no retraining")


def check_degradation(settings: Settings) -> DegradationReport:
    """Score the champion on the newest labelled rows of ``ml.cart_features``."""
    import psycopg

    from shopstream.training import tracking
    from shopstream.training.dataset import LABEL, load_window
    from shopstream.training.gate import champion_version, score_version
    from shopstream.warehouse.ddl import ensure_schemas

    name = settings.mlflow.registered_model
    mlclient = tracking.client(settings)
    champ = champion_version(mlclient, name)
    if champ is None:
        return DegradationReport(None, message=f"{name} has no champion yet")
    mv = mlclient.get_model_version(name, champ)
    age = (datetime.now(UTC).timestamp() * 1000 - int(mv.creation_timestamp)) / 3_600_000
    registered = mlclient.get_run(mv.run_id).data.metrics.get("test_pr_auc") if mv.run_id else None
    report = DegradationReport(champ, registered_pr_auc=registered, champion_age_hours=age)
    with psycopg.connect(settings.postgres.dsn()) as conn:
        ensure_schemas(conn, only=("ml",))
        df = load_window(conn, settings.training.degradation_days)
    report.rows = len(df)
    if len(df):
        report.positives = int(df[LABEL].sum())
        report.since = df["event_time"].min().isoformat()
    if registered is None:
        report.message = f"champion version {champ} has no registered test_pr_auc"
        return report
    if report.rows < settings.training.min_class_rows * 2 or report.positives in (0, report.rows):
        report.message = (f"cannot check: the newest {settings.training.degradation_days:g} days hold {report.rows} rows "
                          f"({report.positives} positive)")
        return report
    current = score_version(settings, name, champ, df)
    report.current_pr_auc = current["pr_auc"]
    report.degraded, report.message = assess(registered, current["pr_auc"], settings.training.degradation_share)
    return report
