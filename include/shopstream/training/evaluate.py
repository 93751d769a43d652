"""Test-set metrics, the decision threshold, and the plots logged with a model."""

from __future__ import annotations

from pathlib import Path

import numpy as np

METRICS = ("roc_auc", "pr_auc", "log_loss", "brier", "ece", "f1", "precision", "recall", "positive_rate",
           "pr_auc_lift")


def best_f1_threshold(y_true, proba) -> float:
    """The probability threshold with the highest F1 (chosen on validation rows, applied to the test)."""
    from sklearn.metrics import precision_recall_curve

    precision, recall, thresholds = precision_recall_curve(np.asarray(y_true), np.asarray(proba))
    p, r = precision[:-1], recall[:-1]
    denom = p + r
    f1 = np.divide(2 * p * r, denom, out=np.zeros_like(denom), where=denom > 0)
    return float(thresholds[int(np.argmax(f1))]) if len(thresholds) else 0.5


def classification_metrics(y_true, proba, threshold: float) -> dict[str, float]:
    """ROC-AUC, PR-AUC (average precision), log loss, Brier score, expected calibration error (ECE, see
    :func:`shopstream.training.calibration.expected_calibration_error`), and F1/precision/recall at ``threshold``."""
    from sklearn.metrics import (
        average_precision_score,
        brier_score_loss,
        f1_score,
        log_loss,
        precision_score,
        recall_score,
        roc_auc_score,
    )

    from shopstream.training.calibration import expected_calibration_error

    y = np.asarray(y_true).astype(int)
    p = np.clip(np.asarray(proba, dtype="float64"), 1e-7, 1 - 1e-7)
    pred = (p >= threshold).astype(int)
    positive_rate = float(y.mean())
    pr_auc = float(average_precision_score(y, p))
    return {
        "roc_auc": float(roc_auc_score(y, p)),
        "pr_auc": pr_auc,
        "log_loss": float(log_loss(y, p, labels=[0, 1])),
        "brier": float(brier_score_loss(y, p)),
        "ece": expected_calibration_error(y, p),
        "f1": float(f1_score(y, pred, zero_division=0)),
        "precision": float(precision_score(y, pred, zero_division=0)),
        "recall": float(recall_score(y, pred, zero_division=0)),
        "positive_rate": positive_rate,
        "pr_auc_lift": pr_auc / positive_rate if positive_rate > 0 else float("nan"),
        "threshold": float(threshold),
        "n": int(len(y)),
    }


def plot_files(y_true, proba, importance: dict[str, float], directory: Path, title: str = "",
               references: dict[str, object] | None = None) -> list[Path]:
    """ROC and PR curves, a reliability (calibration) curve and feature importance (gain) as PNG files.

    ``references``: other probabilities of the same rows (e.g. the raw booster, the generator's oracle), drawn
    beside the model in the reliability curve and in the ROC and PR curves.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from sklearn.metrics import precision_recall_curve, roc_curve

    from shopstream.training.calibration import expected_calibration_error, reliability

    directory.mkdir(parents=True, exist_ok=True)
    y = np.asarray(y_true).astype(int)
    p = np.asarray(proba, dtype="float64")
    out = []

    refs = {name: np.asarray(q, dtype="float64") for name, q in (references or {}).items()}
    fig, ax = plt.subplots(figsize=(5, 5))
    fpr, tpr, _ = roc_curve(y, p)
    ax.plot(fpr, tpr, label="model")
    for name, q in refs.items():
        f, t, _ = roc_curve(y, q)
        ax.plot(f, t, label=name, linewidth=1)
    ax.plot([0, 1], [0, 1], "--", color="grey", label="chance")
    ax.set(xlabel="false positive rate", ylabel="true positive rate", title=f"ROC {title}".strip())
    ax.legend(loc="lower right")
    out.append(_save(fig, directory / "roc_curve.png"))

    fig, ax = plt.subplots(figsize=(5, 5))
    precision, recall, _ = precision_recall_curve(y, p)
    ax.plot(recall, precision, label="model")
    for name, q in refs.items():
        pr, rc, _ = precision_recall_curve(y, q)
        ax.plot(rc, pr, label=name, linewidth=1)
    ax.axhline(y.mean(), linestyle="--", color="grey", label=f"positive rate {y.mean():.3f}")
    ax.set(xlabel="recall", ylabel="precision", title=f"Precision-recall {title}".strip(), ylim=(0, 1.02))
    ax.legend(loc="upper right")
    out.append(_save(fig, directory / "pr_curve.png"))

    fig, ax = plt.subplots(figsize=(5, 5))
    mean_pred, frac_pos, _ = reliability(y, p, bins=15)
    ax.plot(mean_pred, frac_pos, "o-", label=f"model (ECE {expected_calibration_error(y, p):.3f})")
    for name, q in refs.items():
        mp, fp, _ = reliability(y, q, bins=15)
        ax.plot(mp, fp, ".--", label=f"{name} (ECE {expected_calibration_error(y, q):.3f})", linewidth=1)
    ax.plot([0, 1], [0, 1], "--", color="grey", label="perfectly calibrated")
    ax.set(xlabel="mean predicted probability (equal-count bins)", ylabel="observed purchase rate",
           title=f"Reliability {title}".strip(), xlim=(0, 1), ylim=(0, 1))
    ax.legend(loc="upper left", fontsize=7)
    out.append(_save(fig, directory / "calibration.png"))

    fig, ax = plt.subplots(figsize=(6, max(3, 0.3 * len(importance))))
    items = sorted(importance.items(), key=lambda kv: kv[1])
    ax.barh([k for k, _ in items], [v for _, v in items])
    ax.set(xlabel="total gain", title=f"Feature importance {title}".strip())
    out.append(_save(fig, directory / "feature_importance.png"))
    return out


def _save(fig, path: Path) -> Path:
    import matplotlib.pyplot as plt

    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path
