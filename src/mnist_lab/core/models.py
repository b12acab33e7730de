"""Classifiers: built from typed settings and trained; the MLP epoch by epoch with a metric history."""

from __future__ import annotations

import contextlib
import contextvars
import copy
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.ensemble import RandomForestClassifier
from sklearn.linear_model import SGDClassifier
from sklearn.metrics import accuracy_score, log_loss
from sklearn.model_selection import GridSearchCV, StratifiedKFold, train_test_split
from sklearn.neural_network import MLPClassifier

from mnist_lab.core.errors import TrainingDiverged
from mnist_lab.core.settings import (
    CNNSettings,
    MLPSettings,
    ModelSettings,
    RandomForestSettings,
    SearchSettings,
    SGDSettings,
)

# Called as training advances: (units done so far: epochs or trees, that unit's metrics if it has any)
ProgressCallback = Callable[[int, dict[str, float]], None]
# (fits finished, fits in all) as a grid search's cross-validation fits finish
SearchProgressCallback = Callable[[int, int], None]
FOREST_CHUNKS = 10


@dataclass(frozen=True)
class SearchCandidate:
    """One combination of a grid search: its settings values and its cross-validation scores."""

    params: dict[str, object]
    mean_score: float
    std_score: float
    rank: int
    fold_scores: list[float]
    mean_fit_seconds: float


@dataclass(frozen=True)
class SearchResult:
    scoring: str
    cv: int
    candidates: list[SearchCandidate]
    best_index: int

    @property
    def best(self) -> SearchCandidate:
        return self.candidates[self.best_index]


@dataclass
class TrainedModel:
    """A fitted classifier and, for models trained in epochs, one dict of metrics per epoch (epoch from 1);
    for a grid search, every candidate's scores (the classifier is the best one refitted on all the data)."""

    classifier: ClassifierMixin
    history: list[dict[str, float]] = field(default_factory=list)
    best_epoch: int | None = None
    search: SearchResult | None = None


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


def takes_images(settings: ModelSettings) -> bool:
    """Whether the model trains on the images' raw pixels (a CNN) rather than on the featurizer's output."""
    return isinstance(settings, CNNSettings)


def train_classifier(
    settings: ModelSettings,
    features: np.ndarray,
    labels: np.ndarray,
    seed: int,
    on_progress: ProgressCallback | None = None,
    image_shape: tuple[int, int] | None = None,
    search_jobs: int = -1,
    on_search_fit: SearchProgressCallback | None = None,
) -> TrainedModel:
    """Fit the classifier for `settings` on (features, labels); with `settings.search`, grid-search first
    (`on_search_fit` hears of its fits as they finish, `on_progress` of the refit of the best candidate
    only), its candidates' fits in `search_jobs` parallel processes (joblib's; -1: one per core; under a
    joblib backend context such as the Dask cluster's, that backend's workers). The results do not depend
    on it: every fit is seeded and limits BLAS to one thread. A CNN (`takes_images`) takes flat raw 0-255
    pixels as `features` and needs the `image_shape` (rows, cols) they came from."""
    if settings.search is not None:
        return _grid_search(
            settings, features, labels, seed, on_progress, image_shape, search_jobs, on_search_fit
        )
    if isinstance(settings, CNNSettings):
        from mnist_lab.core.cnn import train_cnn

        if image_shape is None:
            raise TypeError("a CNN needs the image_shape of its flat pixels")
        network = train_cnn(settings, features, labels, image_shape, seed, on_progress)
        return TrainedModel(network.classifier, network.history, best_epoch=network.best_epoch)
    if isinstance(settings, MLPSettings):
        return _train_mlp(settings, features, labels, seed, on_progress)
    if isinstance(settings, RandomForestSettings):
        return _train_forest(settings, features, labels, seed, on_progress)
    return TrainedModel(build_classifier(settings, seed).fit(features, labels))


class SettingsClassifier(ClassifierMixin, BaseEstimator):
    """A scikit-learn estimator whose parameters are this project's model settings, trained exactly as the
    pipeline trains them (the forest in chunks, the MLP epoch by epoch with early stopping), so that
    `GridSearchCV` searches the model the pipeline would build."""

    def __init__(
        self,
        settings: ModelSettings | None = None,
        seed: int = 0,
        image_shape: tuple[int, int] | None = None,
    ) -> None:
        self.settings = settings
        self.seed = seed
        self.image_shape = image_shape

    def set_params(self, **params: object) -> SettingsClassifier:
        own = {key: value for key, value in params.items() if key not in ("settings", "seed", "image_shape")}
        if "settings" in params:
            self.settings = params["settings"]  # type: ignore[assignment]
        if "seed" in params:
            self.seed = int(params["seed"])  # type: ignore[call-overload]
        if "image_shape" in params:
            self.image_shape = params["image_shape"]  # type: ignore[assignment]
        if own:
            assert self.settings is not None
            self.settings = self.settings.without_search(**own)  # validated like params.yaml
        return self

    def fit(self, features: np.ndarray, labels: np.ndarray) -> SettingsClassifier:
        from threadpoolctl import threadpool_limits

        assert self.settings is not None
        # one BLAS thread, as the stages train (a BLAS reduction's order depends on its thread count), so
        # a candidate scores the same in this process, in joblib's workers and on a cluster's
        with threadpool_limits(limits=1, user_api="blas"):
            self.trained_ = train_classifier(
                self.settings, features, labels, self.seed, image_shape=self.image_shape
            )
        self.classes_ = self.trained_.classifier.classes_
        return self

    def predict(self, features: np.ndarray) -> np.ndarray:
        return self.trained_.classifier.predict(features)


def _grid_search(
    settings: ModelSettings,
    features: np.ndarray,
    labels: np.ndarray,
    seed: int,
    on_progress: ProgressCallback | None,
    image_shape: tuple[int, int] | None = None,
    jobs: int = -1,
    on_fit: SearchProgressCallback | None = None,
) -> TrainedModel:
    """`GridSearchCV` over `settings.search.grid` (stratified, shuffled folds seeded by `seed`), its fits in
    `jobs` processes; the best candidate is refitted on all of (features, labels) with the pipeline's own
    training, in this process."""
    search: SearchSettings = settings.search  # type: ignore[assignment]
    fits = len(search.candidates()) * search.cv
    with _reporting_fits(on_fit, fits):
        grid = GridSearchCV(
            SettingsClassifier(settings.without_search(), seed, image_shape),
            {key: list(values) for key, values in search.grid.items()},
            scoring=search.scoring,
            cv=StratifiedKFold(search.cv, shuffle=True, random_state=seed),
            refit=False,
            error_score="raise",
            n_jobs=jobs,
        ).fit(features, labels)
    results = grid.cv_results_
    folds = [results[f"split{i}_test_score"] for i in range(search.cv)]
    candidates = [
        SearchCandidate(
            params={key: _plain(value) for key, value in params.items()},
            mean_score=float(results["mean_test_score"][index]),
            std_score=float(results["std_test_score"][index]),
            rank=int(results["rank_test_score"][index]),
            fold_scores=[float(fold[index]) for fold in folds],
            mean_fit_seconds=float(results["mean_fit_time"][index]),
        )
        for index, params in enumerate(results["params"])
    ]
    best_index = int(grid.best_index_)
    best_settings = settings.without_search(**candidates[best_index].params)
    trained = train_classifier(best_settings, features, labels, seed, on_progress, image_shape)
    trained.search = SearchResult(search.scoring, search.cv, candidates, best_index)
    return trained


# the callback and fit count of the grid search running in this context (thread), for _ReportingParallel
_SEARCH_PROGRESS: contextvars.ContextVar[tuple[SearchProgressCallback, int] | None] = contextvars.ContextVar(
    "search_progress", default=None
)


@contextlib.contextmanager
def _reporting_fits(on_fit: SearchProgressCallback | None, fits: int) -> Iterator[None]:
    """`on_fit(finished, fits)` each time joblib hears that a batch of the search's fits finished (in this
    process, wherever the fits run: its own workers or a Dask cluster's). GridSearchCV runs its fits
    through scikit-learn's `Parallel`, which joblib tells of every finished batch (`print_progress`, a
    no-op unless verbose). GridSearchCV's module gets, once, a `Parallel` that passes that on to the
    callback of the search that made it (a context variable, read when it is made, in the searching
    thread: searches in several threads each hear of their own fits); without a callback it is
    scikit-learn's. Nothing else is touched (a forest's own `Parallel` is another module's name), and where
    scikit-learn has no such hook the search runs without progress."""
    if on_fit is None or not _install_reporting_parallel():
        yield
        return
    token = _SEARCH_PROGRESS.set((on_fit, fits))
    try:
        yield
    finally:
        _SEARCH_PROGRESS.reset(token)


_INSTALL_LOCK = threading.Lock()


def _install_reporting_parallel() -> bool:
    """Make GridSearchCV's `Parallel` one that reports to the searching context's callback (once); False
    where this scikit-learn has no such hook."""
    from sklearn.model_selection import _search

    with _INSTALL_LOCK:
        base = getattr(_search, "Parallel", None)
        if base is None or not callable(getattr(base, "print_progress", None)):
            return False
        if getattr(base, "_mnist_lab_reports", False):
            return True

        class ReportingParallel(base):  # type: ignore[misc, valid-type]
            _mnist_lab_reports = True

            def __init__(self, *args: Any, **kwargs: Any) -> None:
                super().__init__(*args, **kwargs)
                self._progress = _SEARCH_PROGRESS.get()  # the search that makes it, in its thread

            def print_progress(self) -> None:
                super().print_progress()
                if self._progress is not None:
                    report, fits = self._progress
                    report(min(int(self.n_completed_tasks), fits), fits)

        _search.Parallel = ReportingParallel
        return True


def _plain(value: object) -> object:
    return value.item() if isinstance(value, np.generic) else value


def progress_units(settings: ModelSettings) -> int | None:
    """How many units `on_progress` counts to for `settings` (None: no progress reported)."""
    if isinstance(settings, MLPSettings):
        return settings.max_epochs
    if isinstance(settings, RandomForestSettings):
        return settings.n_estimators
    return None


def _train_forest(
    settings: RandomForestSettings,
    features: np.ndarray,
    labels: np.ndarray,
    seed: int,
    on_progress: ProgressCallback | None,
) -> TrainedModel:
    """Grow the forest in chunks (`warm_start`), reporting progress; scikit-learn draws the trees' seeds so
    that the result is identical to growing all of them at once."""
    forest = build_classifier(settings, seed)
    step = max(1, -(-settings.n_estimators // FOREST_CHUNKS))
    for grown in range(step, settings.n_estimators + step, step):
        forest.set_params(n_estimators=min(grown, settings.n_estimators), warm_start=True)
        forest.fit(features, labels)
        if on_progress is not None:
            on_progress(forest.n_estimators, {})
    return TrainedModel(forest.set_params(warm_start=False))


def _train_mlp(
    settings: MLPSettings,
    features: np.ndarray,
    labels: np.ndarray,
    seed: int,
    on_progress: ProgressCallback | None,
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
        try:
            # a run-away learning rate overflows on its way to the error below: said there, once
            with np.errstate(over="ignore", invalid="ignore"):
                classifier.partial_fit(x_fit, y_fit, classes=classes)
        except ValueError as exc:  # "Solver produced non-finite parameter weights" (it blames the input)
            if "non-finite" not in str(exc):
                raise
            if best is not None:
                break  # it ran away after a good epoch: that one is kept, as early stopping keeps it
            raise TrainingDiverged(
                f"training diverged at epoch {epoch}: the solver's weights are no longer finite numbers, "
                "before any epoch could be kept; lower learning_rate_init "
                f"(now {settings.learning_rate_init:g})"
            ) from None
        val_proba = classifier.predict_proba(x_val)
        record = {
            "epoch": float(epoch),
            "train_loss": float(classifier.loss_),
            "train_accuracy": float(accuracy_score(y_fit, classifier.predict(x_fit))),
            "val_loss": float(log_loss(y_val, val_proba, labels=classes)),
            "val_accuracy": float(accuracy_score(y_val, classes[np.argmax(val_proba, axis=1)])),
        }
        history.append(record)
        if on_progress is not None:
            on_progress(epoch, record)
        if best is None or record["val_loss"] < best[0]:
            best = (record["val_loss"], epoch, copy.deepcopy(classifier))
        elif epoch - best[1] >= settings.patience:
            break
    assert best is not None  # max_epochs >= 1
    return TrainedModel(best[2], history, best_epoch=best[1])


def single_threaded_prediction(estimator: Any) -> Any:
    """`estimator` (or each step of a pipeline) set to predict on one thread, and returned. A forest with
    `n_jobs=-1` sums its trees' probabilities in whatever order its threads finish, so they differ in the
    last bit from one call to the next (29 of 30 calls on 2 cores), and so can a label they tie on; one
    thread sums in tree order, the same every time. Training keeps all cores (its trees are seeded)."""
    for step in [estimator, *getattr(estimator, "named_steps", {}).values()]:
        if hasattr(step, "get_params") and "n_jobs" in step.get_params(deep=False):  # not the CNN's wrapper
            step.set_params(n_jobs=1)
    return estimator


def class_scores(classifier: ClassifierMixin, features: np.ndarray) -> np.ndarray:
    """Per-class scores for curves and AUC: probabilities where the model has them, else decision values."""
    if hasattr(classifier, "predict_proba"):
        return classifier.predict_proba(features)
    return classifier.decision_function(features)
