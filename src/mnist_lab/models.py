"""Classifiers: built from typed settings and trained; the MLP epoch by epoch with a metric history."""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
from sklearn.base import ClassifierMixin
from sklearn.ensemble import RandomForestClassifier
from sklearn.linear_model import SGDClassifier
from sklearn.metrics import accuracy_score, log_loss
from sklearn.model_selection import train_test_split
from sklearn.neural_network import MLPClassifier

from mnist_lab.settings import MLPSettings, ModelSettings, RandomForestSettings, SGDSettings

EpochCallback = Callable[[dict[str, float]], None]
HISTORY_METRICS = ("train_loss", "train_accuracy", "val_loss", "val_accuracy")


@dataclass
class TrainedModel:
    """A fitted classifier and, for models trained in epochs, one dict of metrics per epoch (epoch from 1)."""

    classifier: ClassifierMixin
    history: list[dict[str, float]] = field(default_factory=list)
    best_epoch: int | None = None


def build_classifier(settings: ModelSettings, seed: int) -> ClassifierMixin:
    """The unfitted scikit-learn estimator for `settings`."""
    if isinstance(settings, SGDSettings):
        return SGDClassifier(
            loss=settings.loss,
            alpha=settings.alpha,
            max_iter=settings.max_iter,
            tol=settings.tol,
            random_state=seed,
        )
    if isinstance(settings, RandomForestSettings):
        return RandomForestClassifier(
            n_estimators=settings.n_estimators,
            max_depth=settings.max_depth,
            min_samples_leaf=settings.min_samples_leaf,
            max_features=settings.max_features,
            n_jobs=-1,
            random_state=seed,
        )
    if isinstance(settings, MLPSettings):
        return MLPClassifier(
            hidden_layer_sizes=tuple(settings.hidden_layer_sizes),
            alpha=settings.alpha,
            learning_rate_init=settings.learning_rate_init,
            batch_size=settings.batch_size,
            solver="adam",
            shuffle=True,
            random_state=seed,
        )
    raise TypeError(f"no classifier for settings of type {type(settings).__name__}")


def train_classifier(
    settings: ModelSettings,
    features: np.ndarray,
    labels: np.ndarray,
    seed: int,
    on_epoch: EpochCallback | None = None,
) -> TrainedModel:
    """Fit the classifier for `settings` on (features, labels)."""
    if isinstance(settings, MLPSettings):
        return _train_mlp(settings, features, labels, seed, on_epoch)
    return TrainedModel(build_classifier(settings, seed).fit(features, labels))


def _train_mlp(
    settings: MLPSettings, features: np.ndarray, labels: np.ndarray, seed: int, on_epoch: EpochCallback | None
) -> TrainedModel:
    """Adam, one `partial_fit` pass per epoch over a stratified split; keep the epoch with the best
    validation loss and stop after `patience` epochs without improvement."""
    x_fit, x_val, y_fit, y_val = train_test_split(
        features, labels, test_size=settings.validation_fraction, random_state=seed, stratify=labels
    )
    classes = np.unique(labels)
    classifier = build_classifier(settings, seed)
    history: list[dict[str, float]] = []
    best: tuple[float, int, MLPClassifier] | None = None
    for epoch in range(1, settings.max_epochs + 1):
        classifier.partial_fit(x_fit, y_fit, classes=classes)
        val_proba = classifier.predict_proba(x_val)
        record = {
            "epoch": float(epoch),
            "train_loss": float(classifier.loss_),
            "train_accuracy": float(accuracy_score(y_fit, classifier.predict(x_fit))),
            "val_loss": float(log_loss(y_val, val_proba, labels=classes)),
            "val_accuracy": float(accuracy_score(y_val, classes[np.argmax(val_proba, axis=1)])),
        }
        history.append(record)
        if on_epoch is not None:
            on_epoch(record)
        if best is None or record["val_loss"] < best[0]:
            best = (record["val_loss"], epoch, copy.deepcopy(classifier))
        elif epoch - best[1] >= settings.patience:
            break
    assert best is not None  # max_epochs >= 1
    return TrainedModel(best[2], history, best_epoch=best[1])


def class_scores(classifier: ClassifierMixin, features: np.ndarray) -> np.ndarray:
    """Per-class scores for curves and AUC: probabilities where the model has them, else decision values."""
    if hasattr(classifier, "predict_proba"):
        return classifier.predict_proba(features)
    return classifier.decision_function(features)
