"""``ml.model_runs``: one row per training run (metrics, registered version, gate decision), for dashboards.

Keyed by the MLflow training run id; every write is an upsert, so retries and re-runs never add rows.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import psycopg

from shopstream.settings import Settings

METRIC_COLUMNS = ("roc_auc", "pr_auc", "log_loss", "brier", "f1", "threshold")


def _connect(settings: Settings) -> psycopg.Connection:
    from shopstream.warehouse.ddl import ensure_schemas

    conn = psycopg.connect(settings.postgres.dsn())
    ensure_schemas(conn, only=("ml",))
    return conn


def record_training(settings: Settings, *, run_id: str, model_name: str, model_version: str | None,
                    n_train: int, n_test: int, positive_rate: float, metrics: dict[str, Any],
                    trained_at: datetime | None = None) -> None:
    """Upsert a run's metrics and version (its gate columns are left as they are)."""
    row = {
        "run_id": run_id, "model_name": model_name, "model_version": model_version,
        "trained_at": trained_at or datetime.now(UTC), "n_train": int(n_train), "n_test": int(n_test),
        "positive_rate": float(positive_rate), **{c: _num(metrics.get(c)) for c in METRIC_COLUMNS},
    }
    cols = list(row)
    updates = ", ".join(f"{c} = excluded.{c}" for c in cols if c not in ("run_id", "trained_at"))
    with _connect(settings) as conn, conn.transaction():
        conn.execute(
            f"insert into ml.model_runs ({', '.join(cols)}) values ({', '.join('%(' + c + ')s' for c in cols)}) "
            f"on conflict (run_id) do update set {updates}",
            row,
        )


def record_gate(settings: Settings, *, run_id: str, passed: bool, reasons: list[str],
                champion_version: str | None) -> None:
    """Set the gate columns of a run's row (the row must exist: :func:`record_training` first)."""
    with _connect(settings) as conn, conn.transaction():
        cur = conn.execute(
            "update ml.model_runs set gate_passed = %s, gate_reasons = %s, champion_version = %s where run_id = %s",
            (passed, "; ".join(reasons) or None, champion_version, run_id),
        )
        if cur.rowcount != 1:
            raise LookupError(f"ml.model_runs has no row for run {run_id}: record the training first")


def model_runs(settings: Settings, model_name: str | None = None) -> list[dict[str, Any]]:
    """Rows of ``ml.model_runs`` (newest first), optionally of one model."""
    with _connect(settings) as conn:
        cur = conn.execute(
            "select * from ml.model_runs where %(m)s::text is null or model_name = %(m)s order by trained_at desc",
            {"m": model_name},
        )
        names = [d.name for d in cur.description]
        return [dict(zip(names, r, strict=True)) for r in cur.fetchall()]


def _num(v: Any) -> float | None:
    if v is None:
        return None
    f = float(v)
    return None if f != f else f  # NaN -> NULL
