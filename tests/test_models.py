import numpy as np
import pytest

from mnist_lab.data import Dataset, flatten_images, task_labels
from mnist_lab.features import scale_pixels
from mnist_lab.models import build_classifier, class_scores, train_classifier
from mnist_lab.results import HISTORY_METRICS
from mnist_lab.settings import MLPSettings, RandomForestSettings, SGDSettings

SETTINGS = {
    "sgd": SGDSettings(type="sgd"),
    "random_forest": RandomForestSettings(type="random_forest", n_estimators=30),
    "mlp": MLPSettings(type="mlp", max_epochs=40),
}


def features(dataset: Dataset) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    return (
        scale_pixels(flatten_images(dataset.train_images)),
        dataset.train_labels,
        scale_pixels(flatten_images(dataset.test_images)),
        dataset.test_labels,
    )


@pytest.mark.parametrize("name", SETTINGS)
def test_every_model_beats_the_majority_baseline_by_far(name: str, digits: Dataset) -> None:
    x_train, y_train, x_test, y_test = features(digits)
    trained = train_classifier(SETTINGS[name], x_train, y_train, seed=0)
    accuracy = float(np.mean(trained.classifier.predict(x_test) == y_test))
    majority = np.bincount(y_test).max() / y_test.size
    assert accuracy > 0.85 > 3 * majority


@pytest.mark.parametrize("name", SETTINGS)
def test_training_is_deterministic_given_the_seed(name: str, small_digits: Dataset) -> None:
    x_train, y_train, x_test, _ = features(small_digits)
    first = train_classifier(SETTINGS[name], x_train, y_train, seed=7)
    second = train_classifier(SETTINGS[name], x_train, y_train, seed=7)
    assert np.array_equal(class_scores(first.classifier, x_test), class_scores(second.classifier, x_test))
    assert first.history == second.history


def test_mlp_history_has_one_row_per_epoch_and_keeps_the_best(small_digits: Dataset) -> None:
    x_train, y_train, _, _ = features(small_digits)
    epochs = []
    trained = train_classifier(
        MLPSettings(type="mlp", max_epochs=8),
        x_train,
        y_train,
        seed=0,
        on_progress=lambda n, r: epochs.append(r),
    )
    assert [row["epoch"] for row in trained.history] == list(range(1, 9))
    assert epochs == trained.history
    assert set(trained.history[0]) == {"epoch", *HISTORY_METRICS}
    losses = [row["val_loss"] for row in trained.history]
    assert trained.best_epoch == int(np.argmin(losses)) + 1
    assert trained.history[-1]["train_loss"] < trained.history[0]["train_loss"]


def test_mlp_stops_early_after_patience(small_digits: Dataset) -> None:
    x_train, y_train, _, _ = features(small_digits)
    settings = MLPSettings(type="mlp", max_epochs=300, patience=3, learning_rate_init=0.05)
    trained = train_classifier(settings, x_train, y_train, seed=0)
    assert len(trained.history) < 300
    assert len(trained.history) == trained.best_epoch + 3


def test_binary_five_detector(digits: Dataset) -> None:
    x_train, y_train, x_test, y_test = features(digits)
    y_train, y_test = task_labels(y_train, "binary", 5), task_labels(y_test, "binary", 5)
    trained = train_classifier(SETTINGS["sgd"], x_train, y_train, seed=0)
    scores = class_scores(trained.classifier, x_test)
    assert scores.shape == (y_test.size,)  # hinge SGD: decision values, no probabilities
    assert float(np.mean(trained.classifier.predict(x_test) == y_test)) > 0.95


def test_settings_map_onto_estimators() -> None:
    forest = build_classifier(RandomForestSettings(type="random_forest", n_estimators=7, max_depth=3), seed=5)
    assert (forest.n_estimators, forest.max_depth, forest.random_state) == (7, 3, 5)
    mlp = build_classifier(MLPSettings(type="mlp", hidden_layer_sizes=[32, 16]), seed=1)
    assert mlp.hidden_layer_sizes == (32, 16)


def test_forest_grown_in_chunks_with_progress_equals_one_shot(small_digits: Dataset) -> None:
    from sklearn.ensemble import RandomForestClassifier

    x_train, y_train, x_test, _ = features(small_digits)
    settings = RandomForestSettings(type="random_forest", n_estimators=25)
    seen = []
    trained = train_classifier(settings, x_train, y_train, seed=3, on_progress=lambda n, r: seen.append(n))
    assert seen == [3, 6, 9, 12, 15, 18, 21, 24, 25]
    one_shot = RandomForestClassifier(n_estimators=25, random_state=3, n_jobs=-1).fit(x_train, y_train)
    assert np.array_equal(trained.classifier.predict_proba(x_test), one_shot.predict_proba(x_test))
    assert not trained.classifier.warm_start
