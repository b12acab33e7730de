import numpy as np
import pytest

from mnist_lab.core.data import Dataset, flatten_images, task_labels
from mnist_lab.core.features import scale_pixels
from mnist_lab.core.models import (
    SettingsClassifier,
    TrainedModel,
    build_classifier,
    class_scores,
    single_threaded_prediction,
    train_classifier,
)
from mnist_lab.core.results import HISTORY_METRICS
from mnist_lab.core.settings import MLPSettings, RandomForestSettings, SGDSettings

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


def test_an_mlp_that_diverges_names_its_learning_rate(small_digits: Dataset) -> None:
    """scikit-learn says "Solver produced non-finite parameter weights. The input data may contain large
    values": the cause is the learning rate, and the message names it."""
    import warnings

    from mnist_lab.core.errors import TrainingDiverged

    x_train, y_train, _, _ = features(small_digits)
    with warnings.catch_warnings(), pytest.raises(TrainingDiverged) as diverged:
        warnings.simplefilter("ignore", RuntimeWarning)  # numpy's overflow warnings on the way there
        train_classifier(
            MLPSettings(type="mlp", max_epochs=3, learning_rate_init=1e30), x_train, y_train, seed=0
        )
    assert str(diverged.value) == (
        "training diverged at epoch 1: the solver's weights are no longer finite numbers, before any epoch "
        "could be kept; lower learning_rate_init (now 1e+30)"
    )


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


def test_grid_search_refits_the_best_candidate_with_the_pipelines_training(small_digits: Dataset) -> None:
    from sklearn.base import clone
    from sklearn.model_selection import GridSearchCV, StratifiedKFold

    x_train, y_train, x_test, _ = features(small_digits)
    settings = SGDSettings.model_validate(
        {"type": "sgd", "search": {"grid": {"alpha": [1e-4, 1.0], "loss": ["hinge", "log_loss"]}, "cv": 3}}
    )
    trained = train_classifier(settings, x_train, y_train, seed=3)
    search = trained.search
    assert search is not None and (search.scoring, search.cv) == ("accuracy", 3)
    assert [c.params for c in search.candidates] == settings.search.candidates()
    assert all(
        len(c.fold_scores) == 3 and c.mean_score == pytest.approx(np.mean(c.fold_scores))
        for c in search.candidates
    )
    assert search.best.rank == 1 and search.best.mean_score == max(c.mean_score for c in search.candidates)
    assert search.best.params["alpha"] == 1e-4  # alpha 1.0 regularises an SGD model into uselessness
    # scikit-learn's own GridSearchCV over its own SGDClassifier (not this package's wrapper) gives the same
    # fold scores and the same best candidate; the refit is the plain training
    from sklearn.linear_model import SGDClassifier

    reference = GridSearchCV(
        SGDClassifier(max_iter=1000, tol=1e-3, random_state=3),
        settings.search.grid,
        cv=StratifiedKFold(3, shuffle=True, random_state=3),
    ).fit(x_train, y_train)
    assert reference.best_params_ == search.best.params
    for index, candidate in enumerate(search.candidates):
        assert reference.cv_results_["params"][index] == candidate.params
        theirs = [reference.cv_results_[f"split{fold}_test_score"][index] for fold in range(3)]
        assert candidate.fold_scores == pytest.approx(theirs, abs=1e-12)
    direct = train_classifier(settings.without_search(**search.best.params), x_train, y_train, seed=3)
    assert np.array_equal(class_scores(trained.classifier, x_test), class_scores(direct.classifier, x_test))
    assert clone(SettingsClassifier(settings, 3)).get_params()["seed"] == 3


@pytest.mark.parametrize(
    "model",
    [
        {
            "type": "mlp",
            "hidden_layer_sizes": [16],
            "max_epochs": 5,
            "search": {"grid": {"alpha": [1e-4, 1e-2]}},
        },
        {"type": "random_forest", "n_estimators": 5, "search": {"grid": {"max_depth": [3, 8]}}},
    ],
    ids=["mlp", "random_forest"],
)
def test_a_search_in_parallel_processes_scores_every_fold_as_one_in_this_process(
    small_digits: Dataset, model: dict
) -> None:
    """The candidates' fits in 2 joblib processes (what a stage does on a 2-core machine: one per core):
    the same fold scores to the bit, the same best candidate, the same refitted model."""
    from mnist_lab.core.settings import RandomForestSettings

    x_train, y_train, x_test, _ = features(small_digits)
    kind = MLPSettings if model["type"] == "mlp" else RandomForestSettings
    settings = kind.model_validate({**model, "search": {**model["search"], "cv": 3}})
    heard: dict[int, list[tuple[int, int]]] = {1: [], 2: []}  # (fits finished, in all), by search_jobs

    def search(jobs: int) -> TrainedModel:
        def on_fit(done: int, fits: int) -> None:
            heard[jobs].append((done, fits))

        return train_classifier(settings, x_train, y_train, seed=5, search_jobs=jobs, on_search_fit=on_fit)

    here, parallel = search(1), search(2)
    assert here.search is not None and parallel.search is not None
    # 2 candidates x 3 folds, heard as each finishes (one at a time in this process), in this process
    assert sorted(set(heard[1])) == [(done, 6) for done in range(1, 7)], heard[1]
    assert [done for done, _ in heard[1]] == sorted(done for done, _ in heard[1])
    assert heard[2][-1] == (6, 6) and [done for done, _ in heard[2]] == sorted(d for d, _ in heard[2])
    assert [c.fold_scores for c in parallel.search.candidates] == [
        c.fold_scores for c in here.search.candidates
    ]
    assert parallel.search.best.params == here.search.best.params
    one, other = (single_threaded_prediction(t.classifier) for t in (parallel, here))  # as evaluated
    assert np.array_equal(class_scores(one, x_test), class_scores(other, x_test))


def test_searches_in_two_threads_each_hear_of_their_own_fits_and_a_later_one_of_none(
    small_digits: Dataset,
) -> None:
    """The progress hook is GridSearchCV's `Parallel` for the whole process: each search's fits must reach
    its own callback, in its own thread. A first version swapped the class per search: with two searches
    overlapping (forced here: each waits at its first fit for the other, and b ends after a), a heard b's
    fits and a's hook stayed behind for every later search."""
    import threading

    x_train, y_train, _, _ = features(small_digits)
    heard: dict[str, list[tuple[int, int, str]]] = {"a": [], "b": []}
    grids = {"a": ({"alpha": [0.001, 0.01]}, 3), "b": ({"alpha": [0.001, 0.1]}, 2)}  # 6 fits and 4
    both_started, a_ended = threading.Barrier(2, timeout=30), threading.Event()

    def search(name: str) -> None:
        grid, cv = grids[name]
        settings = SGDSettings.model_validate({"type": "sgd", "search": {"grid": grid, "cv": cv}})

        def on_fit(done: int, fits: int) -> None:
            heard[name].append((done, fits, threading.current_thread().name))
            if len(heard[name]) == 1:
                both_started.wait()
            if name == "b" and done == fits:
                a_ended.wait(timeout=30)

        train_classifier(settings, x_train, y_train, seed=1, search_jobs=1, on_search_fit=on_fit)
        if name == "a":
            a_ended.set()

    threads = {name: threading.Thread(target=search, args=(name,), name=name) for name in heard}
    for thread in threads.values():
        thread.start()
    for thread in threads.values():
        thread.join()
    assert sorted({(d, f) for d, f, _ in heard["a"]}) == [(done, 6) for done in range(1, 7)]
    assert sorted({(d, f) for d, f, _ in heard["b"]}) == [(done, 4) for done in range(1, 5)]
    assert {where for *_, where in heard["a"]} == {"a"} and {where for *_, where in heard["b"]} == {"b"}
    before = {name: len(calls) for name, calls in heard.items()}
    settings = SGDSettings.model_validate({"type": "sgd", "search": {"grid": {"alpha": [0.01]}, "cv": 2}})
    train_classifier(settings, x_train, y_train, seed=1, search_jobs=1)  # no callback: nobody hears
    assert {name: len(calls) for name, calls in heard.items()} == before


def test_a_searched_mlp_keeps_the_history_of_its_refit(small_digits: Dataset) -> None:
    x_train, y_train, _, _ = features(small_digits)
    settings = MLPSettings.model_validate(
        {
            "type": "mlp",
            "max_epochs": 5,
            "hidden_layer_sizes": [8],
            "search": {"grid": {"hidden_layer_sizes": [[4], [8]]}, "cv": 2},
        }
    )
    trained = train_classifier(settings, x_train, y_train, seed=0)
    assert trained.search is not None and len(trained.search.candidates) == 2
    assert len(trained.history) == 5 and trained.best_epoch is not None
    assert trained.classifier.hidden_layer_sizes == tuple(trained.search.best.params["hidden_layer_sizes"])


def test_labels_a_model_cannot_train_on_are_named_before_any_training() -> None:
    from mnist_lab.core.data import check_training_labels
    from mnist_lab.core.errors import DataError, SettingsError
    from mnist_lab.core.settings import CNNSettings

    labels = np.array([0] * 10 + [1] * 10 + [2])  # class 2: a single example
    sgd, forest = SGDSettings(type="sgd"), RandomForestSettings(type="random_forest")
    check_training_labels(sgd, labels, "models.sgd")  # SGD and the forest hold nothing out
    check_training_labels(forest, labels, "models.forest")
    held_out = "models.m: class 2 has a single training example, but this model holds out a stratified 0.1"
    for settings in (MLPSettings(type="mlp"), CNNSettings(type="cnn")):
        with pytest.raises(DataError, match=held_out):
            check_training_labels(settings, labels, "models.m")
    searched = SGDSettings(type="sgd", search={"grid": {"alpha": [0.1, 0.01]}, "cv": 5})
    too_many = r"models.sgd.search.cv is 5, but class 2 has only 1 training example\(s\).*search.cv to 2 or"
    with pytest.raises(SettingsError, match=too_many):
        check_training_labels(searched, labels, "models.sgd")
    check_training_labels(searched, np.array([0, 1] * 5), "models.sgd")
    with pytest.raises(DataError, match=r"models.sgd: the training set holds only class \[1\]"):
        check_training_labels(sgd, np.ones(20, dtype=int), "models.sgd")
    # a validation fraction that holds out fewer examples than there are classes (scikit-learn's split
    # fails then, mid-pipeline, with a traceback): named with the range that works
    digits = np.arange(1437) % 10
    tiny = MLPSettings(type="mlp", validation_fraction=0.001)
    too_few = r"models.mlp.validation_fraction is 0.001: 2 of 1437 training examples held out.*between 0.007"
    with pytest.raises(SettingsError, match=too_few):
        check_training_labels(tiny, digits, "models.mlp")
    with pytest.raises(ValueError, match="should be greater or equal to the number of classes"):
        from sklearn.model_selection import train_test_split

        train_test_split(digits, test_size=0.001, stratify=digits, random_state=0)  # what it stands for
    check_training_labels(MLPSettings(type="mlp", validation_fraction=0.007), digits, "models.mlp")
    with pytest.raises(SettingsError, match=r"add data \(no fraction works\)"):  # 20 examples, 10 classes
        check_training_labels(MLPSettings(type="mlp"), np.arange(20) % 10, "models.mlp")


def test_a_forest_predicts_the_same_probabilities_every_time_on_one_thread(small_digits: Dataset) -> None:
    """With all cores, a forest sums its trees' probabilities in the order its threads finish (different
    last bits from call to call); single_threaded_prediction makes every call sum in tree order."""
    from sklearn.ensemble import RandomForestClassifier

    x_train, y_train, x_test, _ = features(small_digits)
    forest = RandomForestClassifier(n_estimators=60, min_samples_leaf=3, n_jobs=-1, random_state=0)
    forest.fit(x_train, y_train)
    in_tree_order = sum(tree.predict_proba(x_test) for tree in forest.estimators_) / len(forest.estimators_)
    assert single_threaded_prediction(forest) is forest
    for _ in range(10):
        assert np.array_equal(class_scores(forest, x_test), in_tree_order)
    not_an_estimator = object()  # such as the CNN's wrapper: left as it is
    assert single_threaded_prediction(not_an_estimator) is not_an_estimator
