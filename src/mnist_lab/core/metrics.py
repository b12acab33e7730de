"""Evaluation metrics (pure): scalar metrics, per-class precision/recall, confusion matrix, binary curves."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
from sklearn.metrics import (
    accuracy_score,
    classification_report,
    confusion_matrix,
    f1_score,
    precision_recall_curve,
    precision_recall_fscore_support,
    roc_auc_score,
    roc_curve,
)


@dataclass
class Curve:
    """A curve as parallel arrays: x, y and the decision thresholds."""

    x: np.ndarray
    y: np.ndarray
    thresholds: np.ndarray


@dataclass
class Evaluation:
    """Everything computed on the test set for one model."""

    metrics: dict[str, float]
    labels: list[int]
    confusion: np.ndarray
    report: str
    curves: dict[str, Curve] = field(default_factory=dict)  # "roc" and "precision_recall"


def positive_scores(scores: np.ndarray) -> np.ndarray:
    """The positive class's score from (n,) decision values or (n, 2) probabilities."""
    return scores[:, 1] if scores.ndim == 2 else scores


def _one_vs_rest(
    y_true: np.ndarray, scores: np.ndarray, score_labels: Sequence[int]
) -> tuple[np.ndarray, np.ndarray]:
    """Micro-averaging: every (example, class) pair becomes one binary decision."""
    indicator = (np.asarray(y_true)[:, None] == np.asarray(score_labels)[None, :]).astype(np.int64)
    return indicator.ravel(), np.asarray(scores, dtype=np.float64).ravel()


def evaluate_predictions(
    y_true: np.ndarray, y_pred: np.ndarray, scores: np.ndarray, score_labels: Sequence[int], binary: bool
) -> Evaluation:
    """Metrics for predictions `y_pred` and `scores` (columns ordered as `score_labels`) against `y_true`.

    Binary tasks get precision, recall, F1 and ROC AUC of the positive class (label 1) and its curves;
    multiclass tasks get micro-averaged one-vs-rest ROC and precision-recall curves and `roc_auc_micro`.
    Macro averages and per-class metrics are over the classes the test set holds or the model predicts
    (as scikit-learn's): a class the model knows that is in neither has no precision or recall, and
    counting it as 0 would lower every macro average by a tenth. The confusion matrix has every class.
    """
    present = sorted(int(v) for v in np.union1d(y_true, y_pred))
    labels = sorted(int(v) for v in np.union1d(score_labels, present))
    precision, recall, _, _ = precision_recall_fscore_support(y_true, y_pred, labels=present, zero_division=0)
    metrics: dict[str, float] = {
        "accuracy": float(accuracy_score(y_true, y_pred)),
        "f1_macro": float(f1_score(y_true, y_pred, average="macro", labels=present, zero_division=0)),
        "precision_macro": float(np.mean(precision)),
        "recall_macro": float(np.mean(recall)),
    }
    for label, p, r in zip(present, precision, recall, strict=True):
        metrics[f"precision_class_{label}"] = float(p)
        metrics[f"recall_class_{label}"] = float(r)
    if binary:
        p_bin, r_bin, f_bin, _ = precision_recall_fscore_support(
            y_true, y_pred, average="binary", pos_label=1, zero_division=0
        )
        metrics.update(precision=float(p_bin), recall=float(r_bin), f1=float(f_bin))
        curve_truth, curve_scores = np.asarray(y_true), positive_scores(scores)
        auc_name = "roc_auc"
    else:
        curve_truth, curve_scores = _one_vs_rest(y_true, scores, score_labels)
        auc_name = "roc_auc_micro"
    metrics[auc_name] = float(roc_auc_score(curve_truth, curve_scores))
    fpr, tpr, roc_thresholds = roc_curve(curve_truth, curve_scores)
    pr_precision, pr_recall, pr_thresholds = precision_recall_curve(curve_truth, curve_scores)
    curves = {
        "roc": Curve(fpr, tpr, roc_thresholds),
        # precision_recall_curve has one threshold fewer than points: the last point (recall 0) has none
        "precision_recall": Curve(pr_recall, pr_precision, np.append(pr_thresholds, np.inf)),
    }
    return Evaluation(
        metrics=metrics,
        labels=labels,
        confusion=confusion_matrix(y_true, y_pred, labels=labels),
        report=classification_report(y_true, y_pred, labels=present, digits=4, zero_division=0),
        curves=curves,
    )


def thin_curve(curve: Curve, max_points: int = 500) -> Curve:
    """At most `max_points` evenly spaced points of `curve`, keeping both ends (for committed plots)."""
    if curve.x.size <= max_points:
        return curve
    keep = np.unique(np.linspace(0, curve.x.size - 1, max_points).round().astype(int))
    return Curve(curve.x[keep], curve.y[keep], curve.thresholds[keep])
